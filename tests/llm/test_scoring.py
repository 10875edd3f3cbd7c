"""The label walk with exact probabilities, against a scripted next-token function (no HTTP):
case, multi-token and prefix labels, terminators, fallback bounds, partial credit, batching."""

import math

import pytest

from fewshot.errors import InputError
from fewshot.llm.responses import Token
from fewshot.llm.scoring import check_labels, walk


def model(tree, ids=None):
    """A next-token function: ``tree[text taken so far]`` = {token: probability} (missing: no
    candidates). Records each batch of paths it is asked for in ``.asked``."""
    def top(path):
        got = tree.get("".join(t.text for t in path), {})
        tokens = [Token(t, math.log(p), ids.get(t) if ids else None) for t, p in got.items()]
        return sorted(tokens, key=lambda t: -t.logprob)

    def next_tokens_many(paths):
        next_tokens_many.asked.append(["".join(t.text for t in p) for p in paths])
        return [top(p) for p in paths]
    next_tokens_many.asked = []
    return next_tokens_many


def probs(scores):
    return dict(zip(scores.labels, scores.probs))


def test_multi_token_labels_follow_the_continuation():
    """'sci-fi' and 'science' share the token 'sci': each is scored along its own path."""
    ask = model({"": {" sci": math.exp(-0.1), " sports": math.exp(-2.4)},
                 " sci": {"ence": math.exp(-1.6), "-fi": math.exp(-0.2)}})
    scores = walk(ask, ["science", "sci-fi", "sports"])
    p = probs(scores)
    assert p["sci-fi"] > p["science"] > p["sports"] and not scores.missing
    assert ask.asked == [[""], [" sci"]] and scores.paths == 1
    science, scifi, sports = (math.exp(-0.1 - 1.6), math.exp(-0.1 - 0.2), math.exp(-2.4))
    assert p["science"] == pytest.approx(science / (science + scifi + sports))


def test_labels_match_case_and_whitespace_insensitively():
    """The model answers ' Positive': that is the label "positive", not a missing one."""
    ask = model({"": {" Positive": math.exp(-0.1), " Negative": math.exp(-2.5), " The": math.exp(-4.0)}})
    scores = walk(ask, ["negative", "positive"])
    assert scores.prediction == "positive" and not scores.missing
    assert scores.probs[1] == pytest.approx(math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.5)))
    with pytest.raises(InputError, match="differ only in case"):
        walk(ask, ["Positive", "positive "])


@pytest.mark.parametrize("labels", [["only"], ["a", ""], ["x", "x"]])
def test_bad_label_sets(labels):
    with pytest.raises(InputError):
        check_labels(labels)
    with pytest.raises(InputError):
        walk(model({}), labels)


def test_a_label_that_prefixes_another_needs_a_terminator():
    """'sci' is also the start of 'sci-fi': the shorter label gets only the mass that ends after it."""
    first = {" sci": 0.9, " drama": 0.05}
    scores = walk(model({"": first, " sci": {"-fi": 0.94, "\n": 0.04, "ence": 0.01}}), ["sci", "sci-fi", "drama"])
    p = probs(scores)
    assert scores.prediction == "sci-fi" and p["sci-fi"] > 0.9 and not scores.missing
    assert p["sci"] == pytest.approx(0.9 * 0.04 / (0.9 * 0.94 + 0.9 * 0.04 + 0.05))
    scores = walk(model({"": first, " sci": {"\n": 0.9, "-fi": 0.05, "": 0.03}}), ["sci", "sci-fi", "drama"])
    p = probs(scores)
    assert scores.prediction == "sci" and p["sci"] == pytest.approx(0.9 * 0.93 / (0.9 * 0.98 + 0.05))


def test_a_missing_label_gets_an_upper_bound():
    """'positive' is not among the listed tokens: its mass is at most the last listed probability
    (.135) and at most the unlisted remainder (1 - .607 - .223 - .135 = .035), so .035."""
    ask = model({"": {" negative": math.exp(-0.5), " the": math.exp(-1.5), " a": math.exp(-2.0)}})
    scores = walk(ask, ["negative", "positive"])
    bound = 1 - math.exp(-0.5) - math.exp(-1.5) - math.exp(-2.0)
    assert scores.missing == ("positive",) and scores.prediction == "negative" and not scores.unscored
    assert scores.probs[1] == pytest.approx(bound / (bound + math.exp(-0.5)))
    assert scores.reached == pytest.approx(math.exp(-0.5)) and ask.asked == [[""]]


def test_a_branch_not_followed_bounds_its_label():
    """' pos' (p=.01) is below min_branch_prob: not followed, and its .01 bounds "positive"."""
    ask = model({"": {" negative": 0.5, " the": 0.3, " pos": 0.01, " a": 0.005}})
    scores = walk(ask, ["negative", "positive"], min_branch_prob=0.02)
    assert scores.missing == ("positive",) and scores.probs[1] == pytest.approx(0.01 / 0.51)
    assert ask.asked == [[""]]


def test_no_label_reached_is_unscored_never_a_guess():
    scores = walk(model({"": {" hello": 0.9, " world": 0.05}}), ["negative", "positive"])
    assert scores.unscored and scores.prediction is None and set(scores.missing) == {"negative", "positive"}


def test_a_first_token_that_begins_a_label_is_credited_where_paths_cannot_be_followed():
    """Chat without prefill: 'Sci' (p=.95) begins only "Sci/Tech", which wins (an approximation)."""
    ask = model({"": {"Sci": 0.95, "Sports": 0.02, "World": 0.01}})
    scores = walk(ask, ["Sci/Tech", "Sports", "World"], follow=False)
    assert scores.prediction == "Sci/Tech" and scores.probs[0] == pytest.approx(0.95 / 0.98)
    assert scores.partial_credits == 1 and ask.asked == [[""]]


def test_follow_none_follows_where_the_tokens_have_ids():
    """follow=None (chat where the server may continue an answer): followed when ids are named."""
    tree = {"": {"Sci": 0.9, "Sports": 0.05, "World": 0.05}, "Sci": {"ence": 0.7, "/": 0.3}, "Sci/": {"Tech": 0.99}}
    with_ids = walk(model(tree, {"Sci": 1, "Sports": 2, "World": 3, "/": 4, "ence": 5, "Tech": 6}),
                    ["Sci/Tech", "Sports", "World"], follow=None)
    assert with_ids.probs[0] == pytest.approx(0.9 * 0.3 * 0.99 / (0.9 * 0.3 * 0.99 + 0.1))
    assert with_ids.paths == 2 and with_ids.partial_credits == 0
    without = walk(model(tree), ["Sci/Tech", "Sports", "World"], follow=None)
    assert without.probs[0] == pytest.approx(0.9) and without.partial_credits == 1


def test_whitespace_paths_are_asked_for_together_in_stack_order():
    """Zero-shot-like: a lone newline or space before the label; both paths in one batch."""
    tree = {"": {"\n": 0.3, " positive": 0.25, " ": 0.2, " negative": 0.15, " the": 0.05},
            "\n": {"negative": 0.6, "positive": 0.3}, " ": {"positive": 0.7, "negative": 0.2}}
    ask = model(tree)
    scores = walk(ask, ["negative", "positive"])
    assert ask.asked == [[""], [" ", "\n"]] and scores.paths == 2
    p_neg, p_pos = 0.15 + 0.3 * 0.6 + 0.2 * 0.2, 0.25 + 0.3 * 0.3 + 0.2 * 0.7
    assert scores.probs[0] == pytest.approx(p_neg / (p_neg + p_pos))


def test_max_depth_stops_following():
    """A label longer than max_depth tokens is credited where the walk stops, not followed on."""
    tree = {"": {" a": 0.9, " b": 0.1}, " a": {"a": 0.9}, " aa": {"a": 0.9}}
    ask = model(tree)
    scores = walk(ask, ["aaaa", "b"], max_depth=1)
    assert ask.asked == [[""], [" a"]] and scores.partial_credits == 1
    assert scores.probs[0] == pytest.approx(0.81 / 0.91)
