"""Issue 20's faults as a user meets them through the CLI: each ends with a clear message (what and
where), before any work where it can be known early, and nothing already computed is lost."""

import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from fewshot.cli import app
from tests.conftest import EXAMPLES, fill_disk, make_read_only, unit_rows, write_jsonl
from tests.llm.fake_server import NEVER, BadJSON, FakeServer, completion

runner = CliRunner()
ANSWER = completion({" positive": -0.4, " negative": -1.1})


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def vectors(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", unit_rows(rng, 300, 16))
    np.save(tmp_path / "q.npy", unit_rows(rng, 40, 16))
    return ["--embeddings", tmp_path / "p.npy", "--query-embeddings", tmp_path / "q.npy"]


def select(tmp_path, vectors, *extra, pool=EXAMPLES / "pool.jsonl"):
    return run("select", "--pool", pool, "--queries", EXAMPLES / "queries.jsonl", *vectors, *extra)


def labeled_rows(n=60):
    return [{"id": f"r{i}", "text": f"text number {i}", "label": "positive" if i % 2 else "negative"} for i in range(n)]


def evaluate(tmp_path, server, data, *extra):
    return run("eval", "--data", data, "--methods", "random", "--k", "2", "--seeds", "1", "--pool-size", "40",
               "--test-size", "5", "--base-url", server.url, "--model", "fake", "--out", tmp_path / "run",
               "--cache-dir", tmp_path / "cache", *extra)


def test_an_unwritable_out_is_refused_before_any_work(tmp_path, vectors, mounted):
    """Probe 6 (read-only --out): exit 1 'internal error' after the work; now exit 2 first, naming the path."""
    make_read_only(mounted)
    result = select(tmp_path, vectors, "--method", "knn", "--k", "2", "--out", mounted / "sel.jsonl")
    assert result.exit_code == 2, result.output
    assert f"{mounted / 'sel.jsonl'}, field '--out'" in result.output and "Read-only file system" in result.output
    assert "chose" not in result.output  # no selection was made


def test_a_full_disk_keeps_the_previous_selection(tmp_path, vectors, mounted):
    """Probe 3d: a full disk tore the old selection and left a stale meta; now both stay as they were."""
    out = mounted / "sel.jsonl"
    first = select(tmp_path, vectors, "--method", "knn", "--shared", "--k", "4", "--out", out)
    assert first.exit_code == 0, first.output
    before = out.read_bytes(), (mounted / "sel.jsonl.meta.json").read_bytes()
    fill_disk(mounted)
    second = select(tmp_path, vectors, "--method", "knn", "--per-query", "--k", "4", "--out", out)
    assert second.exit_code == 2 and "No space left on device" in second.output and str(out) in second.output
    assert (out.read_bytes(), (mounted / "sel.jsonl.meta.json").read_bytes()) == before


def test_an_unwritable_cache_dir_is_refused_before_any_work(tmp_path, vectors, mounted):
    make_read_only(mounted)
    result = select(tmp_path, vectors, "--method", "knn", "--k", "2", "--cache-dir", mounted / "cache")
    assert result.exit_code == 2 and "field '--cache-dir'" in result.output


@pytest.mark.parametrize("flag", ["--timeout", "--deadline"])
def test_a_bad_wait_is_refused_before_any_work(tmp_path, vectors, flag):
    result = select(tmp_path, vectors, "--method", "sal", "--k", "2", flag, "0")
    assert result.exit_code == 2 and f"field '{flag}'" in result.output


def test_a_silent_endpoint_fails_within_the_deadline_naming_it(tmp_path):
    """Probe 2c': 608 s of silence, then 'cannot reach ... (no endpoint set ...)'; now the user's
    deadline bounds the wait and the message names the endpoint and says it timed out."""
    server = FakeServer([(200, ANSWER, NEVER)])
    try:
        data = write_jsonl(tmp_path / "d.jsonl", labeled_rows())
        start = time.monotonic()
        result = evaluate(tmp_path, server, data, "--timeout", "0.5", "--deadline", "1.5")
        took = time.monotonic() - start
    finally:
        server.close()
    assert result.exit_code == 1, result.output
    assert server.url in result.output and "timed out" in result.output and "no endpoint set" not in result.output
    assert took < 60  # the embedding model loads first; the endpoint itself may take only the deadline
    assert not (tmp_path / "run" / "records.jsonl").exists()


def test_a_malformed_reply_names_the_endpoint(tmp_path, vectors):
    """Probe 2d: an unexplained JSONDecodeError; now the endpoint and 'not valid JSON'."""
    server = FakeServer([(200, BadJSON('{"id": "x", "choi'), 0)])
    try:
        result = select(tmp_path, vectors, "--method", "sal", "--k", "2", "-p", "query_sample=2",
                        "--base-url", server.url, "--model", "fake", "--cache-dir", tmp_path / "cache")
    finally:
        server.close()
    assert result.exit_code == 1 and "not valid JSON" in result.output and server.url in result.output
    assert "internal error" not in result.output


def long_text_server():
    return FakeServer([(200, ANSWER, 0)], routes={"/props": lambda body: {"default_generation_settings": {"n_ctx": 4096}}})


def test_a_text_too_long_for_the_model_fails_an_eval_before_any_cell(tmp_path):
    """Probe 6 (200,000 characters): the model's context error after the server started, naming no
    file, line or id; now refused before any LLM call, naming them."""
    rows = labeled_rows(45)  # pool 40 + test 5: every row is used
    rows[7]["text"] = "word " * 40_000
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    server = long_text_server()
    try:
        result = evaluate(tmp_path, server, data)
    finally:
        server.close()
    assert result.exit_code == 2, result.output
    assert f"{data}, line 8, id 'r7'" in result.output and "4096" in result.output
    assert server.requests == []  # no prompt was sent


def test_a_text_too_long_for_the_model_fails_sal_before_any_prompt(tmp_path, vectors):
    rows = [json.loads(line) for line in (EXAMPLES / "pool.jsonl").read_text().splitlines()]
    rows[3]["text"] = "word " * 40_000
    pool = write_jsonl(tmp_path / "pool.jsonl", rows)
    server = long_text_server()
    try:
        result = select(tmp_path, vectors, "--method", "sal", "--k", "2", "--base-url", server.url,
                        "--model", "fake", "--cache-dir", tmp_path / "cache", pool=pool)
    finally:
        server.close()
    assert result.exit_code == 2, result.output
    assert f"{pool}, line 4, id '{rows[3]['id']}'" in result.output and server.requests == []


def test_eval_has_the_token_budget_select_has(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", labeled_rows())
    server = FakeServer([(200, ANSWER, 0)])
    try:
        refused = evaluate(tmp_path, server, data, "--max-tokens", "0")
        result = evaluate(tmp_path, server, data, "--max-tokens", "12")
    finally:
        server.close()
    assert refused.exit_code == 2 and "field '--max-tokens'" in refused.output
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "run.json").read_text())["configuration"]["max_tokens"] == 12


def test_report_on_an_empty_records_file_is_an_error(tmp_path):
    """Probe 7: exit 0 and empty tables; now exit 2 naming the file."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "records.jsonl").write_text("")
    result = run("report", tmp_path / "run")
    assert result.exit_code == 2 and "records.jsonl" in result.output


def test_a_full_disk_for_a_new_out_is_refused_before_any_work(tmp_path, vectors, mounted):
    """Probe 3c: a full disk still lets the check create a file, so it was caught only after the
    work; the check now writes 64 KiB."""
    fill_disk(mounted)
    result = select(tmp_path, vectors, "--method", "knn", "--k", "2", "--out", mounted / "new.jsonl")
    assert result.exit_code == 2 and "No space left on device" in result.output and "chose" not in result.output
    assert not (mounted / "new.jsonl").exists()


@pytest.mark.slow  # a fewshot process, for a real standard output
def test_stdout_on_a_full_device_is_a_clear_error(tmp_path, vectors):
    """Probe 3c (stdout to /dev/full): 'internal error: OSError' with exit 1; now exit 2 naming stdout."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "fewshot", "select", "--pool", EXAMPLES / "pool.jsonl", "--queries",
            EXAMPLES / "queries.jsonl", "--method", "knn", "--shared", "--k", "2", *vectors]
    with open("/dev/full", "w") as full:
        done = subprocess.run([str(a) for a in args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 2 and "field 'stdout'" in done.stderr and "internal error" not in done.stderr
