import sys

import numpy as np
import pytest

from fewshot.errors import InputError
from fewshot.index import (ExactIndex, FaissIndex, load_index, make_index, select_per_query_with_index,
                           shortlist_recall, verify)
from fewshot.selection import Problem, make_selector
from fewshot.similarity import top_k
from fewshot.store import embed_to_store, open_store

pytest.importorskip("faiss")


def clustered(seed, n, d=16, centres=12, spread=0.6):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    x = (c[rng.integers(centres, size=n)] + spread * rng.normal(size=(n, d))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    pool = clustered(0, 1500)
    queries = clustered(1, 120)
    return pool, queries


@pytest.mark.parametrize("absolute", [False, True])
@pytest.mark.parametrize("size", [1, 10, 64, 400])
def test_exact_index_matches_top_k_on_the_full_product_including_ties(size, absolute):
    rng = np.random.default_rng(3)
    # few distinct rows, each repeated: ties everywhere, also across pool chunks and at the size-th place
    pool = np.repeat(clustered(2, 40, d=8), 7, axis=0)[rng.permutation(280)]
    pool[::5] *= -1
    queries = clustered(4, 23, d=8)
    scores, ids = ExactIndex(query_chunk=5, pool_chunk=17).build(pool).search(queries, size, absolute=absolute)
    full = queries @ pool.T
    full = np.abs(full) if absolute else full
    want = top_k(full, size)
    assert np.array_equal(ids, want)
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, axis=1), rtol=1e-6)


def test_exact_index_searches_a_float16_memory_map(tmp_path, data):
    pool, queries = data
    np.save(tmp_path / "v.npy", pool.astype(np.float16))
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    _, ids = ExactIndex(pool_chunk=100).build(mapped).search(queries, 20)
    assert np.array_equal(ids, top_k(queries @ mapped.astype(np.float32).T, 20))


def test_faiss_flat_is_exact_and_ivf_hnsw_recall_well(data):
    pool, queries = data
    exact = ExactIndex().build(pool)
    flat = make_index("flat").build(pool)
    assert shortlist_recall(flat, exact, queries, 50) == 1.0
    assert shortlist_recall(flat, exact, queries, 50, absolute=True) == 1.0
    for kind in ("ivf", "hnsw"):
        index = make_index(kind).build(pool)
        assert shortlist_recall(index, exact, queries, 100) >= 0.9, kind
        scores, ids = index.search(queries, 100)
        assert (np.diff(scores, axis=1) <= 0).all()
        assert all(len(set(row[row >= 0])) == np.count_nonzero(row >= 0) for row in ids)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_same_inputs_give_the_same_index(kind, data, tmp_path):
    pool, queries = data
    first = FaissIndex(kind, threads=2).build(pool).search(queries, 30)
    assert all(np.array_equal(a, b) for a, b in zip(first, FaissIndex(kind, threads=2).build(pool).search(queries, 30)))
    index = FaissIndex(kind, threads=2).build(pool)
    index.save(tmp_path / "ix")
    loaded = load_index(tmp_path / "ix", pool)
    assert all(np.array_equal(a, b) for a, b in zip(first, loaded.search(queries, 30)))


def test_index_is_bound_to_its_store(tmp_path, data):
    pool, _ = data

    class Vectors:
        model_id = "vectors"

        def __init__(self, table):
            self.table = table

        def embed(self, texts):
            return self.table[[int(t) for t in texts]]

    store = embed_to_store([str(i) for i in range(300)], tmp_path / "s", Vectors(pool), chunk=100, progress=False)
    other = embed_to_store([str(i) for i in range(1, 301)], tmp_path / "o", Vectors(pool), chunk=100, progress=False)
    from fewshot.index import build_index

    build_index("ivf", store).save(tmp_path / "ix")
    build_index("exact", store).save(tmp_path / "ex")
    assert load_index(tmp_path / "ix", open_store(tmp_path / "s")).source == store.checksum
    assert load_index(tmp_path / "ex", store).vectors is store.vectors
    with pytest.raises(InputError, match="another store") as err:
        load_index(tmp_path / "ix", other)
    assert str(tmp_path / "ix") in str(err.value)
    with pytest.raises(InputError, match=r"built over \(300, 16\)"):
        load_index(tmp_path / "ix", pool)
    with pytest.raises(InputError, match="not a saved index"):
        load_index(tmp_path / "s")


def test_unknown_kind_and_missing_faiss_are_input_errors(monkeypatch, data):
    with pytest.raises(InputError, match="unknown index 'annoy'"):
        make_index("annoy")
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(InputError, match=r"pip install fewshot\[faiss\]"):
        make_index("ivf").build(data[0])


def labelled_problem(pool, queries, budget=False):
    labels = [("a", "b", "c")[i % 3] for i in range(len(pool))]
    costs = (np.arange(len(pool)) % 7 + 3) if budget else None
    return Problem(pool=pool, queries=queries, labels=labels, token_costs=costs, max_tokens=25 if budget else None)


@pytest.mark.parametrize("method", ["knn", "mmr", "dpp", "go"])
@pytest.mark.parametrize("options", [{}, {"label_balance": True}, {"budget": True}])
def test_exact_index_path_gives_todays_picks(method, options, data):
    pool, queries = data
    selector = make_selector(method, label_balance=options.get("label_balance", False))
    problem = labelled_problem(pool, queries, budget=options.get("budget", False))
    today = selector.select_per_query(problem, 6)
    served = select_per_query_with_index(selector, problem, ExactIndex(query_chunk=16).build(pool), 6,
                                         search_batch=50)
    assert [s.indices for s in served] == [s.indices for s in today]
    assert [s.query for s in served] == list(range(len(queries)))
    assert [s.stopped for s in served] == [s.stopped for s in today]
    np.testing.assert_allclose([s.scores for s in served if len(s.scores) == 6],
                               [s.scores for s in today if len(s.scores) == 6], rtol=1e-5)
    assert [[t["runner_up"] for t in s.trace] for s in served] == [[t["runner_up"] for t in s.trace] for s in today]


@pytest.mark.parametrize("method", ["knn", "mmr", "dpp", "go"])
def test_the_default_path_shortlists_as_a_full_relevance_scan(method, data):
    """The default per-query path takes its shortlists from the blocked exact search; the reference
    is the whole-pool relevance of each query block, ranked by top_k (the path before)."""
    pool, queries = data
    pool = pool.copy()
    pool[::3] *= -1  # large negative cosines: GO ranks them by |cosine|, the others last
    selector = make_selector(method, shortlist=40)
    problem = labelled_problem(pool, queries)
    scanned = selector.select_per_query(
        problem, 6, candidates=lambda rows, size: top_k(selector._relevance(problem, rows), size))
    default = selector.select_per_query(problem, 6)
    assert [s.indices for s in default] == [s.indices for s in scanned]
    assert [[t["runner_up"] for t in s.trace] for s in default] == [[t["runner_up"] for t in s.trace] for s in scanned]


def test_go_shortlists_by_absolute_cosine(data):
    pool, queries = data
    pool = pool.copy()
    pool[::2] *= -1  # half the pool points away: their |cosine| still counts for GO
    selector = make_selector("go")
    today = selector.select_per_query(Problem(pool=pool, queries=queries), 5)
    served = select_per_query_with_index(selector, (pool, queries), make_index("flat").build(pool), 5)
    assert [s.indices for s in served] == [s.indices for s in today]


def test_selectors_that_do_not_shortlist_by_vectors(data):
    pool, queries = data
    index = ExactIndex().build(pool)
    texts = tuple(f"w{i % 50} w{i % 7}" for i in range(len(pool)))
    problem = Problem(pool=pool, queries=queries[:3], pool_texts=texts, query_texts=("w1", "w2", "w3"))
    with pytest.raises(InputError, match="'bm25' does not shortlist by embedding"):
        select_per_query_with_index(make_selector("bm25"), problem, index, 4)
    random = make_selector("random", seed=1)
    assert [s.indices for s in select_per_query_with_index(random, problem, index, 4)] == \
        [s.indices for s in random.select_per_query(problem, 4)]


def test_verify_reports_pick_and_shortlist_recall(data):
    pool, queries = data
    problem = Problem(pool=pool, queries=queries)
    exact = verify(make_selector("go"), problem, ExactIndex().build(pool), 5, n_sample=20, seed=1)
    assert exact == {"queries": 20, "seed": 1, "pick_recall": 1.0, "shortlist": 256, "shortlist_recall": 1.0}
    rough = verify(make_selector("go"), problem, FaissIndex("ivf", nprobe=1).build(pool), 5, n_sample=20, seed=1)
    assert 0 < rough["pick_recall"] < 1 and 0 < rough["shortlist_recall"] < 1


def test_a_query_an_approximate_index_serves_too_few_is_searched_exactly(data):
    pool, queries = data

    class Blind:  # finds nothing for odd queries, the exact list for even ones
        def search(self, q, size, absolute=False):
            scores, ids = ExactIndex().build(pool).search(q, size, absolute=absolute)
            ids[1::2] = -1
            return scores, ids

    selector = make_selector("knn")
    served = select_per_query_with_index(selector, (pool, queries[:10]), Blind(), 5)
    assert [s.indices for s in served] == [s.indices for s in selector.select_per_query(Problem(pool, queries[:10]), 5)]


def test_the_shortlist_asked_of_the_index_may_exceed_the_selectors(data):
    """``shortlist`` above the selector's own: the index is asked for more, the best of them kept."""
    pool, queries = data
    asked = []
    exact = ExactIndex().build(pool)

    class Recording:
        def search(self, q, size, absolute=False):
            asked.append(size)
            return exact.search(q, size, absolute=absolute)

    selector = make_selector("mmr", shortlist=64)
    served = select_per_query_with_index(selector, (pool, queries), Recording(), 4, shortlist=300)
    assert asked == [300]
    assert [s.indices for s in served] == [s.indices for s in selector.select_per_query(Problem(pool, queries), 4)]
    assert all(s.trace[0]["feasible"] == 64 for s in served)


def test_index_choice_checks_a_saved_index_against_the_store(tmp_path, data):
    from fewshot.index import IndexChoice

    pool, _ = data
    FaissIndex("ivf", nlist=8).build(pool).save(tmp_path / "ix")
    IndexChoice(str(tmp_path / "ix"), {"nprobe": 3}).check(n=len(pool), d=16)
    index, meta = IndexChoice(str(tmp_path / "ix"), {"nprobe": 3}).open(pool)
    assert index.nprobe == 3 and meta["kind"] == "ivf" and meta["params"]["nprobe"] == 3 and index.folder is None
    with pytest.raises(InputError, match=r"built over \(1500, 16\) vectors, the pool is \(10, 16\)"):
        IndexChoice(str(tmp_path / "ix")).check(n=10, d=16)
    with pytest.raises(InputError, match="--nlist is set when an index is built"):
        IndexChoice(str(tmp_path / "ix"), {"nlist": 4}).check(n=len(pool))
    with pytest.raises(InputError, match="neither an index kind"):
        IndexChoice(str(tmp_path / "nothing")).check()
    built, meta = IndexChoice("hnsw", {"ef_search": 40}).open(pool, source="abc")
    assert built.source == "abc" and meta["params"]["ef_search"] == 40 and meta["build_s"] >= 0


def test_ivf_ranks_by_absolute_cosine_with_a_cheap_opposite_search(data):
    """The -q search first looks in an eighth of the lists; queries with rows of large negative
    cosine are searched in full, so flipped rows still enter the |cosine| shortlists."""
    pool, queries = data

    def counted(vectors):
        index = FaissIndex("ivf", nlist=16, nprobe=16, threads=1, encoding="flat").build(vectors)  # exact, all lists
        calls, search = [], index.index.search
        index.index.search = lambda q, size: calls.append((len(q), index.index.nprobe)) or search(q, size)
        return index, calls

    flipped = pool.copy()
    flipped[::2] *= -1  # half the pool points away from its cluster
    ivf, calls = counted(flipped)
    assert shortlist_recall(ivf, ExactIndex().build(flipped), queries, 50, absolute=True) == 1.0  # all lists: exact
    assert calls[:2] == [(len(queries), 16), (len(queries), 2)]
    assert calls[2][1] == 16 and 0 < calls[2][0] <= len(queries)  # the queries with large -cosines, in full
    common = pool.mean(axis=0) * 40  # every cosine positive, as with sentence embeddings
    positive = (pool + common) / np.linalg.norm(pool + common, axis=1, keepdims=True)
    near = (queries + common) / np.linalg.norm(queries + common, axis=1, keepdims=True)
    ivf, calls = counted(positive)
    ivf.search(near, 50, absolute=True)
    assert calls == [(len(queries), 16), (len(queries), 2)]  # no full -q search
