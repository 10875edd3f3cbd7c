import math

from fewshot.evaluation import mean_interval, win_rate


def test_interval_by_hand():
    # values 0.2, 0.4: mean 0.3, sd 0.1414, t(0.975, 1) = 12.706 -> half width 12.706 * 0.1414 / 1.4142 = 1.2706
    mean, low, high = mean_interval([0.2, 0.4])
    assert math.isclose(mean, 0.3) and math.isclose(high - mean, 1.27062, rel_tol=1e-4)
    assert math.isclose(mean - low, high - mean)


def test_win_rate_lower_is_better_for_errors():
    assert win_rate([1.0, 3.0, 2.0, 2.0], [2.0, 2.0, 2.0, 1.0], higher_is_better=False) == (1 + 0 + 0.5 + 0) / 4
