"""Chunked similarity search over unit-norm embeddings (cosine = dot product)."""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest entries of each row, best first (ties: lower index).

    >>> top_k(np.array([[0.1, 0.9, 0.5]]), 2).tolist()
    [[1, 2]]
    """
    n = scores.shape[1]
    k = min(k, n)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(scores), 1))
    part.sort(axis=1)  # index order first, so the stable sort below breaks ties by lower index
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def nearest(queries: np.ndarray, pool: np.ndarray, k: int, *, chunk: int = 256,
            absolute: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest pool rows for each query: ``(indices, similarities)``, both ``(m, k)``.

    One matrix product per chunk of queries keeps memory at ``chunk x n`` floats.
    ``absolute`` ranks by ``|similarity|``.
    """
    m = len(queries)
    k = min(k, len(pool))
    indices = np.empty((m, k), dtype=np.int64)
    sims = np.empty((m, k), dtype=np.result_type(queries, pool))
    for start in range(0, m, chunk):
        block = queries[start:start + chunk] @ pool.T
        idx = top_k(np.abs(block) if absolute else block, k)
        indices[start:start + chunk] = idx
        sims[start:start + chunk] = np.take_along_axis(block, idx, axis=1)
    return indices, sims
