"""Chunked similarity search over unit-norm embeddings (cosine = dot product)."""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest entries of each row, best first; ties go to the lower
    index, also at the k-th place (so the result is what k rounds of ``argmax`` would pick).

    >>> top_k(np.array([[0.1, 0.9, 0.5]]), 2).tolist()
    [[1, 2]]
    >>> top_k(np.array([[1.0, 2.0, 1.0, 1.0]]), 2).tolist()
    [[1, 0]]
    """
    b, n = scores.shape
    k = min(k, n)
    if k < n:
        part = np.argpartition(scores, n - k, axis=1)[:, n - k:]
        # argpartition splits ties at the k-th value arbitrarily: redo (stably) the rare rows
        # where a tied entry was left out, since it may have the lower index
        kept = np.take_along_axis(scores, part, axis=1)
        kth = kept.min(axis=1, keepdims=True)
        left_out = np.count_nonzero(scores == kth, axis=1) > np.count_nonzero(kept == kth, axis=1)
        for row in np.flatnonzero(left_out):
            part[row] = np.argsort(-scores[row], kind="stable")[:k]
    else:
        part = np.tile(np.arange(n), (b, 1))
    part.sort(axis=1)  # index order first, so the stable sort below breaks ties by lower index
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def nearest(queries: np.ndarray, pool: np.ndarray, k: int, *, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest pool rows for each query: ``(indices, similarities)``, both ``(m, k)``, most
    similar first (ties: the lower index, as in :func:`top_k`).

    One matrix product per chunk of queries keeps memory at ``chunk x n`` floats.

    >>> idx, sims = nearest(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]]), 2)
    >>> idx.tolist(), sims.tolist()
    ([[1, 2]], [[1.0, 0.6]])
    """
    m = len(queries)
    k = min(k, len(pool))
    indices = np.empty((m, k), dtype=np.int64)
    sims = np.empty((m, k), dtype=np.result_type(queries, pool))
    for start in range(0, m, chunk):
        block = queries[start:start + chunk] @ pool.T
        idx = top_k(block, k)
        indices[start:start + chunk] = idx
        sims[start:start + chunk] = np.take_along_axis(block, idx, axis=1)
    return indices, sims
