"""The eval protocol, a thin layer over the library.

Per data set and seed: disjoint, seeded pool and test sets; each method picks demos from the pool
as if it were unlabeled (labels are revealed only for what it picks), except the methods that read
the pool's labels (:func:`~fewshot.selection.needs_labels`: valsearch, random-search, excess-loss,
valued, sal-probes), which see them all; the LLM answers every test query with those demos (in
:func:`~fewshot.prompts.prompt_order`: the first pick nearest the query); its label probabilities
(classification) or sampled numbers (regression) are recorded per query, so the report scores them
(:mod:`fewshot.evaluation.metrics`). Three settings, each compared only within itself at the same
labels B and demos k:

- ``shared``: one demo set for every query (B = k);
- ``annotate``: an annotator picks B examples to label, a retriever picks k of them (per query, or
  one shared set); a retriever that reads labels (valsearch, random-search, ...) reads only those
  B, its probes among them, so B counts every label it used;
- ``full``: selection from a fully labeled pool (B = pool size): per-query methods, and the
  methods that read the pool's labels, shared sets included.

A selector with a ``model`` parameter (SAL, the methods above) consults the LLM that answers. A
record keeps the selection's LLM costs (``selection_*``: its prompts, HTTP requests and tokens)
apart from the answering ones, and ``labels``: the distinct pool labels the method used (its
demos; for the methods above, ``info["labels_read"]``: demos, probes, valuation).

Plus zero-shot and "best-of-N random": the best of N random shared sets by the headline metric on
the *test* labels (it peeks; per-query methods can beat it, so it is not an upper bound).

A run folder (:mod:`fewshot.evaluation.runfolder`) holds one configuration: resuming with other
sizes, model, template, token budget or scoring code, or with a data set whose content changed,
is refused before anything is written; data sets may be added or dropped. One process at a time
may write a folder; a cell counts as done once its record is written, and a line torn by a crash
is cut off on resume.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from ..data import Example
from ..datasets import Dataset
from ..errors import InputError
from ..llm.client import LLMClient
from ..llm.predictor import LLMPredictor
from ..pipeline import SelectionRun, build_problem, run_selection, selection_prompts
from ..prompts import Template, prompt_order
from ..selection import SELECTORS, make_selector, needs_labels, parameters, reference_wanted
from ..selection.base import Problem, Selector
from .metrics import HEADLINE, best, headline_score
from .runfolder import CellKey, RunFolder, code_version, merge_run, run_lock
from .suites import MethodSpec, Suite

REFERENCES = {"shared": "random:s", "full": "knn:q"}  # annotate: random annotation + the suite's first retriever
# a record's answering costs: its field -> the LLM client's counter (calls are HTTP requests; cached:
# answers from the cache); the selection's are these with "selection_" in front (see SELECTION_KEYS)
COST_KEYS = {"http_requests": "calls", "cached_answers": "cached", "prompt_tokens": "prompt_tokens",
             "cached_prompt_tokens": "cached_prompt_tokens", "uncached_prompt_tokens": "uncached_prompt_tokens",
             "label_fallbacks": "label_fallbacks", "server_restarts": "server_restarts"}
SELECTION_KEYS = {"selection_requests": "calls", "selection_cached_answers": "cached",
                  "selection_prompt_tokens": "prompt_tokens"}


def references(suite: Suite) -> dict[str, str]:
    """Per setting, the method every other method of that setting is compared with (annotate:
    random annotation with the suite's first retriever)."""
    return {**REFERENCES, "annotate": f"random:s>{suite.spec(suite.retriever_names[0]).label}"}


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


def _demo_set_ids(ordered: Sequence[Sequence[Example]]) -> list[int]:
    """Per prompt, which distinct demo set it shows (0, 1, ... in first-seen order)."""
    seen: dict[tuple, int] = {}
    return [seen.setdefault(tuple(d.id for d in demos), len(seen)) for demos in ordered]


def answer(dataset: Dataset, predictor: LLMPredictor, demo_sets: list[list[Example]], test: Sequence[Example],
           *, contextual: bool = False, label_range: tuple[float, float] | None = None) -> list[dict[str, Any]]:
    """The LLM's answer to each test query with its demos (``demo_sets[j]`` for query j, in pick
    order; shown in :func:`~fewshot.prompts.prompt_order`), one row per query.

    Every row names its demo set (``demo_set``: prompts with the same one share it), so the report
    can calibrate per demo set. Classification rows keep the raw label probabilities (in
    ``dataset.labels`` order) and, with ``contextual``, the content-free prior of the query's demo
    set. Regression predictions are clipped to ``label_range`` (the pool's), whose middle is the
    answer of a zero-shot prompt with no number in it.
    """
    ordered = [prompt_order(demos) for demos in demo_sets]
    jobs = [(demos, example.text) for demos, example in zip(ordered, test)]
    predictions = predictor.predict_many(jobs)
    ids = _demo_set_ids(ordered)
    if dataset.task == "classification":
        rows = []
        for (demos, _), example, prediction, demo_set in zip(jobs, test, predictions, ids):
            # a prompt the scorer could not score is never turned into a label: it counts as wrong
            row = {"id": example.id, "gold": example.label, "prediction": prediction.label,
                   "correct": prediction.label is not None and prediction.label == example.label,
                   "unscored": prediction.unscored, "demo_set": demo_set,
                   "probs": [round(prediction.probs[y], 6) for y in predictor.labels]}
            if contextual:
                row["prior"] = np.round(predictor.content_free_probs(demos).mean(axis=0), 6).tolist()
            rows.append(row)
        return rows
    low, high = label_range or (-np.inf, np.inf)
    rows = []
    for demos, example, prediction, demo_set in zip(ordered, test, predictions, ids):
        fallback = float(np.median([float(d.label) for d in demos])) if demos else (low + high) / 2
        guess = float(np.clip(np.mean(prediction.samples), low, high)) if prediction.samples else fallback
        gold = float(example.label)
        rows.append({"id": example.id, "gold": gold, "prediction": guess, "parsed": bool(prediction.samples),
                     "demo_set": demo_set, "error": (guess - gold) ** 2, "abs_error": abs(guess - gold)})
    return rows


class Selected(NamedTuple):
    """What a cell's selection gave: its seconds, the demos of each test query (pick order), the
    distinct pool labels it used, and ``facts`` for the record: ``selection_prompts`` (the LLM
    predictions it asked for), and for a method that values the pool ``valuation_prompts`` (the
    valuation's plan, answered now or read back from its store) and ``valuation_reliability``."""

    seconds: float
    demo_sets: list[list[Example]]
    labels: int
    facts: dict[str, Any] = {}


@dataclass
class Cell:
    """One method at one budget on one data set and seed; ``work`` selects (:class:`Selected`)."""

    data: str
    seed: int
    setting: str  # shared, annotate, full, zero-shot
    method: str
    label_budget: int
    k: int
    params: dict[str, Any]
    work: Callable[[], Selected]
    peeks: bool = False  # chooses among demo sets by test labels

    @property
    def key(self) -> str:
        return str(CellKey(self.data, self.seed, self.setting, self.method, self.label_budget, self.k))


def _spec_reference(spec: MethodSpec) -> str | None:
    """The reference LLM a method or variant asks for by name (excess-loss with ``reference="llm"``)."""
    return reference_wanted(make_selector(spec.name, **dict(spec.params)))


def reference_names(suite: Suite) -> list[str]:
    """The reference LLMs the suite's methods and retrievers ask for by name, each once: what
    ``run_suite``'s ``reference_llms`` must hold."""
    specs = [suite.spec(text) for text in [*suite.methods, *suite.annotators, *suite.retriever_names]]
    return list(dict.fromkeys(name for name in map(_spec_reference, specs) if name is not None))


def _cell_params(spec: MethodSpec) -> dict[str, Any]:
    """A cell's parameters as recorded (and checked on resume): the variant's own, plus the name of a
    reference LLM the method asks for by default."""
    name = _spec_reference(spec)
    return {**dict(spec.params), **({"reference_llm": name} if name is not None else {})}


def _selector(spec: MethodSpec, seed: int, predictor: LLMPredictor, pool: Sequence[Example],
              reference_llms: Mapping[str, Any] | None = None) -> Selector:
    params: dict[str, Any] = {"seed": seed, **dict(spec.params)}
    accepted = parameters(SELECTORS[spec.name])
    if "model" in accepted:  # SAL and the LLM-feedback selectors consult the LLM that answers
        params["model"] = predictor
    if "oracle" in accepted:  # SAL: labels revealed only for its picks
        params["oracle"] = lambda i: pool[i].label
    selector = make_selector(spec.name, **params)
    name = reference_wanted(selector)
    if name is not None:  # excess-loss's reference LLM: same template and labels as the target
        if name not in (reference_llms or {}):
            raise InputError(f"{spec.label} compares against a reference LLM ({name}) that is not open here: "
                             "pass run_suite(reference_llms={name: client})", field="reference_llm")
        selector.set_params(reference_model=LLMPredictor(reference_llms[name], predictor.template, predictor.labels,
                                                         task=predictor.task))
    return selector


def _selected(pool: Sequence[Example], run: SelectionRun, m: int) -> Selected:
    sets = [[pool[i] for i in s.indices] for s in run.selections]
    used = {i for s in run.selections for i in s.indices}
    if run.annotated is not None:  # the retriever's labels (demos, probes) are among the B annotated
        used = set(run.annotated.indices)
    read = [s.info["labels_read"] for s in run.by_method if "labels_read" in s.info]
    labels = max(sum(read), len(used)) if read else len(used)
    facts: dict[str, Any] = {
        "selection_prompts": selection_prompts(run.by_method + (run.selections if run.annotated is not None else []))}
    for s in run.by_method[:1]:  # a valuation is the first selection's (the others share it)
        if "valuation_prompts" in s.info:
            facts["valuation_prompts"] = s.info["valuation_prompts"]
            facts["valuation_reliability"] = s.info.get("reliability", s.info.get("valuation_reliability"))
    if run.annotated is not None and "held_out" in run.selections[0].info:
        # the annotated examples the retriever kept out of its demos (valsearch's probes: at most half
        # of B, a larger probes parameter is capped there; the record says how many were held)
        facts["retriever_held_out"] = len(run.selections[0].info["held_out"])
    return Selected(run.seconds, sets if run.per_query else sets * m, labels, facts)


def plan_cells(suite: Suite, dataset: Dataset, problem: Problem, pool: list[Example], m: int,
               predictor: LLMPredictor, seed: int, reference_llms: Mapping[str, Any] | None = None) -> Iterator[Cell]:
    """Every cell of one data set and seed, in run order; ``reference_llms``: see :func:`run_suite`."""
    name = dataset.name
    if suite.zero_shot:
        yield Cell(name, seed, "zero-shot", "zero-shot", 0, 0, {}, lambda: Selected(0.0, [[]] * m, 0))
    labelled = replace(problem, labels=[e.label for e in pool])  # for the methods that read every label

    def selected(spec: MethodSpec, k: int, **options) -> Callable[[], Selected]:
        def work() -> Selected:
            selector = _selector(spec, seed, predictor, pool, reference_llms)
            shown = labelled if needs_labels(selector) else problem
            return _selected(pool, run_selection(selector, shown, k, seed=seed, **options), m)
        return work

    retrievers = [suite.spec(text) for text in suite.retriever_names]
    for k in suite.k:
        for spec in map(suite.spec, suite.methods):
            full = spec.per_query or needs_labels(SELECTORS[spec.name])
            yield Cell(name, seed, "full" if full else "shared", spec.label, len(pool) if full else k, k,
                       _cell_params(spec), selected(spec, k, per_query=spec.per_query))
        for budget in suite.label_budgets:
            if budget < k:
                continue
            for spec in map(suite.spec, suite.annotators):
                for retriever in retrievers:
                    # the annotated examples' labels are revealed to the retriever (those B only)
                    work = selected(spec, k, per_query=retriever.per_query, label_budget=budget,
                                    retriever=_selector(retriever, seed, predictor, pool, reference_llms),
                                    reveal=lambda i: pool[i].label)
                    yield Cell(name, seed, "annotate", f"{spec.label}>{retriever.label}", budget, k,
                               {**_cell_params(spec), **{f"retriever.{p}": v for p, v in _cell_params(retriever).items()}},
                               work)
        if suite.oracle_sets:
            def best_of(k: int = k) -> Selected:
                # the first set is the random row's own, so this row is never below random
                sets = [make_selector("random", seed=seed + 1000 * i).select(problem, k).indices
                        for i in range(suite.oracle_sets)]
                return Selected(0.0, [[pool[i] for i in chosen] for chosen in sets], len({i for s in sets for i in s}))
            yield Cell(name, seed, "shared", f"random-best-of-{suite.oracle_sets}", k, k, {}, best_of, peeks=True)


def plan_splits(suite: Suite, datasets: list[Dataset]) -> dict[tuple[str, int], tuple[list[Example], list[Example]]]:
    """Every data set's pool/test split per seed, checked against the (already checked) suite: call
    it before any expensive work."""
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
                  templates: dict[str, Template], max_tokens: int | None = None) -> dict[str, Any]:
    """Everything that changes a cell's result besides the cell's own key and parameters."""
    return {"pool_size": suite.pool_size, "test_size": suite.test_size, "model": model, "api": api,
            "contextual": suite.contextual, "regression_samples": suite.regression_samples,
            "templates": {task: _digest(asdict(t)) for task, t in sorted(templates.items())},
            "data": {d.name: _digest([(e.id, e.text, e.label) for e in d.examples]) for d in datasets},
            "max_tokens": max_tokens}


def open_run(folder: RunFolder, run: dict[str, Any], params: dict[str, dict[str, Any]], *,
             allow_code_change: bool = False) -> dict[str, dict[str, Any]]:
    """The records already in the folder (by cell), once every check of a resume has passed
    (configuration, code version, the parameters of finished cells); only then is run.json written
    and a crash's torn lines repaired, so a refused resume changes nothing. Hold the folder's lock."""
    earlier = folder.read_run()
    if earlier:
        run = merge_run(earlier, run, folder.run_file, allow_code_change=allow_code_change)
    done = {r["cell"]: r for r in folder.records()}
    for key, now in params.items():
        if key in done and done[key].get("params", {}) != now:
            raise InputError(f"{key} was run with parameters {done[key].get('params')}, now {now}: "
                             "give the variant a new name, or use another --out", path=str(folder.records_file))
    folder.write_run(run)
    folder.repair()
    return done


@dataclass
class _Job:
    dataset: Dataset
    predictor: LLMPredictor
    test: list[Example]
    label_range: tuple[float, float] | None  # regression: the pool's, never the test labels'
    cell: Cell


def run_suite(suite: Suite, datasets: list[Dataset], client: LLMClient, templates: dict[str, Template],
              embedder, out: Path, progress: Callable[[int, int, str], None] | None = None, *,
              max_tokens: int | None = None, splits: dict[tuple[str, int], tuple[list[Example], list[Example]]] | None = None,
              allow_code_change: bool = False, reference_llms: Mapping[str, LLMClient] | None = None) -> list[dict[str, Any]]:
    """Run, or resume, every cell of the suite; returns one record per planned cell.

    ``max_tokens``: the demos of a prompt fit this many tokens (rendered with the data set's
    template), as in ``fewshot select --max-tokens``. ``splits``: :func:`plan_splits`'s result
    when the caller has it (else the suite is checked and split here). ``allow_code_change``: resume
    a folder whose cells other scoring code made; run.json records both code versions.
    ``reference_llms``: model name -> an open LLM client, for the methods that compare against a
    reference LLM (excess-loss ``reference="llm"``; :func:`reference_names` lists the names the suite
    needs, ``fewshot eval`` opens them before the run); run.json's configuration records each one's
    cache namespace (the model file's fingerprint for a local server), and their prompts count among
    the selection costs.
    """
    missing = [name for name in reference_names(suite) if name not in (reference_llms or {})]
    if missing:  # before anything: excess-loss with reference="llm" names a model nobody opened
        raise InputError(f"the suite's methods compare against the reference LLM(s) {', '.join(missing)}, which are "
                         "not open here: pass run_suite(reference_llms={name: client})", field="reference_llm")
    folder = RunFolder(out)
    folder.check_writable()
    if splits is None:
        suite.check()
        splits = plan_splits(suite, datasets)
    probe_labels = next((d.labels for d in datasets if d.task == "classification"), ["yes", "no"])
    client.label_probs("Answer yes or no.\nIs water wet?\nAnswer:", probe_labels[:2] if len(probe_labels) > 1 else ["yes", "no"])
    plan: list[_Job] = []
    for dataset in datasets:
        labels = dataset.labels if dataset.task == "classification" else ()
        for seed in range(suite.seeds):
            # regression samples: eval seed s uses sampling seeds s*n .. s*n+n-1, disjoint between seeds
            predictor = LLMPredictor(client, templates[dataset.task], labels, task=dataset.task,
                                     samples=suite.regression_samples, seed=seed * max(suite.regression_samples, 1))
            pool, test = splits[dataset.name, seed]
            label_range = _range(pool) if dataset.task == "regression" else None
            # no pool labels in the problem: a method sees a label only through SAL's oracle, by construction
            # (plan_cells gives them back to the methods that read them all, in the full-label setting)
            problem = replace(build_problem(pool, test, embedder=embedder, template=templates[dataset.task],
                                            max_tokens=max_tokens), labels=None)
            plan += [_Job(dataset, predictor, test, label_range, cell)
                     for cell in plan_cells(suite, dataset, problem, pool, len(test), predictor, seed, reference_llms)]
    plan.sort(key=lambda job: job.cell.seed)  # seed by seed: a run stopped early holds whole seeds of every data set
    config = configuration(suite, datasets, client.model, client.api, templates, max_tokens)
    if reference_llms:  # only then: a folder without one resumes as before
        config["reference_llms"] = {name: ref.cache_namespace for name, ref in sorted(reference_llms.items())}
    run = {"configuration": config,
           "suite": suite.record(), "references": references(suite), "cells": [job.cell.key for job in plan],
           "code": code_version()}
    with run_lock(out):
        done = open_run(folder, run, {job.cell.key: job.cell.params for job in plan}, allow_code_change=allow_code_change)
        finished = sum(job.cell.key in done for job in plan)
        for job in plan:
            if job.cell.key in done:
                continue
            if progress:
                progress(finished, len(plan), job.cell.key)
            done[job.cell.key] = _run_cell(job, client, suite, folder, list((reference_llms or {}).values()))
            finished += 1
        if progress:
            progress(finished, len(plan), "done")
        return [done[job.cell.key] for job in plan]


def _range(pool: Sequence[Example]) -> tuple[float, float]:
    values = [float(e.label) for e in pool]
    return min(values), max(values)


def _stats(clients: Sequence[LLMClient]) -> Counter:
    """The clients' counters summed (the target's and any reference LLM's)."""
    return sum((Counter(c.stats) for c in clients), Counter())


def _run_cell(job: _Job, client: LLMClient, suite: Suite, folder: RunFolder,
              references: Sequence[LLMClient] = ()) -> dict[str, Any]:
    """Run one cell; ``references``: the reference LLMs' clients (their costs are the selection's)."""
    cell, dataset, test = job.cell, job.dataset, job.test
    clients = [client, *references]
    before = _stats(clients)
    start = time.perf_counter()
    selection_seconds, demo_sets, labels_used, facts = cell.work()
    selected = _stats(clients)  # the selection's LLM costs end here, the answering ones begin
    answering = dict(client.stats)
    contextual = suite.contextual and dataset.task == "classification"
    labels = list(dataset.labels) if dataset.task == "classification" else []

    def answers(sets: list[list[Example]]) -> list[dict[str, Any]]:
        return answer(dataset, job.predictor, sets, test, contextual=contextual, label_range=job.label_range)

    if cell.peeks:  # demo_sets are candidate shared sets: keep the best on the test labels, by the headline metric
        tries = [answers([demos] * len(test)) for demos in demo_sets]
        rows = tries[best([headline_score(t, labels, dataset.task) for t in tries], HEADLINE[dataset.task])]
    else:
        rows = answers(demo_sets)
    cost = {name: client.stats.get(stat, 0) - answering.get(stat, 0) for name, stat in COST_KEYS.items()}
    cost.update({name: selected.get(stat, 0) - before.get(stat, 0) for name, stat in SELECTION_KEYS.items()})
    cost.update({"selection_prompts": 0, **facts})
    record = {"cell": cell.key, "data": dataset.name, "task": dataset.task, "seed": cell.seed,
              "setting": cell.setting, "method": cell.method, "params": cell.params,
              "label_budget": cell.label_budget, "labels": labels_used, "k": cell.k, "n_test": len(test),
              "peeks": cell.peeks, "demo_sets": len({row["demo_set"] for row in rows}),
              "selection_seconds": round(selection_seconds, 4),
              "answer_seconds": round(time.perf_counter() - start - selection_seconds, 4), **cost}
    folder.append_cell({"cell": cell.key, "labels": labels, "rows": rows}, record)
    return record
