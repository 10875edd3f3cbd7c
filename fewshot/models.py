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
    def variance(self) -> float:
        """The variance of the sampled values (regression's uncertainty), inf with fewer than two: an
        answer with no parsable number must never look certain. (A label distribution's uncertainty
        is its entropy, which SAL's objectives compute over many answers at once.)

        >>> Prediction(samples=(1.0, 3.0)).variance, Prediction(samples=(2.0,)).variance
        (1.0, inf)
        """
        return float(np.var(self.samples)) if len(self.samples) > 1 else math.inf


class PredictiveModel(Protocol):
    """What SAL needs from the LLM: answer many (demos, text) prompts."""

    def predict_many(self, jobs: Sequence[tuple[Sequence[Example], str]]) -> list[Prediction]: ...
