"""The labeling oracle: pool label, labels file, typed answers kept as they are typed (R10)."""

import json
import signal

import pytest

from fewshot.data import Example
from fewshot.errors import InputError, Interrupted
from fewshot.oracle import ask_on_terminal, journal_path, make_oracle, read_journal

POOL = [Example("a", "a fine film", "pos"), Example("b", "dull"), Example("c", "lovely"), Example("d", "boring"),
        Example("e", "great")]


class Person:
    """Answers from a list; raises KeyboardInterrupt (Ctrl-C at the prompt) when the list runs out."""

    def __init__(self, answers):
        self.answers, self.asked = list(answers), []

    def __call__(self, example, labels):
        self.asked.append(example.id)
        if not self.answers:
            raise KeyboardInterrupt
        return self.answers.pop(0)


def test_sources_in_order_pool_then_file_then_person(tmp_path):
    labels_file = tmp_path / "labels.jsonl"
    labels_file.write_text(json.dumps({"id": "b", "label": "neg"}) + "\n" + json.dumps({"id": "a", "label": "neg"}) + "\n")
    person = Person(["pos"])
    oracle = make_oracle(POOL, labels_file=labels_file, journal=tmp_path / "typed.jsonl", ask=person)
    assert oracle.labels == ["neg", "pos"]
    assert [oracle(0), oracle(1), oracle(2)] == ["pos", "neg", "pos"]  # the pool's own label beats the file's
    assert person.asked == ["c"]


def test_typed_answers_survive_ctrl_c_and_are_not_asked_again(tmp_path):
    journal = tmp_path / "sel.jsonl.labels.jsonl"
    first = Person(["neg", "pos"])
    oracle = make_oracle(POOL, journal=journal, ask=first)
    assert oracle(1) == "neg" and oracle(2) == "pos"
    with pytest.raises(KeyboardInterrupt):
        oracle(3)
    assert first.asked == ["b", "c", "d"]
    again = Person(["neg"])
    resumed = make_oracle(POOL, journal=journal, ask=again)
    assert [resumed(1), resumed(2), resumed(3)] == ["neg", "pos", "neg"]
    assert again.asked == ["d"]  # the two answers typed before Ctrl-C are not asked for again
    assert read_journal(journal, POOL) == {"b": "neg", "c": "pos", "d": "neg"}


def test_journal_skips_stale_and_torn_lines_and_reads_as_a_labels_file(tmp_path):
    journal = tmp_path / "typed.jsonl"
    make_oracle(POOL, journal=journal, ask=Person(["neg"]))(1)
    assert make_oracle(POOL, labels_file=journal, ask=None)(1) == "neg"  # usable as --labels-file
    # a later pool where id "c" holds another text, and a line cut by a kill mid-write
    with open(journal, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "c", "label": "neg", "text": "another text"}) + "\n" + '{"id": "d", "lab')
    assert read_journal(journal, POOL) == {"b": "neg"}
    person = Person(["pos"])
    assert make_oracle(POOL, journal=journal, ask=person)(4) == "pos"  # appended after the torn line
    assert read_journal(journal, POOL) == {"b": "neg", "e": "pos"}


def test_no_person_to_ask_is_a_clear_error():
    with pytest.raises(InputError, match="pool example id 'b' was picked to label and has no label"):
        make_oracle(POOL, ask=None)(1)


def test_journal_path_next_to_the_output_or_keyed_by_the_pool(tmp_path):
    assert journal_path(POOL, out=tmp_path / "s.jsonl") == tmp_path / "s.jsonl.labels.jsonl"
    here = journal_path(POOL, cache_dir=tmp_path)
    assert here.parent == tmp_path / "labels" and here == journal_path(list(POOL), cache_dir=tmp_path)
    assert journal_path(POOL[:-1], cache_dir=tmp_path) != here


@pytest.mark.parametrize("typed, outcome", [
    ("neg", "neg"),
    (KeyboardInterrupt(), KeyboardInterrupt),
    (Interrupted(signal.SIGTERM), Interrupted),
    (EOFError(), InputError),
])
def test_the_terminal_prompt_keeps_a_stop_a_stop(monkeypatch, typed, outcome):
    """click turns Ctrl-C (and SIGTERM's Interrupted) at a prompt into "Aborted!" and exit 1; the
    oracle gives it back, so the CLI says what is kept and exits 130 or 143."""
    import click.termui

    def answer(prompt):
        if isinstance(typed, BaseException):
            raise typed
        return typed

    monkeypatch.setattr(click.termui, "visible_prompt_func", answer)
    if isinstance(outcome, str):
        assert ask_on_terminal(POOL[1], ["neg", "pos"]) == outcome
    else:
        with pytest.raises(outcome):
            ask_on_terminal(POOL[1], ["neg", "pos"])
