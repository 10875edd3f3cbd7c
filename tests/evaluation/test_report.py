"""The report: per-query scores raw and calibrated, summaries and paired comparisons, by hand."""

import csv
import json
import math

import pytest
from typer.testing import CliRunner

from fewshot.cli import app
from fewshot.evaluation.report import cell_scores, compare, gap_closed, score_cells, summarize

REFERENCES = {"shared": "random:s", "annotate": "random:s>knn:q", "full": "knn:q"}


def cell(method, seed, correct, setting="shared", k=4, budget=4, peeks=False, data="d"):
    """A record and its predictions: every gold label is 'a'; a right answer has p(a) = 0.8."""
    key = f"{data}|{seed}|{setting}|{method}|B{budget}|k{k}"
    rows = [{"id": f"q{i}", "gold": "a", "prediction": "a" if c else "b", "correct": bool(c), "unscored": False,
             "probs": [0.8, 0.2] if c else [0.3, 0.7]} for i, c in enumerate(correct)]
    record = {"cell": key, "data": data, "task": "classification", "seed": seed, "setting": setting,
              "method": method, "label_budget": budget, "labels": budget, "k": k, "peeks": peeks,
              "score": sum(correct) / len(correct), "unscored": 0, "selection_seconds": 0.5, "answer_seconds": 2.0,
              "llm_calls": 10, "prompt_tokens": 100, "cached_prompt_tokens": 60, "uncached_prompt_tokens": 40,
              "label_fallbacks": 0}
    return record, {"cell": key, "labels": ["a", "b"], "rows": rows}


def run(*cells):
    return [c[0] for c in cells], {c[1]["cell"]: c[1] for c in cells}


SHARED = run(cell("random:s", 0, [1, 0, 0, 1]), cell("random:s", 1, [0, 0, 1, 1]),
             cell("go:s", 0, [1, 1, 0, 1]), cell("go:s", 1, [0, 1, 1, 1]),
             cell("random-best-of-3", 0, [1, 1, 1, 1], peeks=True), cell("random-best-of-3", 1, [1, 1, 1, 0], peeks=True))


def test_batch_calibration_and_macro_f1_by_hand():
    prediction = {"labels": ["a", "b"], "rows": [
        {"id": "1", "gold": "a", "unscored": False, "probs": [0.9, 0.1]},
        {"id": "2", "gold": "b", "unscored": False, "probs": [0.6, 0.4]},
        {"id": "3", "gold": "b", "unscored": True, "probs": [0.5, 0.5]}]}
    per_query, whole = cell_scores(prediction, "classification")
    # raw: a, a, unscored (wrong). batch: mean of scored rows (0.75, 0.25) -> (0.75, 0.25): a; (0.33, 0.67): b
    assert per_query["accuracy"] == {"1": 1.0, "2": 0.0, "3": 0.0}
    assert per_query["accuracy@batch"] == {"1": 1.0, "2": 1.0, "3": 0.0}
    # raw macro-F1: a: P 1/2, R 1 -> 2/3; b: no hit -> 0; mean 1/3. batch: a 1; b: P 1, R 1/2 -> 2/3
    assert whole["macro_f1"] == pytest.approx(1 / 3) and whole["macro_f1@batch"] == pytest.approx(5 / 6)
    assert "accuracy@contextual" not in per_query


def test_contextual_calibration_uses_each_rows_prior():
    prediction = {"labels": ["a", "b"], "rows": [
        {"id": "1", "gold": "b", "unscored": False, "probs": [0.6, 0.4], "prior": [0.8, 0.2]},
        {"id": "2", "gold": "a", "unscored": False, "probs": [0.6, 0.4], "prior": [0.5, 0.5]}]}
    per_query, _ = cell_scores(prediction, "classification")
    assert per_query["accuracy@contextual"] == {"1": 1.0, "2": 1.0} and per_query["accuracy"] == {"1": 0.0, "2": 1.0}


def test_paired_comparison_by_hand():
    records, predictions = SHARED
    rows = compare(records, score_cells(records, predictions), REFERENCES)
    pooled = next(r for r in rows if r["metric"] == "accuracy" and r["data"] == "all")
    assert (pooled["method"], pooled["reference"], pooled["setting"]) == ("go:s", "random:s", "shared")
    # go - random: seed 0 (0.75 - 0.5), seed 1 (0.75 - 0.5): +0.25 in both units
    assert pooled["diff"] == pytest.approx(0.25) and (pooled["wins"], pooled["losses"]) == (2, 0)
    assert pooled["units"] == 2 and pooled["queries"] == 8 and pooled["ci_low"] <= 0.25 <= pooled["ci_high"]
    assert all(r["p_holm"] >= r["p"] for r in rows)
    assert pooled["p_holm"] == pooled["p"]  # the pooled family of this metric has one comparison
    assert not any(r["method"].startswith("random-best") for r in rows)  # it peeks: never compared


def test_gap_closed_is_a_ratio_of_means():
    records, _ = SHARED
    # means: random 0.5, go 0.75, best-of 0.875 -> 0.25 / 0.375 (a mean of per-seed ratios would be 0.75)
    assert gap_closed(records, "d", "shared", 4, 4, "go:s", REFERENCES) == pytest.approx(2 / 3)


def test_summary_rows():
    records, predictions = SHARED
    rows = {r["method"]: r for r in summarize(records, score_cells(records, predictions), REFERENCES)}
    go = rows["go:s"]
    assert go["mean"] == pytest.approx(0.75) and go["seeds"] == 2 and go["queries"] == 8
    assert go["ci_low"] <= 0.75 <= go["ci_high"] <= 1.0 and go["cached_share"] == pytest.approx(0.6)
    assert math.isnan(rows["random:s"]["gap_closed"])


def test_settings_are_compared_only_within_themselves():
    records, predictions = run(cell("knn:q", 0, [1, 1, 0, 0], setting="full", budget=40),
                               cell("go:q", 0, [1, 1, 1, 0], setting="full", budget=40),
                               cell("random:s", 0, [0, 0, 0, 0]),
                               cell("random:s>knn:q", 0, [1, 0, 0, 0], setting="annotate", budget=16),
                               cell("votek:s>knn:q", 0, [1, 1, 0, 0], setting="annotate", budget=16))
    rows = {(r["method"], r["reference"]): r for r in compare(records, score_cells(records, predictions), REFERENCES)
            if r["metric"] == "accuracy" and r["data"] == "all"}
    assert set(rows) == {("go:q", "knn:q"), ("votek:s>knn:q", "random:s>knn:q")}
    assert rows["go:q", "knn:q"]["diff"] == pytest.approx(0.25) and rows["go:q", "knn:q"]["labels"] == 40


def test_report_command_rebuilds_tables_and_plots(tmp_path):
    records, predictions = SHARED
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions.values()))
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("summary.md", "summary.csv", "pivot.md", "comparisons.csv", "comparisons.md", "forest.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| shared | go:s | 4 | 4 | 0.750 [" in (tmp_path / "pivot.md").read_text()
    header = next(csv.reader(open(tmp_path / "comparisons.csv")))
    assert header[:2] == ["metric", "setting"] and {"diff", "ci_low", "ci_high", "p", "p_holm", "units",
                                                    "queries", "labels", "k", "mdd"} <= set(header)
    assert CliRunner().invoke(app, ["report", str(tmp_path / "nothing")]).exit_code == 2


def test_goal_check_pairs_the_best_design_method_with_the_best_baseline():
    from fewshot.evaluation.report import goal_check

    variants = {"go-v-c": {"method": "go:s", "objective": "v", "center": True}}
    records, predictions = run(
        cell("random:s", 0, [1, 0, 0, 0]), cell("random:s", 1, [0, 0, 0, 1]),
        cell("kmeans:s", 0, [1, 1, 0, 0]), cell("kmeans:s", 1, [0, 1, 0, 1]),
        cell("go:s", 0, [1, 0, 0, 0]), cell("go:s", 1, [0, 0, 0, 0]),
        cell("go-v-c", 0, [1, 1, 1, 1]), cell("go-v-c", 1, [1, 1, 1, 0]),
        cell("sal:s", 0, [1, 1, 1, 1]),  # one unit of two: it waits, however good it looks
        cell("random-best-of-3", 0, [1, 1, 1, 1], peeks=True))
    rows = goal_check(records, score_cells(records, predictions), variants, metrics=("accuracy",))
    (row,) = rows
    # best GO/SAL: go-v-c (0.875) over go:s (0.125); best baseline: kmeans (0.5) over random (0.25)
    assert (row["ours"], row["baseline"]) == ("go-v-c", "kmeans:s") and row["waiting"] == "sal:s"
    assert row["diff"] == pytest.approx(0.375) and row["ours_mean"] == pytest.approx(0.875)
    assert row["units"] == 2 and row["queries"] == 8 and row["met"] == (row["ci_low"] > 0)
    assert row["ours_tried"] == "go-v-c go:s" and row["baselines_tried"] == "kmeans:s random:s"
    # a 2-point margin it cannot reach: not met, whatever the interval says
    (strict,) = goal_check(records, score_cells(records, predictions), variants, metrics=("accuracy",), margin=0.5)
    assert not strict["met"]


def test_goal_check_needs_both_sides():
    from fewshot.evaluation.report import goal_check

    records, predictions = run(cell("random:s", 0, [1, 0]), cell("kmeans:s", 0, [1, 1]))
    assert goal_check(records, score_cells(records, predictions), {}) == []


def test_goal_met_needs_the_margin_and_an_interval_above_zero():
    from fewshot.evaluation.report import goal_check

    right, wrong = [1] * 10, [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    records, predictions = run(*(cell(m, seed, right if m == "go:q" else wrong, setting="full", budget=40)
                                 for seed in range(3) for m in ("go:q", "knn:q", "mmr:q")))
    (row,) = goal_check(records, score_cells(records, predictions), {}, metrics=("accuracy",))
    assert (row["ours"], row["setting"], row["labels"]) == ("go:q", "full", 40)
    assert row["diff"] == pytest.approx(0.5) and row["ci_low"] > 0 and row["met"]
    # annotate labels name the annotator: a GO annotator is one of ours, a vote-k one a baseline
    records, predictions = run(cell("go-v-c>knn:q", 0, right, setting="annotate", budget=16),
                               cell("votek:s>knn:q", 0, wrong, setting="annotate", budget=16))
    variants = {"go-v-c": {"method": "go:s", "objective": "v", "center": True}}
    (row,) = goal_check(records, score_cells(records, predictions), variants, metrics=("accuracy",))
    assert (row["ours"], row["baseline"]) == ("go-v-c>knn:q", "votek:s>knn:q")
