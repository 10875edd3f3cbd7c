"""The LLM as a predictive model for SAL and the eval harness: prompts from a template, answers
as label probabilities (classification) or sampled numbers (regression)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Literal, Sequence

import numpy as np

from ..calibration import CONTENT_FREE, METHODS, Method, calibrate
from ..data import Example
from ..errors import InputError
from ..prompts import Template
from ..models import Prediction
from .chat import chat_messages
from .client import LLMClient, Prompt
from .scoring import check_labels


@dataclass(frozen=True)
class LabelPrediction(Prediction):
    """A classification answer. ``label`` is the most likely label, or None when the scorer
    reached no label (``unscored``): such a prompt counts as wrong, never as a guessed label.
    ``missing``: labels whose probability is only an upper bound; ``reached``: the model's mass
    on the labels it reached (before normalising)."""

    label: str | None = None
    missing: tuple[str, ...] = ()
    reached: float = 1.0

    @property
    def unscored(self) -> bool:
        return self.label is None


def _demo_key(demos: Sequence[Example]) -> tuple:
    """Identifies a demo set (in order): prompts with the same key share their demos."""
    return tuple((d.id, d.text, d.label) for d in demos)


class LLMPredictor:
    """Render ``template`` with the demos (in the given order) and the query, then ask the LLM.

    With a chat client (``api="chat"``) the demos become conversation turns (:func:`chat_messages`).
    ``calibration`` (classification): ``"none"``; ``"batch"`` divides by the mean label
    distribution of the prompts of one :meth:`predict_many` call that share a demo set (SAL's
    simulated queries, the harness's test batch); ``"contextual"`` divides by the label
    distribution for content-free inputs given the same demos (one prompt per input and demo set).
    A demo set asked only once in a call is left uncalibrated by ``"batch"``.
    """

    def __init__(self, client: LLMClient, template: Template, labels: Sequence[str] = (), *,
                 task: Literal["classification", "regression"] = "classification", samples: int = 5,
                 seed: int = 0, calibration: Method = "none",
                 content_free: Sequence[str] = CONTENT_FREE) -> None:
        if calibration not in METHODS:
            raise InputError(f"unknown calibration {calibration!r} (use one of: {', '.join(METHODS)})")
        self.client, self.template, self.task = client, template, task
        self.labels = check_labels(labels) if task == "classification" else tuple(labels)
        self.samples, self.seed = samples, seed
        self.calibration, self.content_free = calibration, tuple(content_free)
        self._priors: dict[tuple, np.ndarray] = {}  # content-free answers per demo set

    def prompt(self, demos: Sequence[Example], text: str) -> Prompt:
        if self.client.api == "chat":
            return chat_messages(self.template, demos, text, self.labels)
        return self.template.render(demos, text, self.labels)

    def predict(self, demos: Sequence[Example], text: str) -> Prediction:
        """One answer, uncalibrated except for contextual calibration (batch needs a batch)."""
        prediction = self._raw(demos, text)
        if self.calibration == "contextual" and isinstance(prediction, LabelPrediction):
            return self._calibrated([prediction], self.content_free_probs(demos))[0]
        return prediction

    def _raw(self, demos: Sequence[Example], text: str) -> Prediction:
        prompt = self.prompt(demos, text)
        if self.task == "classification":
            scores = self.client.label_probs(prompt, self.labels)
            return LabelPrediction(probs=dict(zip(scores.labels, scores.probs.tolist())), label=scores.prediction,
                                   missing=scores.missing, reached=scores.reached)
        return Prediction(samples=tuple(self.client.sample_numbers(prompt, self.samples, seed=self.seed, max_tokens=8)))

    def content_free_probs(self, demos: Sequence[Example]) -> np.ndarray:
        """p(label | demos, content-free input) for each of ``content_free`` (rows, in label order);
        the prior contextual calibration divides by. Unscored inputs are left out (all unscored:
        uniform, i.e. no correction)."""
        key = _demo_key(demos)
        if key in self._priors:
            return self._priors[key]
        answers = [self._raw(demos, text) for text in self.content_free]
        rows = [[a.probs[y] for y in self.labels] for a in answers
                if isinstance(a, LabelPrediction) and not a.unscored]
        self._priors[key] = np.array(rows) if rows else np.full((1, len(self.labels)), 1.0 / len(self.labels))
        return self._priors[key]

    def _calibrated(self, predictions: list[LabelPrediction], content_free: np.ndarray | None = None,
                    groups: Sequence[Hashable] | None = None) -> list[LabelPrediction]:
        probs = np.array([[p.probs[y] for y in self.labels] for p in predictions])
        scored = np.array([not p.unscored for p in predictions])
        q = calibrate(probs, self.calibration, content_free=content_free, scored=scored, groups=groups)
        return [LabelPrediction(probs=dict(zip(self.labels, row.tolist())),
                                label=None if p.unscored else self.labels[int(np.argmax(row))],
                                missing=p.missing, reached=p.reached) for p, row in zip(predictions, q)]

    def predict_many(self, jobs: Sequence[tuple[Sequence[Example], str]]) -> list[Prediction]:
        """Answers to (demos, text) jobs; with ``calibration="batch"`` each answer is calibrated over
        the jobs that share its demo set (:func:`fewshot.calibration.batch_calibrate`)."""
        answers = self.client.map(lambda job: self.predict(*job), jobs)
        if self.calibration != "batch" or self.task != "classification":
            return answers
        return self._calibrated(answers, groups=[_demo_key(demos) for demos, _ in jobs])
        groups: dict[tuple, list[int]] = {}
        for i, (demos, _) in enumerate(jobs):
            groups.setdefault(_demo_key(demos), []).append(i)
        for members in groups.values():
            if len(members) < 2:
                continue  # one prompt is its own mean: calibrating it would erase it
            for i, calibrated in zip(members, self._calibrated([answers[i] for i in members])):
                answers[i] = calibrated
        return answers
