"""The eval harness: input checks before any expensive work, and a real end-to-end run."""

import json

import pytest
from typer.testing import CliRunner

from fewshot.cli import app
from fewshot.datasets import Dataset, load_dataset
from fewshot.data import Example
from fewshot.errors import InputError
from fewshot.evaluation.harness import MethodSpec, plan_splits, split, validate
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
        plan_splits(Suite(pool_size=20, test_size=5, budgets=[50]), [dataset(["a", "b"] * 20)])


def test_method_modes():
    assert MethodSpec.parse("knn:s").per_query is False and MethodSpec.parse("go:q").per_query is True
    with pytest.raises(InputError, match="unknown method"):
        MethodSpec.parse("magic")


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
    for name in ("summary.md", "summary.csv", "records.jsonl", "predictions.jsonl", "accuracy_vs_budget.png", "summary.png"):
        assert (out / name).stat().st_size > 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in records) == ["go:s", "knn:q", "oracle", "random:s", "zero-shot"]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for record in records:  # each score is recomputed from the predictions it was made of
        cell = [row for row in rows if row["cell"] == record["cell"]]
        assert record["score"] == pytest.approx(sum(row["correct"] for row in cell) / len(cell))
        assert record["unscored"] == sum(row["prediction"] is None for row in cell)
        assert all(row["correct"] == (row["prediction"] == row["gold"]) for row in cell)
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 6 * 4 + 6 * 1  # 4 rows of 6 + oracle's best
    before = (out / "records.jsonl").read_text()
    again = runner.invoke(app, ["eval", "--suite", "tiny", "--out", str(out)])
    assert again.exit_code == 0 and (out / "records.jsonl").read_text() == before  # nothing redone
