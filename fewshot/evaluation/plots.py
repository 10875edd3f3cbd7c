"""Plots for the eval report: a forest plot of paired differences and accuracy against label budget.

matplotlib is imported inside the functions (Agg backend), so importing this module stays cheap.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _unique(values) -> list:
    """Distinct values in first-seen order (the caller's order is the reading order)."""
    return list(dict.fromkeys(values))


def _forest_lines(rows: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, Any], bool]]:
    """(tick label, row, pooled?) of one setting, top to bottom: each method's pooled row, then its data sets.

    >>> rows = [{"method": "go:s", "reference": "random:s", "data": d, "labels": 8, "k": 4} for d in ("sst2", "all")]
    >>> [(label, pooled) for label, _, pooled in _forest_lines(rows)]
    [('go:s vs random:s', True), ('  sst2', False)]
    """
    several_budgets = len({(r["labels"], r["k"]) for r in rows}) > 1
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["reference"], r["labels"], r["k"])].append(r)
    lines = []
    for (method, reference, labels, k), group in groups.items():
        name = f"{method} vs {reference}" + (f" (B={labels}, k={k})" if several_budgets else "")
        pooled = [r for r in group if r["data"] == "all"]
        lines += [(name, r, True) for r in pooled]
        # Without a pooled row the data rows carry the comparison's name themselves.
        lines += [(f"  {r['data']}" if pooled else f"  {r['data']}: {name}", r, False)
                  for r in sorted((r for r in group if r["data"] != "all"), key=lambda r: str(r["data"]))]
    return lines


def forest_figure(rows: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """The forest plot's figure (one panel per setting, shared x); `forest_plot` saves and closes it."""
    plt = _pyplot()
    settings = _unique(r["setting"] for r in rows)
    if not settings:
        raise ValueError("no rows to plot")
    panels = {s: _forest_lines([r for r in rows if r["setting"] == s]) for s in settings}
    height = max(2.5, 0.28 * max(len(lines) for lines in panels.values()) + 1.3)
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), height), sharex=True, squeeze=False)
    metric = _unique(r["metric"] for r in rows)
    for ax, setting in zip(axes[0], settings):
        lines = panels[setting]
        y = np.arange(len(lines))[::-1]  # first line on top
        for yi, (_, r, pooled) in zip(y, lines):
            err = [[max(r["diff"] - r["ci_low"], 0.0)], [max(r["ci_high"] - r["diff"], 0.0)]]
            if np.isnan(err).any():
                err = None
            if pooled:
                ax.errorbar(r["diff"], yi, xerr=err, fmt="D", color="black", markersize=6, capsize=3, elinewidth=1.8)
            else:
                ax.errorbar(r["diff"], yi, xerr=err, fmt="o", color="0.55", markersize=3, capsize=2, elinewidth=0.9)
        ax.axvline(0, color="grey", linestyle="--", linewidth=1)
        ax.set_yticks(y, [label for label, _, _ in lines], fontsize=8)
        for tick, (_, _, pooled) in zip(ax.get_yticklabels(), lines):
            tick.set_fontweight("bold" if pooled else "normal")
        ax.set_ylim(-0.7, len(lines) - 0.3)
        references = ", ".join(_unique(r["reference"] for _, r, _ in lines))
        ax.set_title(f"{setting} (vs {references})", fontsize=10)
        ax.set_xlabel(f"difference in {'/'.join(map(str, metric))} (method - reference)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def forest_plot(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Forest plot of paired differences with their intervals; one panel per setting; returns `path`.

    Each row has setting, method, reference, data ("all" for the pooled row), labels, k, metric, diff,
    ci_low, ci_high. Pooled rows are bold diamonds, per-data-set rows small grey dots under their method.
    The caller passes rows of one metric.
    """
    plt = _pyplot()
    fig = forest_figure(rows, title)
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _budget_settings(rows: Sequence[dict[str, Any]]) -> list:
    """Settings in which more than one distinct label budget ran.

    >>> _budget_settings([{"setting": "full", "labels": 8}, {"setting": "full", "labels": 32},
    ...                   {"setting": "shared", "labels": 8}])
    ['full']
    """
    budgets: dict[Any, set] = defaultdict(set)
    for r in rows:
        budgets[r["setting"]].add(r["labels"])
    return [s for s, b in budgets.items() if len(b) > 1]


def budget_figure(rows: Sequence[dict[str, Any]]) -> Figure | None:
    """The budget plot's figure (one panel per data set and multi-budget setting), or None without one."""
    settings = _budget_settings(rows)
    if not settings:
        return None
    plt = _pyplot()
    panels = _unique((r["setting"], r["data"]) for r in rows if r["setting"] in settings)
    columns = min(4, len(panels))
    n_rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(n_rows, columns, figsize=(4 * columns, 3.3 * n_rows), squeeze=False)
    for ax, (setting, data) in zip(axes.flat, panels):
        panel = [r for r in rows if r["setting"] == setting and r["data"] == data]
        for method in _unique(r["method"] for r in panel):
            mine = [r for r in panel if r["method"] == method]
            # A method with several k per budget gets one line per k, so no line zig-zags between them.
            split = len({r["labels"] for r in mine}) < len(mine)
            for k in _unique(r["k"] for r in mine) if split else [None]:
                points = sorted((r["labels"], r["mean"], r["ci_low"], r["ci_high"])
                                for r in mine if k is None or r["k"] == k)
                x, mean, low, high = (np.array(v, dtype=float) for v in zip(*points))
                mean, low, high = (np.clip(v, 0, 1) for v in (mean, low, high))
                err = np.nan_to_num(np.array([mean - low, high - mean]), nan=0.0).clip(min=0)
                ax.errorbar(x, mean, yerr=err, marker="o", markersize=4, capsize=3,
                            label=method if k is None else f"{method} k={k}")
        budgets = sorted({r["labels"] for r in panel})
        if min(budgets) > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_ylim(0, 1)
        ax.set_title(f"{data} ({setting})", fontsize=10)
        ax.set_xlabel("label budget")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7, loc="best")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def budget_plot(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Accuracy (mean with its interval, clipped to [0, 1]) against label budget, one line per method.

    Only settings that ran more than one label budget are drawn; returns None and writes nothing when
    there is none. Rows have data, setting, method, labels, k, mean, ci_low, ci_high.

    >>> budget_plot([{"data": "sst2", "setting": "full", "method": "go:s", "labels": 8, "k": 4,
    ...               "mean": 0.8, "ci_low": 0.7, "ci_high": 0.9}], Path("unused.png")) is None
    True
    """
    fig = budget_figure(rows)
    if fig is None:
        return None
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path
