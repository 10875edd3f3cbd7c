"""Integration tests against the real local llama.cpp server and Gemma 3 270M (no doubles).

They fail, never skip, when the server cannot be built or started: CI must prove the local LLM works.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fewshot.cli import app
from fewshot.llm import LLMClient, LocalServer
from fewshot.prompts import load_template
from fewshot.data import Example
from tests.conftest import EXAMPLES, write_jsonl

pytestmark = pytest.mark.llm

DEMOS = [Example("1", "a wonderful, moving film", "positive"), Example("2", "dull and far too long", "negative"),
         Example("3", "the best movie this year", "positive"), Example("4", "a boring, ugly mess", "negative")]


@pytest.fixture(scope="module")
def server():
    with LocalServer() as running:
        yield running


def test_label_scoring_easy_case(server, tmp_path):
    client = LLMClient(server.base_url, server.model, cache_dir=tmp_path)
    template = load_template("classification")
    labels = ["negative", "positive"]
    good = client.label_probs(template.render(DEMOS, "an absolutely delightful film", labels), labels)
    bad = client.label_probs(template.render(DEMOS, "awful, boring and ugly", labels), labels)
    assert good.prediction == "positive" and bad.prediction == "negative"
    assert client.stats["calls"] >= 2 and client.stats["label_fallbacks"] == 0


def test_a_first_token_that_splits_a_character_leaves_the_prompt_unscored(server, tmp_path):
    # llama-server gives no logprobs when the first token is part of a UTF-8 character: after the
    # endpoint has shown logprobs, that is an unscored prompt, not a broken endpoint
    client = LLMClient(server.base_url, server.model, cache_dir=tmp_path)
    assert client.label_probs("Is water wet? Answer yes or no:", ["yes", "no"]).missing == ()
    scores = client.label_probs("\u0f00" * 7, ["yes", "no"])
    assert scores.missing == ("yes", "no") and client.stats["empty_answers"] == 1
    assert client.stats["unscored_prompts"] == 1


def test_sal_end_to_end_resumes_from_cache(server, tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"text": d.text, "label": d.label} for d in DEMOS] +
                       [{"text": "a masterpiece", "label": "positive"}, {"text": "a waste of time", "label": "negative"}])
    queries = write_jsonl(tmp_path / "q.jsonl", [{"text": "lovely"}, {"text": "terrible"}])
    args = ["select", "--pool", str(pool), "--queries", str(queries), "--method", "sal", "--k", "2",
            "--base-url", server.base_url, "--model", server.model, "--cache-dir", str(tmp_path / "cache")]
    runner = CliRunner()
    first = runner.invoke(app, args + ["--out", str(tmp_path / "a.jsonl")])
    assert first.exit_code == 0, first.output
    meta = json.loads((tmp_path / "a.jsonl.meta.json").read_text())["llm"]
    assert meta["stats"]["calls"] > 0 and meta["simulated_calls"] < meta["naive_calls"]
    second = runner.invoke(app, args + ["--out", str(tmp_path / "b.jsonl")])
    assert second.exit_code == 0
    again = json.loads((tmp_path / "b.jsonl.meta.json").read_text())["llm"]
    assert again["stats"].get("calls", 0) == 0 and again["stats"]["cached"] > 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_sal_render_shows_revealed_labels_of_an_unlabeled_pool(server, tmp_path):
    """--render with SAL on an unlabeled pool prints the labels its oracle revealed, and the label set."""
    rows = [{"id": f"p{i}", "text": d.text} for i, d in enumerate(DEMOS)]
    pool = write_jsonl(tmp_path / "pool.jsonl", rows)
    labels = write_jsonl(tmp_path / "labels.jsonl", [{"id": f"p{i}", "label": d.label} for i, d in enumerate(DEMOS)])
    queries = write_jsonl(tmp_path / "q.jsonl", [{"text": "lovely"}])
    result = CliRunner().invoke(app, ["select", "--pool", str(pool), "--queries", str(queries), "--method", "sal",
                                      "--k", "2", "--labels-file", str(labels), "--render", "classification",
                                      "--base-url", server.base_url, "--model", server.model,
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "Answer with one of: negative, positive." in result.output
    shown = [line.split(":", 1)[1].strip() for line in result.output.splitlines() if line.startswith("Label:")]
    assert shown[:2] and all(label in ("negative", "positive") for label in shown[:2])


def test_sal_starts_and_stops_its_own_server(tmp_path, monkeypatch):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "FEWSHOT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"text": d.text, "label": d.label} for d in DEMOS])
    queries = write_jsonl(tmp_path / "q.jsonl", [{"text": "lovely"}])
    args = ["select", "--pool", str(pool), "--queries", str(queries), "--method", "sal", "--k", "1"]
    result = CliRunner().invoke(app, args + ["--out", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "s.jsonl.meta.json").read_text())["llm"]
    url = meta["base_url"]
    # a second run starts a new server on another port, yet answers from the response cache
    again = CliRunner().invoke(app, args + ["--out", str(tmp_path / "t.jsonl")])
    assert again.exit_code == 0 and meta["stats"]["calls"] > 0
    assert json.loads((tmp_path / "t.jsonl.meta.json").read_text())["llm"]["stats"].get("calls", 0) == 0
    assert url.startswith("http://127.0.0.1:")
    port = int(url.split(":")[2].split("/")[0])
    assert subprocess.run(["curl", "-s", "-m", "2", f"http://127.0.0.1:{port}/health"]).returncode != 0


def test_excess_loss_with_a_reference_llm_runs_smollm2_beside_gemma_and_stops_both(tmp_path, monkeypatch):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "FEWSHOT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"text": d.text, "label": d.label} for d in DEMOS] +
                       [{"text": "a masterpiece", "label": "positive"}, {"text": "a waste of time", "label": "negative"}])
    queries = write_jsonl(tmp_path / "q.jsonl", [{"text": "lovely"}, {"text": "terrible"}])
    result = CliRunner().invoke(app, ["select", "--pool", str(pool), "--queries", str(queries), "--method", "excess-loss",
                                      "-p", "reference=llm", "-p", "shortlist=3", "--k", "2",
                                      "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "e.jsonl")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "e.jsonl.meta.json").read_text())
    llm, reference = meta["llm"], meta["llm"]["references"]["smollm2-135m"]
    assert llm["model"] == "gemma3-270m" and reference["model"] == "smollm2-135m"
    assert reference["base_url"] != llm["base_url"] and reference["stats"]["calls"] > 0
    scored = meta["selection_info"]["scored"]
    assert llm["selection_prompts"] == 2 * scored and 3 <= scored <= 6  # both LLMs answered each scored example
    for pick in meta["trace"][0]:
        assert pick["excess"] == pytest.approx(pick["target_loss"] - pick["reference_loss"], abs=2e-6)
    for url in (llm["base_url"], reference["base_url"]):  # both servers stopped with the command
        assert subprocess.run(["curl", "-s", "-m", "2", url.replace("/v1", "/health")]).returncode != 0


def test_llm_serve_stops_on_ctrl_c():
    proc = subprocess.Popen([sys.executable, "-m", "fewshot", "llm", "serve"], stdout=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals())
    try:
        line = proc.stdout.readline()
        assert "serving gemma3-270m at http://127.0.0.1:" in line
        url = line.split(" at ")[1].split()[0]
        time.sleep(0.5)  # the line is printed just before serve waits in its try block (cli.py); a loaded machine lags
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        time.sleep(0.5)
        assert subprocess.run(["curl", "-s", "-m", "2", url.replace("/v1", "/health")]).returncode != 0
    finally:
        _clean_up(proc, None)



def _default_signals(*ignored: int):
    """A child's signal dispositions as a terminal gives them: a test run under nohup or in a
    background job would hand it SIGHUP or SIGINT ignored, and the signal tests would test that."""
    def reset() -> None:
        for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN if signum in ignored else signal.SIG_DFL)
    return reset


def _children(pid):
    """Pids of a process's children, from /proc (Linux)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _server_child(pid, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in _children(pid):
            try:
                if "llama-server" in Path(f"/proc/{child}/cmdline").read_text():
                    return child
            except OSError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"process {pid} started no llama-server within {timeout} s")


def _running(pid):
    """True while the process exists and is not a zombie (an orphan's zombie may wait for a reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone_within(pid, seconds):
    deadline = time.monotonic() + seconds
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _running(pid)


def _port_free(port):
    """Nothing listens there any more (closed connections may linger in TIME_WAIT: SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _clean_up(proc, server):
    """After a failure, leave no process of the test behind."""
    proc.kill()
    proc.wait()
    if server is not None and _running(server):
        os.kill(server, signal.SIGKILL)


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PDEATHSIG is Linux's")


@linux_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_llm_serve_never_outlives_its_process(signum):
    # SIGTERM: what kill, timeout, containers and service managers send; SIGHUP: a closed terminal;
    # SIGKILL: no handler runs, the kernel's parent-death signal stops the server
    proc = subprocess.Popen([sys.executable, "-m", "fewshot", "llm", "serve"], stdout=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals())
    try:
        line = proc.stdout.readline()
        assert "serving gemma3-270m at http://127.0.0.1:" in line
        port = int(line.split(" at ")[1].split()[0].split(":")[2].split("/")[0])
        server = _server_child(proc.pid)
        proc.send_signal(signum)
        code = proc.wait(timeout=30)
        assert _gone_within(server, 15), f"llama-server {server} outlived fewshot after {signum.name}"
        assert _port_free(port)
        assert code == (-signum if signum == signal.SIGKILL else 128 + signum)
    finally:
        _clean_up(proc, locals().get("server"))


@linux_only
def test_llm_serve_under_nohup_keeps_serving_after_sighup():
    proc = subprocess.Popen([sys.executable, "-m", "fewshot", "llm", "serve"], stdout=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals(signal.SIGHUP))  # SIGHUP ignored, as nohup does
    try:
        assert "serving gemma3-270m at" in proc.stdout.readline()
        server = _server_child(proc.pid)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert proc.poll() is None and _running(server)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert _gone_within(server, 15)
    finally:
        _clean_up(proc, locals().get("server"))


@linux_only
def test_sal_stops_its_server_on_sigterm(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "FEWSHOT_MODEL")}
    lines = (EXAMPLES / "pool.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:150]
    (tmp_path / "pool.jsonl").write_text("".join(lines), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "fewshot", "select", "--pool", str(tmp_path / "pool.jsonl"),
                             "--queries", str(EXAMPLES / "queries.jsonl"), "--method", "sal", "--k", "8",
                             "--out", str(tmp_path / "s.jsonl")], env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals())
    try:
        server = _server_child(proc.pid)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        assert _gone_within(server, 15), f"llama-server {server} outlived fewshot select --method sal"
        assert code == 128 + signal.SIGTERM, proc.stderr.read()
        assert not (tmp_path / "s.jsonl").exists()
    finally:
        _clean_up(proc, locals().get("server"))


def test_unknown_local_model_is_clear(server, tmp_path):

    client = LLMClient(server.base_url, server.model, cache_dir=tmp_path)
    labels = ["negative", "positive"]
    prompt = load_template("classification").render(DEMOS, "x", labels)
    # llama-server serves whatever model it loaded; an unknown local model name is caught before starting
    with pytest.raises(Exception, match="unknown local model"):
        LocalServer("no-such-model").start()
    assert client.label_probs(prompt, labels).prediction in labels


def test_a_batch_is_reported_with_the_usage_and_timings_of_its_first_prompt(server):
    """R9: what llama-server reports for several prompts in one request, against the same prompts
    one by one (no response cache): the usage and timings of the batch are those of its first
    prompt (server-context.cpp keeps the first reply and appends the other choices), so the
    client counts prompt tokens per prompt and times only the first (``untimed_prompts``)."""
    prompt = load_template("classification").render(DEMOS, "a lovely, gentle film", ["negative", "positive"])
    probe = LLMClient(server.base_url, server.model, cache=False)
    a, b = probe.next_tokens(prompt)[:2]
    prompts = [[prompt, a.id], [prompt, b.id, a.id], [prompt, b.id]]
    params = {"max_tokens": 1, "temperature": 0.0, "logprobs": 5}
    singles = [probe.request(p, **params) for p in prompts]
    sizes = [s["usage"]["prompt_tokens"] for s in singles]
    assert sizes[1] == sizes[0] + 1 == sizes[2] + 1
    batch = LLMClient(server.base_url, server.model, cache=False, slots=server.parallel)
    with batch.holding_slot(prompt):
        raw = batch._call(prompts, params)
        batch.request_many(prompts, **params)
    assert len(raw["choices"]) == 3 and raw["usage"]["prompt_tokens"] == sizes[0]  # the first prompt's
    assert raw["timings"]["cache_n"] + raw["timings"]["prompt_n"] == sizes[0]  # timed: the first prompt only
    assert batch.stats["prompt_tokens"] == sum(sizes) and batch.stats["completion_tokens"] == 3
    assert batch.stats["untimed_prompts"] == 2 and batch.stats["calls"] == 1
    assert batch.stats["cached_prompt_tokens"] + batch.stats["uncached_prompt_tokens"] == sizes[0]
