"""A vector store: a folder of memory-mapped embeddings, their ids and a manifest.

Layout of a finished store::

    DIR/manifest.json   model, n, d, dtype, chunk size, checksums, format version
    DIR/vectors.npy     (n, d) float32 or float16, unit rows, opened with mmap_mode="r"
    DIR/ids.npy         (n,) unicode ids, opened with mmap_mode="r"

:func:`embed_to_store` writes it ``chunk`` texts at a time. Each chunk is committed on its own (its
``.npy`` files written then renamed into ``DIR/chunks/``, then ``DIR/progress.json`` rewritten and
renamed), so a run killed at any point keeps every finished chunk and the next run embeds only the
rest. When every chunk is in, the chunks are streamed into ``vectors.npy`` and ``ids.npy``, the
manifest is renamed into place (the store is complete from that moment) and the chunks are removed.
Memory stays bounded by one chunk: the finiteness check, the normalisation and the concatenation
all work chunk by chunk.

>>> import tempfile
>>> class Toy:  # any Embedder: a model_id and embed(texts) -> (len(texts), d)
...     model_id = "toy"
...     def embed(self, texts): return np.array([[len(t), 1.0] for t in texts])
>>> folder = Path(tempfile.mkdtemp()) / "store"
>>> store = embed_to_store(["a", "bbb", "cc"], folder, Toy(), chunk=2, progress=False)
>>> store.vectors.shape, store.ids.tolist(), store.manifest["n"], store.computed
((3, 2), ['0', '1', '2'], 3, 3)
>>> [round(float(x), 3) for x in open_store(folder).vectors[1]]
[0.949, 0.316]
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .embedding import Embedder, TruncationTally, default_model_path, model_fingerprint
from .errors import InputError

FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
DEFAULT_CHUNK = 8192
MANIFEST, PROGRESS, VECTORS, IDS, CHUNKS = "manifest.json", "progress.json", "vectors.npy", "ids.npy", "chunks"


@dataclass
class Store:
    """An open store: ``vectors`` (n, d) and ``ids`` (n,) are read-only memory maps."""

    folder: Path
    vectors: np.ndarray
    ids: np.ndarray
    manifest: dict[str, Any]
    computed: int = 0  # rows embedded by the call that returned this store (0 from open_store)

    @property
    def n(self) -> int:
        return int(self.manifest["n"])

    @property
    def d(self) -> int:
        return int(self.manifest["d"])

    @property
    def model_id(self) -> str:
        return str(self.manifest["model_id"])

    @property
    def checksum(self) -> str:
        """Names the store's content: an index built from it records this and refuses any other."""
        return str(self.manifest["checksum"])

    def check_embedder(self, embedder: Embedder) -> None:
        """Refuse a (query) embedder that is not the model the store was embedded with."""
        if embedder.model_id != self.model_id:
            raise InputError(f"the store was embedded with model {self.model_id!r}, not {embedder.model_id!r}: "
                             "queries must be embedded with the same model", path=str(self.folder))


def fingerprint_of(embedder: Embedder) -> str | None:
    """The model's file fingerprint (:func:`fewshot.embedding.model_fingerprint`) for a local
    sentence-transformers embedder, else None (the ``model_id`` then names the model alone)."""
    if not hasattr(embedder, "path"):
        return None
    path = getattr(embedder, "path")
    try:
        return model_fingerprint(path or default_model_path())
    except (ImportError, OSError):
        return None


# -- reading ---------------------------------------------------------------------------------------

def open_store(folder: str | Path, embedder: Embedder | None = None, *, field: str | None = None) -> Store:
    """Open a finished store; its files must match its manifest. With ``embedder``, also refuse a
    query embedder whose model differs from the store's. ``field``: the option that named the
    folder, for the error messages."""
    try:
        return _open_store(Path(folder), embedder)
    except InputError as err:
        if field is None:
            raise
        raise InputError(err.message, path=err.path, line=err.line, field=field) from None


def _open_store(folder: Path, embedder: Embedder | None) -> Store:
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        if (folder / PROGRESS).is_file():
            done = len(_read_json(folder / PROGRESS, folder).get("chunks", {}))
            raise InputError(f"the store is unfinished ({done} chunks committed): run the same embed command "
                             "again to finish it", path=str(folder))
        raise InputError("not a vector store (no manifest.json)", path=str(folder))
    manifest = _read_json(manifest_path, folder)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(f"store format {manifest.get('format_version')!r} is not {FORMAT_VERSION}", path=str(folder))
    try:
        n, d, dtype = int(manifest["n"]), int(manifest["d"]), str(manifest["dtype"])
        vectors = np.load(folder / VECTORS, mmap_mode="r", allow_pickle=False)
        ids = np.load(folder / IDS, mmap_mode="r", allow_pickle=False)
    except (KeyError, TypeError, ValueError, OSError) as err:
        raise InputError(f"damaged store ({err})", path=str(folder)) from None
    if vectors.shape != (n, d) or vectors.dtype != np.dtype(dtype):
        raise InputError(f"{VECTORS} holds {vectors.shape} {vectors.dtype}, the manifest says ({n}, {d}) {dtype}",
                         path=str(folder))
    if ids.shape != (n,) or ids.dtype.kind != "U":
        raise InputError(f"{IDS} holds {ids.shape} {ids.dtype}, the manifest says {n} ids", path=str(folder))
    store = Store(folder, vectors, ids, manifest)
    if embedder is not None:
        store.check_embedder(embedder)
    return store


def _read_json(path: Path, folder: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"unreadable {path.name} ({err})", path=str(folder)) from None
    if not isinstance(data, dict):
        raise InputError(f"{path.name} is not a JSON object", path=str(folder))
    return data


# -- writing ---------------------------------------------------------------------------------------

def _atomic_write(path: Path, write: Any) -> None:
    """``write(handle)`` into a temporary sibling, flushed to disk, then renamed over ``path``: a
    reader (or a killed writer's successor) sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def texts_digest(texts: Sequence[str]) -> str:
    """Names one chunk's input, so a resumed run can tell it is given the same texts."""
    return digest(*(t.encode("utf-8") + b"\0" for t in texts))


def prepare(vectors: np.ndarray, rows: int, dtype: str, where: str) -> np.ndarray:
    """One chunk's embeddings checked (shape, finite) and normalised in place, then cast to ``dtype``."""
    out = np.array(vectors, dtype=np.float32)  # a fresh float32 copy of one chunk, ours to modify
    if out.ndim != 2 or out.shape[0] != rows:
        raise InputError(f"the embedder returned shape {out.shape} for {rows} texts", path=where)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise InputError(f"the embedder returned NaN or infinite values for {int(bad.sum())} texts", path=where)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out /= np.where(norms > 0, norms, 1.0)
    return out.astype(dtype, copy=False)


class StoreWriter:
    """The chunk commits and the final assembly of one store folder, shared by the local and the
    Ray embedders. Chunks may be committed in any order; :meth:`finish` needs all of them."""

    def __init__(self, folder: str | Path, *, model_id: str, fingerprint: str | None, dtype: str = "float32",
                 chunk: int = DEFAULT_CHUNK) -> None:
        if dtype not in DTYPES:
            raise InputError(f"dtype {dtype!r} must be one of {', '.join(DTYPES)}", field="--dtype")
        if chunk < 1:
            raise InputError(f"chunk={chunk} must be at least 1", field="--chunk")
        self.folder, self.dtype, self.chunk = Path(folder), dtype, chunk
        self.settings = {"format_version": FORMAT_VERSION, "model_id": model_id, "fingerprint": fingerprint,
                         "dtype": dtype, "chunk": chunk}
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError("the store path exists and is not a folder", path=str(self.folder))
        self.progress: dict[str, Any] = {**self.settings, "chunks": {}}
        if (self.folder / PROGRESS).is_file():
            old = _read_json(self.folder / PROGRESS, self.folder)
            changed = [key for key, value in self.settings.items() if old.get(key) != value]
            if changed:
                raise InputError(f"an unfinished store here was started with other settings ({', '.join(changed)}): "
                                 "use another folder, or delete this one", path=str(self.folder))
            self.progress = old
        elif self.folder.is_dir() and any(self.folder.iterdir()) and not (self.folder / MANIFEST).is_file():
            raise InputError("the folder is not empty and holds no store: choose an empty or new folder",
                             path=str(self.folder))

    @property
    def complete(self) -> bool:
        return (self.folder / MANIFEST).is_file()

    def committed(self, index: int, texts_hash: str) -> bool:
        """Whether chunk ``index`` is already in, for these texts (other texts are an error)."""
        record = self.progress["chunks"].get(str(index))
        if record is None:
            return False
        if record["texts"] != texts_hash:
            raise InputError(f"chunk {index} of the unfinished store here was embedded from other texts: "
                             "give the same input, or use another folder", path=str(self.folder))
        return True

    def commit(self, index: int, texts_hash: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Save one chunk (``vectors`` from :func:`prepare`) and record it, each step atomic."""
        chunks = self.folder / CHUNKS
        chunks.mkdir(parents=True, exist_ok=True)
        id_array = np.asarray([str(i) for i in ids], dtype=str)
        if id_array.dtype.kind != "U":  # an empty chunk cannot happen; keep the dtype a string one
            id_array = id_array.astype("U1")
        _atomic_write(chunks / f"{index:06d}.ids.npy", lambda h: np.save(h, id_array, allow_pickle=False))
        _atomic_write(chunks / f"{index:06d}.npy", lambda h: np.save(h, vectors, allow_pickle=False))
        self.progress["chunks"][str(index)] = {"rows": int(len(vectors)), "d": int(vectors.shape[1]),
                                               "texts": texts_hash, "vectors": digest(vectors.tobytes()),
                                               "id_width": int(id_array.dtype.itemsize // 4)}
        self._save_progress()

    def _save_progress(self) -> None:
        data = json.dumps(self.progress, sort_keys=True).encode()
        _atomic_write(self.folder / PROGRESS, lambda h: h.write(data))

    def finish(self, total_chunks: int, texts_checksum: str) -> None:
        """Assemble the committed chunks ``0 .. total_chunks - 1`` into the final files, one chunk
        in memory at a time, then write the manifest (the commit of the whole store)."""
        records = [self.progress["chunks"].get(str(i)) for i in range(total_chunks)]
        missing = [i for i, r in enumerate(records) if r is None]
        if missing:
            raise InputError(f"chunks {missing[:5]} are not committed", path=str(self.folder))
        dims = {r["d"] for r in records}
        if len(dims) != 1:
            raise InputError(f"the chunks have different dimensions {sorted(dims)}", path=str(self.folder))
        n, d = sum(r["rows"] for r in records), dims.pop()
        width = max(r["id_width"] for r in records)
        chunks = self.folder / CHUNKS
        self._stream(VECTORS, np.dtype(self.dtype), (n, d), (chunks / f"{i:06d}.npy" for i in range(total_chunks)))
        self._stream(IDS, np.dtype(f"<U{width}"), (n,), (chunks / f"{i:06d}.ids.npy" for i in range(total_chunks)))
        manifest = {**self.settings, "n": n, "d": d, "normalised": True,
                    "checksum": digest(*(r["vectors"].encode() for r in records)),
                    "texts_checksum": texts_checksum}
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        _atomic_write(self.folder / MANIFEST, lambda h: h.write(data))
        shutil.rmtree(chunks, ignore_errors=True)
        (self.folder / PROGRESS).unlink(missing_ok=True)

    def _stream(self, name: str, dtype: np.dtype, shape: tuple[int, ...], parts: Iterable[Path]) -> None:
        """Write one ``.npy`` from parts by appending bytes (no memory map: the pages written are
        not kept in this process's memory)."""
        def write(handle) -> None:
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(handle, header)
            for part in parts:
                handle.write(np.ascontiguousarray(np.load(part, allow_pickle=False), dtype=dtype).tobytes())
        _atomic_write(self.folder / name, write)


def _records(items: Iterable[Any]) -> Iterator[tuple[str, str]]:
    """(id, text) from strings (id = position) or Example-like objects with ``id`` and ``text``."""
    for position, item in enumerate(items):
        if isinstance(item, str):
            yield str(position), item
        else:
            yield str(item.id), item.text


def chunked(items: Iterable[Any], chunk: int) -> Iterator[tuple[int, list[str], list[str], str]]:
    """``(index, ids, texts, texts_hash)`` per chunk of the input, read lazily."""
    records = _records(items)
    for index in itertools.count():
        block = list(itertools.islice(records, chunk))
        if not block:
            return
        ids, texts = [r[0] for r in block], [r[1] for r in block]
        yield index, ids, texts, texts_digest(texts)


def progress_bar(enabled: bool | None, total: int | None, what: str):
    """A rich progress bar (rows done, rows per second, elapsed, ETA) on stderr; silent when
    ``enabled`` is False, or None and stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.0f}/s" if task.speed else "")

    show = sys.stderr.isatty() if enabled is None else enabled
    bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), Rate(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), disable=not show)
    return bar, bar.add_task(what, total=total)


def embed_to_store(items: Iterable[Any], folder: str | Path, embedder: Embedder, *, chunk: int = DEFAULT_CHUNK,
                   dtype: str = "float32", progress: bool | None = None) -> Store:
    """Embed ``items`` (texts, or examples with ``id`` and ``text``) into the store at ``folder``.

    Resumable: a folder holding an unfinished store with the same settings keeps its committed
    chunks (their texts are checked) and only the rest is embedded. A folder holding a finished
    store of the same texts and model is returned as it is (``computed == 0``); other texts or
    another model are an error. ``progress``: a bar with an ETA on stderr (None: only on a terminal).
    """
    writer = StoreWriter(folder, model_id=embedder.model_id, fingerprint=fingerprint_of(embedder),
                         dtype=dtype, chunk=chunk)
    if writer.complete:
        return reuse_finished(writer, items)
    total = len(items) if isinstance(items, Sequence) else None
    computed, hashes = 0, []
    bar, task = progress_bar(progress, total, "embedding")
    tally = TruncationTally(embedder)  # long texts: one warning for the run, not one per chunk
    with bar:
        try:
            for index, ids, texts, texts_hash in chunked(items, chunk):
                hashes.append(texts_hash)
                if not writer.committed(index, texts_hash):
                    where = f"{writer.folder} (chunk {index})"
                    vectors = prepare(tally.embed(texts, offset=index * chunk), len(texts), dtype, where)
                    writer.commit(index, texts_hash, ids, vectors)
                    computed += len(texts)
                bar.advance(task, len(texts))
        finally:
            tally.warn()  # a stopped run still says what it embedded in part
    if not hashes:
        raise InputError("there are no texts to embed", path=str(writer.folder))
    writer.finish(len(hashes), digest(*(h.encode() for h in hashes)))
    store = open_store(writer.folder)
    store.computed = computed
    return store


def check_store_folder(folder: str | Path, embedder: Embedder, *, chunk: int = DEFAULT_CHUNK,
                       dtype: str = "float32") -> None:
    """Refuse, before any text is read or embedded, a store folder :func:`embed_to_store` would
    refuse: a bad dtype or chunk, a path that is a file or cannot be written, a folder holding
    something else, or a store (finished or not) started with other settings."""
    from .data import check_writable_dir

    writer = StoreWriter(folder, model_id=embedder.model_id, fingerprint=fingerprint_of(embedder), dtype=dtype,
                         chunk=chunk)
    check_writable_dir(folder, field="--out")
    if writer.complete:
        manifest = _read_json(writer.folder / MANIFEST, writer.folder)
        changed = [key for key, value in writer.settings.items() if manifest.get(key) != value]
        if changed:
            raise InputError(f"the folder holds a finished store with other settings ({', '.join(changed)}): use "
                             "another folder, or delete this one", path=str(writer.folder))


def embed_examples(items: Sequence[Any], folder: str | Path, embedder: Embedder, *, chunk: int = DEFAULT_CHUNK,
                   dtype: str = "float32", progress: bool | None = None, ray: dict[str, Any] | None = None) -> Store:
    """:func:`embed_to_store`, or with ``ray`` (the options of
    :func:`fewshot.distributed.embed_to_store_ray`: ``address``, ``num_actors``, ...) the Ray engine."""
    if ray is None:
        return embed_to_store(items, folder, embedder, chunk=chunk, dtype=dtype, progress=progress)
    from .distributed import embed_to_store_ray

    return embed_to_store_ray(items, folder, embedder, chunk=chunk, dtype=dtype, progress=progress, **ray)


def reuse_finished(writer: StoreWriter, items: Iterable[Any]) -> Store:
    """The finished store at the writer's folder, if it holds these texts with these settings."""
    store = open_store(writer.folder)
    changed = [key for key, value in writer.settings.items() if store.manifest.get(key) != value]
    hashes = [h.encode() for *_, h in chunked(items, writer.chunk)]
    if changed or digest(*hashes) != store.manifest.get("texts_checksum"):
        what = f"other settings ({', '.join(changed)})" if changed else "other texts"
        raise InputError(f"the folder holds a finished store of {what}: use another folder, or delete this one",
                         path=str(writer.folder))
    shutil.rmtree(writer.folder / CHUNKS, ignore_errors=True)  # left by a run killed right after its manifest
    (writer.folder / PROGRESS).unlink(missing_ok=True)
    return store
