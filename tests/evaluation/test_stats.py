import numpy as np
import pytest
from scipy import stats as scipy_stats

from fewshot.evaluation.stats import (PairedDifference, holm, macro_f1, minimum_detectable_difference,
                                      paired_difference)


def test_constant_difference_has_a_point_interval():
    method = [np.full(n, 0.7) for n in (5, 8, 3)]
    reference = [np.full(n, 0.5) for n in (5, 8, 3)]
    r = paired_difference(method, reference, resamples=500)
    assert r.diff == pytest.approx(0.2)
    assert r.ci_low == pytest.approx(0.2) and r.ci_high == pytest.approx(0.2)
    assert (r.units, r.queries, r.wins, r.losses, r.ties) == (3, 16, 3, 0, 0)
    # No bootstrap draw lies as far from 0.2 as 0 does: the smallest p possible.
    assert r.p == pytest.approx(1 / 501)
    assert r.mdd == pytest.approx(0, abs=1e-12)


def test_units_weigh_the_same_whatever_their_size():
    # Unit A: 10 queries all +1; unit B: 2 queries all 0 -> (1 + 0) / 2, not 10 / 12.
    r = paired_difference([np.ones(10), np.zeros(2)], [np.zeros(10), np.zeros(2)])
    assert r.diff == 0.5
    assert (r.wins, r.losses, r.ties) == (1, 0, 1)
    # Resampling units gives 0, 0.5 or 1 only (both query sets are constant).
    assert r.ci_low == 0.0 and r.ci_high == 1.0


def test_single_unit_matches_the_textbook_standard_error():
    d = np.random.default_rng(7).normal(0.1, 1.0, 300)
    r = paired_difference([d], [np.zeros_like(d)], resamples=4000, seed=3)
    se = d.std(ddof=1) / np.sqrt(d.size)
    bootstrap_se = r.mdd / (scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8))
    assert bootstrap_se == pytest.approx(se, rel=0.1)
    assert r.ci_low < r.diff < r.ci_high
    # The percentile interval of a mean is close to diff +- 1.96 se.
    assert r.ci_high - r.ci_low == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_clear_effect_is_significant_and_noise_is_not():
    rng = np.random.default_rng(0)
    reference = (rng.random(200) < 0.5).astype(float)
    better = reference.copy()
    better[rng.choice(np.flatnonzero(reference == 0), 60, replace=False)] = 1  # +0.3 accuracy
    r = paired_difference([better], [reference])
    assert r.diff == pytest.approx(0.3) and r.p < 0.001 and r.ci_low > 0
    noise = [rng.normal(0, 1, 200) for _ in range(4)]
    r = paired_difference(noise, [np.zeros(200)] * 4)
    assert r.p > 0.05 and r.ci_low < 0 < r.ci_high
    # Exactly no effect: half the queries +1, half -1, in each unit.
    flips = [np.tile([1.0, 0.0], 100)] * 3
    r = paired_difference(flips, [1 - f for f in flips])
    assert r.diff == 0 and r.p > 0.9 and r.ci_low < 0 < r.ci_high


def test_all_zero_differences():
    r = paired_difference([np.array([1.0, 0.0])] * 2, [np.array([1.0, 0.0])] * 2)
    assert r == PairedDifference(0.0, 0.0, 0.0, 1.0, units=2, queries=4, wins=0, losses=0, ties=2, mdd=0.0)


def test_same_seed_same_result_and_other_seed_differs():
    rng = np.random.default_rng(1)
    method, reference = [rng.random(50), rng.random(30)], [rng.random(50), rng.random(30)]
    assert paired_difference(method, reference, seed=5) == paired_difference(method, reference, seed=5)
    assert paired_difference(method, reference, seed=5).ci_low != paired_difference(method, reference, seed=6).ci_low


@pytest.mark.parametrize("method, reference, message", [
    ([], [], "no units"),
    ([np.ones(3)], [np.ones(3), np.ones(3)], "units"),
    ([np.ones(3), np.ones(2)], [np.ones(3), np.ones(4)], "unit 1"),
    ([np.ones(0)], [np.ones(0)], "no queries"),
    ([np.array([1.0, np.nan])], [np.ones(2)], "non-finite"),
])
def test_bad_input_is_refused(method, reference, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(method, reference)


def test_minimum_detectable_difference_formula():
    # z_{0.975} = 1.959964, z_{0.8} = 0.841621
    assert minimum_detectable_difference(0.01) == pytest.approx(0.02801585, rel=1e-6)
    # alpha 0.1: z_{0.95} = 1.644854; power 0.9: z_{0.9} = 1.281552
    assert minimum_detectable_difference(2.0, alpha=0.1, power=0.9) == pytest.approx(2 * 2.926405, rel=1e-6)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    # capped at 1
    np.testing.assert_allclose(holm([0.6, 0.2]), [0.6, 0.4])
    np.testing.assert_allclose(holm([0.7, 0.6]), [1.0, 1.0])


def test_holm_leaves_nan_out_of_the_family():
    # Family of 2: 0.01 x 2, 0.04 x 1 (but at least 0.02)
    np.testing.assert_allclose(holm([0.04, float("nan"), 0.01]), [0.04, np.nan, 0.02])
    assert np.isnan(holm([float("nan")])).all()
    assert holm([]).shape == (0,)


def test_macro_f1_by_hand():
    gold = ["pos", "neg", "neu", "pos", "neg"]
    predicted = ["pos", "pos", None, "pos", "neg"]
    # pos: tp 2, fp 1, fn 0 -> 4/5; neg: tp 1, fp 0, fn 1 -> 2/3; neu: tp 0, fn 1 (None predicts no class) -> 0
    assert macro_f1(gold, predicted, ["pos", "neg", "neu"]) == pytest.approx((0.8 + 2 / 3 + 0) / 3)


def test_macro_f1_leaves_out_labels_nobody_used():
    # "neu" is neither gold nor predicted: mean over pos (1.0) and neg (1.0) only.
    assert macro_f1(["pos", "neg"], ["pos", "neg"], ["pos", "neg", "neu"]) == 1.0
    assert np.isnan(macro_f1([], [], ["pos"]))
    with pytest.raises(ValueError):
        macro_f1(["pos"], [], ["pos"])
