"""Calibrating an LLM's label probabilities, because a small model's label prior can swamp the demos.

Both methods divide each prediction's label distribution by an estimate of the model's bias and
renormalise; they differ in where the estimate comes from:

- batch calibration (Zhou et al. 2023, arXiv 2309.17249): the mean label distribution over the
  batch of test prompts that share the demo set, free when they are answered together;
- contextual calibration (Zhao et al. 2021, arXiv 2102.09690): the mean label distribution for
  content-free inputs ("N/A", "", "[MASK]") given the same demos; it costs one prompt per input
  and distinct demo set.

Rows are label distributions in a fixed label order (``probs[i, j]`` = p(label j | prompt i)).
"""

from __future__ import annotations

from typing import Hashable, Literal, Sequence

import numpy as np

from .errors import InputError

CONTENT_FREE = ("N/A", "", "[MASK]")
Method = Literal["none", "batch", "contextual"]
METHODS = ("none", "batch", "contextual")


def _rows(probs: np.ndarray, name: str = "probs") -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    if p.ndim == 1:
        p = p[None, :]
    if p.ndim != 2 or p.shape[1] < 2 or not np.isfinite(p).all() or (p < 0).any():
        raise InputError(f"{name}: expected non-negative label distributions (rows x labels), got shape {p.shape}")
    totals = p.sum(axis=1, keepdims=True)
    return np.divide(p, totals, out=np.full_like(p, 1.0 / p.shape[1]), where=totals > 0)


def _divide(probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Each row divided by ``prior`` and renormalised; a label the prior never saw keeps 0."""
    q = np.divide(probs, prior, out=np.zeros_like(probs), where=prior > 0)
    totals = q.sum(axis=1, keepdims=True)
    return np.divide(q, totals, out=np.full_like(q, 1.0 / q.shape[1]), where=totals > 0)


def batch_calibrate(probs: np.ndarray, scored: np.ndarray | None = None, *,
                    groups: Sequence[Hashable] | None = None) -> np.ndarray:
    """Batch calibration, the one definition (the predictor, SAL and the eval report use it): each
    prompt's label distribution divided by the mean distribution of the prompts that share its
    demo set, renormalised per row.

    ``groups``: one id per row naming its demo set (None: every row shares one). ``scored``: which
    rows estimate the means (a prompt the scorer could not score carries only bounds). A row whose
    demo set has fewer than two scored prompts is left as it is (renormalised): one prompt is its
    own mean, and dividing by it would erase its answer.

    >>> batch_calibrate(np.array([[0.9, 0.1], [0.6, 0.4]])).round(4)  # mean (0.75, 0.25)
    array([[0.75  , 0.25  ],
           [0.3333, 0.6667]])
    >>> batch_calibrate(np.array([[0.9, 0.1], [0.6, 0.4], [0.6, 0.4]]), groups=["x", "x", "y"]).round(4)
    array([[0.75  , 0.25  ],
           [0.3333, 0.6667],
           [0.6   , 0.4   ]])
    """
    p = _rows(probs)
    use = np.ones(len(p), dtype=bool) if scored is None else np.asarray(scored, dtype=bool)
    if use.shape != (len(p),):
        raise InputError(f"scored: expected {len(p)} flags, got shape {use.shape}")
    ids: dict[Hashable, int] = {}
    group = np.zeros(len(p), dtype=int) if groups is None else np.array([ids.setdefault(g, len(ids)) for g in groups], dtype=int)
    if group.shape != (len(p),):
        raise InputError(f"groups: expected {len(p)} demo-set ids, got {len(group)}")
    size = np.bincount(group, weights=use, minlength=group.max(initial=0) + 1)
    sums = np.zeros((len(size), p.shape[1]))
    np.add.at(sums, group[use], p[use])
    calibrated = size[group] >= 2
    out = p.copy()
    out[calibrated] = _divide(p[calibrated], sums[group[calibrated]] / size[group[calibrated], None])
    return out


def content_free_prior(content_free: np.ndarray) -> np.ndarray:
    """The mean label distribution over content-free inputs (rows renormalised first).

    >>> content_free_prior(np.array([[0.8, 0.2], [0.6, 0.4]]))
    array([0.7, 0.3])
    """
    return _rows(content_free, "content_free").mean(axis=0)


def contextual_calibrate(probs: np.ndarray, content_free: np.ndarray) -> np.ndarray:
    """Contextual calibration: W = diag(p_cf)^-1, b = 0; each row ``W p``, renormalised.

    ``content_free``: p(y | demos, content-free input) for one or more such inputs (rows), with
    the same demos as ``probs``; its mean (:func:`content_free_prior`) is p_cf.

    >>> contextual_calibrate(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([[0.8, 0.2], [0.6, 0.4]])).round(4)
    array([[0.7941, 0.2059],
           [0.3913, 0.6087]])
    """
    return _divide(_rows(probs), content_free_prior(content_free))


def divide_by_prior(probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Rows divided by a prior (one for all rows, or one row each) and renormalised.

    >>> divide_by_prior(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([[0.9, 0.1], [0.5, 0.5]])).round(2)
    array([[0.5, 0.5],
           [0.6, 0.4]])
    """
    return _divide(_rows(probs), np.asarray(prior, dtype=float))


def calibrate(probs: np.ndarray, method: Method = "batch", *, content_free: np.ndarray | None = None,
              scored: np.ndarray | None = None, groups: Sequence[Hashable] | None = None) -> np.ndarray:
    """Calibrate by name: ``"none"`` (rows only renormalised), ``"batch"`` (over the rows that share
    a demo set: ``groups``, see :func:`batch_calibrate`) or ``"contextual"``.

    >>> calibrate(np.array([[2.0, 2.0], [3.0, 1.0]]), "none")
    array([[0.5 , 0.5 ],
           [0.75, 0.25]])
    """
    if method == "none":
        return _rows(probs)
    if method == "batch":
        return batch_calibrate(probs, scored, groups=groups)
    if method == "contextual":
        if content_free is None:
            raise InputError("contextual calibration needs the content-free label distributions")
        return contextual_calibrate(probs, content_free)
    raise InputError(f"unknown calibration {method!r} (use one of: {', '.join(METHODS)})")
