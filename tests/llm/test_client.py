"""LLMClient against a scripted local HTTP server: retries, timeouts, cache, counters, errors,
and label scoring (case, multi-token and prefix labels, fallbacks, unscored prompts)."""

import math

import numpy as np
import pytest

from fewshot.errors import InputError, LLMError
from fewshot.llm import LLMClient
from fewshot.data import Example
from fewshot.llm.predictor import LabelPrediction, LLMPredictor
from fewshot.prompts import Template
from tests.llm.fake_server import FakeServer, chat_completion, completion

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


def test_labels_match_case_and_whitespace_insensitively(serve, tmp_path):
    """The model answers ' Positive': that is the label "positive", not a missing one."""
    server = serve((200, completion({" Positive": -0.1, " Negative": -2.5, " The": -4.0}), 0))
    c = client(server, tmp_path)
    scores = c.label_probs("Label:", ["negative", "positive"])
    assert scores.prediction == "positive" and not scores.missing and c.stats["label_fallbacks"] == 0
    assert scores.probs[1] == pytest.approx(math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.5)))
    with pytest.raises(InputError, match="differ only in case"):
        check = client(server, tmp_path)
        check.label_probs("Label:", ["Positive", "positive "])


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


def prefix_server(serve, after_sci):
    """Labels "sci" / "sci-fi": the model says " sci", then ``after_sci``."""
    def answer(body):
        if body["prompt"].endswith(" sci"):
            return completion(after_sci)
        return completion({" sci": math.log(0.9), " drama": math.log(0.05)})
    return serve((200, answer, 0))


def test_a_label_that_prefixes_another_needs_a_terminator(serve, tmp_path):
    """'sci' is also the start of 'sci-fi': the shorter label gets only the mass that ends after it."""
    server = prefix_server(serve, {"-fi": math.log(0.94), "\n": math.log(0.04), "ence": math.log(0.01)})
    scores = client(server, tmp_path).label_probs("Genre:", ["sci", "sci-fi", "drama"])
    probs = dict(zip(scores.labels, scores.probs))
    assert scores.prediction == "sci-fi" and probs["sci-fi"] > 0.9 and not scores.missing
    assert probs["sci"] == pytest.approx(0.9 * 0.04 / (0.9 * 0.94 + 0.9 * 0.04 + 0.05))
    server = prefix_server(serve, {"\n": math.log(0.9), "-fi": math.log(0.05), "": math.log(0.03)})
    scores = client(server, tmp_path).label_probs("Genre:", ["sci", "sci-fi", "drama"])
    probs = dict(zip(scores.labels, scores.probs))
    assert scores.prediction == "sci" and probs["sci"] == pytest.approx(0.9 * 0.93 / (0.9 * 0.98 + 0.05))


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


def test_a_branch_not_followed_bounds_its_label(serve, tmp_path):
    """' pos' (p=.01) is below min_branch_prob: not followed, and its .01 bounds "positive"."""
    top = {" negative": math.log(0.5), " the": math.log(0.3), " pos": math.log(0.01), " a": math.log(0.005)}
    server = serve((200, completion(top), 0))
    scores = client(server, tmp_path).label_probs("p", ["negative", "positive"])
    assert scores.missing == ("positive",) and scores.probs[1] == pytest.approx(0.01 / 0.51)
    assert len(server.requests) == 1


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
