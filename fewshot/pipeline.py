"""From examples to a selection: embed, cost the demos in tokens, optionally prune, select, and
describe what was chosen.

``fewshot select`` and :func:`fewshot.select` are argument parsing over :class:`Request` (the plain
parameters, checked before any file is read or model loaded) and :func:`select_examples` (which
also connects the methods that consult an LLM to it, and SAL to its labeling oracle);
:func:`demo_records` and :func:`run_meta` give the CLI's output. The eval harness uses :func:`build_problem` and :func:`run_selection`.
"""

from __future__ import annotations

import functools
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .clustering import prune
from .data import Example
from .embedding import CachedEmbedder, Embedder, OpenAIEmbedder, SentenceTransformerEmbedder
from .errors import InputError
from .oracle import Ask, ask_on_terminal, journal_path, make_oracle
from .prompts import Template
from .selection import (KNN, PER_QUERY_METHODS, Problem, Selection, Selector, make_selector, needs_labels,
                        needs_model, parameters)
from .tokens import count_tokens


@functools.lru_cache(maxsize=1)
def _bundled_model() -> SentenceTransformerEmbedder:
    """The bundled model, loaded once per process (loading costs seconds, embedding milliseconds)."""
    return SentenceTransformerEmbedder()


def make_embedder(model: str | None = None, *, cache: bool = True, cache_dir: str | Path | None = None,
                  base_url: str | None = None, api_key: str | None = None) -> Embedder:
    """``model``: None (bundled all-MiniLM-L6-v2, loaded once per process), a local
    sentence-transformers folder, or ``openai:NAME`` for an OpenAI-compatible embeddings endpoint.
    Cached on disk (``cache_dir``, default ``$FEWSHOT_CACHE_DIR``) unless ``cache=False``."""
    if model and model.startswith("openai:"):
        embedder: Embedder = OpenAIEmbedder(model.split(":", 1)[1], base_url=base_url, api_key=api_key)
    else:
        embedder = SentenceTransformerEmbedder(model) if model else _bundled_model()
    if not cache:
        return embedder
    return CachedEmbedder(embedder, Path(cache_dir) / "embeddings.sqlite" if cache_dir else None)


def demo_costs(pool: Sequence[Example], template: Template) -> np.ndarray:
    """Tokens each demo adds to the prompt: its rendered text plus the separator."""
    return count_tokens([template.render_demo(e) + template.separator for e in pool])


def build_problem(pool: Sequence[Example], queries: Sequence[Example], *, embedder: Embedder | None = None,
                  pool_vectors: np.ndarray | None = None, query_vectors: np.ndarray | None = None,
                  template: Template | None = None, max_tokens: int | None = None) -> Problem:
    """Token costs when a token budget is set (checked before anything is embedded), then embed what
    was not given as vectors."""
    if not pool:
        raise InputError("the pool is empty")
    if not queries:
        raise InputError("there are no queries")
    costs = None
    if max_tokens is not None:
        if max_tokens < 1:
            raise InputError(f"max_tokens={max_tokens} must be positive", field="--max-tokens")
        if template is None:
            raise InputError("a token budget needs the template that renders the demos")
        costs = demo_costs(pool, template)
        if costs.min() > max_tokens:
            shortest = int(costs.argmin())
            raise InputError(f"every demo alone exceeds --max-tokens {max_tokens} (shortest is id "
                             f"{pool[shortest].id}, {int(costs[shortest])} tokens)", field="--max-tokens")
    if pool_vectors is None or query_vectors is None:
        if embedder is None:
            raise InputError("give an embedder, or vectors for both the pool and the queries")
        if pool_vectors is None:
            pool_vectors = embedder.embed([e.text for e in pool])
        if query_vectors is None:
            query_vectors = embedder.embed([e.text for e in queries])
    if pool_vectors.shape[1] != query_vectors.shape[1]:
        raise InputError(f"pool vectors have {pool_vectors.shape[1]} dimensions, query vectors {query_vectors.shape[1]}")
    return Problem(pool=pool_vectors, queries=query_vectors, pool_texts=tuple(e.text for e in pool),
                   query_texts=tuple(e.text for e in queries), labels=[e.label for e in pool],
                   token_costs=costs, max_tokens=max_tokens)


def restrict(problem: Problem, keep: np.ndarray) -> Problem:
    """The same problem over a subset of the pool (indices in the new problem refer to ``keep``)."""
    return Problem(pool=problem.pool[keep], queries=problem.queries,
                   pool_texts=tuple(problem.pool_texts[i] for i in keep) if problem.pool_texts else (),
                   query_texts=problem.query_texts,
                   labels=None if problem.labels is None else [problem.labels[i] for i in keep],
                   token_costs=None if problem.token_costs is None else problem.token_costs[keep],
                   max_tokens=problem.max_tokens)


@dataclass(frozen=True)
class Request:
    """The plain parameters of one selection; :meth:`check` refuses bad ones before any work.

    ``per_query=None`` takes the default mode of the method that picks the demos shown
    (``retriever`` under a ``label_budget``, else ``method``): per query for the methods whose
    picks follow the query (knn, mmr, bm25, dpp), one shared set for the others (go, random,
    kmeans, votek, sal). The CLI (``--per-query/--shared``), :func:`fewshot.select` and the eval
    (``knn`` = ``knn:q``) share this rule.

    >>> Request("knn", k=4).per_query_mode, Request("go", k=4).per_query_mode
    (True, False)
    >>> Request("go", k=4, label_budget=16).per_query_mode  # the retriever (knn) shows the demos
    True
    >>> Request("go", k=0).check()
    Traceback (most recent call last):
    ...
    fewshot.errors.InputError: field '--k': k=0 must be at least 1
    """

    method: str = "go"
    k: int = 8
    per_query: bool | None = None
    seed: int = 0
    max_tokens: int | None = None
    label_balance: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)
    prune_to: int | None = None
    prune_policy: str = "hard"
    label_budget: int | None = None
    retriever: str = "knn"

    @property
    def per_query_mode(self) -> bool:
        if self.per_query is not None:
            return self.per_query
        return (self.retriever if self.label_budget is not None else self.method) in PER_QUERY_METHODS

    def check(self) -> None:
        """Refuse bad numbers, methods and parameters (nothing is read, embedded or started)."""
        self.selectors()

    def selectors(self) -> tuple[Selector, Selector | None]:
        """Fresh (selector, retriever) after checking every plain parameter; the retriever is None
        without a label budget."""
        if self.k < 1:
            raise InputError(f"k={self.k} must be at least 1", field="--k")
        if self.label_budget is not None and self.label_budget < self.k:
            raise InputError(f"label_budget={self.label_budget} is smaller than k={self.k}", field="--label-budget")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InputError(f"max_tokens={self.max_tokens} must be positive", field="--max-tokens")
        picks = self.label_budget or self.k
        if self.prune_to is not None and self.prune_to < picks:
            raise InputError(f"prune_to={self.prune_to} is smaller than "
                             + (f"label_budget={picks}" if self.label_budget else f"k={picks}"), field="--prune-to")
        if self.prune_policy not in ("hard", "easy"):
            raise InputError(f"unknown pruning policy {self.prune_policy!r}: use 'hard' or 'easy'", field="--prune-policy")
        selector = make_selector(self.method, seed=self.seed, label_balance=self.label_balance, **self.params)
        retriever = None
        if self.label_budget is not None:
            retriever = make_selector(self.retriever, seed=self.seed, label_balance=self.label_balance)
        return selector, retriever

    def fits(self, pool_size: int, path: str | None = None) -> None:
        """Refuse more picks than the pool holds."""
        for name, value in (("k", self.k), ("label_budget", self.label_budget)):
            if value is not None and value > pool_size:
                raise InputError(f"{name}={value} is larger than the pool ({pool_size} examples)", path=path)


@dataclass
class SelectionRun:
    """Selections with the pool indices of the original pool, and what it cost.

    ``selections`` hold the demos shown (one shared set, or one per query); under a label budget
    ``annotated`` holds the examples the method picked to label. :func:`select_examples` also fills
    ``params`` (the selector's), and for a method that consults an LLM ``label_set`` (the labels it
    answers over) and ``llm`` (its endpoint and what selecting cost).
    """

    selections: list[Selection]
    seconds: float
    per_query: bool
    pruned_to: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    label_set: list[str] = field(default_factory=list)
    llm: dict[str, Any] = field(default_factory=dict)

    @property
    def annotated(self) -> Selection | None:
        """The label budget's picks (pool indices, pick order), None without a label budget."""
        return self.info.get("annotated")

    @property
    def by_method(self) -> list[Selection]:
        """What the method itself chose: the annotated set under a label budget, else the demos."""
        return [self.annotated] if self.annotated is not None else self.selections

    def revealed_labels(self) -> dict[int, str]:
        """Labels SAL's oracle revealed as it picked (they are in its trace), by pool index."""
        selections = self.selections + ([self.annotated] if self.annotated is not None else [])
        return {t["index"]: t["label"] for s in selections for t in s.trace if t.get("label") is not None}

    def to_label(self, pool: Sequence[Example]) -> list[str]:
        """Ids a person should label, in pick order: the annotated examples (label budget), else every
        chosen demo, that have no label in ``pool`` and none revealed by an oracle."""
        revealed = self.revealed_labels()
        return list(dict.fromkeys(pool[i].id for s in self.by_method for i in s.indices
                                  if pool[i].label is None and i not in revealed))


def run_selection(selector: Selector, problem: Problem, k: int, *, per_query: bool = False,
                  prune_to: int | None = None, prune_policy: str = "hard", seed: int = 0,
                  label_budget: int | None = None, retriever: Selector | None = None) -> SelectionRun:
    """Run a selector, optionally after pruning the pool to ``prune_to`` examples by hardship.

    With ``label_budget=B`` it is two-stage ("annotate then retrieve"): ``selector`` picks the B
    examples to label, then ``retriever`` (default kNN) picks k demos from those B, per query when
    ``per_query``. ``info["annotated"]`` holds the B picks (pool indices, pick order). A token
    budget bounds one prompt's demos, so it applies to the retriever's k, not to the B labels.
    """
    start = time.perf_counter()
    keep = None
    if prune_to is not None and prune_to < problem.n:
        if prune_to < k:
            raise InputError(f"prune_to={prune_to} is smaller than k={k}")
        keep = prune(problem.pool, prune_to, policy=prune_policy, seed=seed)
        problem = restrict(problem, keep)
        selector = _oracle_on_original_pool(selector, keep)
    info: dict[str, Any] = {}
    if label_budget is not None:
        selections, annotated = _annotate_then_retrieve(selector, retriever, problem, k, label_budget, per_query)
        info["annotated"] = annotated if keep is None else remap(annotated, keep)
    else:
        selections = selector.select_per_query(problem, k) if per_query else [selector.select(problem, k)]
    if keep is not None:
        selections = [remap(s, keep) for s in selections]
    return SelectionRun(selections, time.perf_counter() - start, per_query,
                        pruned_to=None if keep is None else len(keep), info=info)


def _annotate_then_retrieve(selector: Selector, retriever: Selector | None, problem: Problem, k: int,
                            label_budget: int, per_query: bool) -> tuple[list[Selection], Selection]:
    if label_budget < k:
        raise InputError(f"label_budget={label_budget} is smaller than k={k}", field="--label-budget")
    # the B labels are not one prompt: the token budget is the retriever's, on each prompt's k demos
    annotated = selector.select(replace(problem, max_tokens=None), label_budget)
    labeled = np.array(annotated.indices, dtype=int)
    revealed = {t["index"]: t["label"] for t in annotated.trace if t.get("label") is not None}  # SAL's oracle
    labels = None if problem.labels is None else [revealed.get(i, problem.labels[i]) for i in labeled]
    subset = replace(restrict(problem, labeled), labels=labels)
    retriever = retriever or KNN()
    selections = retriever.select_per_query(subset, k) if per_query else [retriever.select(subset, k)]
    return [remap(s, labeled) for s in selections], annotated


def _oracle_on_original_pool(selector: Selector, keep: np.ndarray) -> Selector:
    """A copy of the selector whose oracle (SAL's) is asked about the original pool's examples:
    the selector sees indices into the pruned pool, the oracle was built for the whole one."""
    oracle = getattr(selector, "oracle", None)
    if oracle is None:
        return selector
    return selector.clone(oracle=lambda index: oracle(int(keep[index])))


# Where a selection names pool indices besides its picks (SAL's shortlists, the LLM-feedback
# selectors' probes and pruned examples), so a selection made on part of the pool can name them
# in the whole pool's indices.
INDEX_LISTS = ("shortlist", "held_out", "probes", "dropped", "context")


def remap(selection: Selection, keep: np.ndarray) -> Selection:
    """A selection made on ``restrict(problem, keep)`` in the indices of ``problem``: its picks, the
    trace's ``index``, ``runner_up`` and index lists, and the index lists of its ``info``.

    >>> s = Selection((1, 0), (0.5, 0.2), ({"index": 1, "runner_up": 0},), info={"held_out": [2], "prompts": 3})
    >>> moved = remap(s, np.array([10, 20, 30]))
    >>> moved.indices, moved.trace[0], moved.info
    ((20, 10), {'index': 20, 'runner_up': 10}, {'held_out': [30], 'prompts': 3})
    """
    def lists(entry: dict[str, Any]) -> dict[str, Any]:
        return {key: [int(keep[i]) for i in entry[key]] for key in INDEX_LISTS if isinstance(entry.get(key), list)}

    trace = tuple({**t, "index": int(keep[t["index"]]),
                   "runner_up": None if t.get("runner_up") is None else int(keep[t["runner_up"]]), **lists(t)}
                  for t in selection.trace)
    return replace(selection, indices=tuple(int(keep[i]) for i in selection.indices), trace=trace,
                   info={**selection.info, **lists(selection.info)})


def select_examples(pool: Sequence[Example], queries: Sequence[Example], request: Request, *,
                    template: Template, embedder: Embedder | None = None,
                    pool_vectors: np.ndarray | None = None, query_vectors: np.ndarray | None = None,
                    llm: Any = None, endpoint: Mapping[str, Any] | None = None,
                    labels: Sequence[str] | None = None, labels_file: str | Path | Mapping[str, str] | None = None,
                    journal: Path | None = None, ask: Ask | None = ask_on_terminal,
                    calibration: str = "none", label_field: str = "label") -> SelectionRun:
    """Select demos for ``queries`` from ``pool`` as ``request`` says; ``template`` renders the
    demos (token costs, and the prompts of the methods that consult an LLM).

    A method that reads the pool's labels (:func:`~fewshot.selection.needs_labels`: valsearch,
    random-search, excess-loss, valued, sal-probes) is refused on a pool with an unlabeled example
    (naming it and ``label_field``) before anything is started or embedded.

    A method that consults an LLM (:func:`~fewshot.selection.needs_model`: SAL and the methods
    above; the method and the retriever alike) gets what it was not given (``params``
    ``model=``): ``llm`` (an :class:`~fewshot.llm.LLMClient`, a model with ``predict_many``, or a
    base URL; None: the configured endpoint, else a local llama-server started here and stopped
    after), opened with ``endpoint`` (``model``, ``api_key``, ``api``, ``local_model``,
    ``cache_dir``), answering over ``labels`` (default: every label the pool, the labels file and
    the journal hold) with ``calibration``. SAL also gets an oracle (``oracle=``;
    :func:`fewshot.oracle.make_oracle`: the pool's label, else ``labels_file``, else earlier typed
    answers in ``journal`` (default: in the cache folder, keyed by the pool), else ``ask``, whose
    answers are appended to ``journal`` as they come). The LLM is connected, and every text checked
    against its context, before anything is embedded.
    """
    selector, retriever = request.selectors()
    request.fits(len(pool))
    _check_llm_options(calibration, endpoint)
    _check_labelled(selector, retriever, pool, label_field)
    oracle = None
    if "oracle" in parameters(type(selector)):  # SAL: its label set and labels file before any embedding
        oracle = make_oracle(pool, labels_file=labels_file, journal=journal or journal_path(pool), labels=labels,
                             ask=ask)
        if selector.oracle is None:
            selector.set_params(oracle=oracle)
        if selector.model is None and not oracle.labels:
            raise InputError("SAL needs the label set: pass --labels a,b,c (the pool has no labels)", field="--labels")
    label_set = oracle.labels if oracle is not None else (
        [y.strip() for y in labels or () if y.strip()] or sorted({e.label for e in pool if e.label is not None}))
    consulting = [s for s in (selector, retriever) if s is not None and needs_model(s)]
    with ExitStack() as stack:
        if consulting:  # the LLM first: a text too long for its context is refused before any embedding
            model = connect_llm(consulting, stack, template, label_set, llm, endpoint, calibration)
            check_lengths(model, [pool, queries])
        problem = build_problem(pool, queries, embedder=embedder, pool_vectors=pool_vectors,
                                query_vectors=query_vectors, template=template, max_tokens=request.max_tokens)
        run = run_selection(selector, problem, request.k, per_query=request.per_query_mode,
                            prune_to=request.prune_to, prune_policy=request.prune_policy, seed=request.seed,
                            label_budget=request.label_budget, retriever=retriever)
    run.params = selector.get_params()
    if consulting:
        model = consulting[0].model
        run.label_set = list(getattr(model, "labels", None) or label_set)
        run.llm = _llm_report(model, run, request, len(pool), len(queries), sal=oracle is not None)
    return run


def _check_labelled(selector: Selector, retriever: Selector | None, pool: Sequence[Example], label_field: str) -> None:
    """Refuse a method that reads the pool's labels on a pool with an unlabeled example (a retriever
    reads only the labels of the annotated examples; after SAL, its oracle has revealed them)."""
    revealed = "oracle" in parameters(type(selector))
    readers = [selector] + ([retriever] if retriever is not None and not revealed else [])
    for reader in readers:
        if not needs_labels(reader):
            continue
        missing = [i for i, e in enumerate(pool) if e.label is None]
        if missing:
            role = "" if reader is selector else "the retriever "
            raise InputError(f"{role}{reader.name} reads the pool's labels (demos and held-out probes), and "
                             f"{len(missing)} of the {len(pool)} pool examples have none: label them, or pick the "
                             "demos with a method that works on an unlabeled pool (see `fewshot methods`)",
                             path=_where(pool, missing[0]), field=label_field)


def check_lengths(model: Any, sources: Sequence[Sequence[Example]]) -> None:
    """Refuse, naming file, line and id, the first text too long for one prompt of ``model``'s LLM
    (:func:`fewshot.llm.context.check_fits`); a model without an endpoint client is not checked."""
    from .llm.context import check_fits

    client = getattr(model, "client", model)
    if not hasattr(client, "context_size"):
        return
    check_fits([(example.text, _where(examples, i)) for examples in sources for i, example in enumerate(examples)],
               client)


def _where(examples: Sequence[Example], i: int) -> str:
    where = getattr(examples, "where", None)
    return where(i) if where is not None else f"id {examples[i].id!r}"


def _check_llm_options(calibration: str, endpoint: Mapping[str, Any] | None) -> None:
    from .calibration import METHODS

    if calibration not in METHODS:
        raise InputError(f"unknown calibration {calibration!r} (use one of: {', '.join(METHODS)})",
                         field="--calibration")
    api = (endpoint or {}).get("api", "completions")
    if api not in ("completions", "chat"):
        raise InputError(f"unknown API {api!r} (use 'completions' or 'chat')", field="--api")


def open_model(stack: ExitStack, template: Template, labels: Sequence[str], llm: Any = None,
               endpoint: Mapping[str, Any] | None = None, calibration: str = "none") -> Any:
    """A model with ``predict_many``: ``llm`` itself when it has one, else an
    :class:`~fewshot.llm.predictor.LLMPredictor` rendering ``template`` over ``labels`` with
    ``calibration`` on ``llm`` (a client, a base URL, or None: the configured endpoint, else a local
    llama-server, entered on ``stack`` so that it stops when the stack closes)."""
    if llm is None or isinstance(llm, str):
        from .llm.server import llm_endpoint

        llm = stack.enter_context(llm_endpoint(llm, **dict(endpoint or {})))
    if hasattr(llm, "predict_many"):
        return llm
    from .llm.predictor import LLMPredictor

    return LLMPredictor(llm, template, labels, calibration=calibration)


def connect_llm(selectors: Sequence[Selector], stack: ExitStack, template: Template, labels: Sequence[str],
                llm: Any = None, endpoint: Mapping[str, Any] | None = None, calibration: str = "none") -> Any:
    """Give every selector without a model one :func:`open_model`, and return the model the first
    selector uses (a selector that has its own model keeps it; no endpoint is opened when all have one)."""
    missing = [s for s in selectors if s.model is None]
    if missing:
        model = open_model(stack, template, labels, llm, endpoint, calibration)
        for selector in missing:
            selector.set_params(model=model)
    return selectors[0].model


def _llm_report(model: Any, run: SelectionRun, request: Request, n: int, m: int, sal: bool) -> dict[str, Any]:
    """The endpoint and what selecting cost: ``selection_prompts``, the predictions the method asked
    for (summed over its selections, the label budget's included; the client may answer some from
    its cache: ``stats``). For SAL also what naive SAL would send (``naive_calls``: every pool
    example a candidate in each round, each kept label simulated on every query of the selection)
    beside what it simulated (``simulated_calls``, the same as ``selection_prompts``)."""
    client = model if hasattr(model, "base_url") else getattr(model, "client", None)
    report: dict[str, Any] = {}
    if client is not None:
        report = {"base_url": getattr(client, "base_url", None), "model": getattr(client, "model", None),
                  "stats": dict(getattr(client, "stats", {}))}
    prompts = selection_prompts(run.by_method + (run.selections if run.annotated is not None else []))
    report["selection_prompts"] = prompts
    if not sal:
        return report
    labels = len(run.label_set)
    rounds = request.label_budget or request.k
    naive = sum(n * (1 + labels * (1 if s.query is not None else m)) * rounds for s in run.by_method)
    return {**report, "simulated_calls": selection_prompts(run.by_method), "naive_calls": naive}


def selection_prompts(selections: Sequence[Selection]) -> int:
    """The LLM predictions selections asked for (``info["prompts"]``; a shared set given to every
    query carries its cost on the first only)."""
    return int(sum(s.info.get("prompts", s.info.get("llm_calls", 0)) for s in selections))


def demo_records(run: SelectionRun, pool: Sequence[Example], queries: Sequence[Example]) -> list[dict[str, Any]]:
    """One record per chosen demo, in pick order (``rank`` 1 = picked first); a label an oracle
    revealed fills an unlabeled example's; ``query_id`` per query."""
    records = []
    revealed = run.revealed_labels()
    for selection in run.selections:
        for rank, (index, score) in enumerate(zip(selection.indices, selection.scores), start=1):
            example = pool[index]
            label = example.label if example.label is not None else revealed.get(index)
            record = {"id": example.id, "text": example.text, "label": label, "rank": rank,
                      "score": round(score, 6), "pool_index": index, "needs_label": label is None}
            if run.per_query:
                record["query_id"] = queries[selection.query].id
            records.append(record)
    return records


def run_meta(run: SelectionRun, request: Request, pool: Sequence[Example], queries: Sequence[Example], *,
             embedder: Embedder | None, template: Template) -> dict[str, Any]:
    """What ``OUT.meta.json`` holds. ``trace`` is the method's own (the label budget's picks, where
    SAL's oracle labels show), ``retriever_trace`` the retriever's first selection; ``stopped``
    the reasons some demo lists are short, ``annotation_stopped`` why fewer than B were annotated."""
    annotated = run.annotated
    meta = {"method": request.method, "params": run.params, "k": request.k, "seed": request.seed,
            "per_query": run.per_query,
            "embedding_model": "precomputed" if embedder is None else embedder.model_id,
            "embeddings_computed": getattr(embedder, "computed", None),
            "selection_seconds": round(run.seconds, 4), "pool_size": len(pool), "queries": len(queries),
            "max_tokens": request.max_tokens, "template": template.name,
            "ids": {"pool": getattr(pool, "id_source", None), "queries": getattr(queries, "id_source", None)},
            "pruned_to": run.pruned_to, "stopped": sorted({s.stopped for s in run.selections if s.stopped}),
            "label_budget": request.label_budget, "retriever": request.retriever if request.label_budget else None,
            "annotation_stopped": None if annotated is None else annotated.stopped,
            "to_label": run.to_label(pool), "trace": [list(s.trace) for s in run.by_method[:1]]}
    if annotated is not None:
        meta["retriever_trace"] = [list(s.trace) for s in run.selections[:1]]
    info = run.by_method[0].info if run.by_method else {}
    if info:  # what the method found on the way: valsearch's candidates and rounds, the probes, ...
        meta["selection_info"] = _json_ready(info)
    if run.llm:
        meta["llm"] = run.llm
    return meta


def _json_ready(value: Any) -> Any:
    """``value`` with non-finite floats as None (JSON has no inf or NaN) and numpy scalars as Python's.

    >>> _json_ready({"a": [float("-inf"), np.float32(0.5)], "b": (1, np.int64(2))})
    {'a': [None, 0.5], 'b': [1, 2]}
    """
    if isinstance(value, dict):
        return {key: _json_ready(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
