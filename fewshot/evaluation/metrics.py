"""Every number an eval reports, defined once, from the answers it stores per cell (the rows of
``predictions.jsonl``). The harness picks the best-of-N demo set with the same functions the
report scores with, so a choice and a table cannot disagree.

Classification, per query (1 right, 0 wrong; a prompt the scorer reached no label for is wrong):

- ``accuracy``: the most probable label, raw;
- ``accuracy@batch``: after batch calibration (:func:`fewshot.calibration.batch_calibrate`) over
  the prompts of the cell that share a demo set (rows carry ``demo_set``). Rows recorded before
  demo-set ids existed are calibrated over the whole cell (the definition until then), and so is
  every cell of a report that holds such a per-query cell (:func:`whole_cell_batch`), so that no
  comparison mixes the two; for a shared demo set they agree;
- ``accuracy@contextual``: divided by the content-free prior of the query's demo set, when recorded.

Per cell: ``macro_f1``, ``macro_f1@batch`` and ``unscored`` (prompts with no label reached).

Regression, per query: ``mse`` (squared error, lower is better); per cell ``mae`` and ``unparsed``
(answers with no number in them, replaced by the fallback: the demos' median, or the middle of the
pool's range with no demos).
"""

from __future__ import annotations

from typing import Any, Collection, Sequence

import numpy as np

from ..calibration import batch_calibrate, divide_by_prior
from .stats import macro_f1

# Batch calibration is the headline: on the quick suite it raised accuracy by 5.3 points [2.1, 8.7]
# over 30 method x data set cells (README, "Scores"); raw accuracy stays in every table.
HEADLINE = {"classification": "accuracy@batch", "regression": "mse"}
LOWER_IS_BETTER = frozenset({"mse"})
PER_QUERY_SETTINGS = ("full", "annotate")  # settings whose prompts have demo sets of their own

PerQuery = dict[str, dict[str, float]]  # metric -> query id -> score


def cell_scores(prediction: dict[str, Any], task: str, *, by_demo_set: bool = True,
                only: Collection[str] | None = None) -> tuple[PerQuery, dict[str, float]]:
    """Per-query scores by metric, and whole-cell numbers, of one cell's answers (a line of
    predictions.jsonl: ``labels`` and ``rows``). ``by_demo_set=False``: batch-calibrate over the
    whole cell (the definition of rows without demo-set ids). ``only``: compute just these metrics
    (per query or per cell; the others are left out, their calibrations never run), with the
    values all of them would have.

    >>> rows = [{"id": "1", "gold": "a", "unscored": False, "probs": [0.9, 0.1], "demo_set": 0},
    ...         {"id": "2", "gold": "b", "unscored": False, "probs": [0.6, 0.4], "demo_set": 0}]
    >>> per_query, whole = cell_scores({"labels": ["a", "b"], "rows": rows}, "classification")
    >>> per_query["accuracy"], per_query["accuracy@batch"], whole["unscored"]
    ({'1': 1.0, '2': 0.0}, {'1': 1.0, '2': 1.0}, 0.0)
    >>> cell_scores({"labels": ["a", "b"], "rows": rows}, "classification", only={"accuracy@batch"})
    ({'accuracy@batch': {'1': 1.0, '2': 1.0}}, {})
    """
    keep = None if only is None else set(only)

    def wanted(name: str) -> bool:
        return keep is None or name in keep

    rows = prediction["rows"]
    ids = [r["id"] for r in rows]
    if task == "regression":
        by_query = {"mse": lambda: dict(zip(ids, (float(r["error"]) for r in rows)))}
        by_cell = {"mae": lambda: float(np.mean([r["abs_error"] for r in rows])),
                   "unparsed": lambda: float(sum(not r.get("parsed", True) for r in rows))}
        return ({name: score() for name, score in by_query.items() if wanted(name)},
                {name: score() for name, score in by_cell.items() if wanted(name)})
    labels = prediction["labels"]
    gold = [r["gold"] for r in rows]
    scored = np.array([not r["unscored"] for r in rows])
    probs = np.array([r["probs"] for r in rows], dtype=float)
    groups = [r["demo_set"] for r in rows] if by_demo_set and all("demo_set" in r for r in rows) else None
    variants = {"": lambda: probs, "@batch": lambda: batch_calibrate(probs, scored, groups=groups)}
    if all("prior" in r for r in rows):
        variants["@contextual"] = lambda: divide_by_prior(probs, np.array([r["prior"] for r in rows], dtype=float))
    per_query: PerQuery = {}
    whole = {"unscored": float((~scored).sum())} if wanted("unscored") else {}
    for suffix, calibrated in variants.items():
        accuracy, f1 = f"accuracy{suffix}", f"macro_f1{suffix}"
        if not (wanted(accuracy) or wanted(f1)):
            continue  # e.g. best-of-N asks for the headline only: no other calibration runs
        p = calibrated()
        predicted = [labels[j] if ok else None for j, ok in zip(p.argmax(axis=1), scored)]
        if wanted(accuracy):
            per_query[accuracy] = {i: float(y == g) for i, y, g in zip(ids, predicted, gold)}
        if wanted(f1):
            whole[f1] = macro_f1(gold, predicted, labels)
    return per_query, whole


def mean_score(per_query: PerQuery, metric: str) -> float:
    """A cell's score under ``metric``: the mean of its per-query scores."""
    return float(np.mean(list(per_query[metric].values())))


def headline_score(rows: list[dict[str, Any]], labels: Sequence[str], task: str) -> float:
    """A cell's score under its task's headline metric (:data:`HEADLINE`), computed alone (the
    best-of-N choice scores every candidate set with it)."""
    metric = HEADLINE[task]
    return mean_score(cell_scores({"labels": list(labels), "rows": rows}, task, only={metric})[0], metric)


def best(scores: Sequence[float], metric: str) -> int:
    """Index of the best score under ``metric`` (the first of ties).

    >>> best([0.5, 0.7, 0.7], "accuracy@batch"), best([2.0, 1.0], "mse")
    (1, 1)
    """
    values = np.asarray(scores, dtype=float)
    return int(np.argmin(values) if metric in LOWER_IS_BETTER else np.argmax(values))


def whole_cell_batch(record: dict[str, Any]) -> bool:
    """A per-query cell recorded before demo-set ids (its record has no ``demo_sets``): its
    ``accuracy@batch`` divides by the whole cell's mean, not by each demo set's."""
    return record["task"] == "classification" and record["setting"] in PER_QUERY_SETTINGS and "demo_sets" not in record
