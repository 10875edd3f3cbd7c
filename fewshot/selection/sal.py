"""SAL: simulation-based active learning that asks the LLM itself how much each candidate would
cut its uncertainty on the queries (Mukherjee et al., arXiv 2404.08846).

One round, shared set: H = demos chosen so far with their revealed labels; C = shortlist of the
``candidates`` best GO (V-optimal) candidates given H; Q' = a seeded sample of ``query_sample``
queries. For x in C the model gives p(y | H, x); for every label with p >= ``min_label_prob``
(regression: each sampled value) it answers Q' with (x, y) + H in the order the final prompt
shows demos (first pick nearest the query, so x farthest); score(x) = sum_y p(y) * mean
uncertainty (entropy; variance for regression). The x with the lowest score is picked and its
label revealed by the oracle. Per query, Q' = {q}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol, Sequence

import numpy as np

from ..data import Example
from ..errors import InputError
from .base import Feasibility, Problem, Selection, Selector, check_k
from .design import GO


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


def prefix_order(groups: int, size: int, width: int) -> np.ndarray:
    """The order to send ``groups`` x ``size`` jobs in (job ``g * size + j`` is query j with demo
    set g), so that ``width`` requests in flight work on ``width`` different demo sets, each set's
    queries one after another: a server slot then computes each demo set once instead of once per
    slot (the LLM client sends a prompt to the slot that holds its prefix). The answers do not
    depend on the order.

    >>> prefix_order(3, 2, 2).tolist()  # sets 0 and 1 side by side, then set 2
    [0, 2, 1, 3, 4, 5]
    """
    index = np.arange(groups * size).reshape(groups, size)
    blocks = [index[start:start + width].T.ravel() for start in range(0, groups, max(1, width))]
    return np.concatenate(blocks) if blocks else np.arange(0)


def _width(model: object) -> int:
    """How many requests the model's LLM client keeps in flight (1 when it does not say)."""
    return int(getattr(getattr(model, "client", None), "concurrency", 1) or 1)


class SAL(Selector):
    """Simulation-based active learning: the LLM scores how much each candidate would cut its
    uncertainty on the queries (needs an LLM; see `fewshot select --method sal`)."""

    name: ClassVar[str] = "sal"

    def __init__(self, model: PredictiveModel | None = None, oracle: Callable[[int], str] | None = None,
                 candidates: int | None = 6, query_sample: int | None = 8, min_label_prob: float = 0.1,
                 ridge: float = 1.0, noise: float = 0.1, seed: int = 0, label_balance: bool = False) -> None:
        self.model, self.oracle = model, oracle
        self.candidates, self.query_sample, self.min_label_prob = candidates, query_sample, min_label_prob
        self.ridge, self.noise, self.seed, self.label_balance = ridge, noise, seed, label_balance

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in super().get_params().items() if k not in ("model", "oracle")}

    def select(self, problem: Problem, k: int) -> Selection:
        check_k(problem, k)
        sample = np.arange(problem.m)
        if self.query_sample is not None and self.query_sample < problem.m:
            sample = np.sort(np.random.default_rng(self.seed).choice(problem.m, self.query_sample, replace=False))
        return self._rounds(problem, k, sample, None)

    def select_per_query(self, problem: Problem, k: int) -> list[Selection]:
        check_k(problem, k)
        return [self._rounds(problem, k, np.array([j]), j) for j in range(problem.m)]

    def _label(self, problem: Problem, index: int) -> str:
        if self.oracle is not None:
            return self.oracle(index)
        if problem.labels is not None and problem.labels[index] is not None:
            return problem.labels[index]
        raise InputError(f"pool example {index} has no label and SAL has no oracle to ask "
                         "(give a labels file, or run on a terminal to label interactively)")

    def _shortlist(self, problem: Problem, sample: np.ndarray, chosen: list[int], ok: np.ndarray) -> np.ndarray:
        """The feasible candidates with the largest GO (V-optimal) gain on the query sample, given H."""
        if self.candidates is None or self.candidates >= ok.sum():
            return np.flatnonzero(ok)
        go = GO(objective="v", ridge=self.ridge, noise=self.noise)
        sub = Problem(pool=problem.pool, queries=problem.queries[sample])
        state = go._start(sub, np.arange(problem.n)[None, :], None)
        for index in chosen:
            go._commit(state, np.array([0]), np.array([index]))
        gains = np.where(ok, go._gains(state, ok[None, :])[0], -np.inf)
        return np.sort(np.argsort(-gains, kind="stable")[: self.candidates])

    def _rounds(self, problem: Problem, k: int, sample: np.ndarray, query: int | None) -> Selection:
        if self.model is None:
            raise InputError("SAL needs an LLM (model=...); the CLI connects one with --base-url/--model or starts a local server")
        feasible = Feasibility(problem, np.arange(problem.n)[None, :], k, self.label_balance)
        demos: list[Example] = []
        chosen: list[int] = []
        scores: list[float] = []
        trace: list[dict[str, Any]] = []
        queries = [problem.query_texts[j] for j in sample]
        calls = 0
        for step in range(k):
            ok = feasible.mask()[0]
            if not ok.any():
                break
            shortlist = self._shortlist(problem, sample, chosen, ok)
            # demos in the order the final prompt shows them: the first pick nearest the query, so a
            # candidate picked now sits before (farther from the query than) every earlier pick
            shown = demos[::-1]
            first = self.model.predict_many([(shown, problem.pool_texts[x]) for x in shortlist])
            hypotheses = [self._hypotheses(p) for p in first]
            jobs = [([Example(str(x), problem.pool_texts[x], y), *shown], q)
                    for x, hyp in zip(shortlist, hypotheses) for y, _ in hyp for q in queries]
            order = prefix_order(len(jobs) // max(1, len(queries)), len(queries), _width(self.model))
            answered = self.model.predict_many([jobs[i] for i in order])
            answers = iter([answered[i] for i in np.argsort(order)])
            calls += len(shortlist) + len(jobs)
            # a candidate the model gave no answer for (regression: nothing parsable) cannot be
            # simulated: it scores +inf, never 0, so it cannot win by default
            expected = np.array([sum(w * np.mean([next(answers).uncertainty for _ in queries]) for _, w in hyp)
                                 if hyp else math.inf for hyp in hypotheses])
            best = int(np.argmin(expected))  # ties: the lower pool index (shortlist is sorted)
            pick = int(shortlist[best])
            label = self._label(problem, pick)
            demos.append(Example(str(pick), problem.pool_texts[pick], label))
            chosen.append(pick)
            scores.append(-float(expected[best]))
            order = np.argsort(expected, kind="stable")
            trace.append({"step": step + 1, "index": pick, "score": -float(expected[best]),
                          "expected_uncertainty": float(expected[best]), "label": label,
                          "runner_up": int(shortlist[order[1]]) if len(order) > 1 else None,
                          "runner_up_score": -float(expected[order[1]]) if len(order) > 1 else None,
                          "shortlist": [int(x) for x in shortlist], "llm_calls": len(shortlist) + len(jobs)})
            feasible.take(np.array([0]), np.array([pick]))
        stopped = None if len(chosen) == k else "token budget exhausted" if feasible.costs is not None else "no candidates left"
        return Selection(tuple(chosen), tuple(scores), tuple(trace), query=query, stopped=stopped,
                         info={"llm_calls": calls, "queries_sampled": len(sample)})

    def _hypotheses(self, prediction: Prediction) -> list[tuple[str, float]]:
        """(label, weight) pairs to simulate: labels with non-negligible mass, or the samples."""
        if prediction.probs is None:
            return [(f"{v:g}", 1.0 / len(prediction.samples)) for v in prediction.samples]
        kept = {y: p for y, p in prediction.probs.items() if p >= self.min_label_prob}
        if not kept:
            kept = dict([max(prediction.probs.items(), key=lambda item: item[1])])
        total = sum(kept.values())
        return [(y, p / total) for y, p in sorted(kept.items())]
