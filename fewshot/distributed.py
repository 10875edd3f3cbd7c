"""``--engine ray``: embedding and per-query selection over a Ray cluster (the extra ``fewshot[ray]``).

The local engine stays the default and the tested main path; this module runs the same code on
Ray actors and gives the same results:

- :func:`embed_to_store_ray`: Ray Data ``map_batches`` over an actor pool, one chunk per call, each
  actor loading the embedder once. The driver commits each chunk as it comes back, in the store
  format of :mod:`fewshot.store` (resumable: committed chunks are not sent again).
- :func:`select_per_query_ray`: query ranges over an actor pool; each actor memory-maps the store
  and loads the index once, then runs :func:`fewshot.index.select_per_query_with_index`. A query's
  picks depend only on its own shortlist, so they are the local path's, for any index and any ranges.

What is given up to run distributed:

- the store and the saved index must be readable at the same path from every node (a shared
  file system); only chunk indices and query ranges travel, never the pool;
- the texts of the chunks still to embed are held by the driver and sent through Ray's object store;
- query-independent methods (random, k-means, vote-k) and shared sets run on the driver, not on
  the cluster; BM25 and SAL have no vector shortlist and are refused (as on the local index path);
- a token budget or label balance needs the pool's token costs or labels passed in (the store holds
  vectors and ids only); they are shipped to every actor;
- Ray's own start (about 4-8 s here) and per-dataset start (about 3-5 s) are paid on every call: on
  one machine the Ray path is slower than the local one; it pays off across machines.

On a machine with few CPUs, actors take ``num_cpus_per_actor=0.5`` by default: actors holding
every CPU leave none for Ray Data's read tasks, and the dataset hangs (ray-project/ray#44687).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .embedding import Embedder, TruncationTally
from .errors import InputError
from .index import ExactIndex, load_index, select_per_query_with_index
from .store import (DEFAULT_CHUNK, Store, StoreWriter, chunked, digest, fingerprint_of, open_store, prepare,
                    progress_bar, reuse_finished)


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install fewshot[ray]") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Connect to the cluster at ``address`` (None: start a local one with ``num_cpus``, default
    every CPU) unless Ray is already initialised in this process; shut down only what was started."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address or "local", num_cpus=None if address else (num_cpus or os.cpu_count()),
                 include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _pool(ray: Any, num_actors: int) -> Any:
    return ray.data.ActorPoolStrategy(size=num_actors)


# -- embedding -------------------------------------------------------------------------------------

class _EmbedActor:
    """Loads the embedder once; embeds one chunk per call and returns its prepared vectors, and its
    texts read only in part (a :class:`~fewshot.embedding.TruncationTally`, pickled), which the
    driver names in one warning for the run."""

    def __init__(self, make_embedder: Callable[[], Embedder], dtype: str, folder: str, chunk: int) -> None:
        self.embedder, self.dtype, self.folder, self.chunk = make_embedder(), dtype, folder, chunk

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out, tallies = [], []
        for index, texts in zip(batch["chunk"], batch["texts"]):
            texts = [str(t) for t in texts]
            tally = TruncationTally(self.embedder)
            vectors = prepare(tally.embed(texts, offset=int(index) * self.chunk), len(texts), self.dtype,
                              f"{self.folder} (chunk {index})")
            out.append(pickle.dumps(vectors, protocol=5))
            tallies.append(pickle.dumps(tally.counts(), protocol=5))
        return {"chunk": batch["chunk"], "vectors": np.array(out, dtype=object),
                "tally": np.array(tallies, dtype=object)}


def _factory(embedder: Embedder | Callable[[], Embedder]) -> Callable[[], Embedder]:
    if hasattr(embedder, "embed"):
        return lambda: embedder
    return embedder  # type: ignore[return-value]


def embed_to_store_ray(items: Iterable[Any], folder: str | Path, embedder: Embedder | Callable[[], Embedder], *,
                       chunk: int = DEFAULT_CHUNK, dtype: str = "float32", progress: bool | None = None,
                       address: str | None = None, num_actors: int = 2, num_cpus_per_actor: float = 0.5,
                       num_cpus: int | None = None) -> Store:
    """:func:`fewshot.store.embed_to_store` with the chunks embedded on a Ray actor pool.

    ``embedder``: an embedder (sent to each actor; it should load its model lazily, as
    :class:`~fewshot.embedding.SentenceTransformerEmbedder` does) or a function that makes one.
    The result (files, manifest, checksum) is the same as the local engine's for the same inputs.
    """
    make = _factory(embedder)
    probe = make()  # on the driver only for its model id: the model itself loads in the actors
    writer = StoreWriter(folder, model_id=probe.model_id, fingerprint=fingerprint_of(probe), dtype=dtype, chunk=chunk)
    if writer.complete:
        return reuse_finished(writer, items)
    hashes, pending, ids_of = [], [], {}
    for index, ids, texts, texts_hash in chunked(items, chunk):
        hashes.append(texts_hash)
        if not writer.committed(index, texts_hash):
            pending.append({"chunk": index, "texts": texts})
            ids_of[index] = (ids, texts_hash)
    if not hashes:
        raise InputError("there are no texts to embed", path=str(writer.folder))
    computed = 0
    if pending:
        bar, task = progress_bar(progress, sum(len(p["texts"]) for p in pending), "embedding (ray)")
        tally = TruncationTally(None)  # long texts: one warning for the run, not one per chunk or actor
        with ray_session(address, num_cpus) as ray, bar:
            dataset = ray.data.from_items(pending, override_num_blocks=len(pending)).map_batches(
                _EmbedActor, fn_constructor_kwargs={"make_embedder": make, "dtype": dtype, "folder": str(folder),
                                                    "chunk": chunk},
                batch_size=1, compute=_pool(ray, num_actors), num_cpus=num_cpus_per_actor)
            try:
                for row in dataset.iter_rows():  # committed as they arrive: a killed driver keeps them
                    index = int(row["chunk"])
                    ids, texts_hash = ids_of[index]
                    writer.commit(index, texts_hash, ids, pickle.loads(row["vectors"]))
                    tally.add(*pickle.loads(row["tally"]))
                    computed += len(ids)
                    bar.advance(task, len(ids))
            finally:
                tally.warn()  # a stopped run still says what it embedded in part
    writer.finish(len(hashes), digest(*(h.encode() for h in hashes)))
    store = open_store(writer.folder)
    store.computed = computed
    return store


# -- per-query selection ---------------------------------------------------------------------------

def _make_selector(selector: Any) -> Any:
    from .selection import make_selector

    if isinstance(selector, Mapping):
        params = dict(selector)
        return make_selector(params.pop("method"), **params)
    return selector() if callable(selector) and not hasattr(selector, "select_per_query") else selector


class _SelectActor:
    """Memory-maps the store and loads the index once; selects for one query range per call."""

    def __init__(self, store_folder: str, index_folder: str | None, selector: Any, k: int, shortlist: int,
                 queries: str | None, problem_fields: dict[str, Any], threads: int) -> None:
        from .selection import Problem

        store = open_store(store_folder)
        self.pool = store.vectors
        self.index = ExactIndex().build(store.vectors) if index_folder is None else load_index(index_folder, store)
        if hasattr(self.index, "threads"):
            self.index.threads = threads  # faiss in an actor: its share of the CPUs, not all of them
        self.queries = None if queries is None else open_store(queries).vectors
        self.selector, self.k, self.shortlist = _make_selector(selector), k, shortlist
        self.problem = Problem(pool=self.pool, queries=self.pool[:0], **problem_fields)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for start, stop, vectors in zip(batch["start"], batch["stop"], batch["vectors"]):
            queries = self.queries[start:stop] if self.queries is not None else pickle.loads(vectors)
            problem = replace(self.problem, queries=np.asarray(queries))
            picked = select_per_query_with_index(self.selector, problem, self.index, self.k, self.shortlist)
            out.append(pickle.dumps([replace(s, query=int(start) + s.query) for s in picked], protocol=5))
        return {"start": batch["start"], "selections": np.array(out, dtype=object)}


def select_per_query_ray(selector: Any, store_folder: str | Path, index_folder: str | Path | None,
                         queries: np.ndarray | str | Path, k: int, *, shortlist: int = 256,
                         rows_per_task: int | None = None, address: str | None = None, num_actors: int = 2,
                         num_cpus_per_actor: float = 0.5, num_cpus: int | None = None,
                         labels: Sequence[str | None] | None = None, token_costs: np.ndarray | None = None,
                         max_tokens: int | None = None) -> list:
    """Per-query selection on a Ray actor pool: the same picks as
    ``select_per_query_with_index(selector, Problem(store.vectors, queries, ...), index, k,
    shortlist)`` on one machine.

    ``selector``: a selector, a function making one, or ``{"method": name, **params}``.
    ``index_folder``: a saved index (:func:`fewshot.index.load_index`), None for exact search.
    ``queries``: an ``(m, d)`` array, or the folder of a store of query vectors (then only query
    ranges travel). ``rows_per_task``: queries per actor call (default: about four calls per
    actor, at most 4,096 queries each). Returns one :class:`~fewshot.selection.Selection` per query, in query order.
    """
    from .selection import Problem

    chosen = _make_selector(selector)
    store = open_store(store_folder)
    query_store = None if isinstance(queries, np.ndarray) else open_store(queries)
    vectors = queries if query_store is None else query_store.vectors
    if vectors.ndim != 2 or vectors.shape[1] != store.d:
        raise InputError(f"queries of shape {vectors.shape} do not match the store's d={store.d}", path=str(store_folder))
    if index_folder is not None:
        load_index(index_folder, store)  # refuse a wrong index here, not in every actor
    fields = {"labels": labels, "token_costs": token_costs, "max_tokens": max_tokens}
    if chosen.query_independent:  # one set for every query: computed once, on the driver
        return chosen.select_per_query(Problem(pool=store.vectors, queries=np.asarray(vectors), **fields), k)
    step = max(1, rows_per_task or min(4096, math.ceil(len(vectors) / (4 * num_actors))))
    ranges = [{"start": s, "stop": min(s + step, len(vectors)),
               "vectors": b"" if query_store is not None else pickle.dumps(np.asarray(vectors[s:s + step]))}
              for s in range(0, len(vectors), step)]
    constructor = {"store_folder": str(store_folder), "index_folder": None if index_folder is None else str(index_folder),
                   "selector": chosen, "k": k, "shortlist": shortlist,
                   "queries": None if query_store is None else str(queries), "problem_fields": fields,
                   "threads": max(1, int(num_cpus_per_actor))}
    out: dict[int, list] = {}
    with ray_session(address, num_cpus) as ray:
        dataset = ray.data.from_items(ranges, override_num_blocks=len(ranges)).map_batches(
            _SelectActor, fn_constructor_kwargs=constructor, batch_size=1, compute=_pool(ray, num_actors),
            num_cpus=num_cpus_per_actor)
        for row in dataset.iter_rows():
            out[int(row["start"])] = pickle.loads(row["selections"])
    return [selection for start in sorted(out) for selection in out[start]]


@dataclass
class RayEngine:
    """``--engine ray`` for :func:`fewshot.pipeline.run_selection`: ``engine(selector, problem, k,
    index)`` runs :func:`select_per_query_ray` on the store at ``store`` (the problem's pool), with
    the queries of ``query_store`` (only ranges travel) or the problem's own. The index: None or
    exact, an exact search in each actor; a saved one, loaded by each actor from its folder; one
    built in this process, saved to a temporary folder for the actors first (removed after)."""

    store: str | Path
    query_store: str | Path | None = None
    address: str | None = None
    num_actors: int = 2
    num_cpus_per_actor: float = 0.5
    shortlist: int = 256

    def check(self) -> None:
        """Ray importable and a sensible pool, before any work."""
        _ray()
        if self.num_actors < 1:
            raise InputError(f"--actors {self.num_actors} must be at least 1", field="--actors")
        if not self.num_cpus_per_actor > 0:
            raise InputError(f"--cpus-per-actor {self.num_cpus_per_actor} must be positive", field="--cpus-per-actor")

    def __call__(self, selector: Any, problem: Any, k: int, index: Any = None) -> list:
        with _index_folder(index) as folder:
            queries = self.query_store if self.query_store is not None else np.asarray(problem.queries)
            return select_per_query_ray(selector, self.store, folder, queries, k, shortlist=self.shortlist,
                                        address=self.address, num_actors=self.num_actors,
                                        num_cpus_per_actor=self.num_cpus_per_actor, labels=problem.labels,
                                        token_costs=problem.token_costs, max_tokens=problem.max_tokens)


@contextlib.contextmanager
def _index_folder(index: Any) -> Iterator[Path | None]:
    """Where the actors load ``index`` from (None: an exact search of their own)."""
    if index is None or isinstance(index, ExactIndex):
        yield None
    elif getattr(index, "folder", None) is not None:
        yield Path(index.folder)
    else:
        folder = Path(tempfile.mkdtemp(prefix="fewshot-index-"))
        try:
            index.save(folder)
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
