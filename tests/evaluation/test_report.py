"""The report: per-query scores raw and calibrated, summaries and paired comparisons, by hand."""

import csv
import json
import math

import pytest
from typer.testing import CliRunner

from fewshot.cli import app
from fewshot.errors import InputError
from fewshot.evaluation.report import compare, gap_closed, score_cells, summarize, write_report

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


def test_gap_closed_is_a_ratio_of_means_under_the_headline_metric():
    records, predictions = SHARED
    scores = score_cells(records, predictions)
    # means: random 0.5, go 0.75, best-of 0.875 -> 0.25 / 0.375 (a mean of per-seed ratios would be 0.75)
    assert gap_closed(records, scores, "d", "shared", 4, 4, "go:s", REFERENCES) == pytest.approx(2 / 3)
    # from the per-query scores the tables use, never a score a record carries (old folders have one)
    stale = [{**r, "score": 0.0} for r in records]
    assert gap_closed(stale, scores, "d", "shared", 4, 4, "go:s", REFERENCES) == pytest.approx(2 / 3)


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


def folder_with(tmp_path, records, predictions, tail=""):
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions.values()))
    return tmp_path


def test_report_on_a_torn_last_line_changes_no_run_file(tmp_path, caplog):
    import hashlib

    records, predictions = SHARED
    out = folder_with(tmp_path, records, predictions, tail='{"cell": "d|2|shared|go:s|B4|k4", "da')
    digest = lambda name: hashlib.md5((out / name).read_bytes()).hexdigest()  # noqa: E731
    before = {name: digest(name) for name in ("records.jsonl", "predictions.jsonl")}
    with caplog.at_level("WARNING"):
        write_report(out)
    assert {name: digest(name) for name in before} == before
    assert "records.jsonl: line 7 is torn" in caplog.text  # said, and named
    assert "| shared | go:s | 4 | 4 | 0.750 [" in (out / "pivot.md").read_text()  # the 6 whole records


def test_an_empty_records_file_is_an_error_not_empty_tables(tmp_path):
    out = folder_with(tmp_path, [], {})
    with pytest.raises(InputError, match="no finished cell") as err:
        write_report(out)
    assert str(out / "records.jsonl") in str(err.value) and not (out / "summary.csv").exists()
    with pytest.raises(InputError, match="no finished cell"):
        write_report(out, REFERENCES, [])
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 2 and "records.jsonl" in result.output


def test_regression_cells_count_unparsed_answers():
    rows = [{"id": f"q{i}", "gold": 1.0, "prediction": 2.0, "parsed": i > 0, "error": 1.0, "abs_error": 1.0}
            for i in range(3)]
    record = {"cell": "r|0|shared|random:s|B4|k4", "data": "r", "task": "regression", "seed": 0,
              "setting": "shared", "method": "random:s", "label_budget": 4, "labels": 4, "k": 4,
              "unscored": 0, "selection_seconds": 0.1, "answer_seconds": 1.0, "llm_calls": 6, "prompt_tokens": 10}
    (row,) = summarize([record], score_cells([record], {record["cell"]: {"labels": [], "rows": rows}}), REFERENCES)
    assert row["unparsed"] == 1 and row["unscored"] == "" and row["mean"] == pytest.approx(1.0)
    assert row["http_requests"] == 6  # an old record's llm_calls, under its new name


def per_query_cell(method, correct, ids):
    record, prediction = cell(method, 0, correct, setting="full", budget=40)
    if ids:  # recorded with demo-set ids: every query its own demo set
        record["demo_sets"] = len(correct)
        prediction["rows"] = [{**row, "demo_set": i} for i, row in enumerate(prediction["rows"])]
    # raw: every answer is "a"; over the whole cell, calibration turns the last two into "b" (wrong)
    prediction["rows"] = [{**row, "correct": True, "probs": p} for row, p in
                          zip(prediction["rows"], ([0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]))]
    return record, prediction


def test_one_batch_definition_per_report_and_the_summary_says_which(tmp_path):
    new = run(per_query_cell("knn:q", [1] * 4, ids=True), per_query_cell("go:q", [1] * 4, ids=True))
    scores = score_cells(*new)
    assert all(s[0]["accuracy@batch"] == s[0]["accuracy"] for s in scores.values())  # by demo set: raw
    (tmp_path / "new").mkdir()
    out = folder_with(tmp_path / "new", *new)
    write_report(out, REFERENCES)
    assert "with the same demo set" in (out / "summary.md").read_text()
    # beside a cell recorded before demo-set ids, every cell is calibrated over the whole cell
    mixed = run(per_query_cell("knn:q", [1] * 4, ids=False), per_query_cell("go:q", [1] * 4, ids=True))
    scores = score_cells(*mixed)
    assert [list(s[0]["accuracy@batch"].values()) for s in scores.values()] == [[1.0, 1.0, 0.0, 0.0]] * 2
    out = folder_with(tmp_path, *mixed)
    write_report(out, REFERENCES)
    assert "over the whole cell, in every cell (the definition of the 1 per-query cell(s)" in (out / "summary.md").read_text()


def test_goal_check_counts_an_llm_feedback_retriever_as_ours():
    from fewshot.evaluation.report import goal_check

    variants = {"vs-120": {"method": "valsearch:s"}, "rs-120": {"method": "random-search:s"}}
    right, wrong = [1, 1, 1, 0], [1, 0, 0, 0]
    records, predictions = run(*(cell(m, seed, right if m == "kmeans:s>vs-120" else wrong, setting="annotate",
                                      budget=32)
                                 for seed in range(2) for m in ("kmeans:s>vs-120", "kmeans:s>rs-120", "kmeans:s>knn:q")))
    (row,) = goal_check(records, score_cells(records, predictions), variants, metrics=("accuracy",))
    assert row["ours"] == "kmeans:s>vs-120" and row["baselines_tried"] == "kmeans:s>knn:q kmeans:s>rs-120"


def test_report_compares_with_another_reference_on_request(tmp_path):
    records, predictions = SHARED
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions.values()))
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--reference", "shared=go:s"])
    assert result.exit_code == 0, result.output
    references = {row["reference"] for row in csv.DictReader(open(tmp_path / "comparisons.csv"))}
    assert references == {"go:s"}
    refused = CliRunner().invoke(app, ["report", str(tmp_path), "--reference", "shared"])
    assert refused.exit_code == 2 and "SETTING=METHOD" in refused.output


def test_calls_check_compares_within_random_search_calls_and_at_a_third_of_them():
    from fewshot.evaluation.report import calls_check

    variants = {"vs-240": {"method": "valsearch:s"}, "vs-80": {"method": "valsearch:s"},
                "el": {"method": "excess-loss:q"}, "rs-240": {"method": "random-search:s"}}
    spent = {"vs-240": 232, "vs-80": 79, "el": 290, "rs-240": 240, "knn:q": 0, "go:q": 0}
    answers = {"vs-240": [1] * 8, "vs-80": [1] * 8, "el": [1] * 8, "rs-240": [1] * 6 + [0, 0],
               "knn:q": [1] * 8, "go:q": [1] * 2 + [0] * 6}
    cells = [cell(m, seed, answers[m], setting="full", budget=300) for seed in range(3) for m in answers]
    for record, _ in cells:
        record["selection_prompts"] = spent[record["method"]]
    records, predictions = run(*cells)
    rows = {row["rule"]: row for row in calls_check(records, score_cells(records, predictions), variants,
                                                    metrics=("accuracy",))}
    equal, third = rows["equal calls"], rows["a third of the calls"]
    # excess-loss spent more than random search; kNN is a baseline; GO made no call and counts
    assert equal["ours"] == "vs-240" and equal["ours_tried"] == "go:q vs-240 vs-80" and equal["baseline"] == "rs-240"
    assert equal["diff"] == pytest.approx(0.25) and equal["ci_low"] > 0 and equal["met"] is True
    assert third["ours"] == "vs-80" and third["ours_prompts"] == 79 and third["baseline_prompts"] == 240
    # better by 0.25 with a third of the calls: no worse, but not a match inside ±2 points
    assert third["diff"] == pytest.approx(0.25) and third["ci_low"] > 0 and third["no_worse"] is True
    assert third["met"] is False and equal["no_worse"] is True
    # a third of the calls that loses by more than the margin: not met
    for record, prediction in cells:
        if record["method"] == "vs-80":
            prediction["rows"] = cell("vs-80", 0, [1] * 4 + [0] * 4)[1]["rows"]
    worse = {row["rule"]: row for row in calls_check(records, score_cells(records, predictions), variants,
                                                     metrics=("accuracy",))}["a third of the calls"]
    assert worse["ours"] == "vs-80" and worse["diff"] == pytest.approx(-0.25) and worse["met"] is False
    assert worse["no_worse"] is False
    (matched,) = [row for row in calls_check(records, score_cells(records, predictions), variants, metrics=("accuracy",),
                                             margin=0.5) if row["rule"] == "a third of the calls"]
    assert matched["met"] is True  # -0.25, its interval inside ±0.5
    # no random search in a group: nothing to check
    plain = run(*(c for c in cells if c[0]["method"] != "rs-240"))
    assert calls_check(plain[0], score_cells(*plain), variants) == []


def test_calls_check_never_pairs_random_search_with_itself_and_counts_prompts_on_the_ranked_units():
    """An annotate cell with a GO annotator and random search as retriever is a control, not one of ours;
    prompts are averaged over the units every ranked method ran (an unfinished run)."""
    from fewshot.evaluation.report import calls_check

    variants = {"rs": {"method": "random-search:s"}, "vs": {"method": "valsearch:s"}}
    cells = [cell(m, seed, [1, 1, 0, 0], setting="annotate", budget=32)
             for seed in range(3) for m in ("go:s>rs", "kmeans:s>vs")]
    cells.append(cell("go:s>rs", 3, [1, 1, 1, 1], setting="annotate", budget=32))  # a unit only it ran
    for record, _ in cells:
        record["selection_prompts"] = {"go:s>rs": 100, "kmeans:s>vs": 100}[record["method"]]
    cells[-1][0]["selection_prompts"] = 1000  # outside the common units: not counted
    records, predictions = run(*cells)
    rows = calls_check(records, score_cells(records, predictions), variants, metrics=("accuracy",))
    (equal,) = [row for row in rows if row["rule"] == "equal calls"]
    assert (equal["ours"], equal["baseline"], equal["baseline_prompts"]) == ("kmeans:s>vs", "go:s>rs", 100)
    assert equal["units"] == 3 and not [row for row in rows if row["ours"] == row["baseline"]]
