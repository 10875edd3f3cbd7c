"""Baselines against explicit references: k-means coverage, BM25 reuse, MMR and DPP by brute force,
and the driver's top-k shortcut for static scores against its greedy loop."""

import numpy as np
import pytest

from fewshot.clustering import kmeans
from fewshot.errors import InputError
from fewshot.selection import BM25, DPP, KNN, MMR, KMeansDiversity, Problem, Random, VoteK, make_selector
from tests.conftest import unit_rows


def float64_rows(rng, n, d):
    return unit_rows(rng, n, d).astype(np.float64)


# -- k-means diversity -------------------------------------------------------------------------

@pytest.mark.parametrize("k", [12, 14, 16])
def test_kmeans_picks_one_example_per_cluster_before_any_second(k):
    """Whatever the data, the k picks cover all k of its own clusters (each by its most central
    example); a covered cluster used to outscore uncovered ones of size rank >= 11."""
    pool = unit_rows(np.random.default_rng(k), 300, 16)
    selection = KMeansDiversity(seed=3).select(Problem(pool=pool, queries=pool[:1]), k)
    clusters = kmeans(pool, k, seed=3)
    picked = clusters.assignment[list(selection.indices)]
    assert sorted(picked) == list(range(k))
    for index, cluster in zip(selection.indices, picked):
        members = np.flatnonzero(clusters.assignment == cluster)
        assert clusters.hardship[index] == clusters.hardship[members].min()


def test_kmeans_keeps_no_state_between_calls():
    pool = unit_rows(np.random.default_rng(0), 200, 8)
    problem = Problem(pool=pool, queries=pool[:1])
    used = KMeansDiversity(seed=1)
    used.select(problem, 3)
    assert used.select(problem, 12).indices == KMeansDiversity(seed=1).select(problem, 12).indices
    assert vars(used) == vars(KMeansDiversity(seed=1))


# -- BM25 --------------------------------------------------------------------------------------

def bm25_problem(texts, queries):
    eye = np.eye(len(texts), dtype=np.float32)
    return Problem(pool=eye, queries=eye[:len(queries)], pool_texts=texts, query_texts=queries)


def test_bm25_reused_on_a_changed_list_gives_the_fresh_answer():
    """The index used to be cached by id() of the text list: the same list object, edited in place
    (or a new list at a recycled address), served the old pool's scores."""
    texts = ["the cat sat", "dogs bark loudly", "a cat and a cat", "stock markets fell"]
    reused = BM25()
    assert reused.select_per_query(bm25_problem(texts, ["cat"]), 2)[0].indices == (2, 0)
    texts[:] = ["stock prices", "a cat", "markets and stock markets fell", "dogs"]
    problem = bm25_problem(texts, ["stock markets"])
    assert reused.select_per_query(problem, 2)[0].indices == BM25().select_per_query(problem, 2)[0].indices == (2, 0)


def test_bm25_reused_across_many_fresh_problems():
    rng = np.random.default_rng(0)
    words = ["good", "bad", "film", "plot", "actor", "dull", "great", "slow", "cat", "dog"]
    reused = BM25(shortlist=None)
    for _ in range(50):
        texts = [" ".join(rng.choice(words, size=rng.integers(1, 6))) for _ in range(13)]
        problem = bm25_problem(texts[:10], texts[10:])
        assert ([s.indices for s in reused.select_per_query(problem, 3)]
                == [s.indices for s in BM25(shortlist=None).select_per_query(problem, 3)])
        assert reused.select(problem, 3).indices == BM25().select(problem, 3).indices


# -- MMR and DPP against brute force ----------------------------------------------------------

def mmr_reference(pool, target, k, lam):
    relevance, chosen = pool @ target, []
    for _ in range(k):
        values = [(lam * relevance[x] - (1 - lam) * max((pool[x] @ pool[s] for s in chosen), default=0.0), x)
                  for x in range(len(pool)) if x not in chosen]
        chosen.append(max(values, key=lambda v: (v[0], -v[1]))[1])
    return chosen


def dpp_reference(pool, target, k, quality):
    """Greedy MAP: add the x with the largest log det L_{S+x}, L = diag(r) S diag(r)."""
    r = np.exp(quality * (pool @ target))
    L = r[:, None] * (pool @ pool.T) * r[None, :]
    chosen = []
    for _ in range(k):
        values = [(np.linalg.slogdet(L[np.ix_(chosen + [x], chosen + [x])])[1], x)
                  for x in range(len(pool)) if x not in chosen]
        chosen.append(max(values, key=lambda v: (v[0], -v[1]))[1])
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cls, param, value, reference, n", [
    (MMR, "lam", 0.3, mmr_reference, 60), (MMR, "lam", 0.7, mmr_reference, 60),
    (DPP, "quality", 1.0, dpp_reference, 40), (DPP, "quality", 3.0, dpp_reference, 40)])
def test_matches_brute_force_shared_and_per_query(seed, cls, param, value, reference, n):
    """Shared mode targets the mean query; per query (exact) each query."""
    rng = np.random.default_rng(seed)
    pool, queries = float64_rows(rng, n, 8), float64_rows(rng, 5, 8)
    problem = Problem(pool=pool, queries=queries)
    shared = cls(**{param: value}).select(problem, 6)
    assert list(shared.indices) == reference(pool, queries.mean(axis=0), 6, value)
    for j, selection in enumerate(cls(**{param: value}, shortlist=None).select_per_query(problem, 6)):
        assert list(selection.indices) == reference(pool, queries[j], 6, value)


# -- static scores: the top-k shortcut equals the greedy loop -----------------------------------

@pytest.mark.parametrize("selector", [KNN(shortlist=None), KNN(shortlist=256), Random(seed=4)],
                         ids=["knn-exact", "knn-shortlist", "random"])
def test_top_k_shortcut_equals_the_greedy_loop(selector):
    """A token budget that never binds sends the driver through its k-step loop; without one it
    takes the top k at once. Picks and traces must not differ, ties included (duplicated rows)."""
    rng = np.random.default_rng(0)
    base = unit_rows(rng, 300, 8)
    pool = np.concatenate([base, base[:40]])  # rows 300.. duplicate rows 0..39: tied scores
    queries = base[:6] + 0.01 * rng.normal(size=(6, 8)).astype(np.float32)
    plain = Problem(pool=pool, queries=queries)
    looped = Problem(pool=pool, queries=queries, token_costs=np.ones(len(pool), dtype=int), max_tokens=10 ** 6)
    fast, slow = selector.select_per_query(plain, 5), selector.select_per_query(looped, 5)
    assert [(s.indices, s.trace) for s in fast] == [(s.indices, s.trace) for s in slow]


def test_knn_ties_go_to_the_lower_index():
    rng = np.random.default_rng(1)
    base = unit_rows(rng, 50, 8)
    pool = np.concatenate([base[:1], base[1:], base[:1], base[:1]])  # rows 0, 50, 51 are the same
    selection = KNN(shortlist=None).select_per_query(Problem(pool=pool, queries=base[:1]), 2)[0]
    assert selection.indices == (0, 50) and selection.trace[1]["runner_up"] == 51


# -- vote-k ------------------------------------------------------------------------------------

@pytest.mark.parametrize("build", [lambda: VoteK(neighbors=0), lambda: make_selector("votek", neighbors=0)])
def test_votek_without_neighbours_is_refused(build):
    """neighbors=0 used to pass: the graph held only self-loops, which are dropped, so every score
    was 0 and the picks were 0, 1, 2, ..."""
    with pytest.raises(InputError, match="parameter neighbors=0 for method 'votek' must be int >= 1"):
        build()


def test_votek_graph_through_an_index_gives_the_all_pairs_picks():
    """Issue 19: the graph from an index (here exact, and faiss flat) instead of the n x n scan."""
    from fewshot.index import ExactIndex, make_index

    rng = np.random.default_rng(9)
    pool = unit_rows(rng, 600, 12)
    problem = Problem(pool=pool, queries=pool[:3])
    today = VoteK(neighbors=10).select(problem, 6)
    served = VoteK(neighbors=10).select(problem, 6, index=ExactIndex(pool_chunk=128).build(pool))
    assert served.indices == today.indices and served.scores == today.scores
    pytest.importorskip("faiss")
    assert VoteK(neighbors=10).select(problem, 6, index=make_index("flat").build(pool)).indices == today.indices


def test_votek_graph_skips_neighbours_an_index_did_not_find():
    class Sparse:  # finds only the example itself and the next one
        def search(self, queries, size, absolute=False):
            n = len(queries)
            ids = np.full((n, size), -1)
            ids[:, 0] = np.arange(self.start, self.start + n)
            ids[:, 1] = (ids[:, 0] + 1) % 40
            self.start += n
            return None, ids

    index = Sparse()
    index.start = 0
    pool = unit_rows(np.random.default_rng(10), 40, 6)
    chosen = VoteK(neighbors=5).select(Problem(pool=pool, queries=pool[:2]), 3, index=index)
    assert len(set(chosen.indices)) == 3 and chosen.scores[0] == 1.0  # one vote each: the ring
