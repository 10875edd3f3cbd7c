"""The per-query candidate hook (``select_per_query(..., candidates=source)``) and the block-wise
pool products behind every selector, for pools of millions (issue 19)."""

import numpy as np
import pytest

import fewshot.selection.base as base
from fewshot.errors import InputError
from fewshot.selection import Problem, make_selector
from fewshot.similarity import top_k
from tests.conftest import unit_rows


def exact_source(problem, absolute=False):
    """The candidate source of today's path: each query's top ``size`` over the whole pool."""
    def source(rows, size):
        scores = problem.queries[rows] @ problem.pool.T
        return top_k(np.abs(scores) if absolute else scores, size)
    return source


@pytest.mark.parametrize("method", ["knn", "mmr", "dpp", "go"])
def test_a_source_of_the_exact_shortlists_gives_todays_picks(method):
    rng = np.random.default_rng(0)
    problem = Problem(pool=unit_rows(rng, 400, 12), queries=unit_rows(rng, 30, 12))
    selector = make_selector(method, shortlist=40)
    today = selector.select_per_query(problem, 5)
    hooked = selector.select_per_query(problem, 5, candidates=exact_source(problem, absolute=method == "go"))
    assert [s.indices for s in hooked] == [s.indices for s in today]
    assert [s.scores for s in hooked] == [s.scores for s in today]


@pytest.mark.parametrize("method", ["knn", "mmr", "dpp", "go"])
def test_missing_candidates_are_never_picked(method):
    rng = np.random.default_rng(1)
    problem = Problem(pool=unit_rows(rng, 200, 8), queries=unit_rows(rng, 6, 8))
    allowed = np.array([5, 17, 3, 99, 150, 42])

    def source(rows, size):  # six candidates per query, the rest -1; query 0 gets only two
        ids = np.full((len(rows), size), -1)
        ids[:, :6] = allowed
        ids[rows == 0, 2:] = -1
        return ids

    chosen = make_selector(method, shortlist=20).select_per_query(problem, 4, candidates=source)
    assert all(set(s.indices) <= set(allowed.tolist()) for s in chosen)
    assert len(chosen[0].indices) == 2 and chosen[0].stopped == "no candidates left"
    assert all(len(s.indices) == 4 and s.stopped is None for s in chosen[1:])


def test_a_source_is_refused_by_bm25_and_checked():
    rng = np.random.default_rng(2)
    problem = Problem(pool=unit_rows(rng, 50, 4), queries=unit_rows(rng, 3, 4), pool_texts=["a b"] * 50,
                      query_texts=["a", "b", "c"])
    with pytest.raises(InputError, match="'bm25' does not shortlist by embedding similarity"):
        make_selector("bm25").select_per_query(problem, 2, candidates=exact_source(problem))
    with pytest.raises(InputError, match="outside"):
        make_selector("knn").select_per_query(problem, 2, candidates=lambda rows, size: np.full((len(rows), size), 50))
    with pytest.raises(InputError, match="for 3 queries x 50 candidates"):
        make_selector("knn").select_per_query(problem, 2, candidates=lambda rows, size: np.zeros((len(rows), 3), int))


def test_with_a_source_the_query_chunk_does_not_count_the_pool(monkeypatch):
    """Before: each query row was charged the whole pool (n scores), so a large pool meant one
    query per chunk, one source call (one index search) per query."""
    monkeypatch.setattr(make_selector("knn").__class__, "chunk_elements", 200_000)
    rng = np.random.default_rng(3)
    problem = Problem(pool=unit_rows(rng, 100_000, 4), queries=unit_rows(rng, 64, 4))
    calls = []
    source = exact_source(problem)

    def counted(rows, size):
        calls.append(len(rows))
        return source(rows, size)

    make_selector("knn", shortlist=8).select_per_query(problem, 2, candidates=counted)
    assert calls == [64]


@pytest.mark.parametrize("method", ["knn", "go", "dpp"])
def test_a_float16_memory_map_is_widened_per_gather(tmp_path, method):
    rng = np.random.default_rng(4)
    np.save(tmp_path / "pool.npy", unit_rows(rng, 300, 8).astype(np.float16))
    mapped = np.load(tmp_path / "pool.npy", mmap_mode="r")
    queries = unit_rows(rng, 10, 8)
    widened = Problem(pool=np.asarray(mapped, dtype=np.float32), queries=queries)
    source = exact_source(widened, absolute=method == "go")
    selector = make_selector(method, shortlist=30)
    got = selector.select_per_query(Problem(pool=mapped, queries=queries), 4, candidates=source)
    want = selector.select_per_query(widened, 4, candidates=source)
    assert [s.indices for s in got] == [s.indices for s in want]


def test_block_products_equal_the_whole_products(monkeypatch):
    monkeypatch.setattr(base, "BLOCK_ELEMENTS", 64)  # blocks of 8 rows of d = 8
    rng = np.random.default_rng(5)
    pool, targets = unit_rows(rng, 100, 8).astype(np.float16), unit_rows(rng, 3, 8)
    np.testing.assert_allclose(base.dot_pool(targets, pool), targets @ pool.astype(np.float32).T, rtol=1e-6)
    np.testing.assert_allclose(base.row_norms(pool), (pool.astype(np.float32) ** 2).sum(1), rtol=1e-6)
    np.testing.assert_allclose(base.pool_mean(pool), pool.astype(np.float64).mean(0), rtol=1e-5)
    shifted = base.ShiftedRows(pool, base.pool_mean(pool))
    np.testing.assert_allclose(base.dot_pool(targets, shifted),
                               targets @ (pool.astype(np.float32) - base.pool_mean(pool)).T, atol=1e-6)
