"""Statistics for the eval report: means with 95% intervals over seeds, and win rates."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and the two ends of a Student-t confidence interval over seeds.

    >>> mean_interval([0.5, 0.7, 0.6])
    (0.6, 0.35158..., 0.84841...)
    >>> mean_interval([0.4])
    (0.4, nan, nan)
    """
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf((1 + confidence) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return mean, mean - half, mean + half


def win_rate(scores: Sequence[float], baseline: Sequence[float], higher_is_better: bool = True) -> float:
    """Share of paired runs (same data set and seed) the method beats the baseline; ties count half.

    >>> win_rate([0.8, 0.5, 0.6], [0.7, 0.5, 0.9])
    0.5
    """
    a, b = np.asarray(scores, dtype=float), np.asarray(baseline, dtype=float)
    if not higher_is_better:
        a, b = -a, -b
    return float(((a > b) + 0.5 * (a == b)).mean())


def sign_test(differences: Sequence[float]) -> tuple[int, int, int, float]:
    """Wins, losses, ties and the two-sided sign-test p-value of paired differences (ties dropped).

    >>> sign_test([0.1, 0.2, -0.05, 0.0, 0.3])
    (3, 1, 1, 0.625)
    """
    d = np.asarray(differences, dtype=float)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    p = float(stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
    return wins, losses, int((d == 0).sum()), p
