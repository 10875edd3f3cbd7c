"""LLMClient against a scripted local HTTP server: retries, timeouts, cache, counters, errors."""

import pytest

from fewshot.errors import InputError, LLMError
from fewshot.llm import LLMClient
from tests.llm.fake_server import FakeServer, completion

OK = completion({" positive": -0.1, " negative": -2.5, " the": -4.0})
ERROR = {"error": {"message": "boom", "type": "server_error"}}


@pytest.fixture
def serve():
    servers = []

    def start(*script):
        servers.append(FakeServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def client(server, tmp_path, **kwargs):
    return LLMClient(server.url, "fake", cache_dir=tmp_path, **{"max_retries": 3, "timeout": 5, **kwargs})


def test_label_probs_and_cache(serve, tmp_path):
    server = serve((200, OK, 0))
    c = client(server, tmp_path)
    scores = c.label_probs("Text: great\nLabel:", ["negative", "positive"])
    assert scores.prediction == "positive" and scores.probs[1] > 0.9 and not scores.missing
    again = client(server, tmp_path)  # a new process would see the same sqlite cache
    again.label_probs("Text: great\nLabel:", ["negative", "positive"])
    assert len(server.requests) == 1 and again.stats["cached"] == 1 and again.stats["calls"] == 0
    assert c.stats["calls"] == 1 and c.stats["prompt_tokens"] == 10


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_transient_errors(serve, tmp_path, status):
    server = serve((status, ERROR, 0), (status, ERROR, 0), (200, OK, 0))
    assert client(server, tmp_path).label_probs("p", ["negative", "positive"]).prediction == "positive"
    assert len(server.requests) == 3


def test_gives_up_after_retries(serve, tmp_path):
    server = serve((500, ERROR, 0))
    with pytest.raises(LLMError, match="HTTP 500"):
        client(server, tmp_path, max_retries=1).label_probs("p", ["negative", "positive"])
    assert len(server.requests) == 2


def test_slow_answer_times_out_then_retries(serve, tmp_path):
    server = serve((200, OK, 1.5), (200, OK, 0))
    c = client(server, tmp_path, timeout=0.5, max_retries=2)
    assert c.label_probs("p", ["negative", "positive"]).prediction == "positive"
    assert len(server.requests) >= 2


def test_unreachable_endpoint(tmp_path):
    c = LLMClient("http://127.0.0.1:9/v1", "fake", cache_dir=tmp_path, max_retries=0, timeout=2)
    with pytest.raises(LLMError, match="cannot reach the LLM endpoint"):
        c.label_probs("p", ["a", "b"])


def test_wrong_model_and_long_prompt(serve, tmp_path):
    server = serve((404, {"error": {"message": "model 'nope' not found"}}, 0))
    with pytest.raises(LLMError, match="has no model 'fake'"):
        client(server, tmp_path).label_probs("p", ["a", "b"])
    server = serve((400, {"error": {"message": "the request exceeds the available context size"}}, 0))
    with pytest.raises(LLMError, match="longer than the model's context"):
        client(server, tmp_path).label_probs("p", ["a", "b"])


def test_endpoint_without_logprobs(serve, tmp_path):
    reply = dict(OK, choices=[{"index": 0, "text": " yes", "finish_reason": "length", "logprobs": None}])
    with pytest.raises(LLMError, match="no logprobs"):
        client(serve((200, reply, 0)), tmp_path).label_probs("p", ["a", "b"])


@pytest.mark.parametrize("labels", [["only"], ["a", ""], ["x", "x"]])
def test_bad_label_sets(serve, tmp_path, labels):
    with pytest.raises(InputError):
        client(serve((200, OK, 0)), tmp_path).label_probs("p", labels)


def test_multi_token_labels_follow_the_continuation(serve, tmp_path):
    """'sci-fi' and 'science' share the token 'sci': each is scored along its own path."""
    def answer(body):
        prompt = body["prompt"]
        if prompt.endswith(" sci"):
            return completion({"ence": -1.6, "-fi": -0.2})
        return completion({" sci": -0.1, " sports": -2.4})
    server = serve((200, answer, 0))
    scores = client(server, tmp_path).label_probs("Label:", ["science", "sci-fi", "sports"])
    probs = dict(zip(scores.labels, scores.probs))
    assert probs["sci-fi"] > probs["science"] > probs["sports"] and not scores.missing
    assert len(server.requests) == 2


def test_missing_labels_are_counted_never_guessed(serve, tmp_path):
    server = serve((200, completion({" hello": -0.1, " world": -1.0}), 0))
    c = client(server, tmp_path)
    scores = c.label_probs("p", ["negative", "positive"])
    assert scores.prediction is None and set(scores.missing) == {"negative", "positive"}
    assert c.stats["label_fallbacks"] == 2 and c.stats["unscored_prompts"] == 1


def test_sample_numbers(serve, tmp_path):
    reply = dict(OK, choices=[{"index": 0, "text": " 42.5 units", "finish_reason": "length", "logprobs": None}])
    assert client(serve((200, reply, 0)), tmp_path).sample_numbers("p", n=3) == [42.5, 42.5, 42.5]


def test_chat_api_for_hosted_models(serve, tmp_path):
    """Hosted chat models: logprobs=True with top_logprobs, answer in choices[0].logprobs.content."""
    reply = {"id": "c", "object": "chat.completion", "created": 0, "model": "fake",
             "choices": [{"index": 0, "finish_reason": "length",
                          "message": {"role": "assistant", "content": "positive"},
                          "logprobs": {"content": [{"token": "positive", "logprob": -0.1, "bytes": None,
                                                    "top_logprobs": [{"token": "positive", "logprob": -0.1, "bytes": None},
                                                                     {"token": "negative", "logprob": -2.4, "bytes": None}]}]}}]}
    server = serve((200, reply, 0))
    scores = client(server, tmp_path, api="chat").label_probs("Is this good?", ["negative", "positive"])
    assert scores.prediction == "positive"
    request = server.requests[0]
    assert request["logprobs"] is True and request["top_logprobs"] == 20 and request["messages"][0]["role"] == "user"
