"""GO's fast rank-one path against a brute-force reference with an explicit inverse."""

import numpy as np
import pytest

from fewshot.selection import GO, Problem


def unit_rows(rng, n, d):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(pool, queries, k, objective, ridge, noise):
    """Greedy design recomputing Sigma = (ridge I + X_S^T X_S / noise)^-1 by explicit inversion."""
    d = pool.shape[1]
    chosen = []
    for _ in range(k):
        best, best_value = None, None
        for x in range(len(pool)):
            if x in chosen:
                continue
            S = pool[chosen + [x]]
            sigma = np.linalg.inv(ridge * np.eye(d) + S.T @ S / noise)
            variances = np.einsum("qd,de,qe->q", queries, sigma, queries)
            value = variances.max() if objective == "g" else variances.sum()
            if best_value is None or value < best_value - 1e-12:
                best, best_value = x, value
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("objective", ["g", "v"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shared_matches_brute_force(objective, seed):
    rng = np.random.default_rng(seed)
    pool, queries = unit_rows(rng, 60, 6), unit_rows(rng, 70, 6)
    fast = GO(objective=objective, ridge=1.0, noise=0.2).select(Problem(pool=pool, queries=queries), k=8)
    assert list(fast.indices) == brute_force(pool, queries, 8, objective, 1.0, 0.2)


@pytest.mark.parametrize("seed", [0, 3])
def test_per_query_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    pool, queries = unit_rows(rng, 50, 5), unit_rows(rng, 7, 5)
    per_query = GO(ridge=0.5, noise=0.1, shortlist=None).select_per_query(Problem(pool=pool, queries=queries), k=5)
    for j, selection in enumerate(per_query):
        assert selection.query == j
        assert list(selection.indices) == brute_force(pool, queries[j:j + 1], 5, "g", 0.5, 0.1)


def test_per_query_equals_shared_on_that_query():
    rng = np.random.default_rng(5)
    pool, queries = unit_rows(rng, 40, 8), unit_rows(rng, 4, 8)
    go = GO(shortlist=None)
    batched = go.select_per_query(Problem(pool=pool, queries=queries), k=6)
    for j in range(4):
        single = go.select(Problem(pool=pool, queries=queries[j:j + 1]), k=6)
        assert batched[j].indices == single.indices


def test_trace_reports_falling_variance():
    rng = np.random.default_rng(1)
    pool, queries = unit_rows(rng, 80, 10), unit_rows(rng, 20, 10)
    trace = GO().select(Problem(pool=pool, queries=queries), k=6).trace
    maxima = [step["max_query_variance"] for step in trace]
    assert all(a >= b - 1e-9 for a, b in zip(maxima, maxima[1:]))
    assert maxima[-1] < 1.0  # prior variance of a unit query with ridge 1
