"""A results page (evals/RESULTS.md) from an eval run folder, so every number in it comes from one
command:

    fewshot report results/quick --page evals/RESULTS.md --command "fewshot eval --suite quick"

It reads the folder's run.json, comparisons.csv, goal.csv, calls.csv and pivot.md (as `fewshot report` has just rebuilt
them from the records) and returns markdown: the configuration, each setting's
pooled paired comparisons with 95% intervals for the headline and raw metrics, and the pivot.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import InputError
from .metrics import HEADLINE
from .report import batch_note
from .runfolder import CellKey, RunFolder

SETTINGS = {"shared": "one demo set for all queries (B = k)",
            "annotate": "label B examples, retrieve k of them per query",
            "full": "per-query selection from the fully labeled pool"}


def verdict(row: dict[str, str]) -> str:
    """How to read a comparison: its interval, and whether it survives Holm's correction."""
    low, high, holm = float(row["ci_low"]), float(row["ci_high"]), float(row["p_holm"])
    if low <= 0 <= high:
        return "no difference shown"
    higher = (low > 0) == (row["metric"] != "mse")  # mse: lower is better
    side = "above the reference" if higher else "below the reference"
    return side if holm < 0.05 else f"CI {'above' if low > 0 else 'below'} 0, not after Holm"


def comparisons_table(rows: list[dict[str, str]]) -> list[str]:
    lines = ["| method | reference | labels | k | difference | 95% CI | p (Holm) | wins-losses | units | queries | mdd | reading |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['reference']} | {r['labels']} | {r['k']} | {float(r['diff']):+.3f} | "
                     f"[{float(r['ci_low']):+.3f}, {float(r['ci_high']):+.3f}] | {float(r['p_holm']):.3f} | "
                     f"{r['wins']}-{r['losses']} | {r['units']} | {r['queries']} | {float(r['mdd']):.3f} | {verdict(r)} |")
    return lines


def _goal_row(r: dict[str, str], sides: str) -> str:
    """A goal row: its group, the two sides compared (``sides``: their cells), the difference,
    interval, mdd, units and verdict."""
    return (f"| {r['setting']} | {r['labels']} | {r['k']} | {r['metric']} | {sides} | {float(r['diff']):+.3f} | "
            f"[{float(r['ci_low']):+.3f}, {float(r['ci_high']):+.3f}] | {float(r['mdd']):.3f} | {r['units']} | "
            + ("met" if r["met"] == "True" else "not met") + " |")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    """A report CSV's rows; none where the report did not write it (an older folder)."""
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines())) if path.is_file() else []


def goal_table(rows: list[dict[str, str]]) -> list[str]:
    """The goal check (goal.csv): per setting, the best fewshot method (GO, SAL, LLM feedback) against the
    best baseline."""
    if not rows:
        return []
    margin = float(rows[0]["margin"])
    lines = ["## Goal check: the best fewshot method (GO, SAL, LLM feedback) against the best baseline", "",
             f"Goal: in each setting, the best fewshot method beats the best baseline of that setting at the "
             f"same labels and k by at least {margin:.2f} ({margin * 100:g} points) with the 95% CI above 0. "
             "\"Best\" is the highest mean over the units every ranked method ran, the same data the difference is measured on, "
             "so both sides are the luckiest of their group; the interval does not correct for that choice.", "",
             "| setting | labels | k | metric | best fewshot (mean) | best baseline (mean) | difference | 95% CI | mdd | units | goal |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(_goal_row(r, f"{r['ours']} ({float(r['ours_mean']):.3f}) | "
                                  f"{r['baseline']} ({float(r['baseline_mean']):.3f})"))
    tried = {(r["setting"], r["labels"], r["k"]): r for r in rows}
    lines += ["", "Methods in each group: " + "; ".join(
        f"{s} (labels {b}, k {k}): fewshot {r['ours_tried']}; baselines {r['baselines_tried']}"
        + (f"; not ranked yet (half the units or fewer: the run is unfinished) {r['waiting']}" if r.get("waiting") else "")
        for (s, b, k), r in sorted(tried.items())) + ".", ""]
    return lines


def calls_table(rows: list[dict[str, str]]) -> list[str]:
    """The goal at equal selection calls (calls.csv): the best fewshot method within random
    search's selection prompts (or a third of them) against random search."""
    if not rows:
        return []
    margin = float(rows[0]["margin"])
    lines = ["## Goal check at equal selection calls: against random search (DSPy's recipe)", "",
             f"Goal: the best fewshot method that spent at most random search's selection prompts beats it by "
             f"{margin * 100:g} points with the 95% CI above 0 (equal calls), or the best that spent at most a third "
             f"of them matches it: the CI inside ±{margin * 100:g} points (a third of the calls). \"No worse\": the "
             f"CI's low end above -{margin * 100:g} points. Prompts: mean selection prompts per (data set, seed) unit.",
             "",
             "| setting | labels | k | metric | rule | fewshot (prompts) | random search (prompts) | difference | 95% CI | mdd | units | goal | no worse |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sides = (f"{r['rule']} | {r['ours']} ({float(r['ours_prompts']):.0f}) | "
                 f"{r['baseline']} ({float(r['baseline_prompts']):.0f})")
        lines.append(_goal_row(r, sides) + (" yes |" if r.get("no_worse") == "True" else " no |"))
    return lines + [""]


def per_data_set_table(rows: list[dict[str, str]], metric: str) -> list[str]:
    """Each method's difference from its setting's reference, one column per data set (95% CI,
    not corrected for the number of comparisons): where a pooled difference comes from."""
    rows = [r for r in rows if r["metric"] == metric and r["data"] != "all"]
    if not rows:
        return []
    datasets = sorted({r["data"] for r in rows})
    cell = {(r["setting"], r["method"], r["labels"], r["k"], r["data"]): r for r in rows}
    keys = sorted({(r["setting"], r["method"], r["labels"], r["k"]) for r in rows},
                  key=lambda key: (list(SETTINGS).index(key[0]) if key[0] in SETTINGS else 99, key[1:]))
    lines = [f"## Per data set: difference from the reference ({metric}, 95% CI, uncorrected)", "",
             "| setting | method | reference | labels | k | " + " | ".join(datasets) + " |",
             "|---|---|---|---|---|" + "---|" * len(datasets)]
    for setting, method, budget, k in keys:
        found = [cell.get((setting, method, budget, k, d)) for d in datasets]
        reference = next(r["reference"] for r in found if r is not None)
        values = ["" if r is None else f"{float(r['diff']):+.3f} [{float(r['ci_low']):+.2f}, {float(r['ci_high']):+.2f}]"
                  for r in found]
        lines.append(f"| {setting} | {method} | {reference} | {budget} | {k} | " + " | ".join(values) + " |")
    return lines + [""]


def _progress(planned: list[str], done: set[str]) -> list[str]:
    """A line saying how far an unfinished run got: the finished seeds of each data set."""
    if not planned or done >= set(planned):
        return []
    seeds: dict[str, dict[str, bool]] = {}  # data set -> seed -> every planned cell done
    for cell in planned:
        key = CellKey.parse(cell)
        row = seeds.setdefault(key.data, {})
        row[key.seed] = row.get(key.seed, True) and cell in done
    finished = ", ".join(f"{name} {sum(ok.values())} of {len(ok)}" for name, ok in sorted(seeds.items()))
    return [f"- **Unfinished run:** {len(done)} of {len(planned)} planned cells; seeds finished per data set: "
            f"{finished}. The same command resumes it."]


def results_page(folder: Path, command: str, title: str = "Results", page: str = "PAGE",
                 notes: Path | None = None) -> str:
    """Markdown for a run folder whose report (comparisons.csv, goal.csv, pivot.md) is written;
    ``notes``, a markdown file (what was tried, how to read the run), is placed after the goal check."""
    run_folder = RunFolder(folder)
    run = run_folder.read_run()
    if not run:
        raise InputError("no run.json here: the page needs the folder's configuration", path=str(run_folder.run_file))
    config, suite = run["configuration"], run["suite"]
    planned = run.get("cells", [])
    records = [r for r in run_folder.records() if not planned or r["cell"] in set(planned)]
    done = {r["cell"] for r in records} & set(planned)
    data = sorted({CellKey.parse(cell).data for cell in done}) or sorted(config["data"])
    budget = f"; demos within {config['max_tokens']} tokens per prompt" if config.get("max_tokens") else ""
    every_comparison = list(csv.DictReader((folder / "comparisons.csv").read_text(encoding="utf-8").splitlines()))
    comparisons = [r for r in every_comparison if r["data"] == "all"]
    again = (f'fewshot report {folder} --page {page} --command "{command}"' + (f' --title "{title}"' if title != "Results" else "")
             + (f" --notes {notes}" if notes is not None else ""))
    out = [f"# {title}", "", f"**Command:** `{command}`; this file: `{again}`.",
           "", f"- Data: {', '.join(data)}; pool {config['pool_size']}, {config['test_size']} test queries "
           f"per data set and seed, {suite['seeds']} seed(s); k = {', '.join(map(str, suite['k']))}; "
           f"label budgets {suite['label_budgets'] or 'none'}{budget}.",
           *_progress(planned, done),
           f"- LLM: {config['model']} ({config['api']} API); embeddings: all-MiniLM-L6-v2.",
           f"- Headline metric: {HEADLINE['classification']} (batch-calibrated accuracy); raw accuracy beside it; "
           f"{batch_note(records)}.",
           "- Each difference is method - reference on the same queries, pooled over data sets of one task: a 95% "
           "two-level bootstrap interval over (data set, seed) units and queries, Holm-corrected p over each "
           "metric's pooled comparisons, wins-losses over units, and mdd, the smallest difference this run could detect.", ""]
    out += goal_table(_csv_rows(folder / "goal.csv")) + calls_table(_csv_rows(folder / "calls.csv"))
    if notes is not None:
        out += [notes.read_text(encoding="utf-8").rstrip(), ""]
    for setting, meaning in SETTINGS.items():
        for metric in (HEADLINE["classification"], "accuracy", "mse"):
            rows = [r for r in comparisons if r["setting"] == setting and r["metric"] == metric]
            if rows:
                out += [f"## {setting}: {meaning} ({metric})", "", *comparisons_table(rows), ""]
    if len({r["data"] for r in every_comparison} - {"all"}) > 1:
        out += per_data_set_table(every_comparison, HEADLINE["classification"])
    out += ["## Every cell (headline metric, mean [95% interval])", "", (folder / "pivot.md").read_text()]
    return "\n".join(out)
