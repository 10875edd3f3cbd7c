import math

from fewshot.evaluation.report import summarize


def record(method, seed, score, k=4, data="d", task="classification"):
    return {"data": data, "task": task, "seed": seed, "method": method, "k": k, "score": score,
            "selection_seconds": 0.5, "answer_seconds": 2.0, "llm_calls": 10, "prompt_tokens": 100,
            "label_fallbacks": 0}


def test_summary_by_hand():
    records = [record("random:s", 0, 0.5), record("random:s", 1, 0.6),
               record("oracle", 0, 0.9), record("oracle", 1, 0.8),
               record("knn:q", 0, 0.7), record("knn:q", 1, 0.6),
               record("go:s", 0, 0.7), record("go:s", 1, 0.5)]
    rows = {r["method"]: r for r in summarize(records)}
    go = rows["go:s"]
    assert math.isclose(go["mean"], 0.6) and go["seeds"] == 2
    assert go["win_vs_random"] == 0.5  # seed 0 wins 0.7 > 0.5, seed 1 loses 0.5 < 0.6
    assert go["win_vs_knn"] == 0.25  # tie on seed 0 (half), loss on seed 1
    # gap closed: seed 0 (0.7-0.5)/(0.9-0.5) = 0.5; seed 1 (0.5-0.6)/(0.8-0.6) = -0.5; mean 0
    assert math.isclose(go["gap_closed"], 0.0, abs_tol=1e-12)
    assert math.isnan(rows["random:s"]["win_vs_random"])


def test_regression_lower_is_better():
    records = [record("random:s", 0, 10.0, task="regression"), record("go:s", 0, 4.0, task="regression")]
    rows = {r["method"]: r for r in summarize(records)}
    assert rows["go:s"]["win_vs_random"] == 1.0


def test_pivot_and_paired_tables():
    from fewshot.evaluation.report import paired_tests, pivot

    records = [record("random:s", s, 0.5) for s in range(3)] + [record("go:s", s, v) for s, v in enumerate([0.6, 0.7, 0.4])]
    table = pivot(summarize(records))
    assert "| go:s | 4 | 0.567 [" in table
    paired = paired_tests(records)
    # differences +0.1, +0.2, -0.1: 2 wins, 1 loss, p = 1.0
    assert "| go:s | 3 | 2 | 1 | 0 | +0.067 | 1.000 |" in paired


def test_report_command_rebuilds_tables_and_plots(tmp_path):
    import json

    from typer.testing import CliRunner

    from fewshot.cli import app

    records = [record(m, s, v) for m, s, v in [("random:s", 0, 0.5), ("random:s", 1, 0.6),
                                                ("knn:q", 0, 0.7), ("knn:q", 1, 0.8)]]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("summary.md", "summary.csv", "pivot.md", "paired.md", "accuracy_vs_budget.png", "summary.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| knn:q | 4 | 0.750 [" in (tmp_path / "pivot.md").read_text()
    assert CliRunner().invoke(app, ["report", str(tmp_path / "nothing")]).exit_code == 2
