import pytest

pytest.importorskip("matplotlib")

import matplotlib.pyplot as plt  # noqa: E402

from fewshot.evaluation.plots import budget_figure, budget_plot, forest_figure, forest_plot  # noqa: E402


def comparison(setting, data, diff=0.02, method="go:s", labels=8, k=4):
    return {"setting": setting, "method": method, "reference": "random:s", "data": data, "labels": labels, "k": k,
            "metric": "accuracy", "diff": diff, "ci_low": diff - 0.01, "ci_high": diff + 0.015}


def summary(setting, data, method, labels, mean):
    return {"data": data, "setting": setting, "method": method, "labels": labels, "k": min(labels, 4),
            "mean": mean, "ci_low": mean - 0.1, "ci_high": mean + 0.1}


def test_forest_plot_writes_a_png(tmp_path):
    rows = [comparison("shared", d) for d in ("all", "sst2", "trec")]
    path = forest_plot(rows, tmp_path / "forest.png", title="accuracy")
    assert path == tmp_path / "forest.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forest_plot_has_one_panel_per_setting_with_pooled_rows_first():
    rows = [comparison(s, d, method=m) for s in ("shared", "annotate", "full")
            for m in ("go:s", "knn:q") for d in ("sst2", "all")]
    fig = forest_figure(rows)
    try:
        assert len(fig.axes) == 3
        assert [ax.get_title() for ax in fig.axes] == ["shared (vs random:s)", "annotate (vs random:s)",
                                                       "full (vs random:s)"]
        ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
        assert ticks == ["go:s vs random:s", "  sst2", "knn:q vs random:s", "  sst2"]
        assert [t.get_fontweight() for t in fig.axes[0].get_yticklabels()] == ["bold", "normal"] * 2
    finally:
        plt.close(fig)


def test_forest_plot_names_budgets_when_a_setting_has_several():
    rows = [comparison("full", "all", labels=b, k=k) for b, k in ((8, 4), (32, 8))] + [comparison("shared", "all")]
    fig = forest_figure(rows)
    try:
        full, shared = ([t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes)
        assert full == ["go:s vs random:s (B=8, k=4)", "go:s vs random:s (B=32, k=8)"]
        assert shared == ["go:s vs random:s"]
    finally:
        plt.close(fig)


def test_budget_plot_needs_several_budgets(tmp_path):
    rows = [summary("shared", d, m, 8, 0.7) for d in ("sst2", "trec") for m in ("go:s", "random:s")]
    assert budget_plot(rows, tmp_path / "budget.png") is None
    assert not (tmp_path / "budget.png").exists()


def test_budget_plot_draws_a_panel_per_data_set_of_multi_budget_settings(tmp_path):
    rows = [summary("full", d, m, b, 0.5 + b / 100) for d in ("sst2", "trec") for m in ("go:s", "random:s")
            for b in (8, 16, 32)]
    rows += [summary("shared", "sst2", "go:s", 8, 0.95)]  # one budget only: not drawn
    fig = budget_figure(rows)
    try:
        visible = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in visible] == ["sst2 (full)", "trec (full)"]
        assert len(visible[0].get_lines()) >= 2  # a line per method (error bars add more)
        assert visible[0].get_ylim() == (0.0, 1.0)
    finally:
        plt.close(fig)
    path = budget_plot(rows, tmp_path / "budget.png")
    assert path == tmp_path / "budget.png" and path.stat().st_size > 1000
