import numpy as np
import pytest

from fewshot.clustering import kmeans, prune
from tests.conftest import unit_rows


def test_kmeans_is_seeded():
    x = unit_rows(np.random.default_rng(0), 200, 8)
    a, b = kmeans(x, 5, seed=3), kmeans(x, 5, seed=3)
    assert np.array_equal(a.assignment, b.assignment)
    assert np.allclose(a.hardship, np.linalg.norm(x - a.centroids[a.assignment], axis=1), atol=1e-5)


def test_prune_policies_keep_hard_or_easy():
    x = unit_rows(np.random.default_rng(1), 300, 8)
    clusters = kmeans(x, 4, seed=0)
    hard, easy = prune(x, 60, policy="hard", n_clusters=4), prune(x, 60, policy="easy", n_clusters=4)
    assert len(hard) == len(easy) == 60 and len(set(hard)) == 60
    assert clusters.hardship[hard].mean() > clusters.hardship[easy].mean()
    # every cluster keeps a share
    assert len(np.unique(clusters.assignment[hard])) == 4


@pytest.mark.parametrize("k", [12, 14, 16])
def test_kmeans_recovers_well_separated_clusters(k):
    """scipy's single k-means++ start merged some of k >= 12 well-separated clusters and split
    others; every found cluster must be exactly one true cluster."""
    rng = np.random.default_rng(k)
    centers = unit_rows(rng, k, 32) * 10
    sizes = rng.integers(10, 40, size=k)
    points = np.concatenate([c + 0.3 * rng.normal(size=(s, 32)) for c, s in zip(centers, sizes)]).astype(np.float32)
    truth = np.repeat(np.arange(k), sizes)
    found = kmeans(points, k, seed=0).assignment
    pairs = {(int(t), int(f)) for t, f in zip(truth, found)}
    assert len(pairs) == k and len({f for _, f in pairs}) == k


def test_large_pools_are_clustered_without_a_float64_copy(tmp_path):
    """Issue 19: k-means copied the pool to float64 (31 GB at 10M x 384); above a size it fits a
    seeded float32 sample and assigns every row block by block, from a memory map."""
    import tracemalloc

    rng = np.random.default_rng(5)
    centers = unit_rows(rng, 6, 32) * 4
    truth = rng.integers(6, size=200_000)
    points = (centers[truth] + 0.3 * rng.normal(size=(200_000, 32)).astype(np.float32)).astype(np.float16)
    np.save(tmp_path / "p.npy", points)
    mapped = np.load(tmp_path / "p.npy", mmap_mode="r")
    tracemalloc.start()
    found = kmeans(mapped, 6, seed=0, exact_entries=1 << 16, sample=4096)  # 6.4M values: above it
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < points.size * 8 / 2  # the float64 copy alone is 51 MB
    assert len({(int(t), int(f)) for t, f in zip(truth, found.assignment)}) == 6  # one found cluster per true one
    again = kmeans(mapped, 6, seed=0, exact_entries=1 << 16, sample=4096)
    assert np.array_equal(found.assignment, again.assignment)
    np.testing.assert_allclose(found.hardship, np.linalg.norm(points.astype(np.float32) - found.centroids[found.assignment],
                                                              axis=1), rtol=1e-5)
