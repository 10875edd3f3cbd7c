"""Selectors that consult the LLM on labelled data: demos chosen by what the LLM does with them,
not by embedding geometry alone (issue 18; background in shared/docs/llm-feedback-selection.md).

Each reads the pool's labels and needs an LLM (``model``: anything with ``predict_many``, as SAL's),
and says so with an InputError before any LLM call. *Probes* are labelled pool examples held out
as a validation set: drawn by the seed, label-stratified (the first probes cover the labels in
proportion, so a round that reads only a few is still stratified), never a demo candidate, and
never the last ceil(k / #labels) examples of a label (a label-balanced set still finds them). A
demo set is scored on probes by :func:`fewshot.valuation.gold_scores` (``metric``: gold-label
log-likelihood, after batch calibration, or accuracy), each prompt showing the demos in
:func:`~fewshot.prompts.prompt_order`, as the final prompt does.

- ``valsearch`` (:class:`ValidationSearch`): candidate shared sets from generators (random, GO,
  k-means, vote-k, and random sets from the top-valued examples), scored on the probes by
  successive halving within ``budget`` prompts; the best set wins.
- ``random-search`` (:class:`RandomSearch`): the DSPy recipe (BootstrapFewShotWithRandomSearch
  without bootstrapping), the best of N random sets on the same probes, at the same budget: the
  control every LLM-feedback selector must beat at equal selection calls.
- ``excess-loss`` (:class:`ExcessLoss`): candidates ranked by the target LLM's loss on their own
  gold label minus a reference model's (RHO-LOSS), among the relevant ones.
- ``valued`` (:class:`Valued`): data valuation (:mod:`fewshot.valuation`) prunes the lowest-valued
  examples, then an inner selector (kNN, GO, ...) picks from the rest.
- ``sal-probes`` (:class:`SALProbes`): SAL's greedy rounds, each candidate scored with the probes'
  real labels instead of simulated ones.

Costs: ``info["prompts"]`` counts the predictions each selection asked for (the LLM client may
answer some from its cache), ``info["labels_read"]`` the distinct pool examples whose labels the
method used (demos shown in any prompt, probes, the reference classifier's training labels), and
``info["held_out"]`` the pool examples it kept out of the demos (probes, pruned examples). A shared
set asked for per query is every query's selection; its costs are on the first one only.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, Sequence

import numpy as np

from ..errors import InputError
from ..models import Prediction, PredictiveModel
from ..similarity import nearest, top_k
from ..valuation import (ESTIMATORS, EPS, METRICS, Valuation, ask_in_prefix_order, check_labels, check_model,
                         gold_scores, json_number, shown_demos)
from .base import Feasibility, Problem, Selection, Selector, StaticGains, check_k
from .params import FLAG, SEED, SHORTLIST, HasMethods, Interval, Options, Text
from .sal import SAL

GENERATORS = ("random", "go", "kmeans", "votek", "valued")
GO_NOISE = (1.0, 0.1, 0.01)  # the "go" generator's successive sets: centred V-optimal GO at these noises
VOTEK_NEIGHBORS = (15, 10, 25)
TOP_VALUED = 0.25  # the "valued" generator draws from this top fraction of the valued examples
REFERENCE_LLM = "smollm2-135m"  # excess-loss's reference="llm": the model opened when none is given
OUTSIDE = -10.0  # excess-loss: score offset of an example outside the shortlist (picked only as a fallback)
MODEL = [HasMethods("predict_many"), None]
PROMPTS = [Interval(int, 1, None)]
DIGITS = 6  # decimals of the losses and values in a trace (info's numbers stay unrounded)


class NameList:
    """A constraint: a comma-separated, non-empty list of names from ``options``."""

    def __init__(self, *options: str) -> None:
        self.options = options

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value) and all(v in self.options for v in value.split(","))

    def __str__(self) -> str:
        return "a comma-separated list of " + ", ".join(repr(o) for o in self.options)


# -- probes ----------------------------------------------------------------------------------

def draw_probes(labels: Sequence[str], count: int, seed: int, reserve: int = 0) -> np.ndarray:
    """``count`` probe indices in the order successive halving reads them: label-stratified
    (systematic sampling per label with a seeded phase, so every prefix covers the labels in
    proportion), never one of the last ``reserve`` examples of a label in that order.

    >>> labels = ["a"] * 6 + ["b"] * 2
    >>> probes = draw_probes(labels, 4, seed=0, reserve=1)
    >>> len(probes), sum(labels[i] == "b" for i in probes)
    (4, 1)
    >>> draw_probes(labels, 4, seed=0, reserve=1).tolist() == probes.tolist()
    True
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray([str(y) for y in labels], dtype=object)
    position, rank, size = np.empty(len(labels)), np.empty(len(labels), dtype=np.int64), np.empty(len(labels), dtype=np.int64)
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        position[members] = (np.arange(len(members)) + rng.random()) / len(members)
        rank[members], size[members] = np.arange(len(members)), len(members)
    order = np.argsort(position, kind="stable")
    eligible = rank[order] < size[order] - reserve
    return order[eligible][:count]


def hold_out_probes(labels: Sequence[str], wanted: int, k: int, seed: int) -> np.ndarray:
    """The probes of a pool: at most ``wanted``, half the pool and all but k; each label keeps
    ceil(k / #labels) examples for the demos."""
    n = len(labels)
    count = min(wanted, n // 2, n - k)
    probes = draw_probes(labels, count, seed, reserve=math.ceil(k / len(set(labels)))) if count > 0 else np.zeros(0, int)
    if len(probes) == 0:
        raise InputError(f"a pool of {n} examples leaves no probe beside k={k} demos: give a larger pool")
    return probes


def _texts(problem: Problem, method: str) -> None:
    if not problem.pool_texts:
        raise InputError(f"{method} prompts the LLM with the pool's texts: the problem has none")


def _subproblem(problem: Problem, keep: np.ndarray) -> Problem:
    from ..pipeline import restrict  # lazily: the pipeline imports the selectors

    return restrict(problem, keep)


def _remapped(selection: Selection, keep: np.ndarray) -> Selection:
    from ..pipeline import remap  # lazily: the pipeline imports the selectors

    return remap(selection, keep)


class ProbeScorer:
    """Demo sets (pool indices, pick order) scored on the probes; every (set, probe) prompt is asked
    once, and a set's score is the mean over the probes it has been asked so far (in probe order,
    so sets compared at one count saw the same probes)."""

    def __init__(self, model: PredictiveModel, problem: Problem, labels: Sequence[str], probes: np.ndarray,
                 metric: str) -> None:
        self.model, self.texts, self.labels, self.metric = model, problem.pool_texts, labels, metric
        self.probes = [int(q) for q in probes]
        self.golds = [labels[q] for q in self.probes]
        self.answers: dict[tuple[int, ...], list[Prediction]] = {}
        self.prompts = 0

    def extend(self, sets: Sequence[tuple[int, ...]], upto: int) -> int:
        """Ask each set the probes it has not been asked among the first ``upto``; returns the prompts."""
        todo = [(s, j) for s in sets for j in range(len(self.answers.get(s, ())), upto)]
        jobs = [(shown_demos(self.texts, self.labels, s), self.texts[self.probes[j]]) for s, j in todo]
        for (s, _), answer in zip(todo, ask_in_prefix_order(self.model, jobs, [s for s, _ in todo])):
            if answer.probs is None:
                raise InputError("the model answered with sampled numbers, not label probabilities: probe "
                                 "scores need a classification task")
            self.answers.setdefault(s, []).append(answer)
        self.prompts += len(jobs)
        return len(jobs)

    def score(self, picks: tuple[int, ...]) -> float:
        answers = self.answers.get(picks, [])
        return float(np.mean(gold_scores(answers, self.golds[:len(answers)], self.metric))) if answers else -math.inf

    def used(self) -> set[int]:
        """Pool examples whose labels the asked prompts read: demos shown and probes answered."""
        deepest = max((len(a) for a in self.answers.values()), default=0)
        return {i for s in self.answers for i in s} | set(self.probes[:deepest])


# -- successive halving over candidate sets ---------------------------------------------------

def halving_schedule(candidates: int, probes: int, budget: int, eta: int | None) -> list[tuple[int, int]]:
    """``[(candidates alive, probes each has answered)]`` per round, within ``budget`` prompts.

    ``eta=None``: one round, every candidate on the same probes (best-of-N). Else successive
    halving: round r keeps the best ceil(N / eta^r), rounds until at most eta are left; each round
    spends an equal share of what is left, on probes the survivors have not answered.

    >>> halving_schedule(32, 60, 960, 3)
    [(32, 7), (11, 29), (4, 60), (2, 60)]
    >>> halving_schedule(16, 60, 960, None)
    [(16, 60)]
    >>> halving_schedule(32, 60, 50, 3)
    Traceback (most recent call last):
    ...
    fewshot.errors.InputError: budget=50 prompts cannot ask each of 32 candidate sets one probe (needs at least 128 with 4 rounds)
    """
    rounds = 1 if eta is None or candidates <= eta else math.ceil(math.log(candidates, eta) - 1e-9)
    if budget // rounds < candidates:
        raise InputError(f"budget={budget} prompts cannot ask each of {candidates} candidate sets one probe "
                         f"(needs at least {candidates * rounds} with {rounds} round{'s' * (rounds > 1)})")
    schedule, spent, have = [], 0, 0
    for r in range(rounds):
        alive = candidates if eta is None else math.ceil(candidates / eta ** r)
        share = (budget - spent) // (rounds - r)
        upto = min(probes, have + share // alive)
        spent += alive * (upto - have)
        schedule.append((alive, upto))
        have = upto
    return schedule


@dataclass
class _Candidate:
    generator: str
    attempt: int
    selection: Selection  # pool indices

    @property
    def picks(self) -> tuple[int, ...]:
        return self.selection.indices


def generate_sets(problem: Problem, k: int, names: Sequence[str], count: int, seed: int, label_balance: bool,
                  values: np.ndarray | None = None) -> list[_Candidate]:
    """Up to ``count`` distinct feasible sets from the generators, taken in turn (each through its
    selector's greedy driver: token budget and label balance hold). A generator that repeats a set
    it or another made three times running, or has no further variant, stops. ``values`` (one per
    pool example) feed the ``"valued"`` generator."""
    from . import make_selector  # lazily: the registry imports this module

    def make(name: str, attempt: int) -> Selection | None:
        context = {"label_balance": label_balance}
        if name in ("random", "kmeans"):
            return make_selector(name, seed=(seed + attempt) % 2 ** 32, **context).select(problem, k)
        if name == "go":
            if attempt >= len(GO_NOISE):
                return None
            return make_selector("go", objective="v", center=True, noise=GO_NOISE[attempt], **context).select(problem, k)
        if name == "votek":
            if attempt >= len(VOTEK_NEIGHBORS):
                return None
            return make_selector("votek", neighbors=VOTEK_NEIGHBORS[attempt], **context).select(problem, k)
        top = _top_valued(values, problem.labels, k)
        chosen = make_selector("random", seed=(seed + attempt) % 2 ** 32, **context).select(_subproblem(problem, top), k)
        return _remapped(chosen, top)

    found: list[_Candidate] = []
    seen: set[tuple[int, ...]] = set()
    attempts, misses, active = dict.fromkeys(names, 0), dict.fromkeys(names, 0), list(dict.fromkeys(names))
    while len(found) < count and active:
        for name in list(active):
            if len(found) >= count:
                break
            selection = make(name, attempts[name])
            attempts[name] += 1
            key = None if selection is None else tuple(sorted(selection.indices))
            if key is None or not key or key in seen:
                misses[name] += 1
                if key is None or misses[name] >= 3:
                    active.remove(name)
                continue
            misses[name] = 0
            seen.add(key)
            found.append(_Candidate(name, attempts[name] - 1, selection))
    return found


def _top_valued(values: np.ndarray | None, labels: Sequence[str] | None, k: int) -> np.ndarray:
    """The top ``TOP_VALUED`` fraction by value, plus each label's ceil(k / #labels) best.

    >>> _top_valued(np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, -1.0]), list("aaaaaaab"), 2).tolist()
    [0, 1, 7]
    """
    if values is None or labels is None:
        raise InputError("the 'valued' generator needs the pool's values")
    order = np.lexsort((np.arange(len(values)), -np.nan_to_num(values, nan=-np.inf)))
    keep = set(order[:max(k, math.ceil(TOP_VALUED * len(values)))].tolist())
    cap = math.ceil(k / len(set(labels)))
    for label in set(labels):
        keep.update([int(i) for i in order if labels[i] == label][:cap])
    return np.array(sorted(keep))


class _ProbeSearch(Selector):
    """Shared by valsearch and random-search: hold out probes, generate candidate shared sets from
    the rest, score them within the budget, return the best (its picks in its generator's order)."""

    needs_labels: ClassVar[bool] = True
    needs_model: ClassVar[bool] = True
    model: PredictiveModel | None
    probes: int
    budget: int
    metric: str
    seed: int

    def _names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _count(self, probes: int) -> int:
        raise NotImplementedError

    def _eta(self) -> int | None:
        raise NotImplementedError

    def _values(self, problem: Problem, labels: list[str], k: int) -> tuple[np.ndarray | None, dict[str, Any]]:
        """Values of the whole pool's examples for the ``"valued"`` generator (None: not used)."""
        return None, {}

    def select(self, problem: Problem, k: int) -> Selection:
        check_k(problem, k)
        labels = check_labels(problem.labels, self.name)
        check_model(self.model, self.name)
        _texts(problem, self.name)
        probes = hold_out_probes(labels, self.probes, k, self.seed)
        halving_schedule(self._count(len(probes)), len(probes), self.budget, self._eta())  # a budget too small fails here
        keep = np.setdiff1d(np.arange(problem.n), probes)
        sub = _subproblem(problem, keep)
        values, valuation = self._values(problem, labels, k)
        found = generate_sets(sub, k, self._names(), self._count(len(probes)), self.seed, self.label_balance,
                              None if values is None else values[keep])
        if not found:
            raise InputError(f"{self.name}: the generators made no demo set (is the pool large enough beside the probes?)")
        candidates = [_Candidate(c.generator, c.attempt, _remapped(c.selection, keep)) for c in found]
        schedule = halving_schedule(len(candidates), len(probes), self.budget, self._eta())
        scorer = ProbeScorer(self.model, problem, labels, probes, self.metric)
        alive, history, rounds = list(range(len(candidates))), [[] for _ in candidates], []
        scores = [-math.inf] * len(candidates)
        for r, (survivors, upto) in enumerate(schedule):
            alive = alive[:survivors]
            spent = scorer.extend([candidates[i].picks for i in alive], upto)
            for i in alive:
                scores[i] = scorer.score(candidates[i].picks)
                history[i].append(scores[i])
            alive.sort(key=lambda i: -scores[i])  # stable: ties keep the earlier candidate
            rounds.append({"round": r, "candidates": len(alive), "probes": upto, "prompts": spent})
        win, second = alive[0], (alive[1] if len(alive) > 1 else None)
        # labels read: every demo shown and probe answered; a valuation reads every label
        read = scorer.used() | (set(range(problem.n)) if values is not None else set())
        info = {"prompts": scorer.prompts, "labels_read": len(read),
                "probes": [int(q) for q in probes[:max(upto for _, upto in schedule)]],
                "held_out": [int(q) for q in probes], "budget": self.budget, "metric": self.metric, "rounds": rounds,
                "candidates": [{"set": list(c.picks), "generator": c.generator, "attempt": c.attempt,
                                "score": scores[i], "round": len(history[i]) - 1, "scores": history[i],
                                "prompts": len(scorer.answers.get(c.picks, ()))} for i, c in enumerate(candidates)],
                **valuation}
        return _whole_set(candidates[win].selection, scores[win], candidates[win].generator,
                          None if second is None else candidates[second].selection,
                          None if second is None else scores[second], labels, info)

    def select_per_query(self, problem: Problem, k: int) -> list[Selection]:
        return _for_every_query(self.select(problem, k), problem.m)


def _whole_set(winner: Selection, score: float, generator: str, runner_up: Selection | None,
               runner_up_score: float | None, labels: Sequence[str], info: dict[str, Any]) -> Selection:
    """A set chosen as a whole: every pick scores the set's score; the runner-up is the best other
    set (its pick at the same step)."""
    trace = []
    for step, index in enumerate(winner.indices):
        other = runner_up.indices[step] if runner_up is not None and step < len(runner_up.indices) else None
        trace.append({"step": step + 1, "index": int(index), "score": score, "label": labels[index],
                      "generator": generator, "runner_up": other,
                      "runner_up_score": runner_up_score if runner_up is not None else None})
    return Selection(winner.indices, (score,) * len(winner.indices), tuple(trace), stopped=winner.stopped, info=info)


def _for_every_query(shared: Selection, m: int) -> list[Selection]:
    """A shared selection as every query's; costs on the first only."""
    rest = {"prompts": 0, "labels_read": 0, "same_as_query": 0}
    return [replace(shared, query=j, info=shared.info if j == 0 else dict(rest)) for j in range(m)]


class ValidationSearch(_ProbeSearch):
    """Validation search: candidate shared sets from generators, scored by the LLM on held-out
    labelled probes with successive halving within ``budget`` prompts (needs labels and an LLM).

    ``generators`` (comma-separated, taken in turn until ``candidates`` distinct sets): ``random``
    (seeded), ``go`` (centred V-optimal GO at noise 1, 0.1, 0.01), ``kmeans`` (seeded), ``votek``
    (15, 10, 25 neighbours), ``valued`` (random sets from the top quarter of the non-probe
    examples by :mod:`fewshot.valuation` of the whole pool, ``valuation_budget`` prompts once per
    pool and model, stored and shared with ``valued``'s). ``eta``: the halving rate. The selection's ``info`` lists every
    candidate with its generator, probe score, last round and prompts, and the rounds.
    """

    name: ClassVar[str] = "valsearch"
    parameter_constraints: ClassVar[dict] = {
        "model": MODEL, "candidates": [Interval(int, 2, None)], "generators": [NameList(*GENERATORS)],
        "probes": PROMPTS, "budget": PROMPTS, "eta": [Interval(int, 2, None)], "metric": [Options(*METRICS)],
        "valuation_budget": PROMPTS, "seed": SEED, "label_balance": FLAG}

    def __init__(self, model: PredictiveModel | None = None, candidates: int = 32,
                 generators: str = "go,kmeans,votek,random", probes: int = 60, budget: int = 960, eta: int = 3,
                 metric: Literal["loglik", "calibrated", "accuracy"] = "loglik", valuation_budget: int = 2400,
                 seed: int = 0, label_balance: bool = False) -> None:
        self.model, self.candidates, self.generators, self.probes = model, candidates, generators, probes
        self.budget, self.eta, self.metric, self.valuation_budget = budget, eta, metric, valuation_budget
        self.seed, self.label_balance = seed, label_balance

    def _names(self) -> tuple[str, ...]:
        return tuple(self.generators.split(","))

    def _count(self, probes: int) -> int:
        return self.candidates

    def _eta(self) -> int | None:
        return self.eta

    def _values(self, problem: Problem, labels: list[str], k: int) -> tuple[np.ndarray | None, dict[str, Any]]:
        if "valued" not in self._names():
            return None, {}
        # the whole pool's valuation, as `valued` computes it (same plan: one computation, stored, for both)
        values = Valuation(self.model, k=k, budget=self.valuation_budget, seed=self.seed).run(problem.pool_texts, labels)
        return values.marginal, {"valuation_prompts": values.prompts, "valuation_asked": values.asked,
                                 "valuation_reliability": json_number(values.reliability)}


class RandomSearch(_ProbeSearch):
    """Random search, the DSPy recipe without bootstrapping: the best of ``candidates`` seeded random
    shared sets on held-out labelled probes (``None``: as many as the budget asks every probe),
    every set on the same probes (needs labels and an LLM)."""

    name: ClassVar[str] = "random-search"
    parameter_constraints: ClassVar[dict] = {
        "model": MODEL, "candidates": [Interval(int, 2, None), None], "probes": PROMPTS, "budget": PROMPTS,
        "metric": [Options(*METRICS)], "seed": SEED, "label_balance": FLAG}

    def __init__(self, model: PredictiveModel | None = None, candidates: int | None = None, probes: int = 60,
                 budget: int = 960, metric: Literal["loglik", "calibrated", "accuracy"] = "accuracy", seed: int = 0,
                 label_balance: bool = False) -> None:
        self.model, self.candidates, self.probes, self.budget = model, candidates, probes, budget
        self.metric, self.seed, self.label_balance = metric, seed, label_balance

    def _names(self) -> tuple[str, ...]:
        return ("random",)

    def _count(self, probes: int) -> int:
        return self.candidates if self.candidates is not None else max(2, self.budget // probes)

    def _eta(self) -> int | None:
        return None


# -- excess loss -------------------------------------------------------------------------------

def reference_losses(vectors: np.ndarray, labels: Sequence[str], folds: int = 5, seed: int = 0) -> np.ndarray:
    """-log p(gold) under a cross-fitted logistic regression on the embeddings: each example is
    predicted by a model fitted on the other folds (``folds``, fewer when a label has fewer
    examples; stratified and shuffled by ``seed``), so the loss says how predictable its label is
    from its neighbourhood, not whether the classifier memorised it. One label: all 0."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

    classes, y = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    if len(classes) < 2 or len(y) < 4:
        return np.zeros(len(y))
    fewest = int(np.bincount(y).min())
    splits = max(2, min(folds, fewest, len(y) // 2))
    cv = (StratifiedKFold if fewest >= splits else KFold)(n_splits=splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a fold without some label: sklearn warns, its probability is 0
        warnings.simplefilter("ignore")
        proba = cross_val_predict(LogisticRegression(max_iter=1000), np.asarray(vectors, dtype=float), y, cv=cv,
                                  method="predict_proba")
    return -np.log(np.maximum(proba[np.arange(len(y)), y], EPS))


@dataclass(frozen=True)
class ExcessScores:
    """Per pool example (NaN where not scored): the target LLM's loss on its own gold label, the
    reference's, the excess (target minus reference), and whether it is suspected label noise."""

    target: np.ndarray
    reference: np.ndarray
    excess: np.ndarray
    noise: np.ndarray
    context: tuple[int, ...]
    prompts: int  # the target's and the reference LLM's
    reference_prompts: int = 0

    def rankable(self) -> np.ndarray:
        """The excess with suspected noise and unscored examples below every other one."""
        usable = np.isfinite(self.excess) & ~self.noise
        floor = self.excess[usable].min() - 1.0 if usable.any() else 0.0
        return np.where(usable, self.excess, floor)


def _percentiles(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Each ``inside`` entry's rank among its row's inside entries scaled to [0, 1] (1: the largest;
    ties: the lower column ranks lower); 0 outside.

    >>> _percentiles(np.array([[3.0, 1.0, 2.0, 9.0]]), np.array([[True, True, True, False]])).tolist()
    [[1.0, 0.0, 0.5, 0.0]]
    """
    width = values.shape[1]
    order = np.argsort(np.where(inside, values, -np.inf), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(width), order.shape), axis=1)
    count = inside.sum(axis=1, keepdims=True)
    return np.where(inside, (ranks - (width - count)) / np.maximum(count - 1, 1), 0.0)


class _Ranked(StaticGains):
    """excess-loss's scores in the greedy driver (token budget, label balance, trace). Every row
    holds the whole pool: an example outside the row's shortlist scores ``OUTSIDE`` plus its
    cosine, so it is picked only when no shortlisted one is feasible (most relevant first).
    Built per selection (no ``__init__``: its attributes are set by :class:`ExcessLoss`)."""

    shortlist = None
    rankable: np.ndarray  # (n,) excess, noise lowest
    weight: float
    size: int  # per query: the shortlist size
    shared: np.ndarray | None  # (n,) shared mode: minus the GO pick position, -inf outside the shortlist

    def _start(self, problem, candidates, queries, k):
        if queries is None:
            cos = (problem.pool @ problem.queries.mean(axis=0))[candidates]
            relevance = self.shared[candidates]
            inside = np.isfinite(relevance)
        else:
            cos = np.take_along_axis(problem.queries[queries] @ problem.pool.T, candidates, axis=1)
            relevance = cos
            inside = np.zeros(candidates.shape, dtype=bool)
            np.put_along_axis(inside, top_k(cos, self.size), True, axis=1)
        score = _percentiles(relevance, inside) + self.weight * _percentiles(self.rankable[candidates], inside)
        return np.where(inside, score, OUTSIDE + cos)


class ExcessLoss(Selector):
    """Excess loss (RHO-LOSS / Rho-1 for demos): prefer relevant examples the target LLM gets wrong
    although their label is predictable (needs labels and an LLM).

    Target loss: -log p(gold) of the LLM answering the example itself, zero-shot (``context=0``)
    or after a fixed label-balanced random context of ``context`` pool examples (a context member
    is scored without itself); ``calibration="batch"`` divides out the model's label prior over
    all scored examples first (else a small model's bias against one label makes every example
    of that label "hard"). Reference loss (``reference="logreg"``): a cross-fitted logistic
    regression on the embeddings (:func:`reference_losses`); ``"llm"``: a second, usually smaller,
    LLM (``reference_model``, anything with ``predict_many``) answering the same prompts, scored
    the same way (RHO-LOSS's small reference model; ``fewshot select`` and ``fewshot eval`` open
    the model named ``reference_llm``, on the same endpoint or a local llama-server); ``"none"``: 0,
    i.e. target loss alone (the ICR / misconfidence ablation). Excess = target - reference.

    The rule, one for both modes: among the shortlist (per query: the ``shortlist`` most similar
    examples; shared: the first ``shortlist`` picks of centred V-optimal GO, relevant to the queries
    and unlike each other), score = relevance percentile + ``weight`` x excess percentile, both
    ranks within the shortlist scaled to [0, 1] (per query relevance is the cosine, shared the GO
    pick order). ``weight=0`` is kNN (GO) order; a negative weight prefers easy examples. Only
    shortlisted examples cost an LLM prompt (one each, once per selection).

    Label noise: a very high excess can be a mislabelled example, but then the reference, which
    sees the label's neighbourhood, usually has a high loss too (RHO-LOSS's triage). As a guard,
    the ``noise_quantile`` fraction of the pool with the highest reference loss is treated as
    suspected noise and ranked below every other excess (still pickable, last); so are examples
    the scorer could not score (with ``reference="llm"``: the fraction of the scored examples with the
    highest reference loss). With ``reference="none"`` nothing is flagged.
    """

    name: ClassVar[str] = "excess-loss"
    needs_labels: ClassVar[bool] = True
    needs_model: ClassVar[bool] = True
    parameter_constraints: ClassVar[dict] = {
        "model": MODEL, "reference": [Options("logreg", "llm", "none")], "reference_model": MODEL,
        "reference_llm": [Text()], "weight": [Interval(float)],
        "shortlist": SHORTLIST, "context": [Interval(int, 0, None)], "calibration": [Options("none", "batch")],
        "noise_quantile": [Interval(float, 0, 1, closed="left")], "folds": [Interval(int, 2, None)],
        "seed": SEED, "label_balance": FLAG}
    parameter_hints: ClassVar[dict[str, str]] = {
        "reference_model": "to name the reference LLM, give reference=llm reference_llm=NAME"}

    def __init__(self, model: PredictiveModel | None = None,
                 reference: Literal["logreg", "llm", "none"] = "logreg", reference_model: PredictiveModel | None = None,
                 reference_llm: str = REFERENCE_LLM, weight: float = 1.0, shortlist: int | None = 20, context: int = 0,
                 calibration: Literal["none", "batch"] = "batch", noise_quantile: float = 0.1, folds: int = 5,
                 seed: int = 0, label_balance: bool = False) -> None:
        self.model, self.reference, self.weight, self.shortlist = model, reference, weight, shortlist
        self.reference_model, self.reference_llm = reference_model, reference_llm
        self.context, self.calibration, self.noise_quantile, self.folds = context, calibration, noise_quantile, folds
        self.seed, self.label_balance = seed, label_balance

    def scores(self, problem: Problem, candidates: Sequence[int] | None = None) -> ExcessScores:
        """Target, reference and excess losses of ``candidates`` (default: the whole pool), one
        LLM prompt each."""
        labels = check_labels(problem.labels, self.name)
        self._check_models()
        _texts(problem, self.name)
        n = problem.n
        scored = np.arange(n) if candidates is None else np.unique(np.asarray(candidates, dtype=np.int64))
        context: tuple[int, ...] = ()
        if self.context:
            from . import make_selector

            plain = replace(problem, max_tokens=None)
            context = make_selector("random", seed=self.seed, label_balance=True).select(plain, min(self.context, n - 1)).indices
        jobs = [(shown_demos(problem.pool_texts, labels, [c for c in context if c != i]), problem.pool_texts[i])
                for i in scored]
        gold = [labels[i] for i in scored]
        target = self._losses(self.model, jobs, gold, scored, n)
        noise = np.zeros(n, dtype=bool)
        if self.reference == "llm":
            reference = self._losses(self.reference_model, jobs, gold, scored, n)
            seen = np.isfinite(reference)
            if self.noise_quantile > 0 and seen.any():
                noise = seen & (np.nan_to_num(reference, nan=-np.inf)
                                > np.quantile(reference[seen], 1 - self.noise_quantile))
        elif self.reference == "logreg":
            reference = reference_losses(problem.pool, labels, self.folds, self.seed)
            if self.noise_quantile > 0:
                noise = reference > np.quantile(reference, 1 - self.noise_quantile)
        else:
            reference = np.zeros(n)
        asked = len(jobs) if self.reference == "llm" else 0
        return ExcessScores(target, reference, target - reference, noise, tuple(int(c) for c in context),
                            len(jobs) + asked, asked)

    def _check_models(self) -> None:
        check_model(self.model, self.name)
        if self.reference != "llm" and (self.reference_model is not None or self.reference_llm != REFERENCE_LLM):
            given = "reference_model" if self.reference_model is not None else f"reference_llm={self.reference_llm!r}"
            raise InputError(f"{self.name}: {given} is a reference LLM, used only with reference='llm' (this one "
                             f"has reference={self.reference!r})", field="reference")
        if self.reference == "llm":
            if self.reference_model is None:
                raise InputError(f"{self.name} with reference='llm' needs a reference LLM (reference_model=...); "
                                 f"fewshot select and fewshot eval open the one named reference_llm "
                                 f"({self.reference_llm!r})", field="reference_model")
            check_model(self.reference_model, f"{self.name}'s reference")

    def _losses(self, model: PredictiveModel, jobs: list, gold: list[str], scored: np.ndarray, n: int) -> np.ndarray:
        """-log p(gold) of ``model`` on each job (batch-calibrated as ``calibration`` says), NaN
        where it could not score or an example was not scored."""
        answers = model.predict_many(jobs)
        losses = -gold_scores(answers, gold, "calibrated" if self.calibration == "batch" else "loglik")
        unscored = np.array([bool(getattr(a, "unscored", False)) or not a.probs for a in answers], dtype=bool)
        out = np.full(n, np.nan)
        out[scored] = np.where(unscored, np.nan, losses)
        return out

    def _size(self, n: int, k: int) -> int:
        return n if self.shortlist is None else min(n, max(self.shortlist, k))

    def _ranked(self, scores: ExcessScores, size: int, shared: np.ndarray | None = None) -> _Ranked:
        ranked = _Ranked()
        ranked.label_balance, ranked.rankable, ranked.weight = self.label_balance, scores.rankable(), self.weight
        ranked.size, ranked.shared = size, shared
        return ranked

    def select(self, problem: Problem, k: int) -> Selection:
        check_k(problem, k)
        check_labels(problem.labels, self.name)
        self._check_models()
        from .design import GO

        size = self._size(problem.n, k)
        order = GO(objective="v", center=True, noise=GO_NOISE[0]).select(replace(problem, max_tokens=None), size).indices
        scores = self.scores(problem, order)
        shared = np.full(problem.n, -np.inf)
        shared[list(order)] = -np.arange(len(order), dtype=float)
        selection = self._ranked(scores, size, shared).select(problem, k)
        return self._explained(selection, scores, problem, len(order))

    def select_per_query(self, problem: Problem, k: int) -> list[Selection]:
        check_k(problem, k)
        check_labels(problem.labels, self.name)
        self._check_models()
        size = self._size(problem.n, k)
        shortlists, _ = nearest(problem.queries, problem.pool, size)
        scores = self.scores(problem, np.unique(shortlists))
        selections = self._ranked(scores, size).select_per_query(problem, k)
        first = self._explained(selections[0], scores, problem, len(np.unique(shortlists)))
        return [first] + [replace(self._explained(s, scores, problem, 0), info={"prompts": 0, "labels_read": 0})
                          for s in selections[1:]]

    def _explained(self, selection: Selection, scores: ExcessScores, problem: Problem, scored: int) -> Selection:
        trace = tuple({**t, "label": problem.labels[t["index"]],
                       "target_loss": json_number(scores.target[t["index"]], DIGITS),
                       "reference_loss": json_number(scores.reference[t["index"]], DIGITS),
                       "excess": json_number(scores.excess[t["index"]], DIGITS),
                       "suspected_noise": bool(scores.noise[t["index"]])} for t in selection.trace)
        read = problem.n if self.reference == "logreg" else scored + len(scores.context)
        info = {"prompts": scores.prompts, "labels_read": read, "scored": scored, "context": list(scores.context),
                "suspected_noise": int(scores.noise.sum())}
        if self.reference == "llm":
            info["reference_prompts"] = scores.reference_prompts
        return replace(selection, trace=trace, info=info)


# -- valuation-pruned retrieval ------------------------------------------------------------------

INNER = ("knn", "go", "mmr", "dpp", "bm25", "random", "kmeans", "votek")


def lowest_valued(values: np.ndarray, labels: Sequence[str], fraction: float, k: int) -> np.ndarray:
    """The ``floor(fraction x valued)`` lowest-valued examples (ties: the lower index), never an
    unvalued one (NaN: unknown is not harmful), never one of a label's ceil(k / #labels) best
    valued (label balance stays possible), and leaving at least k.

    >>> lowest_valued(np.array([0.5, -1.0, 0.2, np.nan, -0.5, 0.1]), ["a", "a", "a", "b", "b", "b"], 0.5, 2).tolist()
    [1, 4]
    >>> lowest_valued(np.array([0.0, 0.0, 0.0, 1.0]), ["a", "a", "a", "a"], 0.5, 1).tolist()  # ties: lower index first
    [0, 1]
    """
    values = np.asarray(values, dtype=float)
    valued = np.flatnonzero(np.isfinite(values))
    count = min(math.floor(fraction * len(valued)), len(values) - k)
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    best_first = valued[np.lexsort((valued, -values[valued]))]
    cap = math.ceil(k / len(set(labels)))
    protected = {label: [int(i) for i in best_first if labels[i] == label][:cap] for label in set(labels)}
    spare = {i for kept in protected.values() for i in kept}
    worst_first = [int(i) for i in valued[np.lexsort((valued, values[valued]))] if int(i) not in spare]
    return np.sort(np.array(worst_first[:count], dtype=np.int64))


class Valued(Selector):
    """Valuation-pruned selection: drop the ``drop`` fraction of the pool with the lowest value as a
    demo (:mod:`fewshot.valuation`: ``budget`` prompts of random ``k``-sets on ``probes_per_set``
    probes, once per pool, model and template, kept on disk when ``cache``), then let ``inner``
    (kNN, GO, ... per query or shared) pick from the rest (needs labels and an LLM)."""

    name: ClassVar[str] = "valued"
    needs_labels: ClassVar[bool] = True
    needs_model: ClassVar[bool] = True
    parameter_constraints: ClassVar[dict] = {
        "model": MODEL, "inner": [Options(*INNER)], "drop": [Interval(float, 0, 1, closed="left")],
        "budget": PROMPTS, "probes_per_set": PROMPTS, "estimator": [Options(*ESTIMATORS)],
        "metric": [Options(*METRICS)], "cache": FLAG, "seed": SEED, "label_balance": FLAG}

    def __init__(self, model: PredictiveModel | None = None,
                 inner: Literal["knn", "go", "mmr", "dpp", "bm25", "random", "kmeans", "votek"] = "knn",
                 drop: float = 0.2, budget: int = 2400, probes_per_set: int = 6,
                 estimator: Literal["marginal", "datamodel"] = "marginal",
                 metric: Literal["loglik", "calibrated", "accuracy"] = "loglik", cache: bool = True, seed: int = 0,
                 label_balance: bool = False) -> None:
        self.model, self.inner, self.drop, self.budget, self.probes_per_set = model, inner, drop, budget, probes_per_set
        self.estimator, self.metric, self.cache, self.seed, self.label_balance = estimator, metric, cache, seed, label_balance

    def _prune(self, problem: Problem, k: int) -> tuple[Problem, np.ndarray, np.ndarray, dict[str, Any]]:
        check_k(problem, k)
        labels = check_labels(problem.labels, self.name)
        check_model(self.model, self.name)
        _texts(problem, self.name)
        values = Valuation(self.model, k=k, budget=self.budget, probes_per_set=self.probes_per_set, metric=self.metric,
                           seed=self.seed, cache=self.cache).run(problem.pool_texts, labels)
        value = values.get(self.estimator)
        dropped = lowest_valued(value, labels, self.drop, k)
        keep = np.setdiff1d(np.arange(problem.n), dropped)
        info = {"prompts": values.asked, "valuation_prompts": values.prompts, "labels_read": problem.n,
                "dropped": dropped.tolist(), "held_out": dropped.tolist(),
                "reliability": json_number(values.reliability), "estimator": self.estimator}
        return _subproblem(problem, keep), keep, value, info

    def _inner(self) -> Selector:
        from . import make_selector

        return make_selector(self.inner, seed=self.seed, label_balance=self.label_balance)

    @staticmethod
    def _valued(selection: Selection, keep: np.ndarray, value: np.ndarray, info: dict[str, Any]) -> Selection:
        selection = _remapped(selection, keep)
        trace = tuple({**t, "value": json_number(value[t["index"]], DIGITS)} for t in selection.trace)
        return replace(selection, trace=trace, info=info)

    def select(self, problem: Problem, k: int) -> Selection:
        sub, keep, value, info = self._prune(problem, k)
        return self._valued(self._inner().select(sub, k), keep, value, info)

    def select_per_query(self, problem: Problem, k: int) -> list[Selection]:
        sub, keep, value, info = self._prune(problem, k)
        rest = {"prompts": 0, "labels_read": 0}
        return [self._valued(s, keep, value, info if j == 0 else dict(rest))
                for j, s in enumerate(self._inner().select_per_query(sub, k))]


# -- SAL scored on probes --------------------------------------------------------------------------

class SALProbes(Selector):
    """SAL on probes: SAL's greedy rounds and shortlist, each candidate scored by the LLM's answers
    on held-out labelled probes with the candidate added under its real label, instead of by
    simulated labels on the queries (needs labels and an LLM).

    Per round: the shortlist (GO's V-optimal greedy continued from the picks, relevant to a seeded
    sample of ``query_sample`` queries, as in SAL) and, for each candidate x, the set picks + x
    answered on the first ``min(probes, budget // (k x shortlist))`` probes; the best ``metric``
    wins. ``budget`` bounds the prompts of one selection (per query: of each query's). The query
    sample and the shortlists are a :class:`~fewshot.selection.sal.SAL`'s with the same
    ``shortlist``, ``query_sample``, ``ridge``, ``noise`` and ``seed`` (its public
    :meth:`~fewshot.selection.sal.SAL.sampled_queries` and
    :meth:`~fewshot.selection.sal.SAL.shortlist_candidates`); SAL's simulation is not used.
    """

    name: ClassVar[str] = "sal-probes"
    needs_labels: ClassVar[bool] = True
    needs_model: ClassVar[bool] = True
    parameter_constraints: ClassVar[dict] = {
        "model": MODEL, "shortlist": SHORTLIST, "query_sample": [Interval(int, 1, None), None],
        "probes": PROMPTS, "budget": PROMPTS, "metric": [Options(*METRICS)],
        "ridge": [Interval(float, 0, None, closed="neither")], "noise": [Interval(float, 0, None, closed="neither")],
        "seed": SEED, "label_balance": FLAG}

    def __init__(self, model: PredictiveModel | None = None, shortlist: int | None = 6, query_sample: int | None = 8,
                 probes: int = 20, budget: int = 480, metric: Literal["loglik", "calibrated", "accuracy"] = "loglik",
                 ridge: float = 1.0, noise: float = 0.1, seed: int = 0, label_balance: bool = False) -> None:
        self.model, self.shortlist, self.query_sample, self.probes = model, shortlist, query_sample, probes
        self.budget, self.metric, self.ridge, self.noise = budget, metric, ridge, noise
        self.seed, self.label_balance = seed, label_balance

    def _sal(self) -> SAL:
        """The SAL whose query sample and shortlists the rounds use (its LLM and oracle: none, it
        simulates nothing here)."""
        return SAL(shortlist=self.shortlist, query_sample=self.query_sample, ridge=self.ridge, noise=self.noise,
                   seed=self.seed, label_balance=self.label_balance)

    def select(self, problem: Problem, k: int) -> Selection:
        check_k(problem, k)
        sal = self._sal()
        return self._rounds(problem, k, sal, sal.sampled_queries(problem), None)

    def select_per_query(self, problem: Problem, k: int) -> list[Selection]:
        check_k(problem, k)
        sal = self._sal()
        return [self._rounds(problem, k, sal, np.array([j]), j) for j in range(problem.m)]

    def _rounds(self, problem: Problem, k: int, sal: SAL, sample: np.ndarray, query: int | None) -> Selection:
        labels = check_labels(problem.labels, self.name)
        check_model(self.model, self.name)
        _texts(problem, self.name)
        probes = hold_out_probes(labels, self.probes, k, self.seed)
        feasible = Feasibility(problem, np.arange(problem.n)[None, :], k, self.label_balance)
        feasible.open[0, probes] = False  # probes are never demos
        size = min(self.shortlist or problem.n, problem.n - len(probes))
        upto = min(len(probes), self.budget // (k * size))
        if upto < 1:
            raise InputError(f"budget={self.budget} prompts cannot ask {k} rounds of {size} candidates one probe each "
                             f"(needs at least {k * size})")
        scorer = ProbeScorer(self.model, problem, labels, probes, self.metric)
        chosen: list[int] = []
        scores: list[float] = []
        trace: list[dict[str, Any]] = []
        shortlisted: set[int] = set()
        for step in range(k):
            ok = feasible.mask()[0]
            if not ok.any():
                break
            shortlist = sal.shortlist_candidates(problem, sample, chosen, ok)
            shortlisted.update(int(x) for x in shortlist)
            sets = [tuple(chosen + [int(x)]) for x in shortlist]
            spent = scorer.extend(sets, upto)
            values = np.array([scorer.score(s) for s in sets])
            order = np.argsort(-values, kind="stable")  # ties: the lower pool index (the shortlist is sorted)
            pick, best = int(shortlist[order[0]]), float(values[order[0]])
            second = int(order[1]) if len(order) > 1 else None
            chosen.append(pick)
            scores.append(best)
            trace.append({"step": step + 1, "index": pick, "score": best, "label": labels[pick],
                          "runner_up": None if second is None else int(shortlist[second]),
                          "runner_up_score": None if second is None else float(values[second]),
                          "shortlist": [int(x) for x in shortlist], "prompts": spent, "probes": upto})
            feasible.take(np.array([0]), np.array([pick]))
        stopped = None if len(chosen) == k else feasible.stop_reason()
        info = {"prompts": scorer.prompts, "labels_read": len(scorer.used() | shortlisted),
                "probes": [int(q) for q in probes[:upto]], "held_out": [int(q) for q in probes],
                "queries_sampled": len(sample)}
        return Selection(tuple(chosen), tuple(scores), tuple(trace), query=query, stopped=stopped, info=info)
