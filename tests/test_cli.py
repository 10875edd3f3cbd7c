"""The `fewshot` command end to end: output format, determinism, unlabeled pools, bad input."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fewshot.cli import app
from tests.conftest import EXAMPLES, unit_rows, write_jsonl

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def vectors(tmp_path):
    """Precomputed embeddings for the bundled example files (keeps these tests model-free)."""
    rng = np.random.default_rng(0)
    pool, queries = tmp_path / "pool.npy", tmp_path / "queries.npy"
    np.save(pool, unit_rows(rng, 300, 32))
    np.save(queries, unit_rows(rng, 40, 32))
    return ["--embeddings", pool, "--query-embeddings", queries]


def select(tmp_path, vectors, *extra, out="sel.jsonl"):
    return run("select", "--pool", EXAMPLES / "pool.jsonl", "--queries", EXAMPLES / "queries.jsonl",
               "--out", tmp_path / out, *vectors, *extra)


def test_select_writes_demos_and_meta(tmp_path, vectors):
    result = select(tmp_path, vectors, "--method", "go", "--k", "5", "--seed", "3")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "sel.jsonl").read_text().splitlines()]
    assert [r["rank"] for r in records] == [1, 2, 3, 4, 5]
    assert all(r["label"] in ("positive", "negative") and not r["needs_label"] for r in records)
    meta = json.loads((tmp_path / "sel.jsonl.meta.json").read_text())
    assert meta["method"] == "go" and meta["seed"] == 3 and meta["embedding_model"] == "precomputed"
    assert meta["params"]["objective"] == "g" and "selection_seconds" in meta and meta["to_label"] == []


@pytest.mark.parametrize("method", ["random", "go", "dpp"])
def test_same_seed_byte_identical(tmp_path, vectors, method):
    select(tmp_path, vectors, "--method", method, "--per-query", "--k", "3", out="a.jsonl")
    select(tmp_path, vectors, "--method", method, "--per-query", "--k", "3", out="b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_per_query_has_one_list_per_query(tmp_path, vectors):
    assert select(tmp_path, vectors, "--method", "knn", "--k", "2", "--per-query").exit_code == 0
    records = [json.loads(line) for line in (tmp_path / "sel.jsonl").read_text().splitlines()]
    assert len(records) == 80 and len({r["query_id"] for r in records}) == 40


def test_unlabeled_pool_says_what_to_label(tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"text": f"text number {i}"} for i in range(20)])
    queries = write_jsonl(tmp_path / "q.jsonl", [{"text": "query"}])
    np.save(tmp_path / "p.npy", unit_rows(np.random.default_rng(0), 20, 8))
    np.save(tmp_path / "q.npy", unit_rows(np.random.default_rng(1), 1, 8))
    result = run("select", "--pool", pool, "--queries", queries, "--k", "3", "--out", tmp_path / "s.jsonl",
                 "--embeddings", tmp_path / "p.npy", "--query-embeddings", tmp_path / "q.npy")
    assert result.exit_code == 0 and "label these 3 examples" in result.output
    meta = json.loads((tmp_path / "s.jsonl.meta.json").read_text())
    assert len(meta["to_label"]) == 3


def test_token_budget_and_render(tmp_path, vectors):
    result = select(tmp_path, vectors, "--method", "knn", "--k", "8", "--max-tokens", "50", "--render", "classification")
    assert result.exit_code == 0
    assert "token budget exhausted" in result.output and "### query" in result.output
    meta = json.loads((tmp_path / "sel.jsonl.meta.json").read_text())
    assert meta["stopped"] == ["token budget exhausted"]


def test_methods_lists_every_selector():
    result = run("methods")
    for name in ("go", "random", "knn", "mmr", "bm25", "kmeans", "votek", "dpp"):
        assert f"\n{name} " in "\n" + result.output


@pytest.mark.parametrize("extra, message", [
    (["--k", "301"], "larger than the pool"),
    (["--method", "nope"], "unknown method"),
    (["--max-tokens", "3"], "every demo alone exceeds --max-tokens 3"),
    (["--render", "missing-template"], "template not found"),
    (["-p", "objective=x"], "parameter objective='x' for method 'go' must be"),
    (["-p", "nosie=0.1"], "unknown parameter 'nosie' for method 'go' (valid: objective, ridge, noise"),
    (["-p", "noise=abc"], "parameter noise='abc' for method 'go' must be float"),
    (["--method", "knn", "-p", "objective=v"], "unknown parameter 'objective' for method 'knn'"),
])
def test_bad_options_exit_2(tmp_path, vectors, extra, message):
    result = select(tmp_path, vectors, *extra)
    assert result.exit_code == 2 and message in result.output


def test_bad_files_exit_2(tmp_path, vectors):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops}\n')
    result = run("select", "--pool", bad, "--queries", EXAMPLES / "queries.jsonl")
    assert result.exit_code == 2 and "bad.jsonl, line 2: malformed JSON" in result.output
    result = run("select", "--pool", tmp_path / "none.jsonl", "--queries", EXAMPLES / "queries.jsonl")
    assert result.exit_code == 2 and "does not exist" in result.output
    np.save(tmp_path / "wrong.npy", np.ones((7, 32)))
    result = select(tmp_path, ["--embeddings", tmp_path / "wrong.npy", "--query-embeddings", vectors[3]])
    assert result.exit_code == 2 and "does not match the pool" in result.output


@pytest.mark.slow  # the bundled embedding model on 340 texts
def test_real_model_end_to_end(tmp_path):
    """The README demo: bundled examples, bundled embedding model, second run from the cache."""
    args = ["select", "--pool", EXAMPLES / "pool.jsonl", "--queries", EXAMPLES / "queries.jsonl",
            "--method", "go", "--k", "4", "--cache-dir", tmp_path / "c"]
    first = run(*args, "--out", tmp_path / "a.jsonl")
    second = run(*args, "--out", tmp_path / "b.jsonl")
    assert first.exit_code == 0 == second.exit_code, first.output
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    first_meta = json.loads((tmp_path / "a.jsonl.meta.json").read_text())
    second_meta = json.loads((tmp_path / "b.jsonl.meta.json").read_text())
    assert first_meta["embedding_model"].endswith("all-MiniLM-L6-v2")
    assert first_meta["embeddings_computed"] == 340 and second_meta["embeddings_computed"] == 0


def test_out_in_a_missing_folder_is_created(tmp_path, vectors):
    result = select(tmp_path, vectors, "--k", "3", out="some/missing/dir/sel.jsonl")
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "some/missing/dir/sel.jsonl").read_text().splitlines()) == 3


def test_out_that_is_a_folder_is_refused_before_work(tmp_path, vectors):
    (tmp_path / "folder").mkdir()
    result = select(tmp_path, vectors, "--k", "3", out="folder")
    assert result.exit_code == 2 and "is a folder" in result.output and "chose" not in result.output


def test_render_of_an_unlabeled_pool_is_refused(tmp_path, vectors):
    rows = [{"text": json.loads(line)["text"]} for line in (EXAMPLES / "pool.jsonl").read_text().splitlines()]
    pool = write_jsonl(tmp_path / "unlabeled.jsonl", rows)
    result = run("select", "--pool", pool, "--queries", EXAMPLES / "queries.jsonl", *vectors, "--k", "3",
                 "--render", "classification")
    assert result.exit_code == 2 and "--render needs labels" in result.output
    assert "Answer with one of: ." not in result.output


def test_summary_table_and_one_prompt_on_stderr(tmp_path, vectors):
    result = select(tmp_path, vectors, "--method", "knn", "--k", "3")
    assert result.exit_code == 0
    first = json.loads((tmp_path / "sel.jsonl").read_text().splitlines()[0])
    assert "chosen demos" in result.output and str(first["id"]) in result.output
    assert result.output.count("Label:") == 4  # one prompt: 3 demos and the query


def test_pool_folder_is_a_clear_error(tmp_path, vectors):
    result = run("select", "--pool", tmp_path, "--queries", EXAMPLES / "queries.jsonl", *vectors)
    assert result.exit_code == 2 and "is a folder, not a file" in result.output


def test_ids_from_the_id_field_by_default(tmp_path, vectors):
    rows = [json.loads(line) for line in (EXAMPLES / "pool.jsonl").read_text().splitlines()]
    assert all("id" in r for r in rows)
    result = select(tmp_path, vectors, "--k", "3")
    assert result.exit_code == 0
    chosen = [json.loads(line)["id"] for line in (tmp_path / "sel.jsonl").read_text().splitlines()]
    assert set(chosen) <= {r["id"] for r in rows}
    meta = json.loads((tmp_path / "sel.jsonl.meta.json").read_text())
    assert meta["ids"] == {"pool": "field 'id'", "queries": "field 'id'"}


def test_label_budget_annotates_then_retrieves(tmp_path, vectors):
    """--label-budget 16: every query's demos come from the same 16 labeled examples."""
    result = select(tmp_path, vectors, "--method", "votek", "--label-budget", "16", "--k", "4", "--per-query")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "sel.jsonl").read_text().splitlines()]
    assert len(records) == 40 * 4 and len({r["id"] for r in records}) <= 16
    meta = json.loads((tmp_path / "sel.jsonl.meta.json").read_text())
    assert meta["label_budget"] == 16 and meta["retriever"] == "knn"
    result = select(tmp_path, vectors, "--method", "votek", "--label-budget", "3", "--k", "4", out="x.jsonl")
    assert result.exit_code == 2 and "label_budget=3 is smaller than k=4" in result.output


def test_bad_calibration_fails_before_the_llm(tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(10)])
    result = runner.invoke(app, ["select", "--pool", str(pool), "--queries", str(pool), "--method", "sal",
                                 "--k", "2", "--calibration", "bath", "--base-url", "http://127.0.0.1:9/v1"])
    assert result.exit_code == 2 and "unknown calibration 'bath'" in result.output


@pytest.mark.parametrize("extra, message", [
    (["--k", "0"], "k=0 must be at least 1"),
    (["--k", "-1"], "k=-1 must be at least 1"),
    (["--max-tokens", "0"], "max_tokens=0 must be positive"),
    (["--label-budget", "2", "--k", "4"], "label_budget=2 is smaller than k=4"),
    (["--prune-to", "2", "--k", "4"], "prune_to=2 is smaller than k=4"),
    (["--prune-policy", "middle"], "unknown pruning policy 'middle'"),
    (["--retriever", "nope", "--label-budget", "16"], "unknown method 'nope'"),
    (["--render", "classification", "--template", "regression"], "name different templates"),
])
def test_plain_parameters_are_refused_before_any_embedding(tmp_path, monkeypatch, extra, message):
    """Issue 20: `--k 0` was refused only after the pool was embedded."""
    import fewshot.cli as cli

    def no_embedding(*args, **kwargs):
        raise AssertionError("an embedder was made before the parameters were checked")

    monkeypatch.setattr(cli, "make_embedder", no_embedding)
    result = run("select", "--pool", EXAMPLES / "pool.jsonl", "--queries", EXAMPLES / "queries.jsonl", *extra)
    assert result.exit_code == 2 and message in result.output, result.output


def test_render_and_template_naming_one_template_are_fine(tmp_path, vectors):
    result = select(tmp_path, vectors, "--k", "2", "--render", "classification", "--template", "classification")
    assert result.exit_code == 0 and "### query" in result.output
    assert json.loads((tmp_path / "sel.jsonl.meta.json").read_text())["template"] == "classification"


def test_default_mode_follows_the_method_and_flags_override_it(tmp_path, vectors):
    """R14: `--method knn` is per query, as in fewshot.select and the eval; `--shared` and
    `--per-query` override; under a label budget the retriever's mode is the default."""
    def mode(*extra):
        assert select(tmp_path, vectors, "--k", "2", *extra).exit_code == 0
        return json.loads((tmp_path / "sel.jsonl.meta.json").read_text())["per_query"]

    assert mode("--method", "knn") is True and mode("--method", "knn", "--shared") is False
    assert mode("--method", "go") is False and mode("--method", "go", "--per-query") is True
    assert mode("--method", "go", "--label-budget", "8") is True
    assert mode("--method", "go", "--label-budget", "8", "--retriever", "go") is False


def test_label_budget_is_not_cut_by_the_token_budget(tmp_path, vectors):
    """R1: --max-tokens bounds each prompt's k demos, not the B examples to label."""
    rows = [{"id": f"u{i}", "text": json.loads(line)["text"]}
            for i, line in enumerate((EXAMPLES / "pool.jsonl").read_text().splitlines())]
    pool = write_jsonl(tmp_path / "unlabeled.jsonl", rows)
    result = run("select", "--pool", pool, "--queries", EXAMPLES / "queries.jsonl", *vectors, "--method", "random",
                 "--label-budget", "16", "--k", "2", "--max-tokens", "60", "--out", tmp_path / "s.jsonl")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "s.jsonl.meta.json").read_text())
    assert len(meta["to_label"]) == 16 and meta["annotation_stopped"] is None
    assert "label these 16 examples" in result.output


def test_render_shows_the_first_pick_nearest_the_query(tmp_path, vectors):
    result = select(tmp_path, vectors, "--method", "go", "--k", "3", "--render", "classification")
    assert result.exit_code == 0
    records = [json.loads(line) for line in (tmp_path / "sel.jsonl").read_text().splitlines()]
    first_prompt = result.stdout.split("### query")[1]
    positions = [first_prompt.index(r["text"]) for r in records]
    assert positions == sorted(positions, reverse=True)  # rank 1 last, just before the query


@pytest.fixture
def llm_server():
    from tests.llm.fake_server import FakeServer, completion

    server = FakeServer([(200, completion({" positive": -0.4, " negative": -1.1}), 0)])
    yield server
    server.close()


def sal(tmp_path, llm_server, pool, *extra):
    return run("select", "--pool", pool, "--queries", EXAMPLES / "queries.jsonl", "--method", "sal",
               "--base-url", llm_server.url, "--model", "fake", "--cache-dir", tmp_path / "cache",
               "-p", "query_sample=2", "--embeddings", tmp_path / "p.npy",
               "--query-embeddings", tmp_path / "q.npy", *extra)


def small_pool(tmp_path, n=12, labeled=True):
    rows = [json.loads(line) for line in (EXAMPLES / "pool.jsonl").read_text().splitlines()[:n]]
    rows = rows if labeled else [{"id": r["id"], "text": r["text"]} for r in rows]
    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", unit_rows(rng, n, 16))
    np.save(tmp_path / "q.npy", unit_rows(rng, 40, 16))
    return write_jsonl(tmp_path / "pool.jsonl", rows), rows


def test_sal_cost_report_and_trace_under_a_label_budget(tmp_path, llm_server):
    """R16: with --label-budget, SAL's simulated prompts were reported as 0 and meta["trace"] was the
    retriever's."""
    pool, rows = small_pool(tmp_path)
    result = sal(tmp_path, llm_server, pool, "--label-budget", "4", "--k", "2", "--out", tmp_path / "s.jsonl")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "s.jsonl.meta.json").read_text())
    assert 0 < meta["llm"]["simulated_calls"] < meta["llm"]["naive_calls"]
    assert len(meta["trace"][0]) == 4 and all("label" in t for t in meta["trace"][0])
    assert f"LLM: {meta['llm']['simulated_calls']} simulated prompts" in result.output


def test_sal_resumes_from_labels_typed_in_an_earlier_run(tmp_path, llm_server):
    """R10: answers typed at the prompt are kept in OUT.labels.jsonl; the same command, re-run off a
    terminal, takes them instead of asking (before: "has no label" and exit 2)."""
    pool, rows = small_pool(tmp_path, labeled=False)
    typed = [{"id": r["id"], "label": "positive" if i % 2 else "negative", "text": r["text"]} for i, r in enumerate(rows)]
    write_jsonl(tmp_path / "s.jsonl.labels.jsonl", typed)
    result = sal(tmp_path, llm_server, pool, "--k", "2", "--out", tmp_path / "s.jsonl")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    by_id = {t["id"]: t["label"] for t in typed}
    assert len(records) == 2 and all(r["label"] == by_id[r["id"]] for r in records)
    without = sal(tmp_path, llm_server, pool, "--k", "2", "--labels", "negative,positive", "--out", tmp_path / "o.jsonl")
    assert without.exit_code == 2 and "was picked to label and has no label" in without.output


@pytest.mark.parametrize("stop, code, message", [
    ("sigterm", 143, "terminated (SIGTERM): finished work is kept; re-run the same command to resume"),
    ("ctrl-c", 130, "interrupted: finished work is kept; re-run the same command to resume"),
])
def test_stop_signals_say_what_is_kept(tmp_path, vectors, monkeypatch, stop, code, message):
    """Issue 20: SIGTERM exited 143 without a word; the CLI's own handler turns it into Interrupted."""
    import os
    import signal
    import time

    import fewshot.cli as cli

    def stopped(*args, **kwargs):
        if stop == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in this thread before the sleep ends
        raise AssertionError("SIGTERM did not stop the command")

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli, "select_examples", stopped)
    result = select(tmp_path, vectors, "--k", "2")
    assert result.exit_code == code and message in result.output
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handler is gone after it


# -- the LLM-feedback methods and `fewshot value` (issue 18) -----------------------------------------

def test_methods_say_what_the_llm_feedback_methods_need():
    result = run("methods")
    assert result.exit_code == 0
    for name in ("valsearch", "random-search", "excess-loss", "valued", "sal-probes"):
        block = result.output.split(f"\n{name} ", 1)[1].split("parameters:")[0]
        assert "needs: the pool's labels, an LLM" in block, name
    assert "needs: an LLM" in result.output.split("\nsal ", 1)[1].split("parameters:")[0]
    assert "needs:" not in result.output.split("\nknn ", 1)[1].split("parameters:")[0]


def test_select_valsearch_with_an_endpoint(tmp_path, llm_server):
    pool, _ = small_pool(tmp_path, n=30)
    result = run("select", "--pool", pool, "--queries", EXAMPLES / "queries.jsonl", "--method", "valsearch",
                 "--k", "2", "-p", "candidates=4", "-p", "probes=6", "-p", "budget=24",
                 "--base-url", llm_server.url, "--model", "fake", "--cache-dir", tmp_path / "cache",
                 "--embeddings", tmp_path / "p.npy", "--query-embeddings", tmp_path / "q.npy",
                 "--out", tmp_path / "s.jsonl")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "s.jsonl.meta.json").read_text())
    assert meta["method"] == "valsearch" and meta["per_query"] is False and "model" not in meta["params"]
    assert 0 < meta["llm"]["selection_prompts"] <= 24 and meta["llm"]["stats"]["calls"] > 0
    assert f"LLM: {meta['llm']['selection_prompts']} selection prompts" in result.output
    records = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["label"] for r in records)


def test_select_valsearch_on_an_unlabeled_pool_is_refused_before_the_llm(tmp_path):
    pool, _ = small_pool(tmp_path, n=30, labeled=False)
    result = run("select", "--pool", pool, "--queries", EXAMPLES / "queries.jsonl", "--method", "valsearch",
                 "--k", "2", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                 "--embeddings", tmp_path / "p.npy", "--query-embeddings", tmp_path / "q.npy")
    assert result.exit_code == 2, result.output
    assert "pool.jsonl, line 1, id" in result.output and "field 'label': valsearch reads the pool's labels" in result.output


def value(tmp_path, server, *extra, out="values.csv", n=30):
    pool, _ = small_pool(tmp_path, n=n)
    return run("value", "--pool", pool, "--out", tmp_path / out, "--base-url", server.url, "--model", "fake",
               "--cache-dir", tmp_path / "cache", *extra)


def test_value_writes_every_example_best_first_and_resumes_from_the_store(tmp_path, llm_server):
    first = value(tmp_path, llm_server, "--budget", "60", "--k", "2")
    assert first.exit_code == 0, first.output
    import csv

    rows = list(csv.DictReader(open(tmp_path / "values.csv", encoding="utf-8")))
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 31)]
    assert set(rows[0]) == {"rank", "id", "value", "label", "text", "marginal", "datamodel", "included"}
    assert sum(int(r["included"]) for r in rows) == 10 * 2  # 60 prompts: 10 sets of k=2, 6 probes each
    assert "60 prompts (60 asked now" in first.output and "reliability" in first.output
    asked = len(llm_server.requests)
    again = value(tmp_path, llm_server, "--budget", "60", "--k", "2", out="values.jsonl")
    assert again.exit_code == 0, again.output
    assert "(0 asked now" in again.output and len(llm_server.requests) == asked  # nothing asked twice
    records = [json.loads(line) for line in (tmp_path / "values.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [r["id"] for r in rows]


@pytest.mark.parametrize("extra, out, message", [
    (["--metric", "acc"], "v.csv", "unknown metric 'acc'"),
    (["--estimator", "mean"], "v.csv", "unknown estimator 'mean'"),
    (["--budget", "0"], "v.csv", "budget=0 must be at least 1"),
    (["--budget", "5"], "v.csv", "less than one set's 6 probes"),
    (["--k", "40"], "v.csv", "at least k + probes_per_set = 46 examples, the pool has 30"),
    ([], "v.txt", "values are written as .csv or .jsonl"),
    ([], "folder", "is a folder"),
])
def test_value_refuses_bad_options_before_the_llm(tmp_path, extra, out, message):
    (tmp_path / "folder").mkdir()
    pool, _ = small_pool(tmp_path, n=30)
    result = run("value", "--pool", pool, "--out", tmp_path / out, "--base-url", "http://127.0.0.1:9/v1",
                 "--model", "m", *extra)
    assert result.exit_code == 2 and message in result.output, result.output


def test_value_needs_every_label(tmp_path):
    pool, _ = small_pool(tmp_path, n=30, labeled=False)
    result = run("value", "--pool", pool, "--out", tmp_path / "v.csv", "--base-url", "http://127.0.0.1:9/v1",
                 "--model", "m")
    assert result.exit_code == 2 and "line 1" in result.output and "label" in result.output, result.output
    assert not (tmp_path / "v.csv").exists()


def test_retriever_parameters_reach_the_retriever_and_the_meta(tmp_path, vectors):
    """-r KEY=VALUE sets the retriever's parameters (-p the method's); errors name the retriever's options."""
    result = select(tmp_path, vectors, "--method", "votek", "--label-budget", "16", "--k", "4", "--retriever", "mmr",
                    "-r", "lam=0.3", "-p", "neighbors=5")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "sel.jsonl.meta.json").read_text())
    assert meta["retriever"] == "mmr" and meta["retriever_params"]["lam"] == 0.3 and meta["params"]["neighbors"] == 5
    for extra, message in ((["-r", "lam=2"], "field '--retriever-param': parameter lam=2 for method 'mmr'"),
                           (["-r", "nosie=1"], "field '--retriever-param': unknown parameter 'nosie'"),
                           (["-r", "lam"], "field '--retriever-param': --retriever-param expects KEY=VALUE")):
        refused = select(tmp_path, vectors, "--method", "votek", "--label-budget", "16", "--k", "4",
                         "--retriever", "mmr", *extra)
        assert refused.exit_code == 2 and message in refused.output, refused.output
    unbudgeted = select(tmp_path, vectors, "--method", "knn", "-r", "lam=0.3")
    assert unbudgeted.exit_code == 2 and "give --label-budget too" in unbudgeted.output


def test_a_label_reading_retriever_on_an_unlabeled_pool_takes_the_b_labels_from_the_labels_file(tmp_path, llm_server):
    """--label-budget 8 --retriever random-search on an unlabeled pool: the labels of the 8 picked come from
    --labels-file (a person at the terminal otherwise); records carry them, and nothing is left to label."""
    pool, rows = small_pool(tmp_path, labeled=False)
    labels = write_jsonl(tmp_path / "labels.jsonl", [{"id": r["id"], "label": ("negative", "positive")[i % 2]}
                                                     for i, r in enumerate(rows)])
    result = run("select", "--pool", pool, "--queries", EXAMPLES / "queries.jsonl", "--method", "kmeans",
                 "--label-budget", "8", "--k", "2", "--retriever", "random-search", "-r", "probes=4", "-r", "budget=8",
                 "--labels-file", labels, "--base-url", llm_server.url, "--model", "fake",
                 "--cache-dir", tmp_path / "cache", "--embeddings", tmp_path / "p.npy",
                 "--query-embeddings", tmp_path / "q.npy", "--out", tmp_path / "s.jsonl")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "s.jsonl.meta.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert meta["retriever_params"]["probes"] == 4 and meta["to_label"] == []
    assert meta["llm"]["selection_prompts"] > 0  # the retriever scored its candidate sets on the probes
    assert records and all(r["label"] in ("negative", "positive") and not r["needs_label"] for r in records)
