"""Candidate indexes: each query's most similar pool rows, exact (numpy) or approximate (faiss),
behind one small interface, and per-query selection on the shortlists they give.

Every index searches unit vectors by inner product (= cosine) and returns, per query, ``size``
``(scores, ids)`` sorted by score, best first, ties to the lower id; ``absolute=True`` ranks by
``|cosine|`` (what GO shortlists by). Where an approximate index finds fewer than ``size`` rows it
pads with id -1, score -inf.

- :class:`ExactIndex`: numpy, in blocks of query chunk x pool chunk with a running top-k merge, so
  memory is bounded for any pool; the same ids as :func:`fewshot.similarity.top_k` on the full product.
- :class:`FaissIndex`: faiss ``flat`` (exact, BLAS), ``ivf`` (k-means lists, ``nprobe`` of them
  searched) or ``hnsw`` (a graph). faiss is the optional extra ``fewshot[faiss]``.

:func:`select_per_query_with_index` runs a selector's per-query selection on an index's shortlists;
:func:`verify` measures what that costs in exactness on sampled queries.

>>> rng = np.random.default_rng(0); pool = rng.normal(size=(500, 8)).astype(np.float32)
>>> pool /= np.linalg.norm(pool, axis=1, keepdims=True)
>>> exact = ExactIndex(pool_chunk=64).build(pool)
>>> scores, ids = exact.search(pool[:3], 4)
>>> ids[:, 0].tolist(), bool((np.diff(scores, axis=1) <= 0).all())
([0, 1, 2], True)
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import InputError
from .similarity import top_k

FORMAT_VERSION = 1
INDEX_JSON, FAISS_FILE = "index.json", "index.faiss"
KINDS = ("exact", "flat", "ivf", "hnsw")
ENCODINGS = {"flat": "Flat", "fp16": "SQfp16", "sq8": "SQ8"}  # how faiss stores the vectors


@runtime_checkable
class CandidateIndex(Protocol):
    """Build from (n, d) unit vectors, search, save to and load from a folder."""

    kind: str
    source: str | None  # the checksum of the store it was built from, if any

    def build(self, vectors: np.ndarray) -> "CandidateIndex": ...

    def search(self, queries: np.ndarray, size: int, *, absolute: bool = False) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, folder: str | Path) -> None: ...


def _float(array: np.ndarray) -> np.ndarray:
    """float32 or float64 rows to compute with (float16 is widened, never narrowed further)."""
    return np.asarray(array, dtype=np.result_type(array.dtype, np.float32))


def merge_top(scores: np.ndarray, ids: np.ndarray, more_scores: np.ndarray, more_ids: np.ndarray,
              size: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``size`` of two ranked lists per row. ``ids`` must all be lower than ``more_ids``
    and each list sorted best first, ties to the lower id: then the lower column is the lower id
    among equal scores, and :func:`top_k` on the joined row breaks ties exactly as on the full row.

    >>> merge_top(np.array([[3., 1.]]), np.array([[0, 1]]), np.array([[3., 2.]]), np.array([[5, 6]]), 3)[1].tolist()
    [[0, 5, 6]]
    """
    joined_scores = np.concatenate([scores, more_scores], axis=1)
    joined_ids = np.concatenate([ids, more_ids], axis=1)
    order = top_k(joined_scores, size)
    return np.take_along_axis(joined_scores, order, axis=1), np.take_along_axis(joined_ids, order, axis=1)


class ExactIndex:
    """Exact search in numpy. Memory: one ``query_chunk x pool_chunk`` block of scores (and its
    argpartition), whatever n and m; the pool (a memory map is fine) is read once per query chunk.
    ``pool_chunk=None`` sizes it to ``block_elements`` scores."""

    kind = "exact"

    def __init__(self, query_chunk: int = 256, pool_chunk: int | None = None, block_elements: int = 1 << 23) -> None:
        self.query_chunk, self.pool_chunk, self.block_elements = query_chunk, pool_chunk, block_elements
        self.vectors: np.ndarray | None = None
        self.source: str | None = None

    def build(self, vectors: np.ndarray) -> "ExactIndex":
        self.vectors = vectors  # kept as given: a memory map stays one
        return self

    def search(self, queries: np.ndarray, size: int, *, absolute: bool = False) -> tuple[np.ndarray, np.ndarray]:
        pool = _built(self.vectors)
        n, size = len(pool), min(size, len(pool))
        pool_chunk = self.pool_chunk or max(size, self.block_elements // self.query_chunk)
        scores = np.empty((len(queries), size), dtype=np.result_type(_float(queries[:0]), _float(pool[:0])))
        ids = np.empty((len(queries), size), dtype=np.int64)
        for q0 in range(0, len(queries), self.query_chunk):
            block_q = _float(queries[q0:q0 + self.query_chunk])
            best_s, best_i = None, None
            for p0 in range(0, n, pool_chunk):
                block = block_q @ _float(pool[p0:p0 + pool_chunk]).T
                if absolute:
                    np.abs(block, out=block)
                cols = top_k(block, size)
                new_s, new_i = np.take_along_axis(block, cols, axis=1), cols + p0
                best_s, best_i = (new_s, new_i) if best_s is None else merge_top(best_s, best_i, new_s, new_i, size)
            scores[q0:q0 + len(block_q)], ids[q0:q0 + len(block_q)] = best_s, best_i
        return scores, ids

    def params(self) -> dict[str, Any]:
        return {"query_chunk": self.query_chunk, "pool_chunk": self.pool_chunk, "block_elements": self.block_elements}

    def save(self, folder: str | Path) -> None:
        """Only the settings: the vectors are the store's, given again to :func:`load_index`."""
        _write_meta(folder, self, _built(self.vectors).shape)

    @classmethod
    def load(cls, folder: str | Path, vectors: np.ndarray | None = None) -> "ExactIndex":
        meta = _read_meta(folder)
        if vectors is None:
            raise InputError("an exact index holds no vectors: give the store it searches", path=str(folder))
        index = cls(**meta["params"]).build(vectors)
        index.source = meta.get("source")
        return index


def _built(vectors: np.ndarray | None) -> np.ndarray:
    if vectors is None:
        raise InputError("the index is not built yet: call build(vectors) or load it")
    return vectors


def _faiss():
    try:
        import faiss
    except ImportError:
        raise InputError("the faiss index needs faiss: pip install fewshot[faiss]") from None
    return faiss


def default_nlist(n: int) -> int:
    """IVF lists: the power of two nearest sqrt(n), at least 39 training points per list.

    >>> default_nlist(1_000_000), default_nlist(100_000), default_nlist(2_000)
    (1024, 256, 32)
    """
    nlist = 2 ** round(math.log2(math.sqrt(max(n, 1))))
    return max(1, min(nlist, n // 39))


def default_nprobe(nlist: int, size: int) -> int:
    """Lists searched: 48 per 256 shortlisted (the top 256 spread over a few dozen lists whatever
    nlist is), and at least a sixteenth of them. Measured on the benchmark's AG News-grown pool
    (benchmarks/scale.py) for a shortlist of 256: recall 0.97 at n = 20k (nlist 128) and 0.98 at
    100k (nlist 256); 64 of 1,024 lists gave 0.967 at 1M (docs/scale.md).

    >>> default_nprobe(1024, 256), default_nprobe(256, 256), default_nprobe(32, 256)
    (64, 48, 32)
    """
    return int(min(nlist, max(1, nlist // 16, math.ceil(48 * size / 256))))


def default_ef_search(size: int) -> int:
    """HNSW's search breadth: twice the shortlist (efSearch 512 gave recall@256 0.97 at 200k)."""
    return max(64, 2 * size)


class FaissIndex:
    """A faiss index over unit vectors, inner-product metric.

    ``kind``: ``flat`` (exact), ``ivf`` (``nlist`` lists, default :func:`default_nlist`; ``nprobe``
    searched, default :func:`default_nprobe`), ``hnsw`` (``M`` links, ``ef_construction``,
    ``ef_search`` default :func:`default_ef_search`). ``encoding``: ``flat`` (float32), ``fp16``
    or ``sq8`` (scalar-quantised: 2x / 4x smaller, slightly lower recall); default ``sq8`` for IVF
    (its search reads a quarter of the bytes: 2.7x faster at 1M, shortlist recall 0.982 against
    0.988, benchmarks/scale.py; the picks are ranked on the exact vectors either way), ``flat``
    for the others. ``threads``: faiss's
    OpenMP threads (default: every CPU); IVF is trained on a ``seed``-ed sample with a seeded
    k-means, and with ``reproducible`` an HNSW graph is built on one thread (parallel insertion
    order varies), so the same vectors and settings give the same index.
    """

    def __init__(self, kind: str = "ivf", *, nlist: int | None = None, nprobe: int | None = None, M: int = 32,
                 ef_construction: int = 80, ef_search: int | None = None, encoding: str | None = None,
                 threads: int | None = None, seed: int = 0, train_points_per_list: int = 64,
                 add_chunk: int = 1 << 16, reproducible: bool = True) -> None:
        if kind not in ("flat", "ivf", "hnsw"):
            raise InputError(f"faiss index kind {kind!r} must be flat, ivf or hnsw", field="--index")
        encoding = encoding or ("sq8" if kind == "ivf" else "flat")
        if encoding not in ENCODINGS:
            raise InputError(f"encoding {encoding!r} must be one of {', '.join(ENCODINGS)}", field="--encoding")
        self.kind, self.nlist, self.nprobe, self.M = kind, nlist, nprobe, M
        self.ef_construction, self.ef_search, self.encoding = ef_construction, ef_search, encoding
        self.threads, self.seed, self.train_points_per_list = threads, seed, train_points_per_list
        self.add_chunk, self.reproducible = add_chunk, reproducible
        self.index = None
        self.source: str | None = None

    def params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self.nprobe, "M": self.M, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search, "encoding": self.encoding, "threads": self.threads, "seed": self.seed,
                "train_points_per_list": self.train_points_per_list, "add_chunk": self.add_chunk,
                "reproducible": self.reproducible}

    def spec(self, n: int) -> str:
        """The faiss ``index_factory`` string for ``n`` vectors."""
        storage = ENCODINGS[self.encoding]
        if self.kind == "flat":
            return storage
        if self.kind == "ivf":
            return f"IVF{self.nlist or default_nlist(n)},{storage}"
        return f"HNSW{self.M}" + ("" if self.encoding == "flat" else f",{storage}")

    def _threads(self, faiss) -> None:
        faiss.omp_set_num_threads(self.threads or os.cpu_count() or 1)

    def build(self, vectors: np.ndarray) -> "FaissIndex":
        faiss = _faiss()
        self._threads(faiss)
        n, d = vectors.shape
        index = faiss.index_factory(d, self.spec(n), faiss.METRIC_INNER_PRODUCT)
        if self.kind == "ivf":
            index.cp.seed = self.seed
            self.nlist = index.nlist
        if self.kind == "hnsw":
            index.hnsw.efConstruction = self.ef_construction
        if not index.is_trained:
            lists = getattr(index, "nlist", 1)
            count = min(n, max(self.train_points_per_list * lists, 1000))
            rows = np.sort(np.random.default_rng(self.seed).choice(n, size=count, replace=False))
            index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
        if self.kind == "hnsw" and self.reproducible:
            faiss.omp_set_num_threads(1)
        for start in range(0, n, self.add_chunk):  # one chunk of float32 at a time, also from float16
            index.add(np.ascontiguousarray(vectors[start:start + self.add_chunk], dtype=np.float32))
        self._threads(faiss)
        self.index = index
        return self

    def search(self, queries: np.ndarray, size: int, *, absolute: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if self.index is None:
            raise InputError("the index is not built yet: call build(vectors) or load it")
        faiss = _faiss()
        self._threads(faiss)
        n = self.index.ntotal
        size = min(size, n)
        if self.kind == "ivf":
            self.index.nprobe = self.nprobe or default_nprobe(self.index.nlist, size)
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = self.ef_search or default_ef_search(size)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        scores, ids = self._ranked(*self.index.search(q, size))
        if not absolute:
            return scores, ids
        neg_scores, neg_ids = self._opposite(q, size, scores[:, -1])
        return dedupe_top(np.concatenate([scores, neg_scores], 1), np.concatenate([ids, neg_ids], 1), size)

    def _opposite(self, q: np.ndarray, size: int, threshold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The search for ``-q`` (rows of large negative cosine, for the ranking by |cosine|).

        IVF first searches an eighth of its ``nprobe`` lists; only the queries for which that finds
        a row whose -cosine reaches their ``size``-th cosine (``threshold``) are searched in full.
        Sentence embeddings have few large negative cosines, so the second pass is rare and the
        |cosine| ranking costs little more than the plain one; a row that the cheap pass missed
        although it would enter is lost, as any row an approximate search misses."""
        nprobe = self.index.nprobe if self.kind == "ivf" else 0
        if nprobe < 8:
            return self._ranked(*self.index.search(-q, size))
        self.index.nprobe = nprobe // 8
        try:
            neg_scores, neg_ids = self._ranked(*self.index.search(-q, size))
        finally:
            self.index.nprobe = nprobe
        redo = np.flatnonzero(neg_scores[:, 0] >= threshold)
        if len(redo):
            neg_scores[redo], neg_ids[redo] = self._ranked(*self.index.search(-q[redo], size))
        return neg_scores, neg_ids

    @staticmethod
    def _ranked(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Missing results (id -1) scored -inf; rows sorted by score, ties to the lower id."""
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        order = np.lexsort((ids, -scores), axis=-1)
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)

    def save(self, folder: str | Path) -> None:
        if self.index is None:
            raise InputError("the index is not built yet: call build(vectors) first")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss = _faiss()
        tmp = folder / f".{FAISS_FILE}.tmp-{os.getpid()}"
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, folder / FAISS_FILE)
        _write_meta(folder, self, (self.index.ntotal, self.index.d))

    @classmethod
    def load(cls, folder: str | Path, vectors: np.ndarray | None = None) -> "FaissIndex":
        meta = _read_meta(folder)
        faiss = _faiss()
        index = cls(meta["kind"], **meta["params"])
        try:
            index.index = faiss.read_index(str(Path(folder) / FAISS_FILE))
        except RuntimeError as err:
            raise InputError(f"unreadable {FAISS_FILE} ({str(err).splitlines()[0]})", path=str(folder)) from None
        index.source = meta.get("source")
        return index


def dedupe_top(scores: np.ndarray, ids: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of candidates that may repeat an id: each id once (its best score), the best ``size``,
    ties to the lower id, padded with -1 / -inf.

    >>> dedupe_top(np.array([[0.9, 0.5, 0.7, 0.9]]), np.array([[4, 2, 2, 1]]), 3)[1].tolist()
    [[1, 4, 2]]
    """
    by_id = np.lexsort((-scores, ids), axis=-1)  # per row: by id, best score first within an id
    ids, scores = np.take_along_axis(ids, by_id, 1), np.take_along_axis(scores, by_id, 1)
    repeat = np.zeros(ids.shape, dtype=bool)
    repeat[:, 1:] = ids[:, 1:] == ids[:, :-1]
    scores, ids = np.where(repeat | (ids < 0), -np.inf, scores), np.where(repeat, -1, ids)
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -scores), axis=-1)[:, :size]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def make_index(kind: str, **params: Any) -> CandidateIndex:
    """``exact`` (:class:`ExactIndex`) or ``flat`` / ``ivf`` / ``hnsw`` (:class:`FaissIndex`)."""
    if kind not in KINDS:
        raise InputError(f"unknown index {kind!r} (known: {', '.join(KINDS)})", field="--index")
    try:
        return ExactIndex(**params) if kind == "exact" else FaissIndex(kind, **params)
    except TypeError as err:
        raise InputError(f"bad parameter for the {kind} index: {err}", field="--index") from None


def build_index(kind: str, store: Any, **params: Any) -> CandidateIndex:
    """An index over a :class:`fewshot.store.Store`'s vectors that records the store's checksum
    (and, as ``build_seconds``, how long the build took)."""
    start = time.perf_counter()
    index = make_index(kind, **params).build(store.vectors)
    index.build_seconds = round(time.perf_counter() - start, 3)
    index.source = store.checksum
    return index


def load_index(folder: str | Path, store_or_vectors: Any = None) -> CandidateIndex:
    """Load a saved index. Given a store, refuse an index built from another one; given vectors
    (or a store), refuse one of another shape."""
    meta = _read_meta(folder)
    vectors = getattr(store_or_vectors, "vectors", store_or_vectors)
    if vectors is not None and tuple(vectors.shape) != (meta["n"], meta["d"]):
        raise InputError(f"the index was built over ({meta['n']}, {meta['d']}) vectors, these are {tuple(vectors.shape)}",
                         path=str(folder))
    checksum = getattr(store_or_vectors, "checksum", None)
    if checksum is not None and meta.get("source") not in (None, checksum):
        raise InputError("the index was built from another store (its checksum differs): rebuild it", path=str(folder))
    cls = ExactIndex if meta["kind"] == "exact" else FaissIndex
    index = cls.load(folder, vectors)
    index.folder, index.build_seconds = Path(folder), meta.get("build_seconds")
    return index


def _write_meta(folder: str | Path, index: Any, shape: tuple[int, int]) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "kind": index.kind, "params": index.params(),
            "n": int(shape[0]), "d": int(shape[1]), "source": index.source,
            "build_seconds": getattr(index, "build_seconds", None)}
    tmp = folder / f".{INDEX_JSON}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, folder / INDEX_JSON)


def _read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / INDEX_JSON
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        ok = meta.get("format_version") == FORMAT_VERSION and meta.get("kind") in KINDS
    except (OSError, ValueError, AttributeError) as err:
        raise InputError(f"not a saved index ({err})", path=str(folder)) from None
    if not ok:
        raise InputError(f"{INDEX_JSON} has an unknown format or kind", path=str(folder))
    return meta


def shortlist_recall(index: CandidateIndex, exact: CandidateIndex, queries: np.ndarray, size: int, *,
                     absolute: bool = False) -> float:
    """Mean share of each query's exact top-``size`` that ``index`` returns."""
    _, got = index.search(queries, size, absolute=absolute)
    _, want = exact.search(queries, size, absolute=absolute)
    return overlap(got, want)


def overlap(got: np.ndarray, want: np.ndarray) -> float:
    """Mean over rows of |got ∩ want| / |want| (ids -1 ignored)."""
    shares = [len(np.intersect1d(g[g >= 0], w[w >= 0])) / max(1, np.count_nonzero(w >= 0))
              for g, w in zip(got, want)]
    return float(np.mean(shares)) if shares else 1.0


# -- what --index names ----------------------------------------------------------------------------

# Which settings each kind takes (as the CLI spells them): the rest are refused, not ignored.
SETTINGS = {"exact": (), "flat": ("encoding",), "ivf": ("nlist", "nprobe", "seed", "encoding"),
            "hnsw": ("ef_search", "encoding")}
SEARCH_SETTINGS = ("nprobe", "ef_search")  # may be changed on a saved index; the others are built in


@dataclass
class IndexChoice:
    """What ``--index`` names: a kind to build here (``exact``, ``flat``, ``ivf``, ``hnsw``) or the
    folder of a saved index (``fewshot index build``), with the settings given beside it.
    :meth:`check` refuses a bad choice before any work; :meth:`open` builds or loads the index.

    >>> IndexChoice("ivf", {"nlist": 64}).check(n=10_000, d=8)
    >>> IndexChoice("hnsw", {"nlist": 64}).check(n=10_000, d=8)
    Traceback (most recent call last):
    ...
    fewshot.errors.InputError: field '--nlist': --nlist applies to an ivf index, not hnsw
    """

    spec: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.settings = {key: value for key, value in self.settings.items() if value is not None}

    @property
    def kind(self) -> str | None:
        """The kind to build, None for a saved index's folder."""
        return self.spec if self.spec in KINDS else None

    @property
    def folder(self) -> Path | None:
        return None if self.kind else Path(self.spec)

    def check(self, n: int | None = None, d: int | None = None, source: str | None = None) -> None:
        """Refuse, before any work, an unknown kind, a missing or unreadable saved index, one of
        another shape (``n`` x ``d``, where known) or built from another store (``source``: its
        checksum), and settings the kind does not take."""
        if self.kind is None:
            folder = Path(self.spec)
            if not folder.is_dir():
                raise InputError(f"neither an index kind ({', '.join(KINDS)}) nor the folder of a saved index",
                                 path=str(folder), field="--index")
            meta = _read_meta(folder)
            kind = meta["kind"]
            if (n is not None and meta["n"] != n) or (d is not None and meta["d"] != d):
                raise InputError(f"the index was built over ({meta['n']}, {meta['d']}) vectors, the pool is "
                                 f"({n}, {d if d is not None else 'd'})", path=str(folder), field="--index")
            if source is not None and meta.get("source") not in (None, source):
                raise InputError("the index was built from another store (its checksum differs): rebuild it",
                                 path=str(folder), field="--index")
            built_in = [key for key in self.settings if key not in SEARCH_SETTINGS]
            if built_in:
                raise InputError(f"--{built_in[0].replace('_', '-')} is set when an index is built, not on a saved one",
                                 field=f"--{built_in[0].replace('_', '-')}")
        else:
            kind = self.kind
        if kind != "exact":
            _faiss()  # faiss missing: said now, not after the pool is read
        for key, value in self.settings.items():
            flag = f"--{key.replace('_', '-')}"
            if key not in SETTINGS[kind]:
                owners = [k for k, keys in SETTINGS.items() if key in keys]
                raise InputError(f"{flag} applies to an {' or '.join(owners)} index, not {kind}", field=flag)
            if key == "encoding":
                if value not in ENCODINGS:
                    raise InputError(f"{flag} {value!r} must be one of {', '.join(ENCODINGS)}", field=flag)
            elif not isinstance(value, int) or value < (0 if key == "seed" else 1):
                raise InputError(f"{flag} must be {'an integer >= 0' if key == 'seed' else 'a positive integer'}, "
                                 f"not {value!r}", field=flag)
        if kind == "ivf" and n is not None and self.settings.get("nlist", 1) > n:
            raise InputError(f"--nlist {self.settings['nlist']} is more lists than the pool has vectors ({n})",
                             field="--nlist")

    def open(self, vectors: np.ndarray, source: str | None = None) -> tuple[CandidateIndex, dict[str, Any]]:
        """The index over ``vectors`` (built here, or loaded and checked against them and the store's
        checksum ``source``) and what the metadata says of it: ``{index, kind, params, build_s}``
        (``build_s``: the build here, or the saved index's own build)."""
        if self.kind is None:
            index = load_index(self.spec, vectors)
            if source is not None and index.source not in (None, source):
                raise InputError("the index was built from another store (its checksum differs): rebuild it",
                                 path=self.spec, field="--index")
            for key, value in self.settings.items():  # search settings only (check refused the others)
                setattr(index, key, value)
            if self.settings:
                index.folder = None  # no longer the saved index: whoever loads it again needs these settings
        else:
            start = time.perf_counter()
            index = make_index(self.kind, **self.settings).build(vectors)
            index.build_seconds = round(time.perf_counter() - start, 3)
            index.source = source
        return index, {"index": self.spec, "kind": index.kind, "params": index.params(),
                       "build_s": getattr(index, "build_seconds", None)}


# -- per-query selection on an index's shortlists ------------------------------------------------------

def shortlists_by(selector: Any) -> bool:
    """Whether ``selector`` shortlists by ``|cosine|`` (True, GO) or cosine (False: kNN, MMR, DPP);
    an error for a selector that does not shortlist by vector similarity (BM25 scores words, SAL
    asks an LLM), which no vector index can serve (its class's ``shortlist_by`` is None)."""
    by = getattr(type(selector), "shortlist_by", None)
    if by not in ("cosine", "abs-cosine"):
        raise InputError(f"method {getattr(selector, 'name', selector)!r} does not shortlist by embedding similarity: "
                         "a vector index cannot serve it", field="--index")
    return by == "abs-cosine"


def _as_problem(problem_or_vectors: Any):
    from .selection import Problem

    if isinstance(problem_or_vectors, Problem):
        return problem_or_vectors
    pool, queries = problem_or_vectors
    return Problem(pool=pool, queries=queries)


def served(selector: Any, n: int, k: int, shortlist: int = 256) -> tuple[Any, int, int]:
    """``(selector, size, fetch)`` for index-served selection: an exact-mode selector
    (``shortlist=None``) is given ``shortlist`` candidates (at least 4k); each query gets ``size``
    of them, the best of ``fetch >= size`` the index is asked for (more than the selector's own
    shortlist lets an approximate index's misses be made up from further down its list)."""
    if selector.shortlist is None:
        selector = selector.clone(shortlist=shortlist)
    size = selector.shortlist_size(n, k)
    return selector, size, min(n, max(size, shortlist))


def index_candidates(index: CandidateIndex, queries: np.ndarray, fetch: int, k: int, *, absolute: bool,
                     pool: np.ndarray) -> np.ndarray:
    """``(m, fetch)`` ids: each query's shortlist from ``index``. A query for which an approximate
    index found fewer than ``k`` rows is searched exactly instead (a few rows, memory-bounded)."""
    _, ids = index.search(queries, fetch, absolute=absolute)
    short = np.flatnonzero(np.count_nonzero(ids >= 0, axis=1) < min(k, len(pool)))
    if len(short):
        ids[short] = ExactIndex().build(pool).search(queries[short], ids.shape[1], absolute=absolute)[1]
    return ids


def select_per_query_with_index(selector: Any, problem_or_vectors: Any, index: CandidateIndex, k: int,
                                shortlist: int = 256, *, search_batch: int = 1024) -> list:
    """Per-query selection with candidates from ``index``: the selector's own
    ``select_per_query(..., candidates=...)`` (see :class:`~fewshot.selection.GreedySelector`),
    its shortlists searched by the index (by |cosine| for GO) ``search_batch`` queries at a time.
    With an exact index the picks are today's path's. ``problem_or_vectors``: a
    :class:`~fewshot.selection.Problem` (labels and token costs are honoured) or ``(pool, queries)``.
    See :func:`served` for the shortlist sizes.

    Given up: an exact-mode selector (``shortlist=None``) is served the index's shortlist, not the
    whole pool; GO with ``center=True`` is centred on the full pool's mean but shortlisted by the
    index on uncentred vectors. Query-independent selectors (random, k-means, vote-k) need no index
    and run as they are.
    """
    from .selection.base import check_k

    problem = _as_problem(problem_or_vectors)
    check_k(problem, k)
    if selector.query_independent:
        return selector.select_per_query(problem, k)
    absolute = shortlists_by(selector)
    selector, _, fetch = served(selector, problem.n, k, shortlist)
    out = []
    for s0 in range(0, problem.m, search_batch):
        rows = np.arange(s0, min(s0 + search_batch, problem.m))
        ids = index_candidates(index, problem.queries[rows], fetch, k, absolute=absolute, pool=problem.pool)
        part = replace(problem, queries=problem.queries[rows],
                       query_texts=tuple(problem.query_texts[i] for i in rows) if problem.query_texts else ())
        picked = selector.select_per_query(part, k, candidates=lambda r, size, ids=ids: ids[r, :size])
        out.extend(replace(s, query=int(s0 + s.query)) for s in picked)
    return out


def verify(selector: Any, problem: Any, index: CandidateIndex, k: int, n_sample: int = 100, seed: int = 0, *,
           shortlist: int = 256) -> dict[str, Any]:
    """Exactness of index-served selection on ``n_sample`` seeded random queries: ``pick_recall``,
    the share of today's exact-scan picks (``selector.select_per_query`` on the full problem)
    that the index path reproduces, and ``shortlist_recall`` of the index against an exact search.
    Today's picks come from the blocked exact index (the same shortlists, so the same picks, in one
    pass over the pool per 256 sampled queries), or for a selector without a shortlist from its
    whole-pool scan."""
    problem = _as_problem(problem)
    rows = np.sort(np.random.default_rng(seed).choice(problem.m, size=min(n_sample, problem.m), replace=False))
    sampled = replace(problem, queries=problem.queries[rows],
                      query_texts=tuple(problem.query_texts[i] for i in rows) if problem.query_texts else ())
    if selector.query_independent or selector.shortlist is None:
        exact = selector.select_per_query(sampled, k)
    else:
        exact = select_per_query_with_index(selector, sampled, ExactIndex().build(problem.pool), k, shortlist)
    got = select_per_query_with_index(selector, sampled, index, k, shortlist)
    picks = overlap(np.array([list(s.indices) + [-1] * (k - len(s.indices)) for s in got]),
                     np.array([list(s.indices) + [-1] * (k - len(s.indices)) for s in exact]))
    result: dict[str, Any] = {"queries": int(len(rows)), "seed": seed, "pick_recall": round(picks, 4)}
    if not selector.query_independent:
        size = served(selector, problem.n, k, shortlist)[1]
        absolute = shortlists_by(selector)
        recall = shortlist_recall(index, ExactIndex().build(problem.pool), sampled.queries, size, absolute=absolute)
        result["shortlist"], result["shortlist_recall"] = size, round(recall, 4)
    return result
