"""The eval protocol, a thin layer over the library.

Per data set and seed: disjoint, seeded pool and test sets; each method picks demos from the pool
as if it were unlabeled (labels are revealed only for the demos it picks); the LLM answers every
test query with those demos (most important demo last); accuracy or mean squared error is
recorded. Rows: every method and budget, zero-shot, and an "oracle" that keeps the best of N
random demo sets by its score on the test labels (it peeks at test labels; per-query methods can beat it, so it is not an upper bound).

Each finished cell is appended to ``records.jsonl`` (and its answers to ``predictions.jsonl``) at
once, so an interrupted run resumes where it stopped; LLM answers come back from the cache.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..data import Example
from ..datasets import Dataset
from ..errors import InputError
from ..llm.client import LLMClient
from ..llm.predictor import LLMPredictor
from ..pipeline import build_problem
from ..prompts import Template
from ..selection import PER_QUERY_METHODS, SELECTORS, make_selector
from ..selection.base import Problem, Selector
from .suites import Suite



@dataclass(frozen=True)
class MethodSpec:
    """``go`` (its default mode), ``go:q`` (per query) or ``knn:s`` (one shared set).

    >>> MethodSpec.parse("knn").label, MethodSpec.parse("go").label, MethodSpec.parse("go:q").label
    ('knn:q', 'go:s', 'go:q')
    """

    name: str
    per_query: bool

    @classmethod
    def parse(cls, text: str) -> "MethodSpec":
        name, _, mode = text.strip().partition(":")
        if name not in SELECTORS:
            raise InputError(f"unknown method {name!r} (known: {', '.join(SELECTORS)})", field="methods")
        if mode not in ("", "q", "s"):
            raise InputError(f"method mode must be ':q' (per query) or ':s' (shared), got {text!r}", field="methods")
        return cls(name, mode == "q" or (mode == "" and name in PER_QUERY_METHODS))

    @property
    def label(self) -> str:
        return f"{self.name}:{'q' if self.per_query else 's'}"


def split(dataset: Dataset, pool_size: int, test_size: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Disjoint, seeded pool and test sets (the data set is already deduplicated)."""
    n = len(dataset.examples)
    if pool_size + test_size > n:
        raise InputError(f"{dataset.name} has {n} distinct examples: too few for pool {pool_size} + test {test_size}")
    order = np.random.default_rng(seed).permutation(n)
    pool = [dataset.examples[i] for i in order[:pool_size]]
    return pool, [dataset.examples[i] for i in order[pool_size:pool_size + test_size]]


def validate(dataset: Dataset, pool: Sequence[Example], test: Sequence[Example], budgets: Sequence[int]) -> None:
    """Problems that would spoil an expensive run, reported before it starts."""
    if dataset.task == "classification":
        if len(dataset.labels) < 2:
            raise InputError(f"{dataset.name}: a classification set needs two labels or more, found {dataset.labels}")
        unseen = sorted({e.label for e in test} - {e.label for e in pool})
        if unseen:
            raise InputError(f"{dataset.name}: test labels {unseen} never occur in the pool (use a larger pool)")
    if max(budgets) > len(pool):
        raise InputError(f"{dataset.name}: budget {max(budgets)} is larger than the pool ({len(pool)})")


@dataclass
class Answers:
    score: float
    rows: list[dict[str, Any]]


def answer(dataset: Dataset, predictor: LLMPredictor, demo_sets: list[list[Example]], test: Sequence[Example]) -> Answers:
    """The LLM answers each test query with its demos (``demo_sets[j]`` for query j)."""
    jobs = [(list(reversed(demos)), example.text) for demos, example in zip(demo_sets, test)]
    predictions = predictor.predict_many(jobs)
    rows = []
    for demos, example, prediction in zip(demo_sets, test, predictions):
        if dataset.task == "classification":
            # a prompt the scorer could not score is never turned into a label: it counts as wrong
            best = getattr(prediction, "label", None)
            rows.append({"id": example.id, "gold": example.label, "prediction": best,
                         "correct": best is not None and best == example.label,
                         "unscored": bool(getattr(prediction, "unscored", best is None))})
        else:
            fallback = float(np.median([float(d.label) for d in demos])) if demos else float("nan")
            guess = float(np.mean(prediction.samples)) if prediction.samples else fallback
            rows.append({"id": example.id, "gold": float(example.label), "prediction": guess,
                         "parsed": bool(prediction.samples), "error": (guess - float(example.label)) ** 2})
    if dataset.task == "classification":
        return Answers(float(np.mean([r["correct"] for r in rows])), rows)
    errors = [r["error"] for r in rows if np.isfinite(r["error"])]
    return Answers(float(np.mean(errors)) if errors else float("nan"), rows)


def _selector(spec: MethodSpec, seed: int, predictor: LLMPredictor, pool: Sequence[Example]) -> Selector:
    params: dict[str, Any] = {"seed": seed}
    if spec.name == "sal":
        params.update(model=predictor, oracle=lambda i: pool[i].label)  # labels revealed only for picks
    return make_selector(spec.name, **params)


def _cells(suite: Suite, dataset: Dataset, problem: Problem, pool: list[Example], test: list[Example],
           predictor: LLMPredictor, seed: int) -> Iterator[tuple[str, int, Callable[[], tuple[float, Answers]]]]:
    """(method, budget, work) for every cell of one data set and seed; work returns
    (selection seconds, answers)."""
    m = len(test)
    if suite.zero_shot:
        yield "zero-shot", 0, lambda: (0.0, answer(dataset, predictor, [[]] * m, test))
    for k in suite.budgets:
        for spec in map(MethodSpec.parse, suite.methods):
            def work(spec: MethodSpec = spec, k: int = k) -> tuple[float, Answers]:
                selector = _selector(spec, seed, predictor, pool)
                start = time.perf_counter()
                if spec.per_query:
                    sets = [[pool[i] for i in s.indices] for s in selector.select_per_query(problem, k)]
                else:
                    sets = [[pool[i] for i in selector.select(problem, k).indices]] * m
                return time.perf_counter() - start, answer(dataset, predictor, sets, test)
            yield spec.label, k, work
        if suite.oracle_sets:
            def oracle(k: int = k) -> tuple[float, Answers]:
                # the first set is the random row's own, so the oracle is never below random
                sets = [make_selector("random", seed=seed + 1000 * i).select(problem, k).indices
                        for i in range(suite.oracle_sets)]
                tries = [answer(dataset, predictor, [[pool[i] for i in chosen]] * m, test) for chosen in sets]
                better = max if dataset.task == "classification" else min
                return 0.0, better(tries, key=lambda a: a.score)
            yield "oracle", k, oracle


def plan_splits(suite: Suite, datasets: list[Dataset]) -> dict[tuple[str, int], tuple[list[Example], list[Example]]]:
    """Every data set's pool/test split per seed, checked: call it before any expensive work."""
    for spec in suite.methods:
        MethodSpec.parse(spec)
    if not suite.budgets or min(suite.budgets) < 1:
        raise InputError(f"budgets must be positive integers, got {suite.budgets}", field="budgets")
    splits = {}
    for dataset in datasets:
        for seed in range(suite.seeds):
            pool, test = split(dataset, suite.pool_size, suite.test_size, seed)
            validate(dataset, pool, test, suite.budgets)
            splits[dataset.name, seed] = pool, test
    return splits


def run_suite(suite: Suite, datasets: list[Dataset], client: LLMClient, templates: dict[str, Template],
              embedder, out: Path, progress: Callable[[int, int, str], None] | None = None) -> list[dict[str, Any]]:
    """Run, or resume, every cell of the suite; returns one record per cell."""
    out.mkdir(parents=True, exist_ok=True)
    records_path, predictions_path = out / "records.jsonl", out / "predictions.jsonl"
    done: dict[str, dict[str, Any]] = {}
    if records_path.exists():
        for line in records_path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            done[record["cell"]] = record
    splits = plan_splits(suite, datasets)
    probe_labels = next((d.labels for d in datasets if d.task == "classification"), ["yes", "no"])
    client.label_probs("Answer yes or no.\nIs water wet?\nAnswer:", probe_labels[:2] if len(probe_labels) > 1 else ["yes", "no"])
    per_dataset = (1 if suite.zero_shot else 0) + len(suite.budgets) * (len(suite.methods) + (1 if suite.oracle_sets else 0))
    total = per_dataset * suite.seeds * len(datasets)
    planned: list[str] = []
    finished = sum(1 for d in datasets for s_ in range(suite.seeds) for c in done if c.startswith(f"{d.name}|{s_}|"))
    for dataset in datasets:
        labels = dataset.labels if dataset.task == "classification" else ()
        predictor = LLMPredictor(client, templates[dataset.task], labels, task=dataset.task,
                                 samples=suite.regression_samples)
        for seed in range(suite.seeds):
            pool, test = splits[dataset.name, seed]
            problem = build_problem(pool, test, embedder=embedder)
            for method, k, work in _cells(suite, dataset, problem, pool, test, predictor, seed):
                cell = f"{dataset.name}|{seed}|{method}|{k}"
                planned.append(cell)
                if cell in done:
                    continue
                if progress:
                    progress(finished, total, cell)
                before = dict(client.stats)
                start = time.perf_counter()
                selection_seconds, answers = work()
                delta = {key: client.stats.get(key, 0) - before.get(key, 0)
                         for key in ("calls", "cached", "prompt_tokens", "label_fallbacks")}
                unscored = sum(bool(row.get("unscored")) for row in answers.rows)
                record = {"cell": cell, "data": dataset.name, "task": dataset.task, "seed": seed, "method": method,
                          "k": k, "score": answers.score, "n_test": len(test),
                          "selection_seconds": round(selection_seconds, 4),
                          "answer_seconds": round(time.perf_counter() - start - selection_seconds, 4),
                          "llm_calls": delta["calls"], "cached_calls": delta["cached"],
                          "prompt_tokens": delta["prompt_tokens"], "label_fallbacks": delta["label_fallbacks"],
                          "unscored": unscored}
                with open(predictions_path, "a", encoding="utf-8") as handle:
                    handle.writelines(json.dumps({"cell": cell, **row}) + "\n" for row in answers.rows)
                with open(records_path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
                done[cell] = record
                finished += 1
    if progress:
        progress(finished, total, "done")
    return [done[cell] for cell in planned if cell in done]  # earlier runs of other plans stay on disk only
