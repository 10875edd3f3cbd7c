"""Few-shot chat prompts: demos as conversation turns, scored from the assistant's first answer."""

import json

import pytest

from fewshot.data import Example
from fewshot.llm import LLMClient, LocalServer, chat_messages
from fewshot.llm.predictor import LLMPredictor
from fewshot.prompts import load_template
from tests.conftest import EXAMPLES
from tests.llm.fake_server import FakeServer, chat_completion

DEMOS = [Example("1", "a wonderful, moving film", "positive"), Example("2", "dull and far too long", "negative")]


def test_demos_become_user_and_assistant_turns():
    messages = chat_messages(load_template("classification"), DEMOS, "a fine film", ["negative", "positive"])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == "Classify each text. Answer with one of: negative, positive."
    assert messages[1]["content"] == "Text: a wonderful, moving film\nLabel:" and messages[2]["content"] == "positive"
    assert messages[-1]["content"] == "Text: a fine film\nLabel:"


def test_chat_predictor_sends_the_conversation(tmp_path):
    server = FakeServer([(200, chat_completion({"Positive": -0.2, "negative": -1.8}), 0)])
    try:
        client = LLMClient(server.url, "fake", api="chat", cache_dir=tmp_path)
        predictor = LLMPredictor(client, load_template("classification"), ["negative", "positive"])
        (prediction,) = predictor.predict_many([(DEMOS, "a fine film")])
    finally:
        server.close()
    assert prediction.label == "positive" and not prediction.missing
    sent = server.requests[0]["messages"]
    assert sent == chat_messages(load_template("classification"), DEMOS, "a fine film", ["negative", "positive"])


def rows(path, n=None):
    lines = path.read_text(encoding="utf-8").splitlines()[:n]
    return [Example(r["id"], r["text"], r["label"]) for r in map(json.loads, lines)]


@pytest.mark.llm
def test_chat_scoring_against_the_local_server(tmp_path):
    """The bundled llama-server's /v1/chat/completions on 20 SST-2 rows: every label is reached
    (no fallback) and the predictions are not all one label."""
    pool = rows(EXAMPLES / "pool.jsonl")
    demos = [next(e for e in pool if e.label == y) for y in ("positive", "negative", "positive", "negative")]
    queries = rows(EXAMPLES / "queries_labeled.jsonl", 20)
    with LocalServer() as server:
        client = LLMClient(server.base_url, server.model, api="chat", cache_dir=tmp_path)
        predictor = LLMPredictor(client, load_template("classification"), ["negative", "positive"])
        predictions = predictor.predict_many([(demos, q.text) for q in queries])
    labels = [p.label for p in predictions]
    assert client.stats["label_fallbacks"] == 0 and client.stats.get("unscored_prompts", 0) == 0
    assert len(set(labels)) == 2, labels
    accuracy = sum(p.label == q.label for p, q in zip(predictions, queries)) / len(queries)
    print(f"chat accuracy on 20 SST-2 rows: {accuracy:.2f}; calls {client.stats['calls']}")
