"""What a model answers, shared by the LLM layer, SAL and the eval harness (so none imports another)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from .data import Example


@dataclass(frozen=True)
class Prediction:
    """A model's answer: label probabilities (classification) or sampled values (regression)."""

    probs: dict[str, float] | None = None
    samples: tuple[float, ...] = ()

    @property
    def uncertainty(self) -> float:
        if self.probs is not None:
            p = np.array([v for v in self.probs.values() if v > 0])
            return float(-(p * np.log(p)).sum())
        return float(np.var(self.samples)) if len(self.samples) > 1 else math.inf


class PredictiveModel(Protocol):
    """What SAL needs from the LLM: answer many (demos, text) prompts."""

    def predict_many(self, jobs: Sequence[tuple[Sequence[Example], str]]) -> list[Prediction]: ...
