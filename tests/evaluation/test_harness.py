"""The eval harness: input checks before any expensive work, and a real end-to-end run."""

import csv
import json

import hashlib
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from fewshot.cli import app
from fewshot.datasets import Dataset, load_dataset
from fewshot.data import Example
from fewshot.errors import InputError
from fewshot.evaluation.harness import Selected, plan_cells, plan_splits, run_suite, split, validate
from fewshot.evaluation.metrics import cell_scores, mean_score
from fewshot.llm.client import LabelScores
from fewshot.llm.predictor import LLMPredictor
from fewshot.pipeline import build_problem
from fewshot.prompts import load_template
from fewshot.selection import make_selector
from fewshot.evaluation.suites import Suite, load_suite
from tests.conftest import write_jsonl

runner = CliRunner()


def dataset(labels, name="d"):
    return Dataset(name, [Example(str(i), f"text {i}", label) for i, label in enumerate(labels)])


def test_split_is_disjoint_and_seeded():
    data = load_dataset("trec")
    pool, test = split(data, 100, 30, seed=4)
    assert not {e.id for e in pool} & {e.id for e in test}
    assert [e.id for e in split(data, 100, 30, seed=4)[0]] == [e.id for e in pool]


def test_one_class_data_set():
    with pytest.raises(InputError, match="needs two labels"):
        plan_splits(Suite(pool_size=10, test_size=5), [dataset(["a"] * 20)])


def test_test_labels_unseen_in_pool():
    pool = [Example("1", "x", "a"), Example("2", "y", "a")]
    with pytest.raises(InputError, match=r"test labels \['b'\] never occur in the pool"):
        validate(dataset(["a", "b"]), pool, [Example("3", "z", "b")], [1])


def test_budget_larger_than_pool():
    with pytest.raises(InputError, match="budget 50 is larger than the pool"):
        plan_splits(Suite(pool_size=20, test_size=5, k=[50]), [dataset(["a", "b"] * 20)])


def test_bundled_suites_load():
    quick, full = load_suite("quick"), load_suite("full")
    assert "sal" in quick.methods and len(full.data) >= 7 and full.seeds >= quick.seeds


def test_missing_field_fails_before_the_llm(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}])
    result = runner.invoke(app, ["eval", "--data", str(data), "--base-url", "http://127.0.0.1:9/v1", "--model", "m"])
    assert result.exit_code == 2 and "line 2, field 'label': missing label" in result.output


@pytest.mark.slow  # loads the bundled embedding model
def test_unreachable_llm_is_a_clear_error(tmp_path):
    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(60)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    result = runner.invoke(app, ["eval", "--data", str(data), "--pool-size", "40", "--test-size", "5",
                                 "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "cannot reach the LLM endpoint" in result.output
    assert not (tmp_path / "r" / "records.jsonl").exists()


@pytest.mark.llm
def test_end_to_end_with_the_local_llm_and_resume(tmp_path):
    out = tmp_path / "run"
    first = runner.invoke(app, ["eval", "--suite", "tiny", "--out", str(out)])
    assert first.exit_code == 0, first.output
    for name in ("summary.md", "summary.csv", "comparisons.csv", "comparisons.md", "records.jsonl",
                 "predictions.jsonl", "forest.png", "run.json"):
        assert (out / name).stat().st_size > 0, name
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted((r["setting"], r["method"]) for r in records) == [
        ("annotate", "kmeans:s>knn:q"), ("annotate", "random:s>knn:q"), ("full", "go:q"), ("full", "knn:q"),
        ("shared", "go:s"), ("shared", "random-best-of-2"), ("shared", "random:s"), ("zero-shot", "zero-shot")]
    predictions = {p["cell"]: p for p in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    assert set(predictions) == {r["cell"] for r in records}
    for record in records:  # each score is computed from the predictions it was made of
        rows = predictions[record["cell"]]["rows"]
        per_query, whole = cell_scores(predictions[record["cell"]], "classification")
        assert mean_score(per_query, "accuracy") == pytest.approx(sum(row["correct"] for row in rows) / len(rows))
        assert whole["unscored"] == sum(row["prediction"] is None for row in rows)
        assert all(len(row["probs"]) == 2 for row in rows)
    comparisons = list(csv.DictReader(open(out / "comparisons.csv")))
    assert {(c["setting"], c["method"], c["reference"]) for c in comparisons if c["data"] == "all"
            and c["metric"] == "accuracy"} == {("shared", "go:s", "random:s"), ("full", "go:q", "knn:q"),
                                               ("annotate", "kmeans:s>knn:q", "random:s>knn:q")}
    before = (out / "records.jsonl").read_text()
    again = runner.invoke(app, ["eval", "--suite", "tiny", "--out", str(out)])
    assert again.exit_code == 0 and (out / "records.jsonl").read_text() == before  # nothing redone
    mixed = runner.invoke(app, ["eval", "--suite", "tiny", "--pool-size", "30", "--out", str(out)])
    assert mixed.exit_code == 2 and "pool_size: 40 then, 30 now" in mixed.output


# -- the harness with a deterministic stand-in LLM (the real one runs in the test above) ----------

class FakeClient:
    """Label probabilities from a hash of the prompt: deterministic, different per prompt."""

    api, model = "completions", "fake"

    def __init__(self):
        self.stats = Counter()

    def label_probs(self, prompt, labels):
        digest = hashlib.sha256(str(prompt).encode()).digest()
        p = np.array([digest[i] + 1.0 for i in range(len(labels))])
        self.stats["calls"] += 1
        return LabelScores(tuple(labels), p / p.sum())

    def map(self, fn, items):
        return [fn(x) for x in items]


class HashEmbedder:
    def embed(self, texts):
        rows = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=16) for t in texts]
        return np.array([r / np.linalg.norm(r) for r in rows])


def small_data(n=60):
    return Dataset("d", [Example(f"d-{i}", f"text number {i} {'good' if i % 2 else 'bad'}", "ab"[i % 2])
                         for i in range(n)])


def run(tmp_path, allow_code_change=False, **changes):
    suite = Suite(**{"methods": ["random", "knn", "go"], "k": [2], "label_budgets": [6],
                     "annotators": ["random", "kmeans"], "pool_size": 30, "test_size": 8, "oracle_sets": 2,
                     **changes})
    templates = {"classification": load_template("classification"), "regression": load_template("regression")}
    return run_suite(suite, [small_data()], FakeClient(), templates, HashEmbedder(), tmp_path / "run",
                     allow_code_change=allow_code_change)


def test_every_setting_records_its_labels_and_budget(tmp_path):
    records = {(r["setting"], r["method"]): r for r in run(tmp_path)}
    assert set(records) == {("zero-shot", "zero-shot"), ("shared", "random:s"), ("shared", "go:s"),
                            ("full", "knn:q"), ("annotate", "random:s>knn:q"), ("annotate", "kmeans:s>knn:q"),
                            ("shared", "random-best-of-2")}
    assert records["shared", "go:s"]["labels"] == records["shared", "go:s"]["label_budget"] == 2
    assert records["annotate", "kmeans:s>knn:q"]["labels"] == records["annotate", "kmeans:s>knn:q"]["label_budget"] == 6
    knn = records["full", "knn:q"]
    assert knn["label_budget"] == 30 and 2 <= knn["labels"] <= 16  # distinct demos over 8 queries x 2
    assert records["zero-shot", "zero-shot"]["labels"] == 0 and records["shared", "random-best-of-2"]["peeks"]


def test_annotate_then_retrieve_demos_come_from_the_labeled_set():
    data = small_data()
    pool, test = split(data, 30, 8, seed=0)
    problem = build_problem(pool, test, embedder=HashEmbedder())
    suite = Suite(methods=[], k=[2], label_budgets=[6], annotators=["kmeans"], zero_shot=False, oracle_sets=0)
    (cell,) = plan_cells(suite, data, problem, pool, len(test), None, seed=0)
    _, demo_sets, used, *_ = cell.work()
    labeled = {d.id for demos in demo_sets for d in demos}
    assert used == 6 and len(labeled) <= 6 and all(len(demos) == 2 for demos in demo_sets)
    chosen = make_selector("kmeans", seed=0).select(problem, 6).indices
    assert labeled <= {pool[i].id for i in chosen}


def test_sal_as_annotator_labels_b_examples_it_chose_with_the_llm():
    data = small_data()
    pool, test = split(data, 30, 8, seed=0)
    problem = replace(build_problem(pool, test, embedder=HashEmbedder()), labels=None)
    predictor = LLMPredictor(FakeClient(), load_template("classification"), data.labels)
    suite = Suite(methods=[], k=[2], label_budgets=[4], annotators=["sal"], zero_shot=False, oracle_sets=0)
    (cell,) = plan_cells(suite, data, problem, pool, len(test), predictor, seed=0)
    assert (cell.setting, cell.method) == ("annotate", "sal:s>knn:q")
    _, demo_sets, used, *_ = cell.work()
    labeled = {d.id for demos in demo_sets for d in demos}
    assert used == 4 and len(labeled) <= 4 and predictor.client.stats["calls"] > 0  # the LLM chose them


def test_resume_refuses_to_mix_runs(tmp_path):
    run(tmp_path)
    with pytest.raises(InputError, match="test_size: 8 then, 9 now"):
        run(tmp_path, test_size=9)
    variants = {"go-x": {"method": "go", "noise": 0.1}}
    run(tmp_path, methods=["go-x"], variants=variants)
    with pytest.raises(InputError, match="was run with parameters"):
        run(tmp_path, methods=["go-x"], variants={"go-x": {"method": "go", "noise": 0.5}})


def test_a_run_may_drop_or_add_a_data_set_but_not_change_one(tmp_path):
    suite = Suite(methods=["random"], k=[2], label_budgets=[], annotators=[], pool_size=30, test_size=8,
                  oracle_sets=0, zero_shot=False)
    templates = {"classification": load_template("classification")}
    other = Dataset("e", small_data().examples)
    go = lambda *data: run_suite(suite, list(data), FakeClient(), templates, HashEmbedder(), tmp_path / "run")  # noqa: E731
    assert {r["data"] for r in go(small_data(), other)} == {"d", "e"}
    assert {r["data"] for r in go(small_data())} == {"d"}
    kept = [json.loads(line)["data"] for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert set(kept) == {"d", "e"}  # the dropped set's records stay in the folder, and in its report
    assert {c.split("|")[0] for c in json.loads((tmp_path / "run" / "run.json").read_text())["cells"]} == {"d", "e"}
    assert json.loads((tmp_path / "run" / "run.json").read_text())["configuration"]["data"].keys() == {"d", "e"}
    edited = Dataset("e", [replace(e, label="ab"[int(e.label == "a")]) for e in small_data().examples])
    with pytest.raises(InputError, match="data e: content"):
        go(small_data(), edited)


def test_a_dropped_variant_stays_named_in_run_json(tmp_path):
    # the report maps a cell's label to its selector through run.json: a variant dropped from the
    # suite still names the cells it ran (else a GO variant would pass for a baseline)
    templates = {"classification": load_template("classification")}
    first = Suite(methods=["random", "go-2"], k=[2], label_budgets=[], annotators=[], pool_size=30, test_size=8,
                  oracle_sets=0, zero_shot=False, variants={"go-2": {"method": "go:s", "noise": 2.0}})
    run_suite(first, [small_data()], FakeClient(), templates, HashEmbedder(), tmp_path / "run")
    second = replace(first, methods=["random"], variants={})
    run_suite(second, [small_data()], FakeClient(), templates, HashEmbedder(), tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "run.json").read_text())["suite"]
    assert saved["methods"] == ["random"] and saved["variants"] == {"go-2": {"method": "go:s", "noise": 2.0}}


def test_a_crash_between_the_two_lines_duplicates_nothing(tmp_path):
    records = run(tmp_path)
    out = tmp_path / "run"
    first = {p["cell"]: p for p in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    lines = (out / "records.jsonl").read_text().splitlines()
    (out / "records.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # last record torn
    again = run(tmp_path)
    assert [r["cell"] for r in again] == [r["cell"] for r in records]
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["cell"] for p in predictions) == sorted(r["cell"] for r in records)  # the redone cell's answers once
    redone = next(p for p in predictions if p["cell"] == records[-1]["cell"])
    assert [row["probs"] for row in redone["rows"]] == [row["probs"] for row in first[records[-1]["cell"]]["rows"]]


def test_files_with_the_same_name_get_distinct_data_names(tmp_path):
    from fewshot.datasets import load_datasets

    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(4)]
    for folder in "abc":
        (tmp_path / folder).mkdir()
    sources = [str(write_jsonl(tmp_path / folder / "train.jsonl", rows)) for folder in ("a", "b")]
    sources.append(str(write_jsonl(tmp_path / "c" / "other.jsonl", rows)))
    assert [d.name for d in load_datasets(sources)] == ["a-train", "b-train", "other"]


# -- one source of metrics, resume checks, budgets, seeds -------------------------------------------

def test_records_keep_costs_and_demo_sets_not_scores(tmp_path):
    records = {(r["setting"], r["method"]): r for r in run(tmp_path)}
    predictions = {p["cell"]: p for p in map(json.loads, (tmp_path / "run" / "predictions.jsonl").read_text().splitlines())}
    for record in records.values():
        assert "score" not in record and "llm_calls" not in record and record["http_requests"] >= 0
        assert record["server_restarts"] == 0  # probe 1a: a restart of the local server is recorded per cell
        assert record["demo_sets"] == len({row["demo_set"] for row in predictions[record["cell"]]["rows"]})
    assert records["shared", "go:s"]["demo_sets"] == 1 and records["full", "knn:q"]["demo_sets"] > 1


def test_a_refused_resume_leaves_run_json_as_it_was(tmp_path):
    variants = {"go-x": {"method": "go", "noise": 0.1}}
    run(tmp_path, methods=["go-x"], variants=variants)
    run_json = tmp_path / "run" / "run.json"
    before = run_json.read_bytes()
    with pytest.raises(InputError, match="was run with parameters"):
        run(tmp_path, methods=["go-x", "knn"], variants={"go-x": {"method": "go", "noise": 0.5}})
    with pytest.raises(InputError, match="test_size: 8 then, 9 now"):
        run(tmp_path, test_size=9)
    assert run_json.read_bytes() == before  # no new cells planned, no variant overridden


def test_a_resume_across_scoring_code_is_refused_or_recorded(tmp_path, monkeypatch, caplog):
    from fewshot.evaluation import harness

    run(tmp_path)
    run_json = tmp_path / "run" / "run.json"
    recorded = json.loads(run_json.read_text())["code"]
    assert recorded == harness.code_version()
    before = run_json.read_bytes()
    other = {"fewshot": recorded["fewshot"], "scoring": "0123456789abcdef"}
    monkeypatch.setattr(harness, "code_version", lambda: other)
    with pytest.raises(InputError, match=r"run.json: this folder's cells were scored by .*another --out"):
        run(tmp_path)
    assert run_json.read_bytes() == before
    run(tmp_path, allow_code_change=True)
    saved = json.loads(run_json.read_text())
    assert saved["code"] == other and saved["earlier_code"] == [recorded]
    # a folder from before versions were recorded (the committed evals/runs/*) resumes, with a warning
    del saved["code"], saved["earlier_code"]
    run_json.write_text(json.dumps(saved))
    with caplog.at_level("WARNING"):
        run(tmp_path)
    assert "no code version recorded" in caplog.text
    assert json.loads(run_json.read_text())["earlier_code"] == [{"fewshot": "unknown", "scoring": "unknown"}]


class LookupPredictor:
    """Fixed label probabilities per (first demo's id, query id)."""

    labels = ("a", "b")

    def __init__(self, table):
        self.table, self.jobs = table, []

    def predict_many(self, jobs):
        from fewshot.llm.predictor import LabelPrediction

        self.jobs += jobs
        out = []
        for demos, text in jobs:
            p = self.table[demos[0].id, text]
            out.append(LabelPrediction(probs=dict(zip("ab", p)), label="ab"[int(p[1] > p[0])]))
        return out


def test_best_of_n_picks_its_set_under_the_headline_metric(tmp_path):
    from fewshot.evaluation.harness import Cell, _Job, _run_cell
    from fewshot.evaluation.runfolder import RunFolder

    pool = [Example("p0", "first demo", "a"), Example("p1", "second demo", "b")]
    test = [Example(f"q{i}", f"query {i}", gold) for i, gold in enumerate("aabb")]
    # set p0: raw says "a" every time (accuracy 0.5), batch-calibrated it is right 4 of 4;
    # set p1: raw accuracy 0.75, batch-calibrated 0.75. Raw accuracy would keep p1.
    table = {**{("p0", f"query {i}"): p for i, p in enumerate([(0.9, 0.1), (0.9, 0.1), (0.8, 0.2), (0.8, 0.2)])},
             **{("p1", f"query {i}"): p for i, p in enumerate([(0.7, 0.3), (0.7, 0.3), (0.3, 0.7), (0.6, 0.4)])}}
    cell = Cell("d", 0, "shared", "random-best-of-2", 1, 1, {}, lambda: Selected(0.0, [[pool[0]], [pool[1]]], 2),
                peeks=True)
    folder = RunFolder(tmp_path / "run")
    with folder.lock():
        _run_cell(_Job(Dataset("d", pool + test), LookupPredictor(table), test, None, cell), FakeClient(), Suite(), folder)
    (saved,) = folder.predictions().values()
    assert [row["probs"] for row in saved["rows"]] == [list(table["p0", f"query {i}"]) for i in range(4)]


def test_demos_are_shown_in_the_one_prompt_order_and_named_by_demo_set():
    from fewshot.evaluation.harness import answer
    from fewshot.prompts import prompt_order

    a, b, c = (Example(f"p{i}", f"demo {i}", "ab"[i % 2]) for i in range(3))
    test = [Example("q0", "query 0", "a"), Example("q1", "query 1", "b"), Example("q2", "query 2", "a")]
    predictor = LookupPredictor({(first, f"query {i}"): (0.6, 0.4) for first in ("p0", "p1", "p2") for i in range(3)})
    rows = answer(Dataset("d", [a, b, c, *test]), predictor, [[a, b], [c, a], [a, b]], test)
    assert [demos for demos, _ in predictor.jobs] == [prompt_order([a, b]), prompt_order([c, a]), prompt_order([a, b])]
    assert [row["demo_set"] for row in rows] == [0, 1, 0]


class NumberClient(FakeClient):
    """A regression stand-in: every sampled answer is ``value`` (None: no number in it)."""

    def __init__(self, value):
        super().__init__()
        self.value, self.seeds = value, set()

    def sample_numbers(self, prompt, n=5, *, seed=0, max_tokens=8):
        self.seeds.add(seed)
        self.stats["calls"] += n
        return [] if self.value is None else [self.value] * n


def regression_data():
    """Pool labels 0..29 and test labels 100.. (split only depends on the size and seed)."""
    examples = [Example(f"r-{i}", f"house {i}", "0") for i in range(38)]
    pool, test = split(Dataset("r", examples, task="regression"), 30, 8, seed=0)
    labels = {e.id: str(float(j)) for j, e in enumerate(pool)} | {e.id: str(100.0 + j) for j, e in enumerate(test)}
    return Dataset("r", [replace(e, label=labels[e.id]) for e in examples], task="regression")


def run_regression(tmp_path, client, **changes):
    suite = Suite(**{"methods": ["random"], "k": [2], "label_budgets": [], "annotators": [], "pool_size": 30,
                     "test_size": 8, "oracle_sets": 0, "regression_samples": 2, **changes})
    templates = {"regression": load_template("regression")}
    return run_suite(suite, [regression_data()], client, templates, HashEmbedder(), tmp_path / "run")


def test_regression_clips_to_the_pool_range_never_the_test_labels(tmp_path):
    run_regression(tmp_path, NumberClient(1e6))
    for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines():
        assert {row["prediction"] for row in json.loads(line)["rows"]} == {29.0}  # the pool's max; the test's is 107


def test_regression_answers_without_a_number_are_counted_and_fall_back_within_the_pool(tmp_path):
    from fewshot.evaluation.report import write_report

    records = run_regression(tmp_path, NumberClient(None))
    predictions = {p["cell"]: p for p in map(json.loads, (tmp_path / "run" / "predictions.jsonl").read_text().splitlines())}
    zero_shot = next(r for r in records if r["setting"] == "zero-shot")
    assert {row["prediction"] for row in predictions[zero_shot["cell"]]["rows"]} == {14.5}  # the middle of 0..29
    write_report(tmp_path / "run")
    summary = list(csv.DictReader(open(tmp_path / "run" / "summary.csv")))
    assert [row["unparsed"] for row in summary] == ["8", "8"] and all(row["unscored"] == "" for row in summary)


def test_each_eval_seed_samples_with_its_own_seeds(tmp_path):
    client = NumberClient(5.0)
    run_regression(tmp_path, client, seeds=2)
    assert client.seeds == {0, 2}  # seed s samples with s * regression_samples + 0, 1


def test_a_token_budget_limits_the_demos_and_is_part_of_the_configuration(tmp_path):
    from fewshot.pipeline import demo_costs

    data, template = small_data(), load_template("classification")
    costs = demo_costs(data.examples, template)
    budget = int(costs.max())  # one demo always fits, two never do
    assert 2 * costs.min() > budget
    suite = Suite(methods=["random", "knn"], k=[2], label_budgets=[], annotators=[], pool_size=30, test_size=8,
                  oracle_sets=0, zero_shot=False)
    go = lambda tokens: run_suite(suite, [data], FakeClient(), {"classification": template}, HashEmbedder(),  # noqa: E731
                                  tmp_path / "run", max_tokens=tokens)
    records = {r["method"]: r for r in go(budget)}
    assert records["random:s"]["labels"] == 1  # k = 2, but the second demo would break the budget
    assert json.loads((tmp_path / "run" / "run.json").read_text())["configuration"]["max_tokens"] == budget
    with pytest.raises(InputError, match=f"max_tokens: {budget} then, None now"):
        go(None)


def test_given_splits_are_not_planned_again(tmp_path, monkeypatch):
    from fewshot.evaluation import harness

    suite = Suite(methods=["random"], k=[2], label_budgets=[], annotators=[], pool_size=30, test_size=8,
                  oracle_sets=0, zero_shot=False)
    splits = plan_splits(suite, [small_data()])
    monkeypatch.setattr(harness, "plan_splits", lambda *_: pytest.fail("planned twice"))
    records = run_suite(suite, [small_data()], FakeClient(), {"classification": load_template("classification")},
                        HashEmbedder(), tmp_path / "run", splits=splits)
    assert len(records) == 1


# -- the LLM-feedback selectors (issue 18): full-label setting, their own selection costs --------------

FEEDBACK = {"vs": {"method": "valsearch", "candidates": 4, "probes": 8, "budget": 32},
            "rs": {"method": "random-search", "probes": 8, "budget": 32},
            "el": {"method": "excess-loss", "shortlist": 6},
            "val": {"method": "valued", "budget": 60},
            "sp": {"method": "sal-probes", "probes": 4, "budget": 48}}


def test_feedback_methods_read_the_pool_labels_in_the_full_setting_and_count_selection_apart(tmp_path):
    records = {r["method"]: r for r in run(tmp_path, methods=["knn", "go", *FEEDBACK], variants=FEEDBACK,
                                           label_budgets=[], annotators=[], oracle_sets=0, zero_shot=False)}
    assert {m: (r["setting"], r["label_budget"]) for m, r in records.items()} == {
        "knn:q": ("full", 30), "go:s": ("shared", 2), **{m: ("full", 30) for m in FEEDBACK}}
    for method in FEEDBACK:
        r = records[method]
        # FakeClient: one request per prompt, no cache, so each side's requests are its prompts
        assert r["selection_prompts"] == r["selection_requests"] > 0, method
        assert r["http_requests"] == r["n_test"] == 8, method  # answering only
        assert r["selection_prompt_tokens"] == 0 and r["labels"] > 2, method
    for method in ("knn:q", "go:s"):
        assert records[method]["selection_prompts"] == records[method]["selection_requests"] == 0
    assert records["el"]["labels"] == 30  # the reference classifier reads every label
    assert records["val"]["labels"] == 30 and records["val"]["valuation_prompts"] == 60
    assert -1 <= records["val"]["valuation_reliability"] <= 1 and "valuation_prompts" not in records["vs"]
    assert records["vs"]["labels"] >= 8 + 2  # probes and demos at least
    # a cell's key and parameters are what a resume checks: the variants' own, the model not among them
    assert records["vs"]["params"] == {k: v for k, v in FEEDBACK["vs"].items() if k != "method"}


def test_excess_loss_with_a_reference_llm_gets_it_by_name_and_counts_its_prompts(tmp_path):
    from fewshot.evaluation.harness import reference_names

    variants = {"el": {"method": "excess-loss", "shortlist": 6},
                "el-llm": {"method": "excess-loss", "shortlist": 6, "reference": "llm"},
                "el-other": {"method": "excess-loss", "shortlist": 6, "reference": "llm", "reference_llm": "small"}}
    suite = Suite(methods=list(variants), variants=variants, k=[2], label_budgets=[], annotators=[], pool_size=30,
                  test_size=8, oracle_sets=0, zero_shot=False)
    assert reference_names(suite) == ["smollm2-135m", "small"]
    references = {"smollm2-135m": FakeClient(), "small": FakeClient()}
    references["small"].cache_namespace = "small-model-file"
    references["smollm2-135m"].cache_namespace = "smollm2-file"
    templates = {"classification": load_template("classification"), "regression": load_template("regression")}
    records = {r["method"]: r for r in run_suite(suite, [small_data()], FakeClient(), templates, HashEmbedder(),
                                                 tmp_path / "run", reference_llms=references)}
    # the reference answers the same prompts: twice the target's, each one a request of one of the two clients
    for name in ("el-llm", "el-other"):
        assert records[name]["selection_prompts"] == 2 * records["el"]["selection_prompts"], name
        assert records[name]["selection_requests"] == records[name]["selection_prompts"], name
        assert records[name]["labels"] < records["el"]["labels"] == 30  # it reads no label beyond those scored
    assert references["small"].stats["calls"] == references["smollm2-135m"].stats["calls"] > 0
    # the cell records which reference answered, the default's name included; run.json each one's model file
    assert records["el-llm"]["params"] == {"shortlist": 6, "reference": "llm", "reference_llm": "smollm2-135m"}
    assert records["el"]["params"] == {"shortlist": 6}
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["configuration"]["reference_llms"] == {"small": "small-model-file", "smollm2-135m": "smollm2-file"}
    with pytest.raises(InputError, match="reference LLM\\(s\\) small, which are not open"):
        run_suite(suite, [small_data()], FakeClient(), templates, HashEmbedder(), tmp_path / "other",
                  reference_llms={"smollm2-135m": references["smollm2-135m"]})
    assert not (tmp_path / "other").exists()  # refused before the folder was made


def test_sal_records_its_simulated_prompts_apart_from_answering(tmp_path):
    records = {r["method"]: r for r in run(tmp_path, methods=["sal"], label_budgets=[], annotators=[],
                                           oracle_sets=0, zero_shot=False)}
    sal = records["sal:s"]
    assert sal["selection_requests"] == sal["selection_prompts"] > 0 and sal["http_requests"] == 8


def test_an_annotator_that_reads_every_label_is_refused_but_a_retriever_reads_only_the_b():
    with pytest.raises(InputError, match="field 'annotators': .* reads the labels of the whole pool"):
        Suite(label_budgets=[8], annotators=["valsearch"]).check()
    Suite(label_budgets=[8], retriever="excess-loss").check()  # it reads the B annotated labels only


# -- LLM-feedback retrievers in the annotate setting: B counts their probes --------------------------

def annotate_cells(suite, n=200, pool_size=100, test_size=8, predictor=None):
    data = small_data(n)
    pool, test = split(data, pool_size, test_size, seed=0)
    # the harness's problem: no pool labels (revealed only for the annotated examples)
    problem = replace(build_problem(pool, test, embedder=HashEmbedder()), labels=None)
    predictor = predictor or LLMPredictor(FakeClient(), load_template("classification"), data.labels)
    return pool, test, problem, predictor, list(plan_cells(suite, data, problem, pool, len(test), predictor, seed=0))


BUDGET_VARIANTS = {"vs": {"method": "valsearch:s", "candidates": 20, "probes": 16, "budget": 120},
                   "rs": {"method": "random-search:s", "probes": 16, "budget": 120}}


def test_every_annotator_meets_every_retriever_in_cells_named_annotator_to_retriever():
    suite = Suite(methods=[], k=[4], label_budgets=[32, 64], annotators=["random", "kmeans"],
                  retrievers=["knn", "vs", "rs"], variants=BUDGET_VARIANTS, zero_shot=False, oracle_sets=0)
    cells = annotate_cells(suite)[-1]
    assert [c.key for c in cells] == [f"d|0|annotate|{a}>{r}|B{b}|k4" for b in (32, 64)
                                      for a in ("random:s", "kmeans:s") for r in ("knn:q", "vs", "rs")]
    params = {c.method: c.params for c in cells}
    assert params["kmeans:s>vs"] == {"retriever.candidates": 20, "retriever.probes": 16, "retriever.budget": 120}
    assert params["random:s>knn:q"] == {}


def test_a_one_retriever_suite_plans_and_records_what_it_did_before(tmp_path):
    """Committed run folders resume: retriever = "knn" (or none) gives the cell keys and run.json of old."""
    records = run(tmp_path, retriever="knn")
    assert sorted(r["cell"] for r in records if r["setting"] == "annotate") == [
        "d|0|annotate|kmeans:s>knn:q|B6|k2", "d|0|annotate|random:s>knn:q|B6|k2"]
    run_json = tmp_path / "run" / "run.json"
    saved = json.loads(run_json.read_text())
    assert saved["suite"]["retriever"] == "knn" and "retrievers" not in saved["suite"]
    assert saved["references"]["annotate"] == "random:s>knn:q"
    before = (run_json.read_bytes(), (tmp_path / "run" / "records.jsonl").read_bytes())
    run(tmp_path)  # the default retriever: the same suite, nothing redone, nothing rewritten differently
    assert (run_json.read_bytes(), (tmp_path / "run" / "records.jsonl").read_bytes()) == before


class RecordingPredictor(LLMPredictor):
    """Remembers the text of every demo and query its prompts show."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shown = set()

    def predict_many(self, jobs):
        for demos, text in jobs:
            self.shown.update([text, *(d.text for d in demos)])
        return super().predict_many(jobs)


@pytest.mark.parametrize("retriever", ["vs", "rs"])
def test_a_feedback_retriever_picks_and_probes_among_the_b_annotated_examples(retriever):
    suite = Suite(methods=[], k=[4], label_budgets=[32], annotators=["random"], retrievers=[retriever],
                  variants=BUDGET_VARIANTS, zero_shot=False, oracle_sets=0)
    predictor = RecordingPredictor(FakeClient(), load_template("classification"), ("a", "b"))
    pool, test, problem, predictor, (cell,) = annotate_cells(suite, predictor=predictor)
    _, demo_sets, labels, facts = cell.work()
    annotated = {pool[i].text for i in make_selector("random", seed=0).select(problem, 32).indices}
    assert labels == 32 and facts["selection_prompts"] == predictor.client.stats["calls"] > 0
    assert facts["retriever_held_out"] == 16  # the probes, inside B
    assert predictor.shown <= annotated and len(predictor.shown) > 16  # probes and demos, all annotated
    assert len({tuple(d.id for d in demos) for demos in demo_sets}) == 1 and len(demo_sets) == len(test)
    assert {d.text for d in demo_sets[0]} <= annotated and len(demo_sets[0]) == 4


def test_a_feedback_retriever_cell_records_b_labels_and_its_selection_prompts(tmp_path):
    records = {r["method"]: r for r in run(tmp_path, k=[4], label_budgets=[32], annotators=["kmeans"],
                                           retrievers=["knn", "vs"], variants=BUDGET_VARIANTS, methods=[],
                                           pool_size=40, oracle_sets=0, zero_shot=False)}
    assert set(records) == {"kmeans:s>knn:q", "kmeans:s>vs"}
    vs, knn = records["kmeans:s>vs"], records["kmeans:s>knn:q"]
    assert vs["labels"] == vs["label_budget"] == knn["labels"] == 32
    assert vs["selection_prompts"] == vs["selection_requests"] > 0 and vs["http_requests"] == vs["n_test"] == 8
    assert vs["demo_sets"] == 1 and knn["selection_prompts"] == 0 and "retriever_held_out" not in knn
    assert vs["params"] == {"retriever.candidates": 20, "retriever.probes": 16, "retriever.budget": 120}
