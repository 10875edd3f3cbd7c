"""Statistics for the eval report: paired differences over (data set, seed) units with a two-level
bootstrap interval, the minimum detectable difference, Holm's correction and macro F1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

# Cap on the floats one block of query resamples holds (about 32 MB), so large units stay cheap.
_BLOCK = 4_000_000


@dataclass(frozen=True)
class PairedDifference:
    """How much a method beats a reference on paired queries, pooled over (data set, seed) units.

    diff: mean over units of the unit's mean paired difference (units weigh the same);
    ci_low, ci_high: two-level percentile bootstrap interval of diff; p: two-sided bootstrap p-value;
    units, queries: how many units and paired queries; wins, losses, ties: units by the sign of their mean
    difference; mdd: the smallest true difference this design detects with 80% power (see
    `minimum_detectable_difference`).
    """

    diff: float
    ci_low: float
    ci_high: float
    p: float
    units: int
    queries: int
    wins: int
    losses: int
    ties: int
    mdd: float


def minimum_detectable_difference(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided test at `alpha` finds with probability `power`, given its standard error.

    (z_{1-alpha/2} + z_{power}) * se; with the defaults 2.80 standard errors.

    >>> round(minimum_detectable_difference(0.01), 5)
    0.02802
    >>> minimum_detectable_difference(0.0)
    0.0
    """
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se)


def _unit_differences(method: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per-unit arrays of method - reference, after checking the two line up query by query."""
    if len(method) != len(reference):
        raise ValueError(f"method has {len(method)} units but reference has {len(reference)}")
    if len(method) == 0:
        raise ValueError("no units to compare")
    diffs = []
    for u, (a, b) in enumerate(zip(method, reference)):
        a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
        if a.shape != b.shape:
            raise ValueError(f"unit {u}: method has {a.size} query scores but reference has {b.size}")
        if a.size == 0:
            raise ValueError(f"unit {u} has no queries")
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ValueError(f"unit {u} has non-finite scores")
        diffs.append(a - b)
    return diffs


def _resampled_means(d: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """`draws` bootstrap means of d (queries drawn with replacement), in blocks to bound memory."""
    n = d.size
    rows = max(1, _BLOCK // n)
    return np.concatenate([d[rng.integers(0, n, size=(min(rows, draws - start), n))].mean(axis=1)
                           for start in range(0, draws, rows)]) if draws else np.empty(0)


def _hierarchical_bootstrap(diffs: list[np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap distribution of the mean over units of unit mean differences.

    Each resample draws the units with replacement (as multinomial counts), then, for every time a unit is
    drawn, an independent resample of its queries; the statistic is the mean over the drawn units.
    """
    m = len(diffs)
    counts = rng.multinomial(m, np.full(m, 1 / m), size=resamples)  # (resamples, units)
    total = np.zeros(resamples)
    for u, d in enumerate(diffs):
        means = _resampled_means(d, int(counts[:, u].sum()), rng)
        # Which resample each of this unit's draws belongs to, then sum the draws per resample.
        total += np.bincount(np.repeat(np.arange(resamples), counts[:, u]), weights=means, minlength=resamples)
    return total / m


def paired_difference(method: Sequence[np.ndarray], reference: Sequence[np.ndarray], *,
                      confidence: float = 0.95, resamples: int = 4000, seed: int = 0) -> PairedDifference:
    """Paired difference of per-query scores (method - reference), pooled over units with equal weight.

    `method[u]` and `reference[u]` hold the scores of unit u (one data set and seed) on the same queries.
    The interval and p-value come from a two-level bootstrap (units, then queries within each drawn unit),
    so they reflect both seed-to-seed and query-to-query noise.

    >>> r = paired_difference([[1, 1, 0, 1], [1, 0]], [[0, 1, 0, 1], [1, 0]], seed=1)
    >>> r.diff, r.units, r.queries, (r.wins, r.losses, r.ties)
    (0.125, 2, 6, (1, 0, 1))
    >>> r.ci_low <= r.diff <= r.ci_high
    True
    >>> paired_difference([[0.5, 1.0]], [[0.5, 1.0]])
    PairedDifference(diff=0.0, ci_low=0.0, ci_high=0.0, p=1.0, units=1, queries=2, wins=0, losses=0, ties=1, mdd=0.0)
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    diffs = _unit_differences(method, reference)
    unit_means = np.array([d.mean() for d in diffs])
    sign = np.sign(unit_means)
    counts = dict(units=len(diffs), queries=int(sum(d.size for d in diffs)), wins=int((sign > 0).sum()),
                  losses=int((sign < 0).sum()), ties=int((sign == 0).sum()))
    if not any(d.any() for d in diffs):
        return PairedDifference(0.0, 0.0, 0.0, 1.0, mdd=0.0, **counts)
    diff = float(unit_means.mean())
    boot = _hierarchical_bootstrap(diffs, resamples, np.random.default_rng(seed))
    low, high = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    p = (1 + np.count_nonzero(np.abs(boot - diff) >= abs(diff))) / (1 + resamples)
    se = float(boot.std(ddof=1)) if resamples > 1 else 0.0
    return PairedDifference(diff, float(low), float(high), float(p),
                            mdd=minimum_detectable_difference(se, alpha=1 - confidence), **counts)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values in input order; NaN stays NaN and is left out of the family.

    >>> holm([0.01, 0.04, 0.03])
    array([0.03, 0.06, 0.06])
    >>> holm([0.02, float("nan"), 0.5])
    array([0.04, nan, 0.5 ])
    """
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    order = present[np.argsort(p[present], kind="stable")]
    m = order.size
    # Step-down: the i-th smallest is multiplied by (m - i), then made monotone and capped at 1.
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return adjusted


def macro_f1(gold: Sequence, predicted: Sequence, labels: Sequence) -> float:
    """Unweighted mean F1 over `labels`; a None prediction is wrong and predicts no class.

    A label that is neither gold nor predicted anywhere has no F1 and is left out of the mean (rather than
    counting as 0 or 1); predictions outside `labels` only count as misses of their gold label. NaN when no
    label is present at all.

    >>> macro_f1(["a", "b", "b"], ["a", "b", None], ["a", "b", "c"])  # F1 a = 1, b = 2/3, c left out
    0.833...
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    labels = list(labels)
    index = {label: i for i, label in enumerate(labels)}
    # Label index per item, -1 for None or anything outside `labels` (so it matches no column).
    g = np.array([index.get(x, -1) if x is not None else -1 for x in gold], dtype=int)
    p = np.array([index.get(x, -1) if x is not None else -1 for x in predicted], dtype=int)
    hit = (g == p) & (g >= 0)
    tp = np.bincount(g[hit], minlength=len(labels))
    gold_n = np.bincount(g[g >= 0], minlength=len(labels))
    pred_n = np.bincount(p[p >= 0], minlength=len(labels))
    denominator = gold_n + pred_n  # 2tp + fp + fn
    present = denominator > 0
    return float(np.mean(2 * tp[present] / denominator[present])) if present.any() else float("nan")
