"""The Ray engine against the local one, on one local Ray cluster shared by the module (its start
costs seconds). Marked ``ray``: deselect with ``-m "not ray"``."""

import sys

import numpy as np
import pytest

from fewshot.errors import InputError
from fewshot.index import build_index, select_per_query_with_index
from fewshot.selection import Problem, make_selector
from fewshot.store import embed_to_store, open_store

ray = pytest.importorskip("ray")
pytest.importorskip("faiss")
pytestmark = pytest.mark.ray

from fewshot.distributed import embed_to_store_ray, ray_session, select_per_query_ray  # noqa: E402


class Table:
    """Embedder double: text "i" -> row i of a fixed table (picklable, so it travels to actors)."""

    model_id = "table"

    def __init__(self, table, fail_after=None):
        self.table, self.fail_after, self.calls = table, fail_after, 0

    def embed(self, texts):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("killed")
        self.calls += 1
        return self.table[[int(t) for t in texts]]


@pytest.fixture(scope="module")
def cluster():
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actors cannot import tests/
    with ray_session(num_cpus=2):
        yield


def clustered(seed, n, d=32, centres=20):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    x = (c[rng.integers(centres, size=n)] + 0.7 * rng.normal(size=(n, d))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ray_embedding_resumes_and_writes_the_local_store(cluster, tmp_path):
    table = clustered(0, 50, d=8)
    texts = [str(i) for i in range(50)]
    local = embed_to_store(texts, tmp_path / "local", Table(table), chunk=8, progress=False)
    with pytest.raises(RuntimeError):  # a local run killed after two chunks, finished by Ray
        embed_to_store(texts, tmp_path / "ray", Table(table, fail_after=2), chunk=8, progress=False)
    distributed = embed_to_store_ray(texts, tmp_path / "ray", Table(table), chunk=8, progress=False)
    assert distributed.computed == 50 - 16
    assert np.array_equal(distributed.vectors, local.vectors) and distributed.ids.tolist() == local.ids.tolist()
    assert distributed.manifest == local.manifest


def test_ray_embedding_names_long_texts_in_one_warning_on_the_driver(cluster, tmp_path, caplog):
    """As the local engine: one warning for the run, counting the long texts of every chunk and actor."""
    import ray.cloudpickle

    import tests.test_embedding as doubles

    ray.cloudpickle.register_pickle_by_value(doubles)
    texts = ["short", doubles.SEVEN_WORDS, "short too", "six words is all it reads", doubles.SEVEN_WORDS + " eight",
             "fine"]
    with caplog.at_level("WARNING", logger="fewshot.embedding"):
        store = embed_to_store_ray(texts, tmp_path / "s", doubles.tiny_embedder(), chunk=2, progress=False)
    assert store.computed == 6
    [record] = [r for r in caplog.records if "longer than" in r.getMessage()]
    assert "2 of the 6 texts embedded are longer than the 8 tokens" in record.getMessage()
    assert "position 1" in record.getMessage() and "'one two three" in record.getMessage()


def test_ray_selection_gives_the_local_picks(cluster, tmp_path):
    pool, queries = clustered(1, 2000), clustered(2, 150)
    store = embed_to_store([str(i) for i in range(len(pool))], tmp_path / "s", Table(pool), chunk=512,
                           progress=False)
    # a coarse IVF (2 of 32 lists searched): shortlists miss much, so a query's picks depend on the
    # other queries of its batch (the union of their shortlists); the ranges must keep the batches
    build_index("ivf", store, nprobe=2).save(tmp_path / "ivf")
    problem = Problem(pool=store.vectors, queries=queries)
    index = build_index("ivf", store, nprobe=2)
    for method in ("knn", "go"):
        selector = make_selector(method)
        local = select_per_query_with_index(selector, problem, index, 8)
        remote = select_per_query_ray(selector, tmp_path / "s", tmp_path / "ivf", queries, 8, rows_per_task=40)
        assert [s.query for s in remote] == list(range(len(queries)))
        assert [s.indices for s in remote] == [s.indices for s in local], method
        assert [s.scores for s in remote] == [s.scores for s in local], method
    exact = make_selector("mmr").select_per_query(problem, 5)
    remote = select_per_query_ray({"method": "mmr"}, tmp_path / "s", None, queries, 5, rows_per_task=100)
    assert [s.indices for s in remote] == [s.indices for s in exact]


def test_ray_selection_refuses_a_wrong_index_before_starting(tmp_path):
    pool = clustered(3, 300, d=8)
    store = embed_to_store([str(i) for i in range(300)], tmp_path / "s", Table(pool), progress=False)
    other = embed_to_store([str(i) for i in range(1, 300)], tmp_path / "o", Table(pool), progress=False)
    build_index("flat", other).save(tmp_path / "ix")
    with pytest.raises(InputError, match="built over"):
        select_per_query_ray(make_selector("knn"), store.folder, tmp_path / "ix", pool[:4], 3)
    assert open_store(store.folder).n == 300
