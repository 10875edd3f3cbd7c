"""Data valuation with deterministic LLM doubles: the planted helpful example gets the highest value,
the budget is the number of prompts, a finished prompt is never asked again (also after a kill),
and the values are written to a file a person can sort."""

import csv
import json
from dataclasses import dataclass

import numpy as np
import pytest

from fewshot.errors import InputError
from fewshot.models import Prediction
from fewshot.valuation import (Valuation, estimate_values, gold_scores, model_key, rank_correlation, value_pool,
                               write_values)

LABELS = ("pos", "neg")


class Planted:
    """p(gold) = 0.9 with a ``keys`` text among the demos, 0.3 without; counts prompts; raises after
    ``die_after`` calls (a killed run)."""

    def __init__(self, gold, keys=(), cache_key="planted", die_after=None):
        self.gold, self.keys, self.cache_key, self.die_after = gold, set(keys), cache_key, die_after
        self.prompts, self.calls = 0, 0

    def predict_many(self, jobs):
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        self.prompts += len(jobs)
        out = []
        for demos, text in jobs:
            assert text not in {d.text for d in demos}  # a probe is never its own demo
            p = 0.9 if any(d.text in self.keys for d in demos) else 0.3
            out.append(Prediction(probs={y: p if y == self.gold[text] else 1 - p for y in LABELS}))
        return out


def pool(n=40):
    texts = [f"ex{i}" for i in range(n)]
    labels = [LABELS[i % 2] for i in range(n)]
    return texts, labels, dict(zip(texts, labels))


def test_the_planted_example_has_the_highest_value_and_the_budget_is_the_prompt_count(tmp_path):
    texts, labels, gold = pool()
    model = Planted(gold, keys={"ex9"})
    values = Valuation(model, k=4, budget=600, probes_per_set=6, cache_dir=tmp_path).run(texts, labels)
    assert model.prompts == values.prompts == values.asked == 600 and values.sets == 100
    assert int(np.nanargmax(values.marginal)) == 9 and int(np.nanargmax(values.datamodel)) == 9
    assert values.marginal[9] > 1.0  # log 0.9 - log 0.3 = 1.1 on every probe of a set with ex9
    assert values.included.sum() == 400 and values.reliability > 0


def test_a_finished_valuation_is_read_back_and_another_model_is_not(tmp_path):
    texts, labels, gold = pool()
    first = Valuation(Planted(gold, keys={"ex9"}), budget=300, cache_dir=tmp_path).run(texts, labels)
    again = Planted(gold, keys={"ex9"})
    second = Valuation(again, budget=300, cache_dir=tmp_path).run(texts, labels)
    assert again.prompts == second.asked == 0
    assert np.array_equal(first.marginal, second.marginal, equal_nan=True)
    other = Planted(gold, keys={"ex9"}, cache_key="another model")
    Valuation(other, budget=300, cache_dir=tmp_path).run(texts, labels)
    assert other.prompts == 300
    bigger = Planted(gold, keys={"ex9"})
    Valuation(bigger, budget=600, cache_dir=tmp_path).run(texts, labels)
    assert bigger.prompts == 300  # a larger budget extends the plan: only the new sets are asked


def test_a_killed_valuation_repeats_no_finished_batch(tmp_path):
    texts, labels, gold = pool()
    killed = Planted(gold, keys={"ex9"}, die_after=2)
    with pytest.raises(KeyboardInterrupt):
        Valuation(killed, budget=600, batch_sets=16, cache_dir=tmp_path).run(texts, labels)
    assert killed.prompts == 2 * 16 * 6
    resumed = Planted(gold, keys={"ex9"})
    values = Valuation(resumed, budget=600, batch_sets=16, cache_dir=tmp_path).run(texts, labels)
    assert resumed.prompts == values.asked == 600 - 2 * 16 * 6
    fresh = Valuation(Planted(gold, keys={"ex9"}), budget=600, cache=False).run(texts, labels)
    assert np.array_equal(values.marginal, fresh.marginal, equal_nan=True)


def test_without_the_store_nothing_is_written(tmp_path):
    texts, labels, gold = pool()
    model = Planted(gold)
    Valuation(model, budget=60, cache=False, cache_dir=tmp_path).run(texts, labels)
    Valuation(model, budget=60, cache=False, cache_dir=tmp_path).run(texts, labels)
    assert model.prompts == 120 and not list(tmp_path.iterdir())


def test_the_plan_is_seeded_label_covering_and_extends():
    labels = pool()[1]
    small, large = Valuation(None, budget=60).plan(labels), Valuation(None, budget=120).plan(labels)
    assert np.array_equal(small[0], large[0][:10]) and np.array_equal(small[1], large[1][:10])
    other = Valuation(None, budget=60, seed=1).plan(labels)
    assert not np.array_equal(small[0], other[0])
    sets, probes = large
    for s, p in zip(sets, probes):
        assert sorted(labels[i] for i in s) == ["neg", "neg", "pos", "pos"]
        assert not set(s) & set(p) and len(set(p)) == len(p)


def test_labels_model_and_budget_are_checked_before_any_prompt():
    texts, labels, gold = pool()
    model = Planted(gold)
    with pytest.raises(InputError, match="reads the labels of the pool"):
        value_pool(texts, [None] * len(texts), model)
    with pytest.raises(InputError, match="needs an LLM"):
        value_pool(texts, labels, None)
    with pytest.raises(InputError, match="less than one set"):
        value_pool(texts, labels, model, budget=3)
    with pytest.raises(InputError, match="at least k \\+ probes_per_set"):
        value_pool(texts[:5], labels[:5], model)
    assert model.prompts == 0


def test_gold_scores_count_an_unscored_answer_as_wrong():
    @dataclass(frozen=True)
    class Unscored(Prediction):
        unscored: bool = True

    answers = [Prediction(probs={"pos": 0.9, "neg": 0.1}), Unscored(probs={"pos": 0.9, "neg": 0.1})]
    assert gold_scores(answers, ["pos", "pos"], "accuracy").tolist() == [1.0, 0.0]
    assert gold_scores(answers, ["pos", "pos"])[1] == pytest.approx(np.log(1e-6))
    # the unscored answer does not move the calibration mean: one scored prompt is left as it is
    assert gold_scores(answers, ["pos", "pos"], "calibrated")[0] == pytest.approx(np.log(0.9))
    assert gold_scores([Prediction(probs={"pos": 1.0})], ["neg"])[0] == pytest.approx(np.log(1e-6))
    with pytest.raises(InputError, match="classification"):
        gold_scores([Prediction(samples=(1.0, 2.0))], ["pos"])


def test_a_probe_that_is_hard_for_every_set_does_not_decide_the_values():
    """Probe 5 is answered badly whatever the set: centring by the probe's leave-one-out mean
    removes it, so the values come from the probe that depends on the set."""
    sets = np.array([[0, 1], [2, 3], [0, 2], [1, 3]])
    probes = np.array([[4, 5], [4, 5], [5, 4], [5, 4]])
    scores = np.array([[0.0, -5.0], [-1.0, -5.0], [-5.0, 0.0], [-5.0, -1.0]])
    marginal, _, _ = estimate_values(sets, probes, scores, 6)
    assert marginal[0] > 0 > marginal[3]


def test_rank_correlation_and_model_key():
    assert rank_correlation(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)
    assert np.isnan(rank_correlation(np.ones(5), np.arange(5.0)))
    assert model_key(Planted({}, cache_key="x")) == "x"
    assert model_key(object()) == "builtins.object"


def test_write_values_sorts_best_first_in_csv_and_jsonl(tmp_path):
    ids, values = ["a", "b", "c", "d"], np.array([0.2, np.nan, 0.9, -0.3])
    out = write_values(tmp_path / "v.csv", ids, values, texts=["t1", "t2", "t3", "t4"], labels=["x", "y", "x", "y"],
                       columns={"included": np.array([3, 0, 4, 2])})
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == ["c", "a", "d", "b"] and [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0] == {"rank": "1", "id": "c", "value": "0.9", "label": "x", "text": "t3", "included": "4"}
    assert rows[-1]["value"] == ""
    lines = [json.loads(line) for line in write_values(tmp_path / "v.jsonl", ids, values).read_text().splitlines()]
    assert lines[0] == {"rank": 1, "id": "c", "value": 0.9} and lines[-1]["value"] is None
    with pytest.raises(InputError, match="csv or .jsonl"):
        write_values(tmp_path / "v.txt", ids, values)
    with pytest.raises(InputError, match="label: 1 entries for 4 ids"):
        write_values(tmp_path / "w.csv", ids, values, labels=["x"])
