"""What an eval run found: per-query scores (raw and calibrated) from predictions.jsonl, a summary
per cell group, and paired comparisons of every method with the reference of its setting.

Statistics (see :mod:`fewshot.evaluation.stats`): the unit is (data set, seed); within a unit the
methods answered the same queries, so differences are paired per query. A difference's interval
is a two-level bootstrap (units, then queries within units); p-values are Holm-corrected over the
comparisons of one metric pooled over data sets (and, separately, within each data set); ``mdd`` is the smallest difference the run could detect (80% power).
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..calibration import batch_calibrate, divide_by_prior
from .harness import read_jsonl
from .stats import holm, macro_f1, paired_difference

# Batch calibration is the headline: on the quick suite it raised accuracy by 5.3 points [2.1, 8.7]
# over 30 method x data set cells (README, "Scores"); raw accuracy stays in every table.
HEADLINE = {"classification": "accuracy@batch", "regression": "mse"}
SUMMARY_COLUMNS = ["data", "setting", "method", "labels", "k", "seeds", "queries", "metric", "mean", "ci_low",
                   "ci_high", "accuracy", "accuracy@batch", "accuracy@contextual", "macro_f1", "macro_f1@batch", "mae",
                   "unscored", "labels_used", "gap_closed", "selection_s", "answer_s", "llm_calls",
                   "prompt_tokens", "cached_share"]
GOAL_COLUMNS = ["setting", "labels", "k", "metric", "ours", "ours_mean", "baseline", "baseline_mean", "diff", "ci_low",
                "ci_high", "p", "units", "queries", "mdd", "margin", "met", "ours_tried", "baselines_tried", "waiting"]
# The selectors fewshot exists for; every other method of a setting is one of its baselines.
DESIGN_FAMILIES = ("go", "sal")
COMPARISON_COLUMNS = ["metric", "setting", "method", "reference", "data", "labels", "k", "diff", "ci_low",
                      "ci_high", "p", "p_holm", "units", "queries", "wins", "losses", "ties", "mdd"]


def cell_scores(prediction: dict[str, Any], task: str) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-query scores by metric ({metric: {query id: score}}) and whole-cell metrics of one
    cell's predictions. Classification: ``accuracy`` (raw), ``accuracy@batch`` (divided by the
    mean label distribution over the cell's test batch), ``accuracy@contextual`` (divided by the
    content-free prior of each query's demo set, when recorded); unscored prompts are wrong in all.
    Regression: ``mse`` per query (squared error; lower is better) and ``mae``."""
    rows = prediction["rows"]
    ids = [r["id"] for r in rows]
    if task == "regression":
        per_query = {"mse": dict(zip(ids, (float(r["error"]) for r in rows)))}
        return per_query, {"mae": float(np.mean([r["abs_error"] for r in rows]))}
    labels = prediction["labels"]
    gold = [r["gold"] for r in rows]
    scored = np.array([not r["unscored"] for r in rows])
    probs = np.array([r["probs"] for r in rows], dtype=float)
    variants = {"": probs, "@batch": batch_calibrate(probs, scored)}
    if all("prior" in r for r in rows):
        variants["@contextual"] = divide_by_prior(probs, np.array([r["prior"] for r in rows], dtype=float))
    per_query, whole = {}, {}
    for suffix, p in variants.items():
        predicted = [labels[j] if ok else None for j, ok in zip(p.argmax(axis=1), scored)]
        per_query[f"accuracy{suffix}"] = {i: float(y == g) for i, y, g in zip(ids, predicted, gold)}
        whole[f"macro_f1{suffix}"] = macro_f1(gold, predicted, labels)
    return per_query, whole


def load_run(out: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The records of a run folder and the predictions of each recorded cell."""
    records = read_jsonl(out / "records.jsonl")
    predictions = {p["cell"]: p for p in read_jsonl(out / "predictions.jsonl")}
    return records, predictions


Scores = dict[str, tuple[dict[str, dict[str, float]], dict[str, float]]]


def score_cells(records: Sequence[dict[str, Any]], predictions: dict[str, dict[str, Any]]) -> Scores:
    """:func:`cell_scores` of every recorded cell that has predictions, once, by cell key."""
    return {r["cell"]: cell_scores(predictions[r["cell"]], r["task"]) for r in records if r["cell"] in predictions}


def _key(record: dict[str, Any]) -> tuple:
    return record["setting"], record["label_budget"], record["k"], record["method"]


def summarize(records: Sequence[dict[str, Any]], scores: Scores, references: dict[str, str]) -> list[dict[str, Any]]:
    """One row per data set x setting x method x (labels, k); the headline score's interval is
    the two-level bootstrap over seeds and queries."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["data"], *_key(r))].append(r)
    rows = []
    for (data, setting, budget, k, method), group in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1], g[0][2], g[0][3], g[0][4])):
        task = group[0]["task"]
        metric = HEADLINE[task]
        scored = [scores[r["cell"]] for r in group if r["cell"] in scores]
        vectors = [np.array(list(per_query[metric].values())) for per_query, _ in scored]
        row: dict[str, Any] = {"data": data, "setting": setting, "method": method, "labels": budget, "k": k,
                               "seeds": len(group), "queries": int(sum(map(len, vectors))), "metric": metric}
        if vectors:
            interval = paired_difference(vectors, [np.zeros_like(v) for v in vectors])
            row.update(mean=interval.diff, ci_low=interval.ci_low, ci_high=interval.ci_high)
        for name in ("accuracy", "accuracy@batch", "accuracy@contextual"):
            values = [np.mean(list(per_query[name].values())) for per_query, _ in scored if name in per_query]
            row[name] = float(np.mean(values)) if values else math.nan
        for name in ("macro_f1", "macro_f1@batch", "mae"):
            values = [whole[name] for _, whole in scored if name in whole]
            row[name] = float(np.mean(values)) if values else math.nan
        cached = sum(r.get("cached_prompt_tokens", 0) for r in group)
        fresh = sum(r.get("uncached_prompt_tokens", 0) for r in group)
        row.update(unscored=sum(r["unscored"] for r in group),
                   labels_used=float(np.mean([r["labels"] for r in group])),
                   gap_closed=gap_closed(records, data, setting, budget, k, method, references),
                   selection_s=float(np.mean([r["selection_seconds"] for r in group])),
                   answer_s=float(np.mean([r["answer_seconds"] for r in group])),
                   llm_calls=float(np.mean([r["llm_calls"] for r in group])),
                   prompt_tokens=float(np.mean([r["prompt_tokens"] for r in group])),
                   cached_share=cached / (cached + fresh) if cached + fresh else math.nan)
        rows.append(row)
    return rows


def gap_closed(records: Sequence[dict[str, Any]], data: str, setting: str, budget: int, k: int, method: str,
               references: dict[str, str]) -> float:
    """Shared setting: (mean(method) - mean(random)) / (mean(best-of-N random) - mean(random)) over
    the seeds all three ran: a ratio of means, not a mean of ratios."""
    if setting != "shared":
        return math.nan
    by_seed: dict[str, dict[int, float]] = defaultdict(dict)
    for r in records:
        if r["data"] == data and r["setting"] == "shared" and r["k"] == k:
            name = "best" if r.get("peeks") else r["method"]
            by_seed[name][r["seed"]] = r["score"]
    mine, base, best = by_seed.get(method, {}), by_seed.get(references["shared"], {}), by_seed.get("best", {})
    seeds = sorted(set(mine) & set(base) & set(best))
    if not seeds or method == references["shared"]:
        return math.nan
    gap = np.mean([best[s] for s in seeds]) - np.mean([base[s] for s in seeds])
    return float((np.mean([mine[s] for s in seeds]) - np.mean([base[s] for s in seeds])) / gap) if gap else math.nan


def compare(records: Sequence[dict[str, Any]], scores: Scores, references: dict[str, str], *,
            seed: int = 0) -> list[dict[str, Any]]:
    """Every method against its setting's reference at the same labels and k, per data set and
    pooled over the data sets of one task ("all"), for every per-query metric."""
    cells = {(r["data"], r["seed"], *_key(r)): r for r in records if not r.get("peeks")}
    per_query = {cell: found[0] for cell, found in scores.items()}
    tasks = {r["data"]: r["task"] for r in records}
    grouped: dict[tuple, list] = defaultdict(list)  # (metric, setting, method, reference, scope, labels, k) -> pairs
    for (data, seed_, setting, budget, k, method), r in sorted(cells.items()):
        if setting not in references or method == references[setting]:
            continue
        other = cells.get((data, seed_, setting, budget, k, references[setting]))
        if other is None or r["cell"] not in per_query or other["cell"] not in per_query:
            continue
        for metric, mine in per_query[r["cell"]].items():
            theirs = per_query[other["cell"]].get(metric)
            if theirs is None:
                continue
            common = [i for i in mine if i in theirs]
            pair = (np.array([mine[i] for i in common]), np.array([theirs[i] for i in common]))
            for scope in (data, "all:" + tasks[data]):
                grouped[metric, setting, method, references[setting], scope, budget, k].append(pair)
    out = []
    for key, pairs in sorted(grouped.items()):
        result = paired_difference([a for a, _ in pairs], [b for _, b in pairs], seed=seed)
        row = dict(zip(("metric", "setting", "method", "reference", "data", "labels", "k"), key))
        row["data"] = "all" if row["data"].startswith("all:") else row["data"]
        row.update(diff=result.diff, ci_low=result.ci_low, ci_high=result.ci_high, p=result.p, units=result.units,
                   queries=result.queries, wins=result.wins, losses=result.losses, ties=result.ties, mdd=result.mdd)
        out.append(row)
    # Holm over a family: one metric's comparisons pooled over data sets (the claims), or one data set's
    for family_key in {(row["metric"], row["data"]) for row in out}:
        family = [row for row in out if (row["metric"], row["data"]) == family_key]
        for row, adjusted in zip(family, holm([row["p"] for row in family])):
            row["p_holm"] = float(adjusted)
    return out


def selector_family(method: str, variants: dict[str, dict[str, Any]]) -> str:
    """The selector a method label runs: a suite variant's method, and in the annotate setting the
    annotator (the part before ``>``), without the ``:s``/``:q`` mode.

    >>> selector_family("go-v-c>knn:q", {"go-v-c": {"method": "go:s", "center": True}})
    'go'
    >>> selector_family("votek:s>knn:q", {}), selector_family("knn:q", {})
    ('votek', 'knn')
    """
    first = method.split(">")[0]
    return str(variants.get(first, {}).get("method", first)).split(":")[0]


def goal_check(records: Sequence[dict[str, Any]], scores: Scores, variants: dict[str, dict[str, Any]], *,
               margin: float = 0.02, metrics: Sequence[str] = ("accuracy@batch", "accuracy"),
               seed: int = 0) -> list[dict[str, Any]]:
    """Per setting x (labels, k) and classification metric: the best GO/SAL method (the highest
    mean over the (data set, seed) units every ranked method ran) against the best baseline,
    paired on those units' common queries. In an unfinished run, methods with half the
    group's units or fewer are not ranked (``waiting``). ``met``: the difference is at least ``margin``
    and its 95% interval is above 0. Both sides are picked on the same data, so each is the
    luckiest of its group; the pair's interval does not correct for that choice."""
    cells: dict[tuple, dict[str, dict[tuple, dict[str, float]]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:  # (setting, labels, k, metric) -> method -> (data, seed) -> query -> score
        if r.get("peeks") or r["task"] != "classification" or r["cell"] not in scores or r["setting"] == "zero-shot":
            continue
        for metric in metrics:
            if metric in scores[r["cell"]][0]:
                cells[r["setting"], r["label_budget"], r["k"], metric][r["method"]][r["data"], r["seed"]] = \
                    scores[r["cell"]][0][metric]
    out = []
    for (setting, budget, k, metric), methods in sorted(cells.items()):
        ours = [m for m in methods if selector_family(m, variants) in DESIGN_FAMILIES]
        baselines = [m for m in methods if m not in ours]
        # an unfinished run: methods with half the group's units or fewer wait; the rest are ranked on
        # the units they all ran, so no method is ranked on luckier units than another
        most = max(len(units) for units in methods.values())
        ranked = [m for m in methods if 2 * len(methods[m]) > most]
        ours, baselines = [m for m in ours if m in ranked], [m for m in baselines if m in ranked]
        if not ours or not baselines:
            continue
        common_units = set.intersection(*(set(methods[m]) for m in ranked))

        def mean(method: str) -> float:
            units = common_units or methods[method]  # no unit that all ran: each method's own
            return float(np.mean([np.mean(list(methods[method][u].values())) for u in units]))

        best_ours, best_base = max(ours, key=mean), max(baselines, key=mean)  # ties: the first listed
        mine, theirs = methods[best_ours], methods[best_base]
        pairs = []
        for unit in sorted(common_units or set(mine) & set(theirs)):
            common = [q for q in mine[unit] if q in theirs[unit]]
            pairs.append((np.array([mine[unit][q] for q in common]), np.array([theirs[unit][q] for q in common])))
        if not pairs:
            continue
        result = paired_difference([a for a, _ in pairs], [b for _, b in pairs], seed=seed)
        out.append({"setting": setting, "labels": budget, "k": k, "metric": metric, "ours": best_ours,
                    "ours_mean": mean(best_ours), "baseline": best_base, "baseline_mean": mean(best_base),
                    "diff": result.diff, "ci_low": result.ci_low, "ci_high": result.ci_high, "p": result.p,
                    "units": result.units, "queries": result.queries, "mdd": result.mdd, "margin": margin,
                    "met": bool(result.diff >= margin - 1e-9 and result.ci_low > 0),  # 1e-9: a float at the margin
                    "ours_tried": " ".join(sorted(ours)), "baselines_tried": " ".join(sorted(baselines)),
                    "waiting": " ".join(sorted(m for m in methods if m not in ranked))})
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for row in rows]) + "\n"


def _write_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def pivot(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one line per setting x method x (labels, k), one column per data set, "mean [low, high]"."""
    datasets = sorted({r["data"] for r in rows})
    keys = sorted({(r["setting"], r["labels"], r["k"], r["method"]) for r in rows})
    cell = {(r["setting"], r["labels"], r["k"], r["method"], r["data"]): r for r in rows}
    lines = ["| setting | method | labels | k | " + " | ".join(datasets) + " |",
             "|---|---|---|---|" + "---|" * len(datasets)]
    for setting, budget, k, method in keys:
        values = []
        for data in datasets:
            r = cell.get((setting, budget, k, method, data))
            values.append("" if r is None or "mean" not in r else
                          f"{r['mean']:.3f}" if math.isnan(r["ci_low"]) else
                          f"{r['mean']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
        lines.append(f"| {setting} | {method} | {budget} | {k} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, references: dict[str, str], records: Sequence[dict[str, Any]] | None = None,
                 headline: str = HEADLINE["classification"], variants: dict[str, dict[str, Any]] | None = None) -> list[Path]:
    """summary.csv/.md, pivot.md, comparisons.csv/.md, goal.csv and the plots, from the run folder's files."""
    from .plots import budget_plot, forest_plot

    all_records, predictions = load_run(out)
    records = all_records if records is None else records
    scores = score_cells(records, predictions)
    rows = summarize(records, scores, references)
    comparisons = compare(records, scores, references)
    _write_csv(rows, SUMMARY_COLUMNS, out / "summary.csv")
    _write_csv(comparisons, COMPARISON_COLUMNS, out / "comparisons.csv")
    _write_csv(goal_check(records, scores, variants or {}), GOAL_COLUMNS, out / "goal.csv")
    (out / "summary.md").write_text(
        "mean: batch-calibrated accuracy (classification; `accuracy` is raw) or mean squared error (regression, "
        "lower is better) with a 95% two-level bootstrap interval over seeds and queries; @batch/@contextual: calibrated; labels: B (labels bought; the "
        "pool size in the full-labels setting); labels_used: distinct labels the demos used; gap_closed: "
        "(mean(method) - mean(random)) / (mean(best-of-N random) - mean(random)), shared setting only.\n\n"
        + _markdown(rows, SUMMARY_COLUMNS), encoding="utf-8")
    (out / "pivot.md").write_text(pivot(rows), encoding="utf-8")
    pooled = [c for c in comparisons if c["data"] == "all"]
    (out / "comparisons.md").write_text(
        "Paired differences against each setting's reference (method - reference; for mse lower is better), "
        "pooled over data sets: 95% two-level bootstrap CI over (data set, seed) units and queries, Holm-corrected "
        "p over each metric's comparisons, wins/losses over units, mdd = minimum detectable difference.\n\n"
        + _markdown(pooled, COMPARISON_COLUMNS), encoding="utf-8")
    written = [out / "summary.csv", out / "comparisons.csv", out / "goal.csv"]
    forest_rows = [c for c in comparisons if c["metric"] == headline]
    if forest_rows:
        written.append(forest_plot(forest_rows, out / "forest.png", title=f"{headline}: method - reference"))
    budget = budget_plot([r for r in rows if r["metric"] == headline], out / "accuracy_vs_label_budget.png")
    if budget is not None:
        written.append(budget)
    return written


def load_variants(out: Path) -> dict[str, dict[str, Any]]:
    """The suite variants a run folder was planned with (run.json), so labels map to selectors."""
    run_file = out / "run.json"
    if not run_file.is_file():
        return {}
    return json.loads(run_file.read_text(encoding="utf-8")).get("suite", {}).get("variants", {})


def load_references(out: Path) -> dict[str, str]:
    """The references a run folder was compared with (run.json), else the defaults."""
    from .harness import references
    from .suites import Suite

    run_file = out / "run.json"
    if run_file.is_file():
        saved = json.loads(run_file.read_text(encoding="utf-8"))
        if "references" in saved:
            return saved["references"]
    return references(Suite())
