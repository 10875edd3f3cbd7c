"""What an eval run found: a summary per cell group and paired comparisons of every method with
the reference of its setting, every number from the per-query scores of
:mod:`fewshot.evaluation.metrics` (from predictions.jsonl; records give only what a cell was and
what it cost).

Statistics (see :mod:`fewshot.evaluation.stats`): the unit is (data set, seed); within a unit the
methods answered the same queries, so differences are paired per query. A difference's interval
is a two-level bootstrap (units, then queries within units); p-values are Holm-corrected over the
comparisons of one metric pooled over data sets (and, separately, within each data set); ``mdd`` is the smallest difference the run could detect (80% power).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from .metrics import HEADLINE, cell_scores, mean_score, whole_cell_batch
from .runfolder import RunFolder, cost, write_atomic
from .stats import holm, paired_difference

SUMMARY_COLUMNS = ["data", "setting", "method", "labels", "k", "seeds", "queries", "metric", "mean", "ci_low",
                   "ci_high", "accuracy", "accuracy@batch", "accuracy@contextual", "macro_f1", "macro_f1@batch", "mae",
                   "unscored", "unparsed", "labels_used", "gap_closed", "selection_s", "selection_prompts",
                   "selection_requests", "answer_s", "http_requests",
                   "prompt_tokens", "cached_share"]
GOAL_COLUMNS = ["setting", "labels", "k", "metric", "ours", "ours_mean", "baseline", "baseline_mean", "diff", "ci_low",
                "ci_high", "p", "units", "queries", "mdd", "margin", "met", "ours_tried", "baselines_tried", "waiting"]
# The selectors fewshot exists for; every other method of a setting is one of its baselines.
# random-search (DSPy's recipe) is a baseline.
DESIGN_FAMILIES = ("go", "sal", "sal-probes", "valsearch", "excess-loss", "valued")
CALLS_COLUMNS = ["setting", "labels", "k", "metric", "rule", "ours", "ours_prompts", "baseline", "baseline_prompts",
                 "diff", "ci_low", "ci_high", "units", "queries", "mdd", "margin", "met", "no_worse", "ours_tried"]
COMPARISON_COLUMNS = ["metric", "setting", "method", "reference", "data", "labels", "k", "diff", "ci_low",
                      "ci_high", "p", "p_holm", "units", "queries", "wins", "losses", "ties", "mdd"]


def load_run(out: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The records of a run folder and the predictions of each recorded cell (nothing is changed)."""
    folder = RunFolder(out)
    return folder.records(), folder.predictions()


Scores = dict[str, tuple[dict[str, dict[str, float]], dict[str, float]]]


def score_cells(records: Sequence[dict[str, Any]], predictions: dict[str, dict[str, Any]]) -> Scores:
    """:func:`cell_scores` of every recorded cell that has predictions, once, by cell key; with one
    batch-calibration definition for all (see :func:`batch_note`)."""
    by_demo_set = not any(map(whole_cell_batch, records))
    return {r["cell"]: cell_scores(predictions[r["cell"]], r["task"], by_demo_set=by_demo_set)
            for r in records if r["cell"] in predictions}


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
            values = [mean_score(per_query, name) for per_query, _ in scored if name in per_query]
            row[name] = float(np.mean(values)) if values else math.nan
        for name in ("macro_f1", "macro_f1@batch", "mae"):
            values = [whole[name] for _, whole in scored if name in whole]
            row[name] = float(np.mean(values)) if values else math.nan
        for name in ("unscored", "unparsed"):  # answers counted over the group's cells, where the task has them
            counts = [whole[name] for _, whole in scored if name in whole]
            row[name] = int(sum(counts)) if counts else ""
        cached = sum(r.get("cached_prompt_tokens", 0) for r in group)
        fresh = sum(r.get("uncached_prompt_tokens", 0) for r in group)
        row.update(labels_used=float(np.mean([r["labels"] for r in group])),
                   gap_closed=gap_closed(records, scores, data, setting, budget, k, method, references),
                   selection_s=float(np.mean([r["selection_seconds"] for r in group])),
                   # LLM prompts and requests spent choosing the demos, apart from answering (0: none)
                   selection_prompts=float(np.mean([r.get("selection_prompts", 0) for r in group])),
                   selection_requests=float(np.mean([r.get("selection_requests", 0) for r in group])),
                   answer_s=float(np.mean([r["answer_seconds"] for r in group])),
                   http_requests=float(np.mean([cost(r, "http_requests") for r in group])),
                   prompt_tokens=float(np.mean([r["prompt_tokens"] for r in group])),
                   cached_share=cached / (cached + fresh) if cached + fresh else math.nan)
        rows.append(row)
    return rows


def gap_closed(records: Sequence[dict[str, Any]], scores: Scores, data: str, setting: str, budget: int, k: int,
               method: str, references: dict[str, str]) -> float:
    """Shared setting: (mean(method) - mean(random)) / (mean(best-of-N random) - mean(random)) under
    the headline metric, over the seeds all three ran: a ratio of means, not a mean of ratios."""
    if setting != "shared":
        return math.nan
    by_seed: dict[str, dict[int, float]] = defaultdict(dict)
    for r in records:
        if r["data"] == data and r["setting"] == "shared" and r["k"] == k and r["cell"] in scores:
            name = "best" if r.get("peeks") else r["method"]
            by_seed[name][r["seed"]] = mean_score(scores[r["cell"]][0], HEADLINE[r["task"]])
    mine, base, best = by_seed.get(method, {}), by_seed.get(references["shared"], {}), by_seed.get("best", {})
    seeds = sorted(set(mine) & set(base) & set(best))
    if not seeds or method == references["shared"]:
        return math.nan
    gap = np.mean([best[s] for s in seeds]) - np.mean([base[s] for s in seeds])
    return float((np.mean([mine[s] for s in seeds]) - np.mean([base[s] for s in seeds])) / gap) if gap else math.nan


def compare(records: Sequence[dict[str, Any]], scores: Scores, references: dict[str, str], *,
            seed: int = 0) -> list[dict[str, Any]]:
    """Every method against its setting's reference at the same labels and k, per data set and
    pooled over the data sets of one task ("all"), for every per-query metric. ``seed``: the
    bootstrap's."""
    cells = {(r["data"], r["seed"], *_key(r)): r for r in records if not r.get("peeks")}
    per_query = {cell: found[0] for cell, found in scores.items()}
    tasks = {r["data"]: r["task"] for r in records}
    grouped: dict[tuple, list] = defaultdict(list)  # (metric, setting, method, reference, scope, labels, k) -> pairs
    for (data, data_seed, setting, budget, k, method), r in sorted(cells.items()):
        if setting not in references or method == references[setting]:
            continue
        other = cells.get((data, data_seed, setting, budget, k, references[setting]))
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


def is_ours(method: str, variants: dict[str, dict[str, Any]]) -> bool:
    """Whether a method label runs one of fewshot's own selectors (GO, SAL, the LLM-feedback ones):
    in the annotate setting, as the annotator or as the retriever.

    >>> variants = {"vs-120": {"method": "valsearch:s"}, "rs-120": {"method": "random-search:s"}}
    >>> is_ours("random:s>vs-120", variants), is_ours("random:s>rs-120", variants), is_ours("go:s>knn:q", {})
    (True, False, True)
    """
    return any(selector_family(part, variants) in DESIGN_FAMILIES for part in method.split(">"))


UnitScores = dict[str, dict[tuple, dict[str, float]]]  # method -> (data set, seed) -> query -> score


def _unit_scores(records: Sequence[dict[str, Any]], scores: Scores,
                 metrics: Sequence[str]) -> dict[tuple, UnitScores]:
    """(setting, labels, k, metric) -> method -> unit -> query -> score, over the classification
    cells that chose without peeking at test labels."""
    cells: dict[tuple, UnitScores] = defaultdict(lambda: defaultdict(dict))
    for r in filter(_ranks, records):
        if r["cell"] not in scores:
            continue
        for metric in metrics:
            if metric in scores[r["cell"]][0]:
                cells[r["setting"], r["label_budget"], r["k"], metric][r["method"]][r["data"], r["seed"]] = \
                    scores[r["cell"]][0][metric]
    return cells


def _ranks(record: dict[str, Any]) -> bool:
    """Whether a cell takes part in the goal checks: a classification cell that chose without
    peeking at test labels (not zero-shot)."""
    return not record.get("peeks") and record["task"] == "classification" and record["setting"] != "zero-shot"


def _ranked(methods: UnitScores) -> tuple[list[str], set[tuple]]:
    """The methods ranked in a group (an unfinished run: those with more than half the group's
    units; the rest wait) and the units they all ran, so none is ranked on luckier units."""
    most = max(len(units) for units in methods.values())
    ranked = [m for m in methods if 2 * len(methods[m]) > most]
    return ranked, set.intersection(*(set(methods[m]) for m in ranked)) if ranked else set()


def _mean(methods: UnitScores, method: str, units: set[tuple]) -> float:
    chosen = sorted(units or methods[method])  # no unit that all ran: the method's own; sorted: the same sum every run
    return float(np.mean([np.mean(list(methods[method][u].values())) for u in chosen]))


def _paired(mine: dict[tuple, dict[str, float]], theirs: dict[tuple, dict[str, float]], units: set[tuple],
            seed: int) -> Any:
    """The paired difference of two methods over the given units (else the units both ran) and
    their common queries; None where they share none."""
    pairs = []
    for unit in sorted(units or set(mine) & set(theirs)):
        common = [q for q in mine[unit] if q in theirs[unit]]
        pairs.append((np.array([mine[unit][q] for q in common]), np.array([theirs[unit][q] for q in common])))
    return paired_difference([a for a, _ in pairs], [b for _, b in pairs], seed=seed) if pairs else None


def goal_check(records: Sequence[dict[str, Any]], scores: Scores, variants: dict[str, dict[str, Any]], *,
               margin: float = 0.02, metrics: Sequence[str] = ("accuracy@batch", "accuracy"),
               seed: int = 0) -> list[dict[str, Any]]:
    """Per setting x (labels, k) and classification metric: the best fewshot method (:func:`is_ours`; the highest
    mean over the (data set, seed) units every ranked method ran) against the best baseline,
    paired on those units' common queries. In an unfinished run, methods with half the
    group's units or fewer are not ranked (``waiting``). ``met``: the difference is at least ``margin``
    and its 95% interval is above 0. Both sides are picked on the same data, so each is the
    luckiest of its group; the pair's interval does not correct for that choice."""
    out = []
    for (setting, budget, k, metric), methods in sorted(_unit_scores(records, scores, metrics).items()):
        ranked, common_units = _ranked(methods)
        ours = [m for m in ranked if is_ours(m, variants)]
        baselines = [m for m in ranked if m not in ours]
        if not ours or not baselines:
            continue
        best_ours = max(ours, key=lambda m: _mean(methods, m, common_units))  # ties: the first listed
        best_base = max(baselines, key=lambda m: _mean(methods, m, common_units))
        result = _paired(methods[best_ours], methods[best_base], common_units, seed)
        if result is None:
            continue
        out.append({"setting": setting, "labels": budget, "k": k, "metric": metric, "ours": best_ours,
                    "ours_mean": _mean(methods, best_ours, common_units), "baseline": best_base,
                    "baseline_mean": _mean(methods, best_base, common_units),
                    "diff": result.diff, "ci_low": result.ci_low, "ci_high": result.ci_high, "p": result.p,
                    "units": result.units, "queries": result.queries, "mdd": result.mdd, "margin": margin,
                    "met": bool(result.diff >= margin - 1e-9 and result.ci_low > 0),  # 1e-9: a float at the margin
                    "ours_tried": " ".join(sorted(ours)), "baselines_tried": " ".join(sorted(baselines)),
                    "waiting": " ".join(sorted(m for m in methods if m not in ranked))})
    return out


def _uses_random_search(method: str, variants: dict[str, dict[str, Any]]) -> bool:
    return any(selector_family(part, variants) == "random-search" for part in method.split(">"))


def _unit_prompts(records: Sequence[dict[str, Any]]) -> dict[tuple, dict[tuple, float]]:
    """(setting, labels, k, method) -> (data set, seed) -> selection prompts, for the cells
    :func:`_unit_scores` keeps."""
    spent: dict[tuple, dict[tuple, float]] = defaultdict(dict)
    for r in filter(_ranks, records):
        spent[r["setting"], r["label_budget"], r["k"], r["method"]][r["data"], r["seed"]] = \
            float(r.get("selection_prompts", 0))
    return spent


def calls_check(records: Sequence[dict[str, Any]], scores: Scores, variants: dict[str, dict[str, Any]], *,
                margin: float = 0.02, metrics: Sequence[str] = ("accuracy@batch", "accuracy"),
                seed: int = 0) -> list[dict[str, Any]]:
    """The goal at equal selection calls, against each random-search (DSPy's recipe) of a group:
    ``equal calls``, the best fewshot method (:func:`is_ours`, no random search in it; one that makes no
    call counts) that spent at most its selection prompts beats it by ``margin`` with the 95% interval
    above 0; ``a third of the calls``, the best that spent at most a third matches it: the interval
    inside ``±margin`` (``no_worse``, every row: its low end above ``-margin``). Prompts are means over the
    units ranked; ranking and pairing as :func:`goal_check`."""
    prompts = _unit_prompts(records)
    out = []
    for (setting, budget, k, metric), methods in sorted(_unit_scores(records, scores, metrics).items()):
        ranked, units = _ranked(methods)
        spent = {m: float(np.mean([prompts[setting, budget, k, m][u] for u in sorted(units or methods[m])]))
                 for m in ranked}
        controls = [m for m in ranked if _uses_random_search(m, variants)]
        ours = [m for m in ranked if is_ours(m, variants) and m not in controls]
        for control in controls:
            for rule, share in (("equal calls", 1.0), ("a third of the calls", 1 / 3)):
                affordable = [m for m in ours if spent[m] <= share * spent[control] + 1e-9]
                if not affordable:
                    continue
                best = max(affordable, key=lambda m: _mean(methods, m, units))
                result = _paired(methods[best], methods[control], units, seed)
                if result is None:
                    continue
                no_worse = result.ci_low > -margin
                met = (no_worse and result.ci_high < margin) if share < 1 else \
                    result.diff >= margin - 1e-9 and result.ci_low > 0
                out.append({"setting": setting, "labels": budget, "k": k, "metric": metric, "rule": rule,
                            "ours": best, "ours_prompts": spent[best], "baseline": control,
                            "baseline_prompts": spent[control], "diff": result.diff, "ci_low": result.ci_low,
                            "ci_high": result.ci_high, "units": result.units, "queries": result.queries,
                            "mdd": result.mdd, "margin": margin, "met": bool(met), "no_worse": bool(no_worse),
                            "ours_tried": " ".join(sorted(affordable))})
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for row in rows]) + "\n"


def _write_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: Path) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


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


def batch_note(records: Sequence[dict[str, Any]]) -> str:
    """What ``accuracy@batch`` means in this report. One definition for every cell: by demo set,
    unless a per-query cell was recorded before demo-set ids (then the whole cell, as it was)."""
    older = sum(map(whole_cell_batch, records))
    if older:
        return (f"@batch: each prompt's label probabilities divided by their mean over the whole cell, in every cell "
                f"(the definition of the {older} per-query cell(s) recorded before demo-set ids; one definition "
                "keeps the comparisons paired)")
    return ("@batch: each prompt's label probabilities divided by their mean over the cell's prompts with the same "
            "demo set (a prompt whose demo set is its own stays raw)")


def write_report(out: Path, references: dict[str, str] | None = None, records: Sequence[dict[str, Any]] | None = None,
                 headline: str = HEADLINE["classification"], variants: dict[str, dict[str, Any]] | None = None) -> list[Path]:
    """summary.csv/.md, pivot.md, comparisons.csv/.md, goal.csv, calls.csv and the plots, from the run folder's
    files (changed: none of them). ``records``: a subset to report (default: the planned cells'
    records); ``references`` and ``variants`` default to run.json's. No record is an error."""
    from .plots import budget_plot, forest_plot

    folder = RunFolder(out)
    records = folder.planned_records() if records is None else records
    if not records:
        raise InputError("no finished cell to report: run (or resume) the eval first", path=str(folder.records_file))
    references = load_references(out) if references is None else references
    variants = load_variants(out) if variants is None else variants
    scores = score_cells(records, folder.predictions())
    rows = summarize(records, scores, references)
    comparisons = compare(records, scores, references)
    _write_csv(rows, SUMMARY_COLUMNS, out / "summary.csv")
    _write_csv(comparisons, COMPARISON_COLUMNS, out / "comparisons.csv")
    _write_csv(goal_check(records, scores, variants), GOAL_COLUMNS, out / "goal.csv")
    _write_csv(calls_check(records, scores, variants), CALLS_COLUMNS, out / "calls.csv")
    write_atomic(out / "summary.md",
        "mean: batch-calibrated accuracy (classification; `accuracy` is raw) or mean squared error (regression, "
        "lower is better) with a 95% two-level bootstrap interval over seeds and queries; " + batch_note(records)
        + "; @contextual: divided by each demo set's content-free prior; labels: B (labels bought; the "
        "pool size in the full-labels setting); labels_used: distinct labels the demos used; unscored: prompts "
        "the scorer reached no label for (counted wrong); unparsed: regression answers with no number (the "
        "fallback answered); gap_closed: (mean(method) - mean(random)) / (mean(best-of-N random) - mean(random)) "
        "under the headline metric, shared setting only; selection_prompts / selection_requests: LLM prompts and "
        "requests spent choosing the demos (LLM-feedback methods, SAL); http_requests: requests sent to the LLM "
        "endpoint to answer the test queries.\n\n"
        + _markdown(rows, SUMMARY_COLUMNS))
    write_atomic(out / "pivot.md", pivot(rows))
    pooled = [c for c in comparisons if c["data"] == "all"]
    write_atomic(out / "comparisons.md",
        "Paired differences against each setting's reference (method - reference; for mse lower is better), "
        "pooled over data sets: 95% two-level bootstrap CI over (data set, seed) units and queries, Holm-corrected "
        "p over each metric's comparisons, wins/losses over units, mdd = minimum detectable difference.\n\n"
        + _markdown(pooled, COMPARISON_COLUMNS))
    written = [out / "summary.csv", out / "comparisons.csv", out / "goal.csv", out / "calls.csv"]
    forest_rows = [c for c in comparisons if c["metric"] == headline]
    if forest_rows:
        written.append(forest_plot(forest_rows, out / "forest.png", title=f"{headline}: method - reference"))
    budget = budget_plot([r for r in rows if r["metric"] == headline], out / "accuracy_vs_label_budget.png")
    if budget is not None:
        written.append(budget)
    return written


def load_variants(out: Path) -> dict[str, dict[str, Any]]:
    """The suite variants a run folder was planned with (run.json), so labels map to selectors."""
    return RunFolder(out).read_run().get("suite", {}).get("variants", {})


def load_references(out: Path) -> dict[str, str]:
    """The references a run folder was compared with (run.json), else the defaults."""
    saved = RunFolder(out).read_run()
    if "references" in saved:
        return saved["references"]
    from .harness import references
    from .suites import Suite

    return references(Suite())
