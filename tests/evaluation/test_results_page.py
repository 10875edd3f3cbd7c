"""The results page (evals/RESULTS.md) comes from a run folder's files, nothing typed by hand."""

import json

from typer.testing import CliRunner

from fewshot.cli import app
from tests.evaluation.test_report import SHARED


def test_results_page_from_a_run_folder(tmp_path):
    records, predictions = SHARED
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions.values()))
    config = {"data": {"d": "x"}, "pool_size": 30, "test_size": 4, "model": "m", "api": "completions", "max_tokens": 300}
    (tmp_path / "run.json").write_text(json.dumps({"configuration": config, "suite": {"seeds": 2, "k": [4], "label_budgets": []},
                                                   "references": {"shared": "random:s", "annotate": "random:s>knn:q", "full": "knn:q"}}))
    (tmp_path / "notes.md").write_text("## What was tried\n\nEverything.\n")
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--page", str(tmp_path / "RESULTS.md"),
                                      "--command", "fewshot eval --suite x", "--notes", str(tmp_path / "notes.md")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "RESULTS.md").read_text()
    assert page.startswith("# Results") and "`fewshot eval --suite x`" in page
    assert "label budgets none; demos within 300 tokens per prompt." in page
    assert "@batch: each prompt's label probabilities divided by their mean over the cell's prompts with the same demo set" in page
    # go:s beats random:s by 0.25 on both seeds (see test_report): the row carries that difference
    assert "| go:s | random:s | 4 | 4 | +0.250 |" in page and "## shared" in page
    # the goal check pairs go:s with the only baseline; 0.25 >= 2 points, met only if the CI is above 0
    goal = next(line for line in page.splitlines() if line.startswith("| shared | 4 | 4 | accuracy@batch |"))
    assert "go:s (0.750)" in goal and "random:s (0.500)" in goal and "+0.250" in goal
    assert page.index("## Goal check") < page.index("## What was tried") < page.index("## shared")
    assert "--notes" in page.splitlines()[2]
    missing = CliRunner().invoke(app, ["report", str(tmp_path), "--page", str(tmp_path / "R.md"), "--notes", "nope.md"])
    assert missing.exit_code != 0 and "nope.md" in missing.output


def test_an_unfinished_run_says_how_many_seeds_each_data_set_has():
    from fewshot.evaluation.results_page import _progress

    key = lambda data, seed, setting, method: f"{data}|{seed}|{setting}|{method}|B4|k4"  # noqa: E731
    planned = [key("a", 0, "shared", "x"), key("a", 0, "full", "y"), key("a", 1, "shared", "x"),
               key("a", 1, "full", "y"), key("b", 0, "shared", "x")]
    (line,) = _progress(planned, set(planned[:3]))
    assert "3 of 5 planned cells" in line and "a 1 of 2, b 0 of 1" in line
    assert _progress(planned, set(planned)) == []  # a finished run says nothing


def test_per_data_set_table_puts_each_data_set_in_a_column():
    from fewshot.evaluation.results_page import per_data_set_table

    row = lambda data, diff: {"metric": "accuracy@batch", "setting": "full", "method": "go:q", "reference": "knn:q",  # noqa: E731
                              "labels": "40", "k": "4", "data": data, "diff": diff, "ci_low": "-0.1", "ci_high": "0.2"}
    lines = per_data_set_table([row("all", "0.05"), row("b", "0.1"), row("a", "-0.02"),
                                {**row("a", "0.3"), "metric": "accuracy"}], "accuracy@batch")
    assert lines[2] == "| setting | method | reference | labels | k | a | b |"
    assert lines[4] == "| full | go:q | knn:q | 40 | 4 | -0.020 [-0.10, +0.20] | +0.100 [-0.10, +0.20] |"
    assert per_data_set_table([row("all", "0.05")], "accuracy@batch") == []


def test_calls_table_names_each_side_with_its_prompts_and_the_rule():
    from fewshot.evaluation.results_page import calls_table

    row = {"setting": "full", "labels": "300", "k": "4", "metric": "accuracy", "rule": "a third of the calls",
           "ours": "vs-80", "ours_prompts": "79.0", "baseline": "rs-240", "baseline_prompts": "240.0", "diff": "-0.01",
           "ci_low": "-0.015", "ci_high": "0.02", "units": "30", "queries": "3000", "mdd": "0.03", "margin": "0.02",
           "met": "True", "no_worse": "True", "ours_tried": "vs-80"}
    lines = calls_table([row, {**row, "ci_low": "-0.03", "met": "False", "no_worse": "False"}])
    assert lines[0].startswith("## Goal check at equal selection calls")
    assert lines[-3] == ("| full | 300 | 4 | accuracy | a third of the calls | vs-80 (79) | rs-240 (240) | -0.010 | "
                         "[-0.015, +0.020] | 0.030 | 30 | met | yes |")
    assert lines[-2].endswith("| not met | no |") and calls_table([]) == []
