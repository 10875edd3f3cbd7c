"""FewshotExampleSelector inside the real langchain_core prompt templates."""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("langchain_core")

from langchain_core.prompts import (ChatPromptTemplate, FewShotChatMessagePromptTemplate,  # noqa: E402
                                    FewShotPromptTemplate, PromptTemplate)

from fewshot.integrations.langchain import FewshotExampleSelector  # noqa: E402

EXAMPLES = [{"input": "happy", "output": "sad"}, {"input": "tall", "output": "short"},
            {"input": "sunny", "output": "gloomy"}, {"input": "windy", "output": "calm"},
            {"input": "energetic", "output": "lethargic"}]


class Axes:
    """One axis per word (the examples' inputs and outputs, plus queries); counts what it embeds."""

    model_id = "axes"

    def __init__(self):
        self.words, self.embedded = [], []

    def embed(self, texts):
        self.embedded += list(texts)
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                if word not in self.words:
                    self.words.append(word)
                out[row, self.words.index(word)] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.mark.slow  # loads the bundled embedding model
def test_knn_in_few_shot_prompt_template_with_the_bundled_embedder():
    selector = FewshotExampleSelector.from_examples(EXAMPLES, method="knn", k=1, input_keys=["input"])
    prompt = FewShotPromptTemplate(example_selector=selector,
                                   example_prompt=PromptTemplate.from_template("Input: {input}\nOutput: {output}"),
                                   prefix="Give the antonym of every input", suffix="Input: {adjective}\nOutput:",
                                   input_variables=["adjective"])
    text = prompt.format(adjective="worried")
    assert text.startswith("Give the antonym") and text.count("Input:") == 2
    assert "Input: happy\nOutput: sad" in text  # the feeling word, not a weather or height word


def test_per_input_selection_and_add_example_embeds_only_the_new_one():
    embedder = Axes()
    selector = FewshotExampleSelector(EXAMPLES, method="knn", k=1, input_keys=["input"], embedder=embedder)
    assert selector.select_examples({"input": "tall"}) == [EXAMPLES[1]]
    assert selector.select_examples({"input": "windy"}) == [EXAMPLES[3]]
    before = list(embedder.embedded)
    selector.add_example({"input": "loud", "output": "quiet"})
    assert embedder.embedded[len(before):] == ["loud"]
    assert selector.select_examples({"input": "loud"}) == [{"input": "loud", "output": "quiet"}]


def test_shared_method_fit_once_then_the_same_set_for_every_input():
    embedder = Axes()
    selector = FewshotExampleSelector(EXAMPLES, method="go", k=2, input_keys=["input"], embedder=embedder)
    assert not selector.per_query
    selector.fit([{"input": "happy"}, {"input": "tall"}])
    first = selector.select_examples({"input": "windy"})
    assert len(first) == 2 and selector.select_examples({"input": "sunny"}) == first
    assert {e["input"] for e in first} == {"happy", "tall"}


def test_chat_message_template():
    selector = FewshotExampleSelector(EXAMPLES, method="mmr", k=2, input_keys=["input"], embedder=Axes())
    few_shot = FewShotChatMessagePromptTemplate(
        example_selector=selector, input_variables=["input"],
        example_prompt=ChatPromptTemplate.from_messages([("human", "{input}"), ("ai", "{output}")]))
    messages = few_shot.format_messages(input="sunny")
    assert len(messages) == 4 and messages[2].content == "sunny" and messages[3].content == "gloomy"


def test_demos_in_prompt_order_first_pick_nearest_the_input():
    """R12: select_examples returned pick order, so FewShotPromptTemplate put the most relevant demo
    farthest from the input, the opposite of the CLI and of the order SAL scores."""
    selector = FewshotExampleSelector(EXAMPLES, method="knn", k=3, input_keys=["input"], embedder=Axes())
    prompt = FewShotPromptTemplate(example_selector=selector, example_prompt=PromptTemplate.from_template("{input}"),
                                   suffix="Input: {input}", input_variables=["input"])
    text = prompt.format(input="windy")
    assert text.split("\n\n")[-2:] == ["windy", "Input: windy"]  # the nearest example just before the input
    picks = selector.pool.choose(["windy"])[0]
    assert selector.select_examples({"input": "windy"}) == [EXAMPLES[i] for i in reversed(picks)]


def test_token_budget_skips_what_does_not_fit_instead_of_truncating():
    examples = [{"input": "happy " + "very " * 30, "output": "sad"}, {"input": "happy", "output": "glad"},
                {"input": "tall", "output": "short"}]
    prompt = PromptTemplate.from_template("Input: {input}\nOutput: {output}")
    selector = FewshotExampleSelector(examples, method="knn", k=2, input_keys=["input"], max_tokens=15,
                                      example_prompt=prompt, embedder=Axes())
    chosen = selector.select_examples({"input": "happy"})
    assert chosen == [examples[2], examples[1]]  # the long, most similar one does not fit; no cut text


def test_bad_method_parameter_is_an_input_error():
    from fewshot.errors import InputError

    with pytest.raises(InputError, match="unknown parameter 'lambda'"):
        FewshotExampleSelector(EXAMPLES, method="mmr", embedder=Axes(), **{"lambda": 0.5})


def test_import_without_langchain_names_the_extra():
    code = ("import sys; sys.modules['langchain_core'] = None\n"
            "try:\n    import fewshot.integrations.langchain\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "fewshot[langchain]"' in out
