"""FewshotSelect with the real dspy package and its DummyLM."""

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

dspy = pytest.importorskip("dspy")

from dspy.utils.dummies import DummyLM  # noqa: E402

from fewshot.integrations.dspy import FewshotSelect  # noqa: E402
from integrations.test_langchain import Axes  # noqa: E402

WORDS = ["happy", "tall", "sunny", "windy", "loud"]
OPPOSITES = ["sad", "short", "gloomy", "calm", "quiet"]


def trainset():
    return [dspy.Example(word=w, antonym=a).with_inputs("word") for w, a in zip(WORDS, OPPOSITES)]


def test_compile_sets_a_shared_set_and_survives_save_load(tmp_path):
    optimizer = FewshotSelect(k=2, method="knn", embedder=Axes())
    assert optimizer.get_params()["k"] == 2
    valset = [dspy.Example(word="tall").with_inputs("word"), dspy.Example(word="happy").with_inputs("word")]
    program = optimizer.compile(dspy.Predict("word -> antonym"), trainset=trainset(), valset=valset)
    demos = program.predictors()[0].demos
    assert sorted(d.word for d in demos) == ["happy", "tall"]
    path = tmp_path / "program.json"
    program.save(str(path))
    loaded = dspy.Predict("word -> antonym")
    loaded.load(str(path))
    assert sorted(d["word"] for d in loaded.demos) == ["happy", "tall"]
    with dspy.context(lm=DummyLM([{"antonym": "short"}])):
        assert program(word="tall").antonym == "short"


def shown_words(lm):
    """The demo inputs of each prompt the LM was sent, in prompt order (the last user turn is the query)."""
    return [[m["content"].split("\n")[1] for m in h["messages"] if m["role"] == "user"][:-1] for h in lm.history]


def test_per_input_selects_at_call_time():
    program = FewshotSelect(k=1, method="knn", per_input=True, embedder=Axes()).compile(
        dspy.Predict("word -> antonym"), trainset=trainset())
    lm = DummyLM([{"antonym": "x"}] * 2)
    with dspy.context(lm=lm):
        program(word="windy")
        program(word="loud")
    assert shown_words(lm) == [["windy"], ["loud"]]
    assert program.predictors()[0].demos == []  # the shared program is never written


def test_demos_in_prompt_order_first_pick_nearest_the_input():
    """R12: the adapter showed pick order, so the most relevant demo sat farthest from the input."""
    program = FewshotSelect(k=2, method="knn", per_input=True, embedder=Axes()).compile(
        dspy.Predict("word -> antonym"), trainset=trainset())
    lm = DummyLM([{"antonym": "x"}])
    with dspy.context(lm=lm):
        program(word="windy")
    assert shown_words(lm)[0][-1] == "windy"
    shared = FewshotSelect(k=2, method="knn", embedder=Axes()).compile(
        dspy.Predict("word -> antonym"), trainset=trainset(), valset=[dspy.Example(word="tall").with_inputs("word")])
    assert shared.predictors()[0].demos[-1].word == "tall"  # kNN's first pick for the only query


class Echo(dspy.Module):
    """Answers with the demos its predictor holds when it answers, after a pause in which another
    thread's call could overwrite them."""

    def __init__(self):
        super().__init__()
        self.predict = dspy.Predict("word -> antonym")

    def forward(self, word):
        first = [d.word for d in self.predict.demos]
        time.sleep(0.02)
        return dspy.Prediction(word=word, seen=[first, [d.word for d in self.predict.demos]])


def test_per_input_is_safe_under_parallel_calls():
    """R13: demos were written on the shared program, so parallel calls answered with each other's."""
    embedder = Axes()
    program = FewshotSelect(k=1, method="knn", per_input=True, embedder=embedder).compile(Echo(), trainset=trainset())
    embedder.embed(WORDS)  # every word known before the threads start: the toy embedder is not thread-safe
    with ThreadPoolExecutor(8) as workers:
        answers = list(workers.map(lambda w: program(word=w), WORDS * 6))
    assert all(a.seen == [[a.word], [a.word]] for a in answers)


def test_import_without_dspy_names_the_extra():
    code = ("import sys; sys.modules['dspy'] = None\n"
            "try:\n    import fewshot.integrations.dspy\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "fewshot[dspy]"' in out
