import numpy as np

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
