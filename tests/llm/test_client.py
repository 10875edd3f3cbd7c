"""LLMClient against a scripted local HTTP server: retries, timeouts, cache, counters, errors,
label scoring through HTTP (the walk itself: test_scoring.py), and the faults a real endpoint
shows: no answer, a reply that is not JSON, a server that dies, an interrupt mid-batch."""

import math
import signal
import threading
import time

import numpy as np
import pytest

from fewshot.errors import InputError, LLMError
from fewshot.llm import LLMClient, llm_endpoint
from fewshot.data import Example
from fewshot.llm.predictor import LabelPrediction, LLMPredictor
from fewshot.prompts import Template
from tests.llm.fake_server import NEVER, BadJSON, FakeServer, chat_completion, completion

OK = completion({" positive": -0.1, " negative": -2.5, " the": -4.0})
ERROR = {"error": {"message": "boom", "type": "server_error"}}


@pytest.fixture
def serve():
    servers = []

    def start(*script, **options):
        servers.append(FakeServer(script, **options))
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
    """The message names the endpoint the user set and what happened, and no longer says that no
    endpoint was set (probe 1a/2c' of ../shared/docs/faults-2026-11-29.md)."""
    c = LLMClient("http://127.0.0.1:9/v1", "fake", cache_dir=tmp_path, max_retries=0, timeout=2)
    with pytest.raises(LLMError, match="cannot reach the LLM endpoint http://127.0.0.1:9/v1: connection refused") as info:
        c.label_probs("p", ["a", "b"])
    assert "no endpoint set" not in str(info.value) and "is a server running at that address?" in str(info.value)


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
    assert request["logprobs"] is True and request["top_logprobs"] == 100 and request["messages"][0]["role"] == "user"


def test_a_server_refusing_100_alternatives_is_asked_for_20(serve, tmp_path):
    """OpenAI chat allows at most 20 top logprobs: the refusal is answered by asking again with 20."""
    refusal = {"error": {"message": "Invalid 'top_logprobs': integer above maximum value. Expected a value <= 20",
                         "type": "invalid_request_error"}}
    server = serve((400, refusal, 0), (200, chat_completion({"positive": -0.1, "negative": -2.4}), 0))
    c = client(server, tmp_path, api="chat")
    assert c.label_probs("p", ["negative", "positive"]).prediction == "positive"
    assert [r["top_logprobs"] for r in server.requests] == [100, 20] and c.top_logprobs == 20


def test_chat_credits_a_first_token_that_begins_a_label(serve, tmp_path):
    """Chat without prefill: 'Sci' (p=.95) begins only "Sci/Tech", which wins (an approximation)."""
    server = serve((200, chat_completion({"Sci": math.log(0.95), "Sports": math.log(0.02), "World": math.log(0.01)}), 0))
    c = client(server, tmp_path, api="chat")
    scores = c.label_probs([{"role": "user", "content": "Topic?"}], ["Sci/Tech", "Sports", "World"])
    assert scores.prediction == "Sci/Tech" and scores.probs[0] == pytest.approx(0.95 / 0.98)
    assert c.stats["partial_credits"] == 1 and len(server.requests) == 1


def test_chat_follows_a_label_where_the_server_continues_the_answer(serve, tmp_path):
    """llama-server names token ids and continues a final assistant message: the path is followed."""
    ids = {"Sci": 1, "Sports": 2, "World": 3, "/": 4, "ence": 5, "Tech": 6, " and": 7}

    def answer(body):
        last = body["messages"][-1]
        if last["role"] == "assistant" and last["content"] == "Sci/":
            return chat_completion({"Tech": -0.01}, ids)
        if last["role"] == "assistant" and last["content"] == "Sci":
            return chat_completion({"ence": math.log(0.7), "/": math.log(0.3)}, ids)
        return chat_completion({"Sci": math.log(0.9), "Sports": math.log(0.05), "World": math.log(0.05)}, ids)
    server = serve((200, answer, 0))
    c = client(server, tmp_path, api="chat")
    scores = c.label_probs([{"role": "user", "content": "Topic?"}], ["Sci/Tech", "Sports", "World"])
    probs = dict(zip(scores.labels, scores.probs))
    # "Sci" went on to "ence" 70% of the time: Sci/Tech gets .9 * .3 * .99, not .9
    assert probs["Sci/Tech"] == pytest.approx(0.9 * 0.3 * math.exp(-0.01) / (0.9 * 0.3 * math.exp(-0.01) + 0.1))
    assert len(server.requests) == 3 and c.stats["partial_credits"] == 0


def test_a_missing_label_gets_an_upper_bound_and_is_counted(serve, tmp_path):
    """'positive' is not among the listed tokens: its mass is at most the last listed probability
    (.135) and at most the unlisted remainder (1 - .607 - .223 - .135 = .035), so .035."""
    server = serve((200, completion({" negative": -0.5, " the": -1.5, " a": -2.0}), 0))
    c = client(server, tmp_path)
    scores = c.label_probs("p", ["negative", "positive"])
    bound = 1 - math.exp(-0.5) - math.exp(-1.5) - math.exp(-2.0)
    assert scores.missing == ("positive",) and scores.prediction == "negative"
    assert scores.probs[1] == pytest.approx(bound / (bound + math.exp(-0.5)))
    assert scores.reached == pytest.approx(math.exp(-0.5))
    assert c.stats["label_fallbacks"] == 1 and c.stats.get("unscored_prompts", 0) == 0
    assert len(server.requests) == 1 and server.requests[0]["logprobs"] == 100  # one walk, 100 deep


def test_followed_paths_send_the_tokens_the_model_saw(serve, tmp_path):
    """Token ids known (llama-server): the branch is sent as [prompt, id], not as re-tokenised text."""
    ids = {" sci": 11, " drama": 12, "-fi": 13, "\n": 14}

    def answer(body):
        if isinstance(body["prompt"], list):
            return completion({"-fi": -0.1, "\n": -3.0}, ids)
        return completion({" sci": -0.1, " drama": -3.0}, ids)
    server = serve((200, answer, 0))
    scores = client(server, tmp_path).label_probs("Genre:", ["sci", "sci-fi", "drama"])
    assert scores.prediction == "sci-fi" and server.requests[1]["prompt"] == ["Genre:", 11]


def test_a_server_refusing_token_prompts_gets_text(serve, tmp_path):
    ids = {" sci": 11, " drama": 12, "-fi": 13, "\n": 14}

    def answer(body):
        if isinstance(body["prompt"], list):
            return 400, {"error": {"message": "prompt must be a string", "type": "invalid_request_error"}}
        if body["prompt"].endswith(" sci"):
            return completion({"-fi": -0.1, "\n": -3.0}, ids)
        return completion({" sci": -0.1, " drama": -3.0}, ids)
    server = serve((200, answer, 0))
    c = client(server, tmp_path)
    assert c.label_probs("Genre:", ["sci", "sci-fi", "drama"]).prediction == "sci-fi"
    assert server.requests[1]["prompt"] == ["Genre:", 11] and server.requests[2]["prompt"] == "Genre: sci"
    assert c.token_ids is False


def test_unscored_prompts_reach_the_caller_never_as_a_label(serve, tmp_path):
    """The production path (LLMPredictor, as the harness and SAL use it): no label reached means
    label None and ``unscored``, never the first or most likely label."""
    server = serve((200, completion({" hello": -0.1, " world": -1.0}), 0))
    c = client(server, tmp_path)
    predictor = LLMPredictor(c, Template("", "{text}: {label}", "{text}:"), ["negative", "positive"])
    (prediction,) = predictor.predict_many([([Example("1", "good", "positive")], "fine")])
    assert isinstance(prediction, LabelPrediction)
    assert prediction.unscored and prediction.label is None and set(prediction.missing) == {"negative", "positive"}
    assert c.stats["label_fallbacks"] == 2 and c.stats["unscored_prompts"] == 1


def test_predictor_batch_calibration(serve, tmp_path):
    """Two queries with the same demos: .9/.1 and .6/.4 become .75/.25 and .33/.67 (mean .75/.25)."""
    def answer(body):
        if "great" in body["prompt"]:
            return completion({" positive": math.log(0.9), " negative": math.log(0.1)})
        return completion({" positive": math.log(0.6), " negative": math.log(0.4)})
    c = client(serve((200, answer, 0)), tmp_path)
    template = Template("", "{text}: {label}", "{text}:")
    predictor = LLMPredictor(c, template, ["negative", "positive"], calibration="batch")
    demos = [Example("1", "good", "positive")]
    first, second = predictor.predict_many([(demos, "great"), (demos, "fine")])
    assert first.label == "positive" and first.probs["positive"] == pytest.approx(0.75)
    assert second.label == "negative" and second.probs["negative"] == pytest.approx(2 / 3)
    raw = LLMPredictor(c, template, ["negative", "positive"]).predict_many([(demos, "great"), (demos, "fine")])
    assert [p.label for p in raw] == ["positive", "positive"]


def test_batch_calibration_keeps_an_answer_whose_demo_set_has_no_other_scored_prompt(serve, tmp_path):
    """A demo set asked twice, once unscored: its one scored answer is its own mean, so calibrating
    it over that group erased it to uniform (0.5/0.5) before; now it is kept as answered."""
    def answer(body):
        if "odd" in body["prompt"]:
            return completion({" hello": -0.1})  # no label reachable: unscored
        return completion({" positive": math.log(0.9), " negative": math.log(0.1)})
    c = client(serve((200, answer, 0)), tmp_path)
    predictor = LLMPredictor(c, Template("", "{text}: {label}", "{text}:"), ["negative", "positive"], calibration="batch")
    demos = [Example("1", "good", "positive")]
    kept, unscored = predictor.predict_many([(demos, "great"), (demos, "odd")])
    assert unscored.unscored and kept.label == "positive" and kept.probs["positive"] == pytest.approx(0.9)


def test_predictor_contextual_calibration(serve, tmp_path):
    """Content-free inputs give p(positive) = .8, .6, .7 (prior .7/.3); a .6/.4 answer becomes negative."""
    cf = {"N/A:": 0.8, ":": 0.6, "[MASK]:": 0.7}

    def answer(body):
        p = cf.get(body["prompt"].split("\n\n")[-1], 0.6)
        return completion({" positive": math.log(p), " negative": math.log(1 - p)})
    c = client(serve((200, answer, 0)), tmp_path)
    predictor = LLMPredictor(c, Template("", "{text}: {label}", "{text}:"), ["negative", "positive"],
                             calibration="contextual")
    (prediction,) = predictor.predict_many([([Example("1", "good", "positive")], "fine")])
    q = np.array([0.4 / 0.3, 0.6 / 0.7])
    assert prediction.label == "negative" and prediction.probs["negative"] == pytest.approx(q[0] / q.sum())


def test_server_timings_are_counted(serve, tmp_path):
    """llama-server's timings: cache_n prompt tokens reused, prompt_n computed, prompt_ms spent."""
    reply = dict(OK, timings={"cache_n": 115, "prompt_n": 5, "prompt_ms": 20.5})
    c = client(serve((200, reply, 0)), tmp_path)
    c.label_probs("p", ["negative", "positive"])
    c.label_probs("p", ["negative", "positive"])  # from the response cache: the server did nothing
    assert (c.stats["cached_prompt_tokens"], c.stats["uncached_prompt_tokens"], c.stats["prompt_ms"]) == (115, 5, 20.5)
    plain = client(serve((200, OK, 0)), tmp_path / "other")
    plain.label_probs("p", ["negative", "positive"])
    assert "cached_prompt_tokens" not in plain.stats  # a server without timings adds no keys


def whitespace_server(serve):
    """Zero-shot-like: the model often says a lone newline or space before the label; those
    paths are followed. Answers lists of prompts (llama-server's batch) with one choice each."""
    ids = {"\n": 1, " ": 2, " positive": 3, " negative": 4, "positive": 5, "negative": 6, " the": 7}
    first = {"\n": math.log(0.3), " positive": math.log(0.25), " ": math.log(0.2), " negative": math.log(0.15),
             " the": math.log(0.05)}
    after = {"\n": {"negative": math.log(0.6), "positive": math.log(0.3)},
             " ": {"positive": math.log(0.7), "negative": math.log(0.2)}}

    def one(prompt):
        if isinstance(prompt, list):
            return completion(after[next(t for t, i in ids.items() if i == prompt[-1])], ids)
        return completion(first, ids)

    def answer(body):
        prompt = body["prompt"]
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], list):  # several prompts
            replies = [one(p)["choices"][0] for p in prompt]
            return dict(one(prompt[0]), choices=[dict(c, index=i) for i, c in enumerate(replies)])
        return one(prompt)
    return serve((200, answer, 0))


def test_paths_of_one_walk_are_asked_for_in_one_request_with_the_same_answer(serve, tmp_path):
    """Two whitespace paths: one by one that is 3 requests; with llama-server slots, 2 (the root,
    then both paths together), with the very same probabilities, cached under the same keys."""
    server = whitespace_server(serve)
    one_by_one = client(server, tmp_path / "a").label_probs("Label:", ["negative", "positive"])
    assert len(server.requests) == 3
    batched_client = client(server, tmp_path / "b", slots=2)
    batched = batched_client.label_probs("Label:", ["negative", "positive"])
    assert len(server.requests) == 5 and batched_client.stats["calls"] == 2
    assert server.requests[-1]["prompt"] == [["Label:", 2], ["Label:", 1]]  # the stack's order: " " then "\n"
    assert batched.probs.tolist() == one_by_one.probs.tolist() and batched.missing == one_by_one.missing
    p_neg, p_pos = 0.15 + 0.3 * 0.6 + 0.2 * 0.2, 0.25 + 0.3 * 0.3 + 0.2 * 0.7
    assert batched.probs[0] == pytest.approx(p_neg / (p_neg + p_pos))
    again = client(server, tmp_path / "b")  # one-by-one finds every batched answer in the cache
    assert again.label_probs("Label:", ["negative", "positive"]).probs.tolist() == one_by_one.probs.tolist()
    assert again.stats["calls"] == 0 and again.stats["cached"] == 3 and len(server.requests) == 5


def test_a_walk_keeps_its_slot_and_prompts_go_where_their_prefix_is(serve, tmp_path):
    """id_slot: every request of one walk goes to one slot; a later prompt that shares a demo
    prefix goes to the slot that processed it, not to the least recently used one."""
    server = whitespace_server(serve)
    c = client(server, tmp_path, slots=2)
    c.label_probs("Demos A\nText: x\nLabel:", ["negative", "positive"])
    c.label_probs("Demos B\nText: x\nLabel:", ["negative", "positive"])
    c.label_probs("Demos A\nText: y\nLabel:", ["negative", "positive"])
    slots = [r["id_slot"] for r in server.requests]
    assert slots == [0, 0, 1, 1, 0, 0]
    plain = serve((200, OK, 0))
    client(plain, tmp_path / "plain").label_probs("p", ["negative", "positive"])
    assert "id_slot" not in plain.requests[0]  # other endpoints do not know id_slot


def test_an_answer_without_logprobs_from_a_server_that_gives_them_is_empty():
    # llama-server drops the logprobs of a first token that splits a UTF-8 character: it adds
    # `timings`, so even the first (or a cached) such answer is no candidates, not a broken endpoint
    client = LLMClient("http://127.0.0.1:9/v1", "m", cache=False)
    split = {"choices": [{"text": "\ufffd", "logprobs": None}], "timings": {"prompt_n": 3}}
    assert client._top(split) == [] and client.stats["empty_answers"] == 1
    assert client._top({"choices": [{"text": "", "logprobs": {"content": []}}], "timings": {}}) == []
    with pytest.raises(LLMError, match="no logprobs"):  # a server that never gave any: a clear error
        client._top({"choices": [{"text": "x"}]})
    good = {"choices": [{"logprobs": {"top_logprobs": [{" yes": -0.1}]}}]}
    assert client._top(good)[0].text == " yes" and client.logprobs_seen
    assert client._top({"choices": [{"text": "x"}]}) == [] and client.stats["empty_answers"] == 3


# -- faults a real endpoint shows (issue 20; probes in ../shared/docs/faults-2026-11-29.md) ------------
LABELS = ["negative", "positive"]


def test_timeout_and_deadline_defaults_and_pass_through(tmp_path):
    """Defaults: 120 s a try (a slow CPU prompt takes tens of seconds), 2.5 x that per request."""
    c = LLMClient("http://127.0.0.1:9/v1", "m", cache=False)
    assert (c.timeout, c.deadline) == (120.0, 300.0)
    with llm_endpoint("http://127.0.0.1:9/v1", "m", cache=False, timeout=7, deadline=9) as given:
        assert (given.timeout, given.deadline) == (7.0, 9.0)
    with pytest.raises(InputError, match="positive"):
        LLMClient("http://127.0.0.1:9/v1", "m", cache=False, timeout=0)


def test_429_with_retry_after_is_waited_for(serve, tmp_path):
    server = serve((429, ERROR, 0, {"Retry-After": "1"}), (200, OK, 0))
    assert client(server, tmp_path).label_probs("p", LABELS).prediction == "positive"
    assert len(server.requests) == 2 and server.times[1] - server.times[0] >= 0.9


def test_an_endpoint_that_never_answers_gives_up_at_the_deadline(serve, tmp_path):
    """Probe 2c': 5 tries x 120 s, silent. Now: the deadline bounds the request, retries included."""
    server = serve((200, OK, NEVER))
    c = client(server, tmp_path, timeout=0.4, deadline=1.0, max_retries=10, notify=None)
    started = time.monotonic()
    with pytest.raises(LLMError) as info:
        c.label_probs("p", LABELS)
    assert time.monotonic() - started < 8 and 1 <= len(server.requests) <= 3
    message = str(info.value)
    assert message.startswith(f"the LLM endpoint {server.url} timed out: no answer (")
    assert "the deadline of 1 s, each try waiting up to 0.4 s" in message


def test_a_timeout_after_the_last_try_says_so(serve, tmp_path):
    server = serve((200, OK, NEVER))
    with pytest.raises(LLMError, match=r"timed out: no answer \(1 try in [01] s, each try waiting up to 0.3 s\)"):
        client(server, tmp_path, timeout=0.3, max_retries=0, notify=None).label_probs("p", LABELS)


def test_progress_is_reported_while_requests_wait(serve, tmp_path, capsys):
    server = serve((200, OK, NEVER))
    lines = []
    c = client(server, tmp_path, timeout=1.5, max_retries=0, notify=lines.append, progress_every=0.3)
    with pytest.raises(LLMError, match="timed out"):
        c.label_probs("p", LABELS)
    assert 2 <= len(lines) <= 6, lines
    assert all(line.startswith(f"waiting for {server.url}: 1 request in flight, longest ") for line in lines)
    quiet = client(server, tmp_path, timeout=0.6, max_retries=0, notify=None, progress_every=0.1)
    with pytest.raises(LLMError):
        quiet.label_probs("p", LABELS)
    loud = client(server, tmp_path, timeout=0.6, max_retries=0, progress_every=0.1)  # the default: stderr
    with pytest.raises(LLMError):
        loud.label_probs("p", LABELS)
    assert capsys.readouterr().err.count(f"fewshot: waiting for {server.url}") >= 2


def test_a_reply_that_is_not_json_is_named(serve, tmp_path):
    """Probe 2d: an unexplained JSONDecodeError (an 'internal error'); now an LLMError naming both."""
    server = serve((200, BadJSON('{"id": "x", "choi'), 0))
    with pytest.raises(LLMError) as info:
        client(server, tmp_path).label_probs("p", LABELS)
    body = repr('{"id": "x", "choi')
    assert str(info.value) == f"the LLM endpoint {server.url} sent a reply that is not valid JSON: {body}"
    assert len(server.requests) == 1  # not retried: a server that sends it once sends it again


def test_http_errors_name_the_endpoint_and_the_tries(serve, tmp_path):
    server = serve((500, ERROR, 0))
    with pytest.raises(LLMError) as info:
        client(server, tmp_path, max_retries=1).label_probs("p", LABELS)
    assert str(info.value).startswith(f"the LLM endpoint {server.url} failed: HTTP 500 boom (2 tries in ")


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="sends SIGINT to the main thread")
def test_ctrl_c_stops_a_batch_at_once_and_sends_nothing_more(serve, tmp_path):
    """Probe 2c'': after SIGINT the workers kept retrying and started new requests for 10 minutes.
    Now the batch raises at once, and no request is sent after the interrupt (no retry either,
    although each try in flight times out 0.5 s later)."""
    server = serve((200, OK, NEVER))
    # the deadline leaves room for retries (none may happen) and for a loaded machine's slow start
    c = client(server, tmp_path, timeout=0.5, deadline=30, max_retries=5, concurrency=4, notify=None)
    main = threading.main_thread().ident

    interrupted_at = []

    def interrupt():
        while len(server.requests) < 4:
            time.sleep(0.01)
        interrupted_at.append(len(server.requests))
        signal.pthread_kill(main, signal.SIGINT)
    threading.Thread(target=interrupt, daemon=True).start()
    started = time.monotonic()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as on a terminal, even under nohup
    try:
        with pytest.raises(KeyboardInterrupt):
            c.map(lambda i: c.label_probs(f"prompt {i}", LABELS), range(12))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 8  # a loaded machine is slow; without the fix it waited out every try (18 s)
    seen = len(server.requests)
    time.sleep(1.5)  # the tries in flight time out meanwhile: none is tried again, no item is started
    assert len(server.requests) == seen <= interrupted_at[0] + 1  # (+1: a try that was just leaving)


def test_the_first_error_of_a_batch_stops_it(serve, tmp_path):
    server = serve((400, {"error": {"message": "bad"}}, 0.05))
    c = client(server, tmp_path, concurrency=2, max_retries=0)
    with pytest.raises(LLMError, match="rejected the request: bad"):
        c.map(lambda i: c.request(f"prompt {i}", max_tokens=1), range(20))
    time.sleep(0.2)
    assert len(server.requests) <= 3  # the two in flight (and at most one starting): not all 20


def test_a_local_server_that_dies_is_started_again(serve, tmp_path):
    """Probe 1a: the eval ended when fewshot's own server died. Now ``restart`` starts it again
    (on a new port), the request is sent there, and the restart is counted and told once."""
    first, second = serve((200, OK, 0), die_after=1), serve((200, OK, 0))
    restarts, lines = [], []

    def restart():
        restarts.append(second.url)
        return second.url
    c = client(first, tmp_path, restart=restart, notify=lines.append, cache_namespace="local:abc", max_retries=0)
    c.label_probs("one", LABELS)
    assert c.label_probs("two", LABELS).prediction == "positive"
    assert c.base_url == second.url and c.cache_namespace == "local:abc" and len(second.requests) == 1
    assert c.stats["server_restarts"] == 1 and len(restarts) == 1
    assert len(lines) == 1 and f"started it again at {second.url}" in lines[0]
    again = client(second, tmp_path, cache_namespace="local:abc")  # the answers are cached under the namespace
    again.label_probs("one", LABELS)
    again.label_probs("two", LABELS)
    assert again.stats["cached"] == 2 and again.stats["calls"] == 0


def test_a_local_server_that_cannot_be_reached_but_runs_is_named(tmp_path):
    c = LLMClient("http://127.0.0.1:9/v1", "m", cache=False, max_retries=0, restart=lambda: None)
    with pytest.raises(LLMError, match=r"cannot reach the local llama-server fewshot started \(http://127.0.0.1:9/v1\): "
                                       "connection refused"):
        c.label_probs("p", LABELS)
    assert "server_restarts" not in c.stats


def test_context_size_and_token_counts_where_the_server_tells(serve, tmp_path):
    routes = {"/props": lambda body: {"default_generation_settings": {"n_ctx": 4096}},
              "/tokenize": lambda body: {"tokens": list(range(len(body["content"].split())))}}
    llama = serve((200, OK, 0), routes=routes)
    c = client(llama, tmp_path)
    assert c.context_size() == 4096 and c.count_tokens(["a b c", ""]) == [3, 0]
    vllm = serve((200, OK, 0), routes={"/v1/models": lambda body: {"data": [{"id": "fake", "max_model_len": 8192}]}})
    assert client(vllm, tmp_path).context_size() == 8192
    plain = client(serve((200, OK, 0)), tmp_path)
    assert plain.context_size() is None and plain.count_tokens(["a"]) is None


def test_a_batch_is_counted_from_its_first_prompts_usage_and_timings(serve, tmp_path):
    """R9: llama-server answers a batch with the usage and timings of its first prompt only (as
    test_local_server.py checks on the real server); counting them n times overstated the work."""
    def answer(body):
        prompts = body["prompt"]
        reply = completion({" a": -0.1})
        reply["usage"]["prompt_tokens"] = 10 + len(prompts[0]) - 1  # text + ids of the first prompt
        reply["timings"] = {"cache_n": 10, "prompt_n": len(prompts[0]) - 1, "prompt_ms": 5.0}
        reply["choices"] = [dict(reply["choices"][0], index=i) for i in range(len(prompts))]
        return reply
    c = client(serve((200, answer, 0)), tmp_path, slots=1)
    c.request_many([["p", 1], ["p", 2, 3], ["p", 4]], max_tokens=1)
    assert c.stats["calls"] == 1 and c.stats["prompt_tokens"] == 11 + 12 + 11 and c.stats["completion_tokens"] == 3
    assert (c.stats["cached_prompt_tokens"], c.stats["uncached_prompt_tokens"], c.stats["prompt_ms"]) == (10, 1, 5.0)
    assert c.stats["untimed_prompts"] == 2
