"""Suites: variants with parameters, checks before any work, and the CLI overriding a suite."""

import pytest
from typer.testing import CliRunner

from fewshot.cli import app
from fewshot.errors import InputError
from fewshot.evaluation.suites import MethodSpec, Suite, load_suite

runner = CliRunner()


def test_method_modes():
    assert MethodSpec.parse("knn:s").per_query is False and MethodSpec.parse("go:q").per_query is True
    with pytest.raises(InputError, match="unknown method"):
        MethodSpec.parse("magic")


def test_a_variant_names_a_selector_with_parameters():
    spec = Suite(variants={"go-v": {"method": "go:q", "objective": "v", "noise": 1}}).spec("go-v")
    assert (spec.name, spec.per_query, spec.label) == ("go", True, "go-v")
    assert dict(spec.params) == {"objective": "v", "noise": 1}


def test_a_variant_with_an_unknown_parameter_names_the_file_and_variant(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('methods = ["go-x"]\n[variants.go-x]\nmethod = "go"\nnosie = 0.1\n')
    with pytest.raises(InputError) as err:
        load_suite(path)
    assert str(path) in str(err.value) and "variant 'go-x'" in str(err.value) and "'nosie'" in str(err.value)


def test_checks_before_any_work():
    with pytest.raises(InputError, match="must pick one shared set"):
        Suite(annotators=["knn"]).check()
    with pytest.raises(InputError, match="label budgets"):
        Suite(k=[8], label_budgets=[4]).check()
    with pytest.raises(InputError, match="not sal"):
        Suite(retriever="sal").check()
    with pytest.raises(InputError, match="unknown method 'go-z'"):
        Suite(methods=["go-z"]).check()


def test_cli_overrides_a_suite_and_takes_its_variant_names(tmp_path):
    # the override reaches the checks: a variant of the quick suite with a data file of too few rows
    rows = tmp_path / "mine.jsonl"
    rows.write_text("".join(f'{{"text": "t{i}", "label": "{"ab"[i % 2]}"}}\n' for i in range(30)))
    result = runner.invoke(app, ["eval", "--suite", "quick", "--data", str(rows), "--methods", "random,go-v",
                                 "--pool-size", "20", "--test-size", "20", "--base-url", "http://127.0.0.1:9/v1",
                                 "--model", "m", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "too few for pool 20 + test 20" in result.output
    unknown = runner.invoke(app, ["eval", "--suite", "quick", "--methods", "go-w", "--base-url",
                                  "http://127.0.0.1:9/v1", "--model", "m", "--out", str(tmp_path / "r")])
    assert unknown.exit_code == 2 and "go-v" in unknown.output  # the error lists the suite's variants


def test_a_dotted_variant_name_must_be_quoted(tmp_path):
    path = tmp_path / "dots.toml"
    path.write_text('methods = ["go-0.1"]\n[variants.go-0.1]\nmethod = "go"\nnoise = 0.1\n')
    with pytest.raises(InputError, match="must be quoted"):
        load_suite(path)
    path.write_text('methods = ["go-0.1"]\n[variants."go-0.1"]\nmethod = "go"\nnoise = 0.1\n')
    assert dict(load_suite(path).spec("go-0.1").params) == {"noise": 0.1}


# -- several retrievers in the annotate setting (issue 18's label-budget goal) ------------------------

def test_retrievers_is_a_list_and_retriever_its_one_element_shorthand():
    assert Suite().retriever_names == ["knn"] and Suite(retriever="go:q").retriever_names == ["go:q"]
    assert Suite(retrievers=["knn", "valsearch"]).retriever_names == ["knn", "valsearch"]
    Suite(label_budgets=[8], retrievers=["knn", "valsearch", "random-search:s", "excess-loss"]).check()
    with pytest.raises(InputError, match="field 'retrievers': give retriever = 'knn' .* not both"):
        Suite(retriever="knn", retrievers=["go:q"]).check()
    with pytest.raises(InputError, match="field 'retrievers': retrievers is empty"):
        Suite(retrievers=[]).check()
    with pytest.raises(InputError, match="field 'retrievers': retrievers must be a list"):
        Suite(retrievers="knn").check()
    with pytest.raises(InputError, match="field 'retrievers': retrievers name knn:q twice"):
        Suite(retrievers=["knn", "knn:q"]).check()
    with pytest.raises(InputError, match="field 'retrievers': .*not sal"):
        Suite(retrievers=["knn", "sal"]).check()
    with pytest.raises(InputError, match="unknown method 'nope'"):
        Suite(retrievers=["knn", "nope"]).check()


def test_a_suite_file_giving_both_retriever_forms_is_refused_naming_it(tmp_path):
    path = tmp_path / "both.toml"
    path.write_text('label_budgets = [8]\nretriever = "knn"\nretrievers = ["knn", "go:q"]\n')
    with pytest.raises(InputError) as err:
        load_suite(path)
    assert str(path) in str(err.value) and "field 'retrievers'" in str(err.value) and "not both" in str(err.value)


def test_a_one_retriever_suite_records_itself_as_before_retrievers_existed():
    # run.json keeps the suite: a suite saying retriever = "knn" (or nothing) writes what it wrote then
    before = ["name", "data", "methods", "k", "label_budgets", "annotators", "retriever", "variants", "seeds",
              "pool_size", "test_size", "oracle_sets", "zero_shot", "contextual", "model", "regression_samples",
              "text_field", "label_field"]
    for suite in (Suite(), Suite(retriever="knn")):
        assert list(suite.record()) == before and suite.record()["retriever"] == "knn"
    assert Suite(retriever="mmr").record()["retriever"] == "mmr"
    several = Suite(retrievers=["knn", "valsearch"]).record()
    assert several["retrievers"] == ["knn", "valsearch"] and several["retriever"] is None


def test_the_feedback_budget_suite_compares_three_retrievers_at_two_budgets():
    suite = load_suite("tune-feedback-budget")
    assert suite.retriever_names == ["knn", "random-search-120", "valsearch-120"] and suite.methods == []
    assert suite.label_budgets == [32, 64] and suite.annotators == ["random", "kmeans", "votek"]
    assert [suite.spec(r).name for r in suite.retriever_names] == ["knn", "random-search", "valsearch"]
    assert dict(suite.spec("valsearch-120").params)["probes"] == dict(suite.spec("random-search-120").params)["probes"] == 16


def test_the_eval_cli_retriever_option_takes_a_list_of_retrievers_or_variants(tmp_path, monkeypatch):
    """`fewshot eval --retriever knn,valsearch-120` replaces the suite's retrievers (checked before any work)."""
    import fewshot.evaluation.harness as harness

    planned = []

    def stop_after_planning(plan, datasets):
        planned.append(plan)
        raise InputError("planned")

    monkeypatch.setattr(harness, "plan_splits", stop_after_planning)
    monkeypatch.setattr("fewshot.datasets.load_datasets", lambda names, **fields: [])  # no data read
    common = ["eval", "--suite", "tune-feedback-budget", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
              "--out", str(tmp_path / "r")]
    result = runner.invoke(app, [*common, "--retriever", "knn,valsearch-120"])
    assert result.exit_code == 2 and "planned" in result.output, result.output
    assert planned[-1].retriever_names == ["knn", "valsearch-120"] and planned[-1].retriever is None
    runner.invoke(app, [*common, "--retriever", "mmr"])
    assert planned[-1].retriever == "mmr" and planned[-1].retrievers is None  # one: the shorthand
    refused = runner.invoke(app, [*common, "--retriever", "knn,sal"])
    assert refused.exit_code == 2 and "not sal" in refused.output and len(planned) == 2
    empty = runner.invoke(app, [*common, "--retriever", ","])
    assert empty.exit_code == 2 and "field '--retriever': names no retriever" in empty.output and len(planned) == 2
