"""Summaries of an eval run: tables (markdown, csv) with means and 95% intervals over seeds, win
rates against random and kNN, the share of the random-to-oracle gap closed, cost, and plots."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .stats import mean_interval, sign_test, win_rate

COLUMNS = ["data", "method", "k", "seeds", "mean", "ci_low", "ci_high", "win_vs_random", "win_vs_knn",
           "gap_closed", "selection_s", "answer_s", "llm_calls", "prompt_tokens", "label_fallbacks"]


def _paired(records, data, k, method) -> dict[int, float]:
    return {r["seed"]: r["score"] for r in records if r["data"] == data and r["k"] == k and r["method"] == method}


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per data set x method x budget (zero-shot is budget 0)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["data"], r["method"], r["k"]].append(r)
    rows = []
    for (data, method, k), group in sorted(groups.items(), key=lambda item: (item[0][0], item[0][2], item[0][1])):
        higher = group[0]["task"] == "classification"
        mine = {r["seed"]: r["score"] for r in group}
        row = {"data": data, "method": method, "k": k, "seeds": len(group)}
        row["mean"], row["ci_low"], row["ci_high"] = mean_interval(list(mine.values()))
        for name, baseline in (("random", "random:s"), ("knn", "knn:q")):
            other = _paired(records, data, k, baseline)
            common = sorted(set(mine) & set(other))
            row[f"win_vs_{name}"] = (win_rate([mine[s] for s in common], [other[s] for s in common], higher)
                                     if common and method != baseline else float("nan"))
        randoms, oracles = _paired(records, data, k, "random:s"), _paired(records, data, k, "oracle")
        gaps = [(mine[s] - randoms[s]) / (oracles[s] - randoms[s]) for s in mine
                if s in randoms and s in oracles and oracles[s] != randoms[s]]
        row["gap_closed"] = float(np.mean(gaps)) if gaps else float("nan")
        for key, column in (("selection_seconds", "selection_s"), ("answer_seconds", "answer_s"),
                            ("llm_calls", "llm_calls"), ("prompt_tokens", "prompt_tokens"),
                            ("label_fallbacks", "label_fallbacks")):
            row[column] = float(np.mean([r[key] for r in group]))
        rows.append(row)
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def write_tables(rows: list[dict[str, Any]], out: Path, records: Sequence[dict[str, Any]] = ()) -> None:
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(row[c]) for c in COLUMNS) + " |" for row in rows]
    (out / "summary.md").write_text(
        "Score: accuracy (classification) or mean squared error (regression, lower is better); mean and 95% "
        "t-interval over seeds. win_vs_*: share of seeds beating that baseline (ties half). gap_closed: "
        "(method - random) / (oracle - random), averaged over seeds.\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    (out / "pivot.md").write_text(pivot(rows), encoding="utf-8")
    if records:
        sections = [f"{task.capitalize()}, against {baseline} (difference in "
                    f"{'accuracy' if task == 'classification' else 'mean squared error, sign flipped'})\n\n"
                    + paired_tests(records, baseline, task)
                    for task in ("classification", "regression") if any(r["task"] == task for r in records)
                    for baseline in ("random:s", "knn:q")]
        (out / "paired.md").write_text("\n".join(sections), encoding="utf-8")


def write_plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """accuracy_vs_budget.png (one panel per data set) and summary.png (mean win rate vs random)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["data"] for r in rows})
    methods = sorted({r["method"] for r in rows if r["k"] > 0})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3.5), squeeze=False)
    for ax, data in zip(axes[0], datasets):
        for method in methods:
            points = sorted((r["k"], r["mean"], r["ci_low"], r["ci_high"]) for r in rows
                            if r["data"] == data and r["method"] == method)
            if points:
                k, mean, low, high = map(np.array, zip(*points))
                err = np.where(np.isnan(low), 0, [mean - low, high - mean])
                ax.errorbar(k, mean, yerr=err, marker="o", capsize=3, label=method)
        zero = [r["mean"] for r in rows if r["data"] == data and r["method"] == "zero-shot"]
        if zero:
            ax.axhline(zero[0], color="grey", linestyle=":", label="zero-shot")
        ax.set_title(data)
        ax.set_xlabel("demos (k)")
    axes[0][0].set_ylabel("score")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    first = out / "accuracy_vs_budget.png"
    fig.savefig(first, dpi=110)
    plt.close(fig)
    honest = [m for m in methods if m not in ("oracle", "random:s")]
    wins = [np.nanmean([r["win_vs_random"] for r in rows if r["method"] == m]) for m in honest]
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(honest)), 3.5))
    ax.bar(honest, wins)
    ax.axhline(0.5, color="grey", linestyle=":")
    ax.set_ylabel("win rate vs random")
    ax.set_title("all data sets and budgets", fontsize=9)
    ax.set_ylim(0, 1)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    fig.tight_layout()
    second = out / "summary.png"
    fig.savefig(second, dpi=110)
    plt.close(fig)
    return [first, second]


def pivot(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per method x budget, one column per data set, "mean [low, high]"."""
    datasets = sorted({r["data"] for r in rows})
    keys = sorted({(r["method"], r["k"]) for r in rows}, key=lambda mk: (mk[1], mk[0]))
    cell = {(r["method"], r["k"], r["data"]): r for r in rows}
    lines = ["| method | k | " + " | ".join(datasets) + " |", "|---|---|" + "---|" * len(datasets)]
    for method, k in keys:
        values = []
        for data in datasets:
            r = cell.get((method, k, data))
            if r is None:
                values.append("")
            elif math.isnan(r["ci_low"]):
                values.append(f"{r['mean']:.3f}")
            else:
                values.append(f"{r['mean']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
        lines.append(f"| {method} | {k} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def paired_tests(records: Sequence[dict[str, Any]], baseline: str = "random:s", task: str = "classification") -> str:
    """Markdown: each method against a baseline over every (data set, seed, budget) pair of one task
    kind, with the sign test; regression differences (MSE) are negated so positive means better."""
    by_key = {(r["data"], r["seed"], r["k"], r["method"]): r for r in records if r["task"] == task}
    lines = ["| method | pairs | wins | losses | ties | mean difference | sign-test p |", "|---|---|---|---|---|---|---|"]
    for method in sorted({r["method"] for r in records if r["k"] > 0 and r["method"] != baseline}):
        diffs = []
        for (data, seed, k, m), r in by_key.items():
            other = by_key.get((data, seed, k, baseline))
            if m == method and other is not None:
                sign = 1.0 if r["task"] == "classification" else -1.0
                diffs.append(sign * (r["score"] - other["score"]))
        if not diffs:
            continue
        wins, losses, ties, p = sign_test(diffs)
        lines.append(f"| {method} | {len(diffs)} | {wins} | {losses} | {ties} | {np.mean(diffs):+.3f} | {p:.3f} |")
    return "\n".join(lines) + "\n"
