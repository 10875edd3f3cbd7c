"""Metrics: per-query scores raw and calibrated, whole-cell counts, the best-of-N choice."""

import numpy as np
import pytest

from fewshot.evaluation import metrics
from fewshot.evaluation.metrics import best, cell_scores, headline_score, mean_score, whole_cell_batch


def test_batch_calibration_and_macro_f1_by_hand():
    prediction = {"labels": ["a", "b"], "rows": [
        {"id": "1", "gold": "a", "unscored": False, "probs": [0.9, 0.1]},
        {"id": "2", "gold": "b", "unscored": False, "probs": [0.6, 0.4]},
        {"id": "3", "gold": "b", "unscored": True, "probs": [0.5, 0.5]}]}
    per_query, whole = cell_scores(prediction, "classification")
    # raw: a, a, unscored (wrong). batch: mean of scored rows (0.75, 0.25) -> (0.75, 0.25): a; (0.33, 0.67): b
    assert per_query["accuracy"] == {"1": 1.0, "2": 0.0, "3": 0.0}
    assert per_query["accuracy@batch"] == {"1": 1.0, "2": 1.0, "3": 0.0}
    # raw macro-F1: a: P 1/2, R 1 -> 2/3; b: no hit -> 0; mean 1/3. batch: a 1; b: P 1, R 1/2 -> 2/3
    assert whole["macro_f1"] == pytest.approx(1 / 3) and whole["macro_f1@batch"] == pytest.approx(5 / 6)
    assert "accuracy@contextual" not in per_query


def test_contextual_calibration_uses_each_rows_prior():
    prediction = {"labels": ["a", "b"], "rows": [
        {"id": "1", "gold": "b", "unscored": False, "probs": [0.6, 0.4], "prior": [0.8, 0.2]},
        {"id": "2", "gold": "a", "unscored": False, "probs": [0.6, 0.4], "prior": [0.5, 0.5]}]}
    per_query, _ = cell_scores(prediction, "classification")
    assert per_query["accuracy@contextual"] == {"1": 1.0, "2": 1.0} and per_query["accuracy"] == {"1": 0.0, "2": 1.0}



def test_batch_calibration_groups_prompts_by_demo_set():
    rows = [{"id": "1", "gold": "a", "unscored": False, "probs": [0.9, 0.1]},
            {"id": "2", "gold": "b", "unscored": False, "probs": [0.6, 0.4]},
            {"id": "3", "gold": "b", "unscored": False, "probs": [0.6, 0.4]}]
    # one demo set: mean (0.7, 0.3); row 3 -> (0.857, 1.333): b
    whole_cell, _ = cell_scores({"labels": ["a", "b"], "rows": rows}, "classification")
    assert whole_cell["accuracy@batch"] == {"1": 1.0, "2": 1.0, "3": 1.0}
    # rows 1-2 share a demo set (mean (0.75, 0.25)); row 3's set is its own: it stays raw (a, wrong)
    grouped = [{**r, "demo_set": d} for r, d in zip(rows, (0, 0, 1))]
    per_query, _ = cell_scores({"labels": ["a", "b"], "rows": grouped}, "classification")
    assert per_query["accuracy@batch"] == {"1": 1.0, "2": 1.0, "3": 0.0}
    # every prompt with demos of its own (a per-query cell): batch calibration changes nothing
    alone = [{**r, "demo_set": i} for i, r in enumerate(rows)]
    per_query, _ = cell_scores({"labels": ["a", "b"], "rows": alone}, "classification")
    assert per_query["accuracy@batch"] == per_query["accuracy"]


def test_regression_scores_and_unparsed_answers():
    rows = [{"id": "1", "gold": 2.0, "prediction": 3.0, "parsed": True, "error": 1.0, "abs_error": 1.0},
            {"id": "2", "gold": 2.0, "prediction": 5.0, "parsed": False, "error": 9.0, "abs_error": 3.0}]
    per_query, whole = cell_scores({"labels": [], "rows": rows}, "regression")
    assert per_query == {"mse": {"1": 1.0, "2": 9.0}} and whole == {"mae": 2.0, "unparsed": 1.0}
    assert mean_score(per_query, "mse") == headline_score(rows, [], "regression") == 5.0


def test_best_is_the_highest_accuracy_or_the_lowest_error():
    assert best([0.5, 0.75, 0.75], "accuracy@batch") == 1 and best([4.0, 1.0, 2.0], "mse") == 1


def test_which_cells_keep_the_whole_cell_batch_definition():
    old = {"task": "classification", "setting": "full"}
    assert whole_cell_batch(old) and not whole_cell_batch({**old, "demo_sets": 40})
    assert not whole_cell_batch({**old, "setting": "shared"}) and not whole_cell_batch({**old, "task": "regression"})


def test_the_headline_alone_is_computed_and_equals_the_full_tables(monkeypatch):
    rng = np.random.default_rng(0)
    rows = [{"id": str(i), "gold": "ab"[i % 2], "unscored": i == 3, "probs": rng.dirichlet([1, 1]).tolist(),
             "prior": rng.dirichlet([1, 1]).tolist(), "demo_set": i % 3} for i in range(12)]
    per_query, whole = cell_scores({"labels": ["a", "b"], "rows": rows}, "classification")
    only, none = cell_scores({"labels": ["a", "b"], "rows": rows}, "classification", only={"accuracy@batch"})
    assert only == {"accuracy@batch": per_query["accuracy@batch"]} and none == {}
    _, f1 = cell_scores({"labels": ["a", "b"], "rows": rows}, "classification", only={"macro_f1@contextual"})
    assert f1 == {"macro_f1@contextual": whole["macro_f1@contextual"]}

    def not_needed(*args, **kwargs):
        raise AssertionError("best-of-N needs only the headline: no contextual calibration")

    monkeypatch.setattr(metrics, "divide_by_prior", not_needed)
    assert headline_score(rows, ["a", "b"], "classification") == mean_score(per_query, "accuracy@batch")
    regression = [{"id": "1", "error": 4.0}, {"id": "2", "error": 2.0}]  # no abs_error: mae is never computed
    assert headline_score(regression, [], "regression") == 3.0
