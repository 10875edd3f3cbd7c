"""Invariants every selector keeps, whatever its scores: tested for all registered methods."""

import numpy as np
import pytest

from fewshot.errors import InputError
from fewshot.selection import SELECTORS, Problem, make_selector
from tests.conftest import unit_rows

METHODS = sorted(set(SELECTORS) - {"sal"})


def problem(seed=0, n=120, m=9, d=16, max_tokens=None):
    rng = np.random.default_rng(seed)
    words = ["good", "bad", "film", "plot", "actor", "dull", "great", "slow"]
    texts = [" ".join(rng.choice(words, size=rng.integers(2, 9))) for _ in range(n + m)]
    return Problem(pool=unit_rows(rng, n, d), queries=unit_rows(rng, m, d), pool_texts=texts[:n],
                   query_texts=texts[n:], labels=[["pos", "neg", "neu"][i % 3] for i in range(n)],
                   token_costs=rng.integers(3, 30, size=n), max_tokens=max_tokens)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("per_query", [False, True])
def test_exactly_k_distinct_and_deterministic(method, per_query):
    p = problem()
    run = lambda: (make_selector(method, seed=7).select_per_query(p, 6) if per_query
                   else [make_selector(method, seed=7).select(p, 6)])
    first, second = run(), run()
    assert len(first) == (p.m if per_query else 1)
    for a, b in zip(first, second):
        assert len(a.indices) == 6 and len(set(a.indices)) == 6 and a.stopped is None
        assert a.indices == b.indices and a.scores == b.scores
        assert all(0 <= i < p.n for i in a.indices)
        assert [t["index"] for t in a.trace] == list(a.indices)


@pytest.mark.parametrize("method", METHODS)
def test_token_budget_respected_and_reported(method):
    p = problem(max_tokens=40)
    for selection in make_selector(method).select_per_query(p, 8):
        cost = int(p.token_costs[list(selection.indices)].sum())
        assert cost <= 40
        if len(selection.indices) < 8:
            assert selection.stopped == "token budget exhausted"
            # budget-aware: nothing left unchosen would still have fitted
            unchosen = np.setdiff1d(np.arange(p.n), selection.indices)
            assert p.token_costs[unchosen].min() > 40 - cost


@pytest.mark.parametrize("method", METHODS)
def test_label_balance(method):
    p = problem()
    selection = make_selector(method, label_balance=True).select(p, 6)
    labels = [p.labels[i] for i in selection.indices]
    assert sorted(labels.count(c) for c in ("pos", "neg", "neu")) == [2, 2, 2]


def test_random_seed_changes_the_set():
    p = problem()
    assert make_selector("random", seed=1).select(p, 5).indices != make_selector("random", seed=2).select(p, 5).indices


@pytest.mark.parametrize("k", [0, 121])
def test_bad_k(k):
    with pytest.raises(InputError):
        make_selector("go").select(problem(), k)


def test_knn_picks_the_most_similar():
    p = problem()
    selection = make_selector("knn", shortlist=None).select_per_query(p, 3)[0]
    expected = np.argsort(-(p.pool @ p.queries[0]), kind="stable")[:3]
    assert list(selection.indices) == expected.tolist()


def test_mmr_with_lam_one_is_knn():
    p = problem()
    assert (make_selector("mmr", lam=1.0).select_per_query(p, 4)[2].indices
            == make_selector("knn").select_per_query(p, 4)[2].indices)


@pytest.mark.parametrize("k", [4, 12, 14, 16])
def test_kmeans_covers_distinct_clusters(k):
    """One pick per true cluster, also at k >= 12, where covered clusters used to outscore
    uncovered ones of size rank >= 11 (10 of 12 covered)."""
    rng = np.random.default_rng(k)
    centers = unit_rows(rng, k, 32) * 10
    sizes = rng.integers(10, 40, size=k)
    pool = np.concatenate([c + 0.3 * rng.normal(size=(s, 32)) for c, s in zip(centers, sizes)]).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    truth = np.repeat(np.arange(k), sizes)
    chosen = make_selector("kmeans", seed=0).select(Problem(pool=pool, queries=pool[:2]), k).indices
    assert sorted(truth[list(chosen)]) == list(range(k))


def test_dpp_avoids_duplicates_knn_takes():
    rng = np.random.default_rng(0)
    base = unit_rows(rng, 10, 8)
    pool = np.concatenate([base, base[:1] * 1.0])  # row 10 duplicates row 0
    query = base[:1]
    knn = make_selector("knn").select_per_query(Problem(pool=pool, queries=query), 2)[0].indices
    dpp = make_selector("dpp").select_per_query(Problem(pool=pool, queries=query), 2)[0].indices
    assert set(knn) == {0, 10} and len({0, 10} & set(dpp)) == 1


def test_bm25_prefers_lexical_overlap():
    texts = ["the cat sat", "dogs bark loudly", "a cat and a cat", "stock markets fell"]
    p = Problem(pool=np.eye(4, dtype=np.float32), queries=np.eye(4, dtype=np.float32)[:1],
                pool_texts=texts, query_texts=["cat"])
    assert make_selector("bm25").select_per_query(p, 2)[0].indices == (2, 0)


@pytest.mark.parametrize("seed", range(5))
def test_votek_prefers_dense_regions(seed):
    """A tight cluster of 20 among 200 points: vote-k's first pick lies in it (random: 10%), and the
    discount sends its second pick elsewhere (random after a dense first: 90%, together 9%)."""
    rng = np.random.default_rng(seed)
    dense = unit_rows(rng, 1, 8) + 0.05 * rng.normal(size=(20, 8))
    sparse_points = unit_rows(rng, 180, 8)
    pool = np.concatenate([sparse_points[:90], dense, sparse_points[90:]]).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    first, second = make_selector("votek", neighbors=10).select(Problem(pool=pool, queries=pool[:1]), 2).indices
    assert 90 <= first < 110
    assert not 90 <= second < 110
