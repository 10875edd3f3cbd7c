"""Write evals/RESULTS.md from an eval run folder, so every number in it comes from one command.

    python evals/make_results.py results/quick "fewshot eval --suite quick" > evals/RESULTS.md
    python evals/make_results.py results/tune "fewshot eval --suite tune" "Tuning sweep" > evals/TUNING.md

It reads the folder's run.json, comparisons.csv and pivot.md (rebuilt first with the library's
report, so the tables match the records) and prints markdown: the configuration, each setting's
pooled paired comparisons with 95% intervals for the headline and raw metrics, and the pivot.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from fewshot.evaluation.report import HEADLINE, load_references, write_report

SETTINGS = {"shared": "one demo set for all queries (B = k)",
            "annotate": "label B examples, retrieve k of them per query",
            "full": "per-query selection from the fully labeled pool"}


def verdict(row: dict[str, str]) -> str:
    low, high = float(row["ci_low"]), float(row["ci_high"])
    better = "lower" if row["metric"] == "mse" else "higher"
    if low > 0:
        return "above the reference" if better == "higher" else "worse (higher error)"
    if high < 0:
        return "below the reference" if better == "higher" else "better (lower error)"
    return "no difference shown"


def comparisons_table(rows: list[dict[str, str]]) -> list[str]:
    lines = ["| method | reference | labels | k | difference | 95% CI | p (Holm) | wins-losses | units | queries | mdd | reading |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['reference']} | {r['labels']} | {r['k']} | {float(r['diff']):+.3f} | "
                     f"[{float(r['ci_low']):+.3f}, {float(r['ci_high']):+.3f}] | {float(r['p_holm']):.3f} | "
                     f"{r['wins']}-{r['losses']} | {r['units']} | {r['queries']} | {float(r['mdd']):.3f} | {verdict(r)} |")
    return lines


def main(folder: Path, command: str, title: str = "Results") -> str:
    write_report(folder, load_references(folder))
    run = json.loads((folder / "run.json").read_text())
    config, suite = run["configuration"], run["suite"]
    comparisons = [r for r in csv.DictReader(open(folder / "comparisons.csv")) if r["data"] == "all"]
    again = f'python evals/make_results.py {folder} "{command}"' + (f' "{title}"' if title != "Results" else "")
    out = [f"# {title}", "", f"**Command:** `{command}`; this file: `{again}`.",
           "", f"- Data: {', '.join(config['data'])}; pool {config['pool_size']}, {config['test_size']} test queries "
           f"per data set and seed, {suite['seeds']} seed(s); k = {', '.join(map(str, suite['k']))}; "
           f"label budgets {suite['label_budgets'] or 'none'}.",
           f"- LLM: {config['model']} ({config['api']} API); embeddings: all-MiniLM-L6-v2.",
           f"- Headline metric: {HEADLINE['classification']} (batch-calibrated accuracy); raw accuracy beside it.",
           "- Each difference is method - reference on the same queries, pooled over data sets of one task: a 95% "
           "two-level bootstrap interval over (data set, seed) units and queries, Holm-corrected p over each "
           "metric's pooled comparisons, wins-losses over units, and mdd, the smallest difference this run could detect.", ""]
    for setting, meaning in SETTINGS.items():
        for metric in (HEADLINE["classification"], "accuracy", "mse"):
            rows = [r for r in comparisons if r["setting"] == setting and r["metric"] == metric]
            if rows:
                out += [f"## {setting}: {meaning} ({metric})", "", *comparisons_table(rows), ""]
    out += ["## Every cell (headline metric, mean [95% interval])", "", (folder / "pivot.md").read_text()]
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    print(main(Path(sys.argv[1]), *sys.argv[2:]))
