"""LinearPosterior against explicit matrix inversion, DPP on a shortlist against brute force, and
GO.gains against brute force (float64)."""

import numpy as np
import pytest

from fewshot.errors import InputError
from fewshot.selection import DPP, GO, Problem
from fewshot.selection.base import CandidateVectors
from fewshot.selection.linear import LinearPosterior
from tests.conftest import unit_rows


def sigma(features, ridge, noise):
    """``(ridge I + F^T F / noise)^-1`` by explicit inversion."""
    F = np.asarray(features, dtype=np.float64)
    return np.linalg.inv(ridge * np.eye(F.shape[1]) + F.T @ F / noise)


def rows64(rng, n, d):
    return unit_rows(rng, n, d).astype(np.float64)


@pytest.mark.parametrize("shortlisted", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_batched_rows_with_different_picks_match_explicit_inversion(shortlisted, weighted):
    """Three rows, each with its own picks; row 2 skips step 2 (it does not pick) and reads are
    made only at the end (the deferred pass of the last pick included)."""
    rng = np.random.default_rng(0)
    pool, targets = rows64(rng, 30, 5), rows64(rng, 3, 5)
    candidates = (np.stack([rng.permutation(30)[:12] for _ in range(3)]) if shortlisted
                  else np.broadcast_to(np.arange(30), (3, 30)))
    weights = np.exp(rng.normal(size=candidates.shape)) if weighted else None
    ridge, noise = 2.0, 0.3
    post = LinearPosterior(CandidateVectors(pool, candidates), ridge, noise, weights=weights, targets=targets)
    steps = [(np.array([0, 1, 2]), np.array([3, 0, 7])), (np.array([0, 1]), np.array([5, 9])),
             (np.array([0, 1, 2]), np.array([1, 2, 3]))]
    picked = [[] for _ in range(3)]
    for rows, cols in steps:
        post.condition(rows, cols)
        for r, c in zip(rows, cols):
            picked[r].append(c)
    for row in range(3):
        w = np.ones(candidates.shape[1]) if weights is None else weights[row]
        features = pool[candidates[row]] * w[:, None]  # (M, d)
        S = sigma(features[picked[row]], ridge, noise)
        np.testing.assert_allclose(post.variances[row], np.einsum("id,de,ie->i", features, S, features), atol=1e-12)
        np.testing.assert_allclose(post.covariances[row], features @ S @ targets[row], atol=1e-12)
        np.testing.assert_allclose(post.target_variances[row], targets[row] @ S @ targets[row], atol=1e-12)
    assert len(post.factors) == 3 and not post.factors[1][2].any()  # row 2's factor at step 2 is zero


def test_reading_after_every_pick_equals_reading_at_the_end():
    rng = np.random.default_rng(1)
    pool, targets = rows64(rng, 40, 6), rows64(rng, 2, 6)
    candidates = np.broadcast_to(np.arange(40), (2, 40))
    eager, lazy = (LinearPosterior(CandidateVectors(pool, candidates), 1.0, 0.1, targets=targets) for _ in range(2))
    for cols in ([4, 8], [11, 2], [30, 39], [0, 1]):
        for post in (eager, lazy):
            post.condition(np.array([0, 1]), np.array(cols))
        eager.variances  # noqa: B018 - forces the deferred pass now
    np.testing.assert_allclose(eager.variances, lazy.variances, atol=1e-14)
    np.testing.assert_allclose(eager.covariances, lazy.covariances, atol=1e-14)
    np.testing.assert_array_equal(eager.target_variances, lazy.target_variances)


def test_noise_zero_is_the_conditional_variance_of_the_kernel():
    """DPP's case: noise 0 on features r_i x_i; the variance is L_ii - L_iS L_SS^-1 L_Si."""
    rng = np.random.default_rng(2)
    pool = rows64(rng, 20, 8)
    r = np.exp(rng.normal(size=20))
    L = r[:, None] * (pool @ pool.T) * r[None, :]
    post = LinearPosterior(CandidateVectors(pool, np.arange(20)[None, :]), weights=r[None, :], floor=1e-12)
    chosen = [3, 17, 5]
    for c in chosen:
        post.condition(np.array([0]), np.array([c]))
    expected = np.diag(L) - np.einsum("is,st,it->i", L[:, chosen], np.linalg.inv(L[np.ix_(chosen, chosen)]),
                                      L[:, chosen])
    np.testing.assert_allclose(post.variances[0], expected, atol=1e-10)
    assert np.abs(post.variances[0, chosen]).max() < 1e-10  # a picked candidate has nothing left


def test_needs_targets_and_projections_for_their_reads():
    post = LinearPosterior(CandidateVectors(np.eye(3), np.arange(3)[None, :]), noise=0.1)
    with pytest.raises(InputError):
        post.covariances  # noqa: B018
    with pytest.raises(InputError):
        post.projections  # noqa: B018
    with pytest.raises(InputError):
        LinearPosterior(CandidateVectors(np.eye(3), np.arange(3)[None, :]), noise=0.0)  # no noise, no floor


def test_kept_projections_are_the_factors_against_the_candidates():
    rng = np.random.default_rng(3)
    pool = rows64(rng, 15, 4)
    post = LinearPosterior(CandidateVectors(pool, np.arange(15)[None, :]), 1.0, 0.2, keep_projections=True)
    for c in (2, 9, 4):
        post.condition(np.array([0]), np.array([c]))
    for u, w in zip(post.factors, post.projections):
        np.testing.assert_allclose(w[0], pool @ u[0], atol=1e-14)
    U = np.stack(post.factors, axis=-1)[0]
    np.testing.assert_allclose(np.eye(4) - U @ U.T, sigma(pool[[2, 9, 4]], 1.0, 0.2), atol=1e-12)


# -- DPP on a shortlist (gathered candidates) against brute force ------------------------------

def dpp_reference(pool, target, k, quality, candidates):
    r = np.exp(quality * (pool @ target))
    L = r[:, None] * (pool @ pool.T) * r[None, :]
    chosen = []
    for _ in range(k):
        values = [(np.linalg.slogdet(L[np.ix_(chosen + [x], chosen + [x])])[1], x)
                  for x in candidates if x not in chosen]
        chosen.append(max(values, key=lambda v: (v[0], -candidates.index(v[1])))[1])
    return chosen


def test_dpp_on_a_shortlist_matches_brute_force_on_it():
    rng = np.random.default_rng(4)
    pool, queries = rows64(rng, 80, 6), rows64(rng, 3, 6)
    selections = DPP(quality=2.0, shortlist=24).select_per_query(Problem(pool=pool, queries=queries), 6)
    for j, selection in enumerate(selections):
        shortlist = np.argsort(-(pool @ queries[j]), kind="stable")[:24].tolist()  # in candidate-column order
        assert selection.trace[0]["feasible"] == 24
        assert list(selection.indices) == dpp_reference(pool, queries[j], 6, 2.0, shortlist)


# -- GO.gains against brute force --------------------------------------------------------------

def variances(pool, queries, chosen, ridge, noise):
    S = sigma(pool[list(chosen)], ridge, noise) if chosen else np.eye(pool.shape[1]) / ridge
    return np.einsum("qd,de,qe->q", queries, S, queries)


@pytest.mark.parametrize("objective", ["g", "v"])
@pytest.mark.parametrize("chosen", [[], [7], [7, 30, 2]])
def test_gains_match_brute_force(objective, chosen):
    rng = np.random.default_rng(5)
    pool, queries = rows64(rng, 50, 6), rows64(rng, 40, 6)  # m > 32: G's lazy rows would not cover all
    gains = GO(objective=objective, ridge=0.5, noise=0.2).gains(Problem(pool=pool, queries=queries), chosen)
    before = variances(pool, queries, chosen, 0.5, 0.2)
    for x in range(len(pool)):
        if x in chosen:
            assert gains[x] == -np.inf
            continue
        after = variances(pool, queries, chosen + [x], 0.5, 0.2)
        expected = before.sum() - after.sum() if objective == "v" else -after.max()
        assert gains[x] == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("objective", ["g", "v"])
def test_select_takes_the_argmax_of_gains_at_every_step(objective):
    rng = np.random.default_rng(6)
    problem = Problem(pool=unit_rows(rng, 120, 10) + 0.5, queries=unit_rows(rng, 25, 10) + 0.5)
    go = GO(objective=objective, center=True)
    picks = go.select(problem, 6).indices
    for step in range(6):
        gains = go.gains(problem, picks[:step])
        assert int(np.argmax(gains)) == picks[step]


def test_gains_rejects_indices_outside_the_pool():
    rng = np.random.default_rng(7)
    with pytest.raises(InputError):
        GO().gains(Problem(pool=unit_rows(rng, 5, 3), queries=unit_rows(rng, 2, 3)), [5])
