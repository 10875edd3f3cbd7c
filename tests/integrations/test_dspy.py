"""FewshotSelect with the real dspy package and its DummyLM."""

import subprocess
import sys

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


def test_per_input_selects_at_call_time():
    program = FewshotSelect(k=1, method="knn", per_input=True, embedder=Axes()).compile(
        dspy.Predict("word -> antonym"), trainset=trainset())
    with dspy.context(lm=DummyLM([{"antonym": "x"}] * 2)):
        program(word="windy")
        assert [d.word for d in program.predictors()[0].demos] == ["windy"]
        program(word="loud")
        assert [d.word for d in program.predictors()[0].demos] == ["loud"]


def test_import_without_dspy_names_the_extra():
    code = ("import sys; sys.modules['dspy'] = None\n"
            "try:\n    import fewshot.integrations.dspy\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "fewshot[dspy]"' in out
