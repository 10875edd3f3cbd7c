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
from fewshot.evaluation.harness import plan_cells, plan_splits, run_suite, split, validate
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
    for record in records:  # each score is recomputed from the predictions it was made of
        rows = predictions[record["cell"]]["rows"]
        assert record["score"] == pytest.approx(sum(row["correct"] for row in rows) / len(rows))
        assert record["unscored"] == sum(row["prediction"] is None for row in rows)
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


def run(tmp_path, **changes):
    suite = Suite(**{"methods": ["random", "knn", "go"], "k": [2], "label_budgets": [6],
                     "annotators": ["random", "kmeans"], "pool_size": 30, "test_size": 8, "oracle_sets": 2,
                     **changes})
    templates = {"classification": load_template("classification"), "regression": load_template("regression")}
    return run_suite(suite, [small_data()], FakeClient(), templates, HashEmbedder(), tmp_path / "run")


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
    _, demo_sets, used = cell.work()
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
    _, demo_sets, used = cell.work()
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
    lines = (out / "records.jsonl").read_text().splitlines()
    (out / "records.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # last record torn
    again = run(tmp_path)
    assert [r["cell"] for r in again] == [r["cell"] for r in records]
    predictions = [json.loads(line)["cell"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(predictions) == sorted(r["cell"] for r in records)  # the redone cell's answers once
    assert again[-1]["score"] == records[-1]["score"]


def test_files_with_the_same_name_get_distinct_data_names(tmp_path):
    from fewshot.datasets import load_datasets

    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(4)]
    for folder in "abc":
        (tmp_path / folder).mkdir()
    sources = [str(write_jsonl(tmp_path / folder / "train.jsonl", rows)) for folder in ("a", "b")]
    sources.append(str(write_jsonl(tmp_path / "c" / "other.jsonl", rows)))
    assert [d.name for d in load_datasets(sources)] == ["a-train", "b-train", "other"]


def test_one_eval_at_a_time_per_run_folder(tmp_path):
    from fewshot.evaluation.harness import run_lock

    script = f"import time; from pathlib import Path; from fewshot.evaluation.harness import run_lock\n" \
             f"with run_lock(Path({str(tmp_path / 'run')!r})):\n    print('held', flush=True); time.sleep(30)"
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=rf"pid {holder.pid}.*another --out"):  # another process: refused
            with run_lock(tmp_path / "run"):
                pass
        with run_lock(tmp_path / "other"):  # another folder is free
            pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path / "run"):  # released when its process ended
        with run_lock(tmp_path / "run"):  # and re-entrant in one process (the CLI holds it around run_suite)
            pass
