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


def kmeans(points: np.ndarray, n_clusters: int, *, seed: int = 0, iterations: int = 20) -> Clustering:
    """k-means (scikit-learn) with greedy k-means++ initialisation, deterministic for a seed.

    Greedy k-means++ tries several candidates per centre; scipy's plain k-means++ with one start
    merged well-separated clusters at k >= 12, which k-means diversity then could not cover.

    >>> pts = np.array([[0, 0], [0, .1], [5, 5], [5, 5.1]], dtype=np.float32)
    >>> c = kmeans(pts, 2, seed=0); int(c.assignment[0] == c.assignment[1]), int(c.assignment[0] != c.assignment[2])
    (1, 1)
    """
    n = len(points)
    if not 1 <= n_clusters <= n:
        raise InputError(f"n_clusters={n_clusters} must be between 1 and the pool size {n}")
    data = np.asarray(points, dtype=np.float64)
    model = KMeans(n_clusters, init="k-means++", n_init=1, max_iter=iterations, random_state=seed).fit(data)
    centroids, assignment = model.cluster_centers_, model.labels_
    hardship = np.linalg.norm(data - centroids[assignment], axis=1)
    return Clustering(centroids.astype(np.float32), assignment.astype(np.int64), hardship)


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
