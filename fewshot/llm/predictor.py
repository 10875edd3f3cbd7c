"""The LLM as a predictive model for SAL and the eval harness: prompts from a template, answers
as label probabilities (classification) or sampled numbers (regression)."""

from __future__ import annotations

from typing import Literal, Sequence

from ..data import Example
from ..prompts import Template
from ..selection.sal import Prediction
from .client import LLMClient, check_labels


class LLMPredictor:
    """Render ``template`` with the demos (in the given order) and the query, then ask the LLM."""

    def __init__(self, client: LLMClient, template: Template, labels: Sequence[str] = (), *,
                 task: Literal["classification", "regression"] = "classification", samples: int = 5,
                 seed: int = 0) -> None:
        self.client, self.template, self.task = client, template, task
        self.labels = check_labels(labels) if task == "classification" else tuple(labels)
        self.samples, self.seed = samples, seed

    def prompt(self, demos: Sequence[Example], text: str) -> str:
        return self.template.render(demos, text, self.labels)

    def predict(self, demos: Sequence[Example], text: str) -> Prediction:
        prompt = self.prompt(demos, text)
        if self.task == "classification":
            scores = self.client.label_probs(prompt, self.labels)
            return Prediction(probs=dict(zip(scores.labels, scores.probs.tolist())))
        return Prediction(samples=tuple(self.client.sample_numbers(prompt, self.samples, seed=self.seed, max_tokens=8)))

    def predict_many(self, jobs: Sequence[tuple[Sequence[Example], str]]) -> list[Prediction]:
        return self.client.map(lambda job: self.predict(*job), jobs)
