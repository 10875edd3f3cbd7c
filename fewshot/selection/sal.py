"""SAL: simulation-based active learning that asks the LLM itself how much each candidate would
cut its uncertainty on the queries (Mukherjee et al., arXiv 2404.08846).

One round, shared set: H = demos chosen so far with their revealed labels; C = a shortlist of
``shortlist`` examples by GO's V-optimal greedy continued from H (relevant to the queries and
unlike each other); Q' = a seeded sample of ``query_sample``
queries. For x in C the model gives p(y | H, x); for every label with p >= ``min_label_prob``
(regression: each sampled value) it answers Q' with H and (x, y) in the order the final prompt
shows demos (:func:`~fewshot.prompts.prompt_order`: x farthest from the query), giving p_y(q) for q in Q'. With
``calibration="batch"`` each p_y(.) is divided by its mean over Q' first. The ``objective``
turns the simulated answers into a loss, and the x with the lowest loss is picked and its label
revealed by the oracle (w_y = p(y | H, x) renormalised over the labels kept; H = entropy):

- ``"entropy"`` (the paper's): sum_y w_y mean_q H(p_y(q)), the expected uncertainty left. A small
  model can lower it by becoming confident in one label for every query (label collapse).
- ``"mi"`` (the default, chosen on the tuning half: evals/TUNING-SAL.md): minus
  sum_y w_y [H(mean_q p_y(q)) - mean_q H(p_y(q))], the mutual information between queries and
  predictions (GlobalE, Lu et al. 2022): confident *and* varied answers.
- ``"epig"``: minus mean_q [H(sum_y w_y p_y(q)) - sum_y w_y H(p_y(q))], the expected information
  the candidate's label carries about the queries' answers (EPIG, Bickford Smith et al. 2023).

With ``label_coverage``, while some candidates' most likely label (given H) is one no revealed
demo has, only those compete: a small model leans on seeing every label.
Regression has no label distribution: every objective uses the variance of the sampled values.
Per query, Q' = {q}: batch calibration needs two or more queries and is skipped, and ``"mi"``
(always 0 over one query) scores by entropy; the trace's ``objective`` says which was used.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Literal

import numpy as np

from ..calibration import batch_calibrate
from ..data import Example
from ..errors import InputError
from ..models import Prediction, PredictiveModel
from ..prompts import prompt_order
from ..valuation import json_number
from .base import Feasibility, Problem, Selection, Selector, check_k
from .design import GO
from .params import FLAG, SEED, SHORTLIST, HasMethods, Interval, Options


OBJECTIVES = ("entropy", "mi", "epig")


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) over the last axis; 0 log 0 = 0.

    >>> entropy(np.array([[0.5, 0.5], [1.0, 0.0]])).round(4).tolist()
    [0.6931, 0.0]
    """
    p = np.asarray(probs, dtype=float)
    return np.sum(np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def objective_loss(objective: str, probs: np.ndarray, weights: np.ndarray) -> float:
    """SAL's loss (lower is better) from simulated answers ``probs[h, q, label]`` under label
    hypotheses h with weights ``weights[h]`` (summing to 1); see the module docstring.

    Two labels, one hypothesis, two queries answered confidently but differently: no entropy left,
    and the most mutual information there can be (log 2). EPIG needs two hypotheses whose answers
    differ: here the label decides each query's answer.

    >>> confident = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    >>> float(objective_loss("entropy", confident, np.array([1.0]))), round(objective_loss("mi", confident, np.array([1.0])), 4)
    (0.0, -0.6931)
    >>> decisive = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # (2 hypotheses, 1 query, 2 labels)
    >>> round(objective_loss("epig", decisive, np.array([0.5, 0.5])), 4)
    -0.6931
    """
    within = entropy(probs).mean(axis=1)  # (h,): mean_q H(p_h(q))
    if objective == "entropy":
        return float(weights @ within)
    if objective == "mi":
        return -float(weights @ (entropy(probs.mean(axis=1)) - within))
    if objective == "epig":
        mixed = np.einsum("h,hql->ql", weights, probs)  # the query's answer before the label is known
        return -float(np.mean(entropy(mixed) - np.einsum("h,hq->q", weights, entropy(probs))))
    raise InputError(f"SAL objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")


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


def in_flight(model: object) -> int:
    """How many requests the model's LLM client keeps in flight (1 when it does not say): the
    ``width`` of :func:`prefix_order`."""
    return int(getattr(getattr(model, "client", None), "concurrency", 1) or 1)


class SAL(Selector):
    """Simulation-based active learning: the LLM scores how much each candidate would cut its
    uncertainty on the queries (needs an LLM; see `fewshot select --method sal`).

    Besides the selector protocol, two steps of a round are public for selectors built on SAL's
    rounds (``sal-probes``): :meth:`sampled_queries` (Q') and :meth:`shortlist_candidates` (C).
    """

    name: ClassVar[str] = "sal"
    parameter_constraints: ClassVar[dict] = {
        "model": [HasMethods("predict_many"), None], "oracle": [callable, None],
        "shortlist": SHORTLIST,
        # query_sample=0 simulated no query: every loss was inf and the picks were 0, 1, 2, ...
        "query_sample": [Interval(int, 1, None), None],
        "min_label_prob": [Interval(float, 0, 1)], "ridge": [Interval(float, 0, None, closed="neither")],
        "noise": [Interval(float, 0, None, closed="neither")], "seed": SEED, "label_balance": FLAG,
        "objective": [Options(*OBJECTIVES)], "calibration": [Options("none", "batch")], "label_coverage": FLAG}

    def __init__(self, model: PredictiveModel | None = None, oracle: Callable[[int], str] | None = None,
                 shortlist: int | None = 6, query_sample: int | None = 8, min_label_prob: float = 0.1,
                 ridge: float = 1.0, noise: float = 0.1, seed: int = 0, label_balance: bool = False,
                 objective: Literal["entropy", "mi", "epig"] = "mi",
                 calibration: Literal["none", "batch"] = "none", label_coverage: bool = False) -> None:
        self.objective, self.calibration, self.label_coverage = objective, calibration, label_coverage
        self.model, self.oracle = model, oracle
        self.shortlist, self.query_sample, self.min_label_prob = shortlist, query_sample, min_label_prob
        self.ridge, self.noise, self.seed, self.label_balance = ridge, noise, seed, label_balance

    def select(self, problem: Problem, k: int) -> Selection:
        check_k(problem, k)
        return self._rounds(problem, k, self.sampled_queries(problem), None)

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

    def sampled_queries(self, problem: Problem) -> np.ndarray:
        """Q' of a shared selection, sorted query indices: every query, or a sample of
        ``query_sample`` of them drawn by ``seed``."""
        if self.query_sample is None or self.query_sample >= problem.m:
            return np.arange(problem.m)
        return np.sort(np.random.default_rng(self.seed).choice(problem.m, self.query_sample, replace=False))

    def shortlist_candidates(self, problem: Problem, sample: np.ndarray, chosen: list[int],
                             ok: np.ndarray) -> np.ndarray:
        """C of a round, sorted pool indices: ``shortlist`` of the feasible examples (``ok``, one
        flag per pool example; all of them when ``shortlist`` is None or not smaller), relevant to
        the queries ``sample`` and unlike each other: GO's V-optimal greedy (``ridge``, ``noise``)
        continued from the picks ``chosen``, each shortlisted example conditioned on as if picked
        (the top gains alone are often near-duplicates of one another)."""
        if self.shortlist is None or self.shortlist >= ok.sum():
            return np.flatnonzero(ok)
        go = GO(objective="v", ridge=self.ridge, noise=self.noise)
        sub = Problem(pool=problem.pool, queries=problem.queries[sample])
        left, shortlist = ok.copy(), []
        for _ in range(self.shortlist):
            best = int(np.argmax(np.where(left, go.gains(sub, chosen + shortlist), -np.inf)))  # ties: lower index
            shortlist.append(best)
            left[best] = False
        return np.sort(np.array(shortlist))

    def _rounds(self, problem: Problem, k: int, sample: np.ndarray, query: int | None) -> Selection:
        if self.model is None:
            raise InputError("SAL needs an LLM (model=...); the CLI connects one with --base-url/--model or starts a local server")
        feasible = Feasibility(problem, np.arange(problem.n)[None, :], k, self.label_balance)
        demos: list[Example] = []
        chosen: list[int] = []
        scores: list[float] = []
        trace: list[dict[str, Any]] = []
        queries = [problem.query_texts[j] for j in sample]
        prompts = 0
        for step in range(k):
            ok = feasible.mask()[0]
            if not ok.any():
                break
            shortlist = self.shortlist_candidates(problem, sample, chosen, ok)
            # demos in the order the final prompt shows them: a candidate picked now is shown as the
            # last pick so far
            shown = prompt_order(demos)
            first = self.model.predict_many([(shown, problem.pool_texts[x]) for x in shortlist])
            hypotheses = [self._hypotheses(p) for p in first]
            jobs = [(prompt_order([*demos, Example(str(x), problem.pool_texts[x], y)]), q)
                    for x, hyp in zip(shortlist, hypotheses) for y, _ in hyp for q in queries]
            order = prefix_order(len(jobs) // max(1, len(queries)), len(queries), in_flight(self.model))
            answered = self.model.predict_many([jobs[i] for i in order])
            answers = iter([answered[i] for i in np.argsort(order)])
            prompts += len(shortlist) + len(jobs)
            # a candidate the model gave no answer for (regression: nothing parsable) cannot be
            # simulated: it scores +inf, never 0, so it cannot win by default
            expected = np.array([self._loss([w for _, w in hyp], [[next(answers) for _ in queries] for _ in hyp])
                                 if hyp else math.inf for hyp in hypotheses])
            covering = self._covering(first, demos) if self.label_coverage else None
            if covering is not None:
                expected = np.where(covering, expected, math.inf)
            best = int(np.argmin(expected))  # ties: the lower pool index (shortlist is sorted)
            pick = int(shortlist[best])
            label = self._label(problem, pick)
            demos.append(Example(str(pick), problem.pool_texts[pick], label))
            chosen.append(pick)
            scores.append(-float(expected[best]))
            order = np.argsort(expected, kind="stable")
            runner_up = float(expected[order[1]]) if len(order) > 1 else math.inf
            trace.append({"step": step + 1, "index": pick, "score": -float(expected[best]),
                          "loss": float(expected[best]), "objective": self._objective(len(queries)), "label": label,
                          "runner_up": int(shortlist[order[1]]) if len(order) > 1 else None,
                          "runner_up_score": json_number(-runner_up),  # JSON has no inf
                          "shortlist": [int(x) for x in shortlist], "prompts": len(shortlist) + len(jobs),
                          "covering_only": covering is not None})
            feasible.take(np.array([0]), np.array([pick]))
        stopped = None if len(chosen) == k else feasible.stop_reason()
        # "prompts": the predictions asked for, not HTTP requests (a client may batch or cache them)
        return Selection(tuple(chosen), tuple(scores), tuple(trace), query=query, stopped=stopped,
                         info={"prompts": prompts, "queries_sampled": len(sample)})

    @staticmethod
    def _covering(first: list[Prediction], demos: list[Example]) -> np.ndarray | None:
        """Which candidates the model thinks carry a label no revealed demo has; None when that
        decides nothing (regression, or all or none of them do)."""
        if any(p.probs is None for p in first):
            return None
        revealed = {d.label for d in demos}
        new = np.array([bool(p.probs) and max(p.probs, key=p.probs.get) not in revealed for p in first])
        return new if new.any() and not new.all() else None

    def _loss(self, weights: list[float], answers: list[list[Prediction]]) -> float:
        """The objective's loss for one candidate: ``answers[h][j]`` is query j's answer under
        hypothesis h (the candidate shown with label h), which has weight ``weights[h]``."""
        if any(a.probs is None for row in answers for a in row):  # regression: expected variance
            return float(sum(w * np.mean([a.variance for a in row]) for w, row in zip(weights, answers)))
        labels = sorted({y for row in answers for a in row for y in a.probs})
        if len(labels) < 2:  # nothing to compare: the answers carry no information
            return math.inf
        probs = np.array([[[a.probs.get(y, 0.0) for y in labels] for a in row] for row in answers])  # (h, q, L)
        totals = probs.sum(axis=2, keepdims=True)
        probs = np.divide(probs, totals, out=np.full_like(probs, 1.0 / len(labels)), where=totals > 0)
        if self.calibration == "batch" and probs.shape[1] > 1:
            probs = np.stack([batch_calibrate(p) for p in probs])
        w = np.asarray(weights, dtype=float)
        return float(objective_loss(self._objective(probs.shape[1]), probs, w))

    def _objective(self, queries: int) -> str:
        """The objective in use: mutual information over one query is always 0, so with one query
        (per-query SAL) ``"mi"`` scores by entropy, as the paper does."""
        return "entropy" if self.objective == "mi" and queries < 2 else self.objective

    def _hypotheses(self, prediction: Prediction) -> list[tuple[str, float]]:
        """(label, weight) pairs to simulate: labels with non-negligible mass, or the samples."""
        if prediction.probs is None:
            return [(f"{v:g}", 1.0 / len(prediction.samples)) for v in prediction.samples]
        kept = {y: p for y, p in prediction.probs.items() if p >= self.min_label_prob}
        if not kept:
            kept = dict([max(prediction.probs.items(), key=lambda item: item[1])])
        total = sum(kept.values())
        return [(y, p / total) for y, p in sorted(kept.items())]
