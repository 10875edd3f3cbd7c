"""Batch and contextual calibration against hand-computed values."""

import numpy as np
import pytest

from fewshot.calibration import (CONTENT_FREE, batch_calibrate, calibrate, content_free_prior,
                                 contextual_calibrate)
from fewshot.errors import InputError


def test_batch_calibration_divides_by_the_batch_mean():
    # three labels; the mean is (.5, .3, .2)
    p = np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]])
    q = batch_calibrate(p)
    first = np.array([0.7 / 0.5, 0.2 / 0.3, 0.1 / 0.2])
    assert q[0] == pytest.approx(first / first.sum())
    assert q.sum(axis=1) == pytest.approx(np.ones(3))
    # the prior favoured label 0; after calibration the third row's label 2 wins (.4/.2 is largest)
    assert q.argmax(axis=1).tolist() == [0, 1, 2]


def test_batch_calibration_breaks_label_collapse():
    """Every raw prediction is label 0 (a biased prior); calibrated, the two queries differ."""
    p = np.array([[0.9, 0.1], [0.7, 0.3]])
    assert p.argmax(axis=1).tolist() == [0, 0]
    # mean (.8, .2): (1.125, .5) -> .692 ; (.875, 1.5) -> .368
    q = batch_calibrate(p)
    assert q[:, 0] == pytest.approx([1.125 / 1.625, 0.875 / 2.375])
    assert q.argmax(axis=1).tolist() == [0, 1]


def test_unscored_rows_do_not_move_the_mean():
    p = np.array([[0.9, 0.1], [0.7, 0.3], [0.1, 0.9]])
    q = batch_calibrate(p, scored=[True, True, False])
    assert q[:2] == pytest.approx(batch_calibrate(p[:2]))
    with pytest.raises(InputError, match="scored"):
        batch_calibrate(p, scored=[True, False])


def test_rows_are_renormalised_first():
    """Label masses need not sum to one (the model's mass off the label set is dropped)."""
    assert batch_calibrate(np.array([[0.45, 0.05], [0.6, 0.4]])) == pytest.approx(
        batch_calibrate(np.array([[0.9, 0.1], [0.6, 0.4]])))


def test_contextual_calibration():
    """p_cf = mean of (.8,.2) and (.6,.4) = (.7,.3); (.6,.4) -> (.857, 1.333) -> (.391, .609)."""
    cf = np.array([[0.8, 0.2], [0.6, 0.4]])
    assert content_free_prior(cf) == pytest.approx([0.7, 0.3])
    q = contextual_calibrate(np.array([[0.6, 0.4]]), cf)
    assert q[0] == pytest.approx([(0.6 / 0.7) / (0.6 / 0.7 + 0.4 / 0.3), (0.4 / 0.3) / (0.6 / 0.7 + 0.4 / 0.3)])
    # a single content-free row works too
    assert contextual_calibrate(np.array([[0.6, 0.4]]), np.array([0.7, 0.3])) == pytest.approx(q)
    assert CONTENT_FREE == ("N/A", "", "[MASK]")


def test_a_label_the_prior_never_gives_stays_zero():
    q = contextual_calibrate(np.array([[0.5, 0.5, 0.0]]), np.array([0.5, 0.5, 0.0]))
    assert q[0] == pytest.approx([0.5, 0.5, 0.0])


def test_calibrate_by_name_and_bad_input():
    p = np.array([[0.9, 0.1], [0.7, 0.3]])
    assert calibrate(p, "none") == pytest.approx(p)
    assert calibrate(p, "batch") == pytest.approx(batch_calibrate(p))
    assert calibrate(p, "contextual", content_free=[0.5, 0.5]) == pytest.approx(p)
    with pytest.raises(InputError, match="content-free"):
        calibrate(p, "contextual")
    with pytest.raises(InputError, match="unknown calibration"):
        calibrate(p, "platt")
    with pytest.raises(InputError, match="non-negative"):
        batch_calibrate(np.array([[0.5, -0.1]]))


def test_batch_calibration_divides_by_each_demo_sets_own_mean():
    p = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4]])
    q = batch_calibrate(p, groups=["x", "x", "y", "y", "z"])
    assert q[:2] == pytest.approx(batch_calibrate(p[:2])) and q[2:4] == pytest.approx(batch_calibrate(p[2:4]))
    assert q[4] == pytest.approx(p[4])  # a demo set asked once is its own mean: left alone, not erased
    assert batch_calibrate(p, groups=[0] * 5) == pytest.approx(batch_calibrate(p))  # one group = no groups
    with pytest.raises(InputError, match="groups"):
        batch_calibrate(p, groups=["x"])


def test_a_group_needs_two_scored_prompts():
    p = np.array([[0.9, 0.1], [0.7, 0.3], [0.3, 0.7]])
    q = batch_calibrate(p, scored=[True, False, True], groups=["x", "x", "y"])
    assert q == pytest.approx(p)  # x has one scored prompt, y one prompt: nothing to divide by
    assert calibrate(p, "batch", groups=["x", "x", "y"])[:2] == pytest.approx(batch_calibrate(p[:2]))
