"""The eval protocol, a thin layer over the library.

Per data set and seed: disjoint, seeded pool and test sets; each method picks demos from the pool
as if it were unlabeled (labels are revealed only for what it picks); the LLM answers every test
query with those demos (most important demo last); its label probabilities (classification) or
sampled numbers (regression) are recorded per query, so the report can score them raw and
calibrated. Three settings, each compared only within itself at the same labels B and demos k:

- ``shared``: one demo set for every query (B = k);
- ``annotate``: an annotator picks B examples to label, the retriever picks k of them per query;
- ``full``: per-query selection from a fully labeled pool (B = pool size).

Plus zero-shot and "best-of-N random": the best of N random shared sets by its score on the *test*
labels (it peeks; per-query methods can beat it, so it is not an upper bound).

A run folder holds one configuration (run.json, written before the first cell): resuming with
other sizes, model, template or calibration, or with a data set whose content changed, is refused;
data sets may be added or dropped. One process at a time may write a folder. Each finished cell appends one line
to ``predictions.jsonl`` and then one to ``records.jsonl``; a cell counts as done only once its
record is written, and a line torn by a crash is dropped on resume.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..data import Example
from ..datasets import Dataset
from ..errors import InputError
from ..llm.client import LLMClient
from ..llm.predictor import LLMPredictor
from ..pipeline import build_problem, run_selection
from ..prompts import Template
from ..selection import make_selector
from ..selection.base import Problem, Selector
from .suites import MethodSpec, Suite

REFERENCES = {"shared": "random:s", "full": "knn:q"}  # annotate: random annotation + the suite's retriever
COST_KEYS = ("calls", "cached", "prompt_tokens", "label_fallbacks", "cached_prompt_tokens", "uncached_prompt_tokens")


def references(suite: Suite) -> dict[str, str]:
    """Per setting, the method every other method of that setting is compared with."""
    return {**REFERENCES, "annotate": f"random:s>{suite.spec(suite.retriever).label}"}


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
    score: float  # accuracy, or mean squared error (regression; predictions clipped to the pool's range)
    rows: list[dict[str, Any]]


def answer(dataset: Dataset, predictor: LLMPredictor, demo_sets: list[list[Example]], test: Sequence[Example],
           *, contextual: bool = False, label_range: tuple[float, float] | None = None) -> Answers:
    """The LLM answers each test query with its demos (``demo_sets[j]`` for query j, most important last).

    Classification rows keep the raw label probabilities (in ``dataset.labels`` order) and, with
    ``contextual``, the content-free prior of the query's demo set: the report calibrates from them.
    """
    jobs = [(list(reversed(demos)), example.text) for demos, example in zip(demo_sets, test)]
    predictions = predictor.predict_many(jobs)
    if dataset.task == "classification":
        rows = []
        for (demos, _), example, prediction in zip(jobs, test, predictions):
            # a prompt the scorer could not score is never turned into a label: it counts as wrong
            row = {"id": example.id, "gold": example.label, "prediction": prediction.label,
                   "correct": prediction.label is not None and prediction.label == example.label,
                   "unscored": prediction.unscored,
                   "probs": [round(prediction.probs[y], 6) for y in predictor.labels]}
            if contextual:
                row["prior"] = np.round(predictor.content_free_probs(demos).mean(axis=0), 6).tolist()
            rows.append(row)
        return Answers(float(np.mean([r["correct"] for r in rows])), rows)
    low, high = label_range or (-np.inf, np.inf)
    rows = []
    for demos, example, prediction in zip(demo_sets, test, predictions):
        fallback = float(np.median([float(d.label) for d in demos])) if demos else (low + high) / 2
        guess = float(np.clip(np.mean(prediction.samples), low, high)) if prediction.samples else fallback
        gold = float(example.label)
        rows.append({"id": example.id, "gold": gold, "prediction": guess, "parsed": bool(prediction.samples),
                     "error": (guess - gold) ** 2, "abs_error": abs(guess - gold)})
    return Answers(float(np.mean([r["error"] for r in rows])), rows)


@dataclass
class Cell:
    """One method at one budget on one data set and seed. ``work`` returns (selection seconds,
    demo set per test query, distinct pool examples whose labels were used)."""

    data: str
    seed: int
    setting: str  # shared, annotate, full, zero-shot
    method: str
    label_budget: int
    k: int
    params: dict[str, Any]
    work: Callable[[], tuple[float, list[list[Example]], int]]
    peeks: bool = False  # chooses among demo sets by test labels

    @property
    def key(self) -> str:
        return f"{self.data}|{self.seed}|{self.setting}|{self.method}|B{self.label_budget}|k{self.k}"


def _selector(spec: MethodSpec, seed: int, predictor: LLMPredictor, pool: Sequence[Example]) -> Selector:
    params: dict[str, Any] = {"seed": seed, **dict(spec.params)}
    if spec.name == "sal":
        params.update(model=predictor, oracle=lambda i: pool[i].label)  # labels revealed only for picks
    return make_selector(spec.name, **params)


def _demos(pool: Sequence[Example], run, m: int) -> tuple[list[list[Example]], int]:
    sets = [[pool[i] for i in s.indices] for s in run.selections]
    used = {i for s in run.selections for i in s.indices}
    if "annotated" in run.info:
        used = set(run.info["annotated"].indices)
    return (sets if run.per_query else sets * m), len(used)


def plan_cells(suite: Suite, dataset: Dataset, problem: Problem, pool: list[Example], m: int,
               predictor: LLMPredictor, seed: int) -> Iterator[Cell]:
    """Every cell of one data set and seed, in run order."""
    name = dataset.name
    if suite.zero_shot:
        yield Cell(name, seed, "zero-shot", "zero-shot", 0, 0, {}, lambda: (0.0, [[]] * m, 0))

    def selected(spec: MethodSpec, k: int, **options) -> Callable[[], tuple[float, list[list[Example]], int]]:
        def work() -> tuple[float, list[list[Example]], int]:
            selector = _selector(spec, seed, predictor, pool)
            run = run_selection(selector, problem, k, seed=seed, **options)
            return (run.seconds, *_demos(pool, run, m))
        return work

    retriever = suite.spec(suite.retriever)
    for k in suite.k:
        for spec in map(suite.spec, suite.methods):
            setting = "full" if spec.per_query else "shared"
            yield Cell(name, seed, setting, spec.label, len(pool) if spec.per_query else k, k, dict(spec.params),
                       selected(spec, k, per_query=spec.per_query))
        for budget in suite.label_budgets:
            if budget < k:
                continue
            for spec in map(suite.spec, suite.annotators):
                work = selected(spec, k, per_query=retriever.per_query, label_budget=budget,
                                retriever=_selector(retriever, seed, predictor, pool))
                yield Cell(name, seed, "annotate", f"{spec.label}>{retriever.label}", budget, k,
                           {**dict(spec.params), **{f"retriever.{p}": v for p, v in retriever.params}}, work)
        if suite.oracle_sets:
            def best_of(k: int = k) -> tuple[float, list[list[Example]], int]:
                # the first set is the random row's own, so this row is never below random
                sets = [make_selector("random", seed=seed + 1000 * i).select(problem, k).indices
                        for i in range(suite.oracle_sets)]
                return 0.0, [[pool[i] for i in chosen] for chosen in sets], len({i for s in sets for i in s})
            yield Cell(name, seed, "shared", f"random-best-of-{suite.oracle_sets}", k, k, {}, best_of, peeks=True)


def plan_splits(suite: Suite, datasets: list[Dataset]) -> dict[tuple[str, int], tuple[list[Example], list[Example]]]:
    """Every data set's pool/test split per seed, checked: call it before any expensive work."""
    suite.check()
    names = [d.name for d in datasets]
    if len(set(names)) < len(names):
        raise InputError(f"two data sets are named alike ({', '.join(names)}): give them distinct file names",
                         field="data")
    splits = {}
    for dataset in datasets:
        for seed in range(suite.seeds):
            pool, test = split(dataset, suite.pool_size, suite.test_size, seed)
            validate(dataset, pool, test, [*suite.k, *suite.label_budgets])
            splits[dataset.name, seed] = pool, test
    return splits


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def configuration(suite: Suite, datasets: Sequence[Dataset], model: str, api: str,
                  templates: dict[str, Template]) -> dict[str, Any]:
    """Everything that changes a cell's result besides the cell's own key and parameters."""
    return {"pool_size": suite.pool_size, "test_size": suite.test_size, "model": model, "api": api,
            "contextual": suite.contextual, "regression_samples": suite.regression_samples,
            "templates": {task: _digest(asdict(t)) for task, t in sorted(templates.items())},
            "data": {d.name: _digest([(e.id, e.text, e.label) for e in d.examples]) for d in datasets}}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Lines of a JSONL file this harness appends to; a last line torn by a crash is cut off."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise InputError("damaged line (not JSON)", path=str(path), line=number) from None
            with open(path, "r+", encoding="utf-8") as handle:  # torn last line: drop it
                handle.truncate(len(text.encode("utf-8")) - len(line.encode("utf-8")))
    return rows


def open_run(out: Path, config: dict[str, Any], suite: Suite, cells: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """The records already in ``out`` (by cell), after checking they were made the same way;
    writes run.json (configuration, suite, references, planned cells) before any work."""
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "run.json"
    saved_suite = asdict(suite)
    if run_file.exists():
        earlier_run = json.loads(run_file.read_text(encoding="utf-8"))
        before = earlier_run.get("configuration", {})
        # data sets may come and go between runs into one folder; one whose content changed may not
        seen = before.get("data", {})
        changed = [f"{key}: {before.get(key)!r} then, {value!r} now" for key, value in config.items()
                   if key != "data" and before.get(key) != value]
        changed += [f"data {name}: content {seen[name]} then, {digest} now" for name, digest in config["data"].items()
                    if name in seen and seen[name] != digest]
        if changed:
            raise InputError("this folder holds results made another way; use another --out or delete it ("
                             + "; ".join(changed) + ")", path=str(run_file))
        config = {**config, "data": {**seen, **config["data"]}}
        # cells planned before stay planned: the report keeps a dropped method's or data set's records
        now = set(cells)
        cells = [c for c in earlier_run.get("cells", []) if c not in now] + list(cells)
        # and so do the variants those cells name, so the report knows which selector each one ran
        saved_suite["variants"] = {**earlier_run.get("suite", {}).get("variants", {}), **saved_suite["variants"]}
    run_file.write_text(json.dumps({"configuration": config, "suite": saved_suite, "references": references(suite),
                                    "cells": list(cells)}, indent=2) + "\n", encoding="utf-8")
    records = {r["cell"]: r for r in read_jsonl(out / "records.jsonl")}
    predictions_path = out / "predictions.jsonl"
    predictions = read_jsonl(predictions_path)
    kept = list({p["cell"]: p for p in predictions if p["cell"] in records}.values())
    if len(kept) < len(predictions):  # a crash between a cell's two lines: its answers are redone
        partial = predictions_path.with_suffix(".partial")
        partial.write_text("".join(json.dumps(p) + "\n" for p in kept), encoding="utf-8")
        os.replace(partial, predictions_path)
    return records


_LOCKED: set[Path] = set()  # run folders this process holds


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold a run folder for this process (``out/.lock``, released when the process ends): two evals
    appending to one records.jsonl would interleave their cells. Re-entrant within a process, so
    the CLI can take it before starting a server and :func:`run_suite` again inside."""
    out.mkdir(parents=True, exist_ok=True)
    key = out.resolve()
    if key in _LOCKED:
        yield
        return
    with open(out / ".lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            raise InputError(f"another fewshot eval{f' (pid {holder})' if holder else ''} is writing this run folder: "
                             "wait for it to finish, or give another --out", path=str(out)) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        _LOCKED.add(key)
        try:
            yield
        finally:
            _LOCKED.discard(key)
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_suite(suite: Suite, datasets: list[Dataset], client: LLMClient, templates: dict[str, Template],
              embedder, out: Path, progress: Callable[[int, int, str], None] | None = None) -> list[dict[str, Any]]:
    """Run, or resume, every cell of the suite; returns one record per planned cell."""
    splits = plan_splits(suite, datasets)
    probe_labels = next((d.labels for d in datasets if d.task == "classification"), ["yes", "no"])
    client.label_probs("Answer yes or no.\nIs water wet?\nAnswer:", probe_labels[:2] if len(probe_labels) > 1 else ["yes", "no"])
    plan: list[tuple[Dataset, LLMPredictor, list[Example], Cell]] = []
    for dataset in datasets:
        labels = dataset.labels if dataset.task == "classification" else ()
        predictor = LLMPredictor(client, templates[dataset.task], labels, task=dataset.task,
                                 samples=suite.regression_samples)
        for seed in range(suite.seeds):
            pool, test = splits[dataset.name, seed]
            # no pool labels in the problem: a method sees a label only through SAL's oracle, by construction
            problem = replace(build_problem(pool, test, embedder=embedder), labels=None)
            plan += [(dataset, predictor, test, cell)
                     for cell in plan_cells(suite, dataset, problem, pool, len(test), predictor, seed)]
    plan.sort(key=lambda item: item[3].seed)  # seed by seed: a run stopped early holds whole seeds of every data set
    with run_lock(out):
        done = open_run(out, configuration(suite, datasets, client.model, client.api, templates), suite,
                        [cell.key for *_, cell in plan])
        finished = sum(cell.key in done for *_, cell in plan)
        for dataset, predictor, test, cell in plan:
            previous = done.get(cell.key)
            if previous is not None:
                if previous.get("params", {}) != cell.params:
                    raise InputError(f"{cell.key} was run with parameters {previous.get('params')}, now {cell.params}: "
                                     "give the variant a new name, or use another --out", path=str(out / "records.jsonl"))
                continue
            if progress:
                progress(finished, len(plan), cell.key)
            done[cell.key] = _run_cell(cell, dataset, predictor, test, client, suite, out)
            finished += 1
        if progress:
            progress(finished, len(plan), "done")
        return [done[cell.key] for *_, cell in plan]


def _run_cell(cell: Cell, dataset: Dataset, predictor: LLMPredictor, test: list[Example], client: LLMClient,
              suite: Suite, out: Path) -> dict[str, Any]:
    before = dict(client.stats)
    start = time.perf_counter()
    selection_seconds, demo_sets, labels_used = cell.work()
    contextual = suite.contextual and dataset.task == "classification"
    label_range = None
    if dataset.task == "regression":
        values = [float(e.label) for e in dataset.examples]
        label_range = (min(values), max(values))
    if cell.peeks:  # demo_sets are candidate shared sets: keep the best on the test labels
        tries = [answer(dataset, predictor, [demos] * len(test), test, contextual=contextual,
                        label_range=label_range) for demos in demo_sets]
        better = max if dataset.task == "classification" else min
        answers = better(tries, key=lambda a: a.score)
    else:
        answers = answer(dataset, predictor, demo_sets, test, contextual=contextual, label_range=label_range)
    cost = {key: client.stats.get(key, 0) - before.get(key, 0) for key in COST_KEYS}
    record = {"cell": cell.key, "data": dataset.name, "task": dataset.task, "seed": cell.seed,
              "setting": cell.setting, "method": cell.method, "params": cell.params,
              "label_budget": cell.label_budget, "labels": labels_used, "k": cell.k,
              "score": answers.score, "n_test": len(test), "peeks": cell.peeks,
              "unscored": sum(bool(row.get("unscored")) for row in answers.rows),
              "selection_seconds": round(selection_seconds, 4),
              "answer_seconds": round(time.perf_counter() - start - selection_seconds, 4),
              "llm_calls": cost["calls"], "cached_calls": cost["cached"], "prompt_tokens": cost["prompt_tokens"],
              "cached_prompt_tokens": cost["cached_prompt_tokens"],
              "uncached_prompt_tokens": cost["uncached_prompt_tokens"], "label_fallbacks": cost["label_fallbacks"]}
    labels = list(dataset.labels) if dataset.task == "classification" else []
    with open(out / "predictions.jsonl", "a", encoding="utf-8") as handle:  # one line per cell
        handle.write(json.dumps({"cell": cell.key, "labels": labels, "rows": answers.rows}) + "\n")
    with open(out / "records.jsonl", "a", encoding="utf-8") as handle:  # the cell is done once this line is
        handle.write(json.dumps(record) + "\n")
    return record
