"""Seeded k-means over embeddings, "hardship" (distance to centroid) and pool pruning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.cluster import KMeans

from .errors import InputError


@dataclass(frozen=True)
class Clustering:
    centroids: np.ndarray  # (k, d)
    assignment: np.ndarray  # (n,) cluster of each point
    hardship: np.ndarray  # (n,) Euclidean distance of each point to its centroid


# Up to this many entries (n x d) k-means runs on every point in float64, as it always has; above,
# on a seeded sample in float32, and every point is assigned block by block: no full copy.
EXACT_ENTRIES = 1 << 24
SAMPLE_ROWS = 1 << 16


def kmeans(points: np.ndarray, n_clusters: int, *, seed: int = 0, iterations: int = 20,
           exact_entries: int = EXACT_ENTRIES, sample: int = SAMPLE_ROWS) -> Clustering:
    """k-means (scikit-learn) with greedy k-means++ initialisation, deterministic for a seed.

    Greedy k-means++ tries several candidates per centre; scipy's plain k-means++ with one start
    merged well-separated clusters at k >= 12, which k-means diversity then could not cover.

    A large pool (more than ``exact_entries`` values; a memory map, float16 or not) is never copied
    whole: the centroids are fitted on a seeded sample of ``sample`` rows (at least 64 per
    cluster) in float32, then every row is assigned to its nearest centroid block by block.

    >>> pts = np.array([[0, 0], [0, .1], [5, 5], [5, 5.1]], dtype=np.float32)
    >>> c = kmeans(pts, 2, seed=0); int(c.assignment[0] == c.assignment[1]), int(c.assignment[0] != c.assignment[2])
    (1, 1)
    >>> big = kmeans(np.repeat(pts, 50, axis=0), 2, seed=0, exact_entries=10, sample=40)
    >>> len(big.assignment), int(big.assignment[0] != big.assignment[150])
    (200, 1)
    """
    n = len(points)
    if not 1 <= n_clusters <= n:
        raise InputError(f"n_clusters={n_clusters} must be between 1 and the pool size {n}")
    if n * points.shape[1] <= exact_entries:
        data = np.asarray(points, dtype=np.float64)
        model = KMeans(n_clusters, init="k-means++", n_init=1, max_iter=iterations, random_state=seed).fit(data)
        centroids, assignment = model.cluster_centers_, model.labels_
        hardship = np.linalg.norm(data - centroids[assignment], axis=1)
        return Clustering(centroids.astype(np.float32), assignment.astype(np.int64), hardship)
    count = min(n, max(sample, 64 * n_clusters))
    rows = np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))
    model = KMeans(n_clusters, init="k-means++", n_init=1, max_iter=iterations, random_state=seed)
    centroids = model.fit(np.asarray(points[rows], dtype=np.float32)).cluster_centers_.astype(np.float32)
    assignment, hardship = _assign(points, centroids)
    return Clustering(centroids, assignment, hardship)


def _assign(points: np.ndarray, centroids: np.ndarray, block: int = 1 << 15) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centroid and its Euclidean distance to it, ``block`` rows at a time."""
    n = len(points)
    assignment, hardship = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.float64)
    c_sq = np.einsum("ij,ij->i", centroids, centroids)
    for start in range(0, n, block):
        x = np.asarray(points[start:start + block], dtype=np.float32)
        d2 = np.einsum("ij,ij->i", x, x)[:, None] - 2 * (x @ centroids.T) + c_sq
        nearest = np.argmin(d2, axis=1)
        assignment[start:start + len(x)] = nearest
        hardship[start:start + len(x)] = np.linalg.norm(x - centroids[nearest], axis=1)
    return assignment, hardship


def prune(points: np.ndarray, keep: int, *, policy: Literal["hard", "easy"] = "hard",
          n_clusters: int = 16, seed: int = 0) -> np.ndarray:
    """Indices of the ``keep`` examples to retain, chosen by hardship within each cluster.

    ``policy="hard"`` keeps the examples farthest from their centroid (advice for abundant
    data), ``"easy"`` the most prototypical ones (scarce data). Clusters keep a share
    proportional to their size, so pruning does not erase small clusters.
    """
    n = len(points)
    if keep >= n:
        return np.arange(n)
    if policy not in ("hard", "easy"):
        raise InputError(f"unknown pruning policy {policy!r}: use 'hard' or 'easy'")
    clusters = kmeans(points, min(n_clusters, n), seed=seed)
    order_key = -clusters.hardship if policy == "hard" else clusters.hardship
    sizes = np.bincount(clusters.assignment, minlength=len(clusters.centroids))
    quota = np.floor(sizes * keep / n).astype(int)
    # hand out the remaining slots to clusters with the largest fractional share
    remainder = keep - quota.sum()
    quota[np.argsort(-(sizes * keep / n - quota), kind="stable")[:remainder]] += 1
    kept = [np.flatnonzero(clusters.assignment == c)[np.argsort(order_key[clusters.assignment == c],
                                                                 kind="stable")[:quota[c]]]
            for c in range(len(sizes))]
    return np.sort(np.concatenate(kept))
