"""Integration tests against the real local llama.cpp server and Gemma 3 270M (no doubles).

They fail, never skip, when the server cannot be built or started: CI must prove the local LLM works.
"""

import json
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from fewshot.cli import app
from fewshot.llm import LLMClient, LocalServer
from fewshot.prompts import load_template
from fewshot.data import Example
from tests.conftest import write_jsonl

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


def test_llm_serve_stops_on_ctrl_c():
    proc = subprocess.Popen([sys.executable, "-m", "fewshot", "llm", "serve"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "serving gemma3-270m at http://127.0.0.1:" in line
    url = line.split(" at ")[1].split()[0]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    time.sleep(0.5)
    assert subprocess.run(["curl", "-s", "-m", "2", url.replace("/v1", "/health")]).returncode != 0


def test_unknown_local_model_is_clear(server, tmp_path):

    client = LLMClient(server.base_url, server.model, cache_dir=tmp_path)
    labels = ["negative", "positive"]
    prompt = load_template("classification").render(DEMOS, "x", labels)
    # llama-server serves whatever model it loaded; an unknown local model name is caught before starting
    with pytest.raises(Exception, match="unknown local model"):
        LocalServer("no-such-model").start()
    assert client.label_probs(prompt, labels).prediction in labels
