"""From examples to a selection: embed, cost the demos in tokens, optionally prune, select, and
describe what was chosen.

``fewshot select`` and :func:`fewshot.select` are argument parsing over :class:`Request` (the plain
parameters, checked before any file is read or model loaded) and :func:`select_examples` (which
also connects the methods that consult an LLM to it, and SAL to its labeling oracle);
:func:`demo_records` and :func:`run_meta` give the CLI's output. The eval harness uses :func:`build_problem` and :func:`run_selection`.

Large pools: :class:`Inputs` says where the pool and the queries come from (example files, a vector
store, ``.npy`` files) and checks it before any work; ``select_examples(..., index=IndexChoice)``
then serves per-query selection (and GO's and vote-k's shared sets) from a candidate index.
"""

from __future__ import annotations

import functools
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .clustering import prune
from .data import Example, label_words, load_examples
from .embedding import CachedEmbedder, Embedder, OpenAIEmbedder, SentenceTransformerEmbedder, load_embeddings
from .errors import InputError
from .index import IndexChoice, select_per_query_with_index, shortlists_by, verify as verify_index
from .oracle import Ask, Oracle, ask_on_terminal, journal_path, make_oracle
from .prompts import Template
from .selection import (KNN, PER_QUERY_METHODS, Problem, Selection, Selector, make_selector, needs_labels,
                        needs_model, parameters, reference_wanted)
from .tokens import check_token_budget, count_tokens


@functools.lru_cache(maxsize=2)
def _bundled_model(backend: str = "torch") -> SentenceTransformerEmbedder:
    """The bundled model, loaded once per process and backend (loading costs seconds, embedding milliseconds)."""
    return SentenceTransformerEmbedder(backend=backend)


def make_embedder(model: str | None = None, *, cache: bool = True, cache_dir: str | Path | None = None,
                  base_url: str | None = None, api_key: str | None = None, backend: str = "torch") -> Embedder:
    """``model``: None (bundled all-MiniLM-L6-v2, loaded once per process), a local
    sentence-transformers folder, or ``openai:NAME`` for an OpenAI-compatible embeddings endpoint.
    ``backend``: how a local model computes (torch or int8; see :class:`SentenceTransformerEmbedder`).
    Cached on disk (``cache_dir``, default ``$FEWSHOT_CACHE_DIR``) unless ``cache=False``."""
    if model and model.startswith("openai:"):
        if backend != "torch":
            raise InputError(f"backend {backend!r} is for local sentence-transformers models, not {model!r}",
                             field="backend")
        embedder: Embedder = OpenAIEmbedder(model.split(":", 1)[1], base_url=base_url, api_key=api_key)
    else:
        embedder = SentenceTransformerEmbedder(model, backend=backend) if model else _bundled_model(backend)
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
    check_token_budget(max_tokens)
    if max_tokens is not None:
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
    if query_vectors.dtype == np.float16:  # the queries are few: widened once here, the pool stays as stored
        query_vectors = np.asarray(query_vectors, dtype=np.float32)
    return Problem(pool=pool_vectors, queries=query_vectors, pool_texts=_texts(pool), query_texts=_texts(queries),
                   labels=[e.label for e in pool] if has_texts(pool) else None, token_costs=costs,
                   max_tokens=max_tokens)


def has_texts(examples: Sequence[Example]) -> bool:
    """False for :class:`IdsOnly` (a store's ids without its texts and labels)."""
    return getattr(examples, "has_texts", True)


def _texts(examples: Sequence[Example]) -> tuple[str, ...]:
    return tuple(e.text for e in examples) if has_texts(examples) else ()


class IdsOnly(Sequence[Example]):
    """The examples of a vector store given without their file: each has the store's id, no text
    (None) and an unknown label. Made on access, so a pool of millions costs nothing.

    >>> pool = IdsOnly(np.array(["a", "b"])); len(pool), pool[1], pool.id_source
    (2, Example(id='b', text=None, label=None), 'store ids')
    """

    has_texts = False
    id_source = "store ids"

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return Example(str(self.ids[i]), None, None)  # type: ignore[arg-type]

    def where(self, i: int) -> str:
        return f"store id {str(self.ids[i])!r}"


def restrict(problem: Problem, keep: np.ndarray) -> Problem:
    """The same problem over a subset of the pool (indices in the new problem refer to ``keep``)."""
    return Problem(pool=problem.pool[keep], queries=problem.queries,
                   pool_texts=tuple(problem.pool_texts[i] for i in keep) if problem.pool_texts else (),
                   query_texts=problem.query_texts,
                   labels=None if problem.labels is None else [problem.labels[i] for i in keep],
                   token_costs=None if problem.token_costs is None else problem.token_costs[keep],
                   max_tokens=problem.max_tokens)


@dataclass
class Inputs:
    """Where ``fewshot select`` takes the pool and the queries from.

    Examples (ids, texts, labels) come from ``pool_file`` / ``queries_file``; vectors from a vector
    store (``store`` / ``query_store``, :mod:`fewshot.store`), from ``.npy`` files (``embeddings``
    / ``query_embeddings``, memory-mapped) or, for what has neither, from the embedding model. A
    store may stand without its file: the examples are then its ids alone (:class:`IdsOnly`), with
    no texts or labels. :meth:`check` refuses a bad combination, a missing or unfinished store, or
    stores that do not fit each other, before anything is read; :meth:`examples` reads the files (a
    file beside a store must hold the store's ids, in order); :meth:`vectors` opens the vectors.
    """

    pool_file: Path | None = None
    queries_file: Path | None = None
    store: Path | None = None
    query_store: Path | None = None
    embeddings: Path | None = None
    query_embeddings: Path | None = None
    text_field: str = "text"
    label_field: str = "label"
    id_field: str | None = None

    def __post_init__(self) -> None:
        self._stores: dict[str, Any] = {}

    def check(self, request: Request) -> None:
        from .store import open_store

        if self.store is not None and self.embeddings is not None:
            raise InputError("give the pool's vectors once: --store or --embeddings", field="--embeddings")
        if self.query_store is not None and self.query_embeddings is not None:
            raise InputError("give the queries' vectors once: --query-store or --query-embeddings",
                             field="--query-embeddings")
        if self.pool_file is None and self.store is None:
            raise InputError("give the pool: --pool FILE, or --store DIR (a vector store from `fewshot embed`)",
                             field="--pool")
        if self.queries_file is None and self.query_store is None:
            raise InputError("give the queries: --queries FILE, or --query-store DIR", field="--queries")
        if self.query_store is not None and self.store is None and self.embeddings is None:
            raise InputError("--query-store needs the pool's vectors too: --store DIR or --embeddings", field="--query-store")
        for name, folder, flag in (("pool", self.store, "--store"), ("queries", self.query_store, "--query-store")):
            if folder is not None:
                self._stores[name] = open_store(folder, field=flag)
        pool, queries = self._stores.get("pool"), self._stores.get("queries")
        if pool is not None and queries is not None:
            if queries.d != pool.d:
                raise InputError(f"the query store has d={queries.d}, the pool's store d={pool.d}", path=str(self.query_store),
                                 field="--query-store")
            if queries.model_id != pool.model_id:
                raise InputError(f"the query store was embedded with {queries.model_id!r}, the pool's store with "
                                 f"{pool.model_id!r}: use one model for both", path=str(self.query_store),
                                 field="--query-store")
        if pool is not None:
            request.fits(pool.n, path=str(self.store))
        if self.pool_file is None:
            needs = _needs_texts(request)
            if needs:
                raise InputError(f"{needs} the pool's texts or labels: give --pool FILE (the file the store was "
                                 "embedded from)", field="--pool")

    @property
    def n(self) -> int | None:
        """The pool's size, where a store says it before any file is read."""
        store = self._stores.get("pool")
        return None if store is None else store.n

    @property
    def d(self) -> int | None:
        store = self._stores.get("pool") or self._stores.get("queries")
        return None if store is None else store.d

    @property
    def model_id(self) -> str | None:
        """The embedding model the store names (None without a store)."""
        store = self._stores.get("pool") or self._stores.get("queries")
        return None if store is None else store.model_id

    @property
    def source(self) -> str | None:
        """The pool store's checksum (an index built from another store is refused)."""
        store = self._stores.get("pool")
        return None if store is None else store.checksum

    def examples(self) -> tuple[Sequence[Example], Sequence[Example]]:
        pool = self._read(self.pool_file, "pool", self.label_field)
        queries = self._read(self.queries_file, "queries", None)
        return pool, queries

    def _read(self, path: Path | None, name: str, label_field: str | None) -> Sequence[Example]:
        store = self._stores.get(name)
        if path is None:
            return IdsOnly(store.ids)
        examples = load_examples(path, text_field=self.text_field, label_field=label_field, id_field=self.id_field)
        if store is not None:
            _check_ids(examples, store, path, self.id_field)
        return examples

    def vectors(self, pool: Sequence[Example], queries: Sequence[Example]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(pool vectors, query vectors)``: memory maps of the stores or ``.npy`` files; None
        for a side the embedding model must embed."""
        def side(name: str, npy: Path | None, rows: int) -> np.ndarray | None:
            if name in self._stores:
                return self._stores[name].vectors
            return load_embeddings(npy, rows, what=name) if npy is not None else None

        return side("pool", self.embeddings, len(pool)), side("queries", self.query_embeddings, len(queries))

    def check_embedder(self, embedder: Embedder) -> None:
        """A model that embeds texts for a store's side must be the store's own model."""
        store = self._stores.get("pool") or self._stores.get("queries")
        if store is not None:
            store.check_embedder(embedder)


def _needs_texts(request: Request) -> str | None:
    """Why ``request`` cannot run on a store's ids alone (None: it can)."""
    selector, retriever = request.selectors()
    for chosen in (selector, retriever):
        if chosen is None:
            continue
        if needs_model(chosen) or needs_labels(chosen) or chosen.name == "bm25":
            return f"method {chosen.name!r} reads"
    if request.max_tokens is not None:
        return "--max-tokens costs"
    if request.label_balance:
        return "--label-balance reads"
    return None


def _check_ids(examples: Sequence[Example], store: Any, path: Path, id_field: str | None) -> None:
    """The file beside a store must hold the store's examples: the same ids, in the same order."""
    if len(examples) != store.n:
        raise InputError(f"the file holds {len(examples)} examples, the store {store.n} vectors: give the file the "
                         "store was embedded from", path=str(path))
    ids = np.asarray([e.id for e in examples], dtype=str)
    differ = np.flatnonzero(ids != np.asarray(store.ids))
    if len(differ):
        i = int(differ[0])
        lines = getattr(examples, "lines", [])
        raise InputError(f"id {examples[i].id!r}, but the store {store.folder} has {str(store.ids[i])!r} there "
                         f"({len(differ)} ids differ): give the file the store was embedded from, with the same "
                         "--id-field", path=str(path), line=lines[i] if i < len(lines) else None, field=id_field or "id")


def _refuse_context_parameters(params: Mapping[str, Any], field_name: str) -> None:
    """``seed`` and ``label_balance`` have their own options, which set them for both selectors."""
    for key, option in (("seed", "--seed"), ("label_balance", "--label-balance")):
        if key in params:
            raise InputError(f"{key} is set by {option} (for the method and the retriever alike), not as a parameter",
                             field=field_name)


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

    ``retriever_params`` are the retriever's parameters (``params`` are the method's):

    >>> Request("kmeans", k=4, label_budget=32, retriever="mmr", retriever_params={"lam": 2}).check()
    Traceback (most recent call last):
    ...
    fewshot.errors.InputError: field '--retriever-param': parameter lam=2 for method 'mmr' must be float in [0, 1]
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
    retriever_params: Mapping[str, Any] = field(default_factory=dict)

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
        check_token_budget(self.max_tokens)
        picks = self.label_budget or self.k
        if self.prune_to is not None and self.prune_to < picks:
            raise InputError(f"prune_to={self.prune_to} is smaller than "
                             + (f"label_budget={picks}" if self.label_budget else f"k={picks}"), field="--prune-to")
        if self.prune_policy not in ("hard", "easy"):
            raise InputError(f"unknown pruning policy {self.prune_policy!r}: use 'hard' or 'easy'", field="--prune-policy")
        _refuse_context_parameters(self.params, "--param")
        selector = make_selector(self.method, seed=self.seed, label_balance=self.label_balance, **self.params)
        if self.label_budget is None:
            if self.retriever_params:
                raise InputError("retriever parameters apply under a label budget: give --label-budget too",
                                 field="--retriever-param")
            return selector, None
        return selector, self._retriever()

    def _retriever(self) -> Selector:
        """The retriever, its errors naming the retriever's options (not --method and --param)."""
        _refuse_context_parameters(self.retriever_params, "--retriever-param")
        try:
            return make_selector(self.retriever, seed=self.seed, label_balance=self.label_balance,
                                 **self.retriever_params)
        except InputError as err:
            field = {"--method": "--retriever", "--param": "--retriever-param"}.get(err.field or "", err.field)
            raise InputError(err.message, path=err.path, line=err.line, field=field) from None

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
    ``params`` (the selector's; ``retriever_params`` the retriever's under a label budget), and for
    a method that consults an LLM ``label_set`` (the labels it answers over) and ``llm`` (its
    endpoint and what selecting cost).
    """

    selections: list[Selection]
    seconds: float
    per_query: bool
    pruned_to: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    retriever_params: dict[str, Any] = field(default_factory=dict)
    label_set: list[str] = field(default_factory=list)
    llm: dict[str, Any] = field(default_factory=dict)
    candidates: dict[str, Any] = field(default_factory=dict)  # the index that served the candidates, if any
    revealed: dict[int, str] = field(default_factory=dict)  # labels an oracle revealed to the retriever

    @property
    def annotated(self) -> Selection | None:
        """The label budget's picks (pool indices, pick order), None without a label budget."""
        return self.info.get("annotated")

    @property
    def by_method(self) -> list[Selection]:
        """What the method itself chose: the annotated set under a label budget, else the demos."""
        return [self.annotated] if self.annotated is not None else self.selections

    def revealed_labels(self) -> dict[int, str]:
        """Labels an oracle revealed, by pool index: SAL's as it picked (they are in its trace), and
        the annotated examples' a label-reading retriever asked for."""
        selections = self.selections + ([self.annotated] if self.annotated is not None else [])
        traced = {t["index"]: t["label"] for s in selections for t in s.trace if t.get("label") is not None}
        return {**self.revealed, **traced}

    def to_label(self, pool: Sequence[Example]) -> list[str]:
        """Ids a person should label, in pick order: the annotated examples (label budget), else every
        chosen demo, that have no label in ``pool`` and none revealed by an oracle."""
        if not has_texts(pool):  # a store's ids alone: whether they are labelled is not known here
            return []
        revealed = self.revealed_labels()
        return list(dict.fromkeys(pool[i].id for s in self.by_method for i in s.indices
                                  if pool[i].label is None and i not in revealed))


def run_selection(selector: Selector, problem: Problem, k: int, *, per_query: bool = False,
                  prune_to: int | None = None, prune_policy: str = "hard", seed: int = 0,
                  label_budget: int | None = None, retriever: Selector | None = None,
                  index: Any = None, engine: Any = None, reveal: Callable[[int], Any] | None = None) -> SelectionRun:
    """Run a selector, optionally after pruning the pool to ``prune_to`` examples by hardship.

    With ``label_budget=B`` it is two-stage ("annotate then retrieve"): ``selector`` picks the B
    examples to label, then ``retriever`` (default kNN) picks k demos from those B, per query when
    ``per_query``. ``info["annotated"]`` holds the B picks (pool indices, pick order). A token
    budget bounds one prompt's demos, so it applies to the retriever's k, not to the B labels.
    The retriever sees the labels of those B only: an oracle's (SAL's trace), else the problem's,
    else ``reveal(i)`` (pool index i; the eval's problem carries no labels, so the annotator
    cannot read them): a retriever that reads labels (valsearch, ...) holds its probes out of the B.

    ``index`` (a built :class:`~fewshot.index.CandidateIndex` over the pool) serves per-query
    selection's shortlists (:func:`~fewshot.index.select_per_query_with_index`) and the shared
    sets of the selectors that use one (GO, vote-k); ``engine(selector, problem, k, index)``, when
    given, runs per-query selection instead (the Ray engine, :class:`fewshot.distributed.RayEngine`).
    """
    start = time.perf_counter()
    keep = None
    if prune_to is not None and prune_to < problem.n:
        if prune_to < k:
            raise InputError(f"prune_to={prune_to} is smaller than k={k}")
        if index is not None:
            raise InputError("--prune-to cannot be combined with an index (the index covers the whole pool)",
                             field="--prune-to")
        keep = prune(problem.pool, prune_to, policy=prune_policy, seed=seed)
        problem = restrict(problem, keep)
        selector = _oracle_on_original_pool(selector, keep)
    info: dict[str, Any] = {}
    if label_budget is not None:
        if reveal is not None and keep is not None:
            reveal = functools.partial(_revealed_in_pool, reveal, keep)
        selections, annotated = _annotate_then_retrieve(selector, retriever, problem, k, label_budget, per_query,
                                                        index, reveal)
        info["annotated"] = annotated if keep is None else remap(annotated, keep)
    elif per_query:
        selections = _per_query(selector, problem, k, index, engine)
    else:
        selections = [_shared(selector, problem, k, index)]
    if keep is not None:
        selections = [remap(s, keep) for s in selections]
    return SelectionRun(selections, time.perf_counter() - start, per_query,
                        pruned_to=None if keep is None else len(keep), info=info)


def _per_query(selector: Selector, problem: Problem, k: int, index: Any, engine: Any) -> list[Selection]:
    if index is not None and selector.query_independent:  # one set for all (vote-k's graph from the index)
        shared = _shared(selector, problem, k, index)
        return [replace(shared, query=j) for j in range(problem.m)]
    if engine is not None:
        return engine(selector, problem, k, index)
    if index is not None:
        return select_per_query_with_index(selector, problem, index, k)
    return selector.select_per_query(problem, k)


def _shared(selector: Selector, problem: Problem, k: int, index: Any) -> Selection:
    if index is not None and selector.shared_index:
        return selector.select(problem, k, index=index)
    return selector.select(problem, k)


def _revealed_in_pool(reveal: Callable[[int], Any], keep: np.ndarray, i: int) -> Any:
    """``reveal`` asked about a pruned pool's example i, by its index in the whole pool."""
    return reveal(int(keep[i]))


def _annotate_then_retrieve(selector: Selector, retriever: Selector | None, problem: Problem, k: int,
                            label_budget: int, per_query: bool, index: Any = None,
                            reveal: Callable[[int], Any] | None = None) -> tuple[list[Selection], Selection]:
    if label_budget < k:
        raise InputError(f"label_budget={label_budget} is smaller than k={k}", field="--label-budget")
    # the B labels are not one prompt: the token budget is the retriever's, on each prompt's k demos
    annotated = _shared(selector, replace(problem, max_tokens=None), label_budget, index)
    labeled = np.array(annotated.indices, dtype=int)
    subset = replace(restrict(problem, labeled), labels=_annotated_labels(problem, annotated, reveal))
    retriever = retriever or KNN()
    selections = retriever.select_per_query(subset, k) if per_query else [retriever.select(subset, k)]
    return [remap(s, labeled) for s in selections], annotated


def _annotated_labels(problem: Problem, annotated: Selection,
                      reveal: Callable[[int], Any] | None) -> list[Any] | None:
    """The labels of the annotated examples, in pick order (None: none known): an oracle's from the
    trace (SAL), else the problem's, else ``reveal``'s."""
    if problem.labels is None and reveal is None:
        return None
    revealed = {t["index"]: t["label"] for t in annotated.trace if t.get("label") is not None}  # SAL's oracle

    def label(i: int) -> Any:
        known = revealed.get(i, None if problem.labels is None else problem.labels[i])
        return known if known is not None or reveal is None else reveal(i)
    return [label(int(i)) for i in annotated.indices]


def check_index_use(request: Request, index: IndexChoice | None, verify: int | None = None,
                    engine: str = "local") -> None:
    """Refuse, before any work, an index (or ``--verify``, ``--engine ray``) the request cannot use:
    per query, a method that does not shortlist by embedding similarity (BM25, the LLM methods);
    for a shared set, a method whose shared set uses no index (only GO's and vote-k's do);
    ``--verify`` without an index or outside per-query mode; the Ray engine outside per-query mode."""
    selector, retriever = request.selectors()
    shown = retriever if retriever is not None else selector
    per_query = request.per_query_mode
    if engine not in ("local", "ray"):
        raise InputError(f"unknown engine {engine!r}: use local or ray", field="--engine")
    if engine == "ray" and (not per_query or request.label_budget is not None):
        raise InputError("--engine ray runs per-query selection: add --per-query (and no --label-budget)",
                         field="--engine")
    if verify is not None:
        if index is None:
            raise InputError("--verify measures an index against the exact scan: give --index", field="--verify")
        if not per_query or request.label_budget is not None:
            raise InputError("--verify measures per-query selection: add --per-query (and no --label-budget)",
                             field="--verify")
        if verify < 1:
            raise InputError(f"--verify {verify} must be at least 1", field="--verify")
    if index is None:
        return
    if request.prune_to is not None:
        raise InputError("--prune-to cannot be combined with --index (the index covers the whole pool)",
                         field="--prune-to")
    if request.label_budget is not None:
        if not selector.shared_index:
            raise InputError(f"--index serves the label budget's picks only for go and votek, not {request.method}",
                             field="--index")
        return
    if per_query and not shown.query_independent:
        shortlists_by(shown)  # refuses bm25 and the LLM methods
    elif not shown.shared_index:
        why = ("picks one set for every query without one" if shown.query_independent
               else "does not use one for a shared set (go and votek do): drop --index, or add --per-query")
        raise InputError(f"method {shown.name!r} {why}", field="--index")


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
                    calibration: str = "none", label_field: str = "label", index: IndexChoice | None = None,
                    source: str | None = None, verify: int | None = None, engine: Any = None) -> SelectionRun:
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
    answers are appended to ``journal`` as they come). Under a label budget, a retriever that reads
    labels gets those of the B annotated examples from the same kind of oracle on an unlabeled pool
    (``run.revealed``). The LLM is connected, and every text checked against its context, before
    anything is embedded.

    ``index`` (an :class:`~fewshot.index.IndexChoice`: a kind to build, or a saved index, checked
    against the store checksum ``source``) serves the selection's candidates (see
    :func:`run_selection`); ``run.candidates`` says which index, its settings and build time, and
    with ``verify=N`` also its exact-pick recall on N sampled queries
    (:func:`fewshot.index.verify`). ``engine``: see :func:`run_selection`.
    """
    selector, retriever = request.selectors()
    check_index_use(request, index, verify, "local" if engine is None else "ray")
    request.fits(len(pool))
    _check_llm_options(calibration, endpoint)
    _check_labelled(selector, retriever, pool, label_field)
    reveal = _retriever_oracle(selector, retriever, pool, labels_file=labels_file, journal=journal, labels=labels,
                               ask=ask)
    oracle = None
    if "oracle" in parameters(type(selector)):  # SAL: its label set and labels file before any embedding
        oracle = _labelling_oracle(pool, labels_file, journal, labels, ask)
        if selector.oracle is None:
            selector.set_params(oracle=oracle)
        if selector.model is None and not oracle.labels:
            raise InputError("SAL needs the label set: pass --labels a,b,c (the pool has no labels)", field="--labels")
    label_set = (oracle or reveal).labels if oracle or reveal else label_words(labels, (e.label for e in pool))
    consulting = [s for s in (selector, retriever) if s is not None and needs_model(s)]
    references: dict[str, Any] = {}
    with ExitStack() as stack:
        if consulting:  # the LLM first: a text too long for its context is refused before any embedding
            model = connect_llm(consulting, stack, template, label_set, llm, endpoint, calibration)
            check_lengths(model, [pool, queries])
            references = connect_references(consulting, stack, template, label_set, llm, endpoint, calibration)
            for reference in references.values():
                check_lengths(reference, [pool])
        problem = build_problem(pool, queries, embedder=embedder, pool_vectors=pool_vectors,
                                query_vectors=query_vectors, template=template, max_tokens=request.max_tokens)
        built, candidates = index.open(problem.pool, source) if index is not None else (None, None)
        run = run_selection(selector, problem, request.k, per_query=request.per_query_mode,
                            prune_to=request.prune_to, prune_policy=request.prune_policy, seed=request.seed,
                            label_budget=request.label_budget, retriever=retriever, index=built, engine=engine,
                            reveal=reveal)
        if reveal is not None:
            run.revealed = dict(reveal.revealed)
        if candidates is not None:
            run.candidates = candidates
            if verify is not None:
                run.candidates["verify"] = verify_index(selector, problem, built, request.k, n_sample=verify,
                                                        seed=request.seed)
    run.params = selector.get_params()
    if retriever is not None:  # every parameter the retriever ran with, defaults included
        run.retriever_params = retriever.get_params()
    if consulting:
        model = consulting[0].model
        run.label_set = list(getattr(model, "labels", None) or label_set)
        run.llm = _llm_report(model, run, request, len(pool), len(queries), sal=oracle is not None)
        for name, reference in references.items():  # its prompts are among selection_prompts
            run.llm.setdefault("references", {})[name] = _endpoint_report(reference)
    return run


def _check_labelled(selector: Selector, retriever: Selector | None, pool: Sequence[Example], label_field: str) -> None:
    """Refuse a method that reads the pool's labels on a pool with an unlabeled example (a retriever
    reads only the labels of the annotated examples: :func:`_retriever_oracle` reveals them)."""
    missing = [i for i, e in enumerate(pool) if e.label is None] if needs_labels(selector) else []
    if missing:
        raise InputError(f"{selector.name} reads the pool's labels (demos and held-out probes), and "
                         f"{len(missing)} of the {len(pool)} pool examples have none: label them, pick the "
                         "demos with a method that works on an unlabeled pool (see `fewshot methods`), or have "
                         f"one pick examples to label and {selector.name} retrieve from them (--method kmeans "
                         f"--label-budget B --retriever {selector.name}: it reads only the labels of those B)",
                         path=_where(pool, missing[0]), field=label_field)


class _Revealer:
    """An oracle that remembers what it revealed (pool index -> label), for the demo records."""

    def __init__(self, oracle: Oracle) -> None:
        self.oracle, self.labels, self.revealed = oracle, oracle.labels, {}

    def __call__(self, index: int) -> str:
        self.revealed[index] = self.oracle(index)
        return self.revealed[index]


def oracle_labels_demos(selector: Selector, retriever: Selector | None) -> bool:
    """Whether an oracle may label the demos shown on an unlabeled pool: SAL's picks, or under a label
    budget the B that a label-reading retriever reads."""
    return "oracle" in parameters(type(selector)) or (retriever is not None and needs_labels(retriever))


def _labelling_oracle(pool: Sequence[Example], labels_file: Any, journal: Path | None,
                      labels: Sequence[str] | None, ask: Ask | None) -> Oracle:
    """The oracle that labels what SAL or a label-reading retriever picks on an unlabeled pool; its
    typed answers go to ``journal``, by default one in the cache folder keyed by the pool."""
    return make_oracle(pool, labels_file=labels_file, journal=journal or journal_path(pool), labels=labels, ask=ask)


def _retriever_oracle(selector: Selector, retriever: Selector | None, pool: Sequence[Example], *,
                      labels_file: Any, journal: Path | None, labels: Sequence[str] | None,
                      ask: Ask | None) -> _Revealer | None:
    """Under a label budget, a retriever that reads labels (valsearch, ...) on a pool with unlabeled
    examples gets those of the B annotated from an oracle, as SAL does (``--labels-file``, the
    journal, else a person at the terminal); None where no label needs revealing (a labelled pool,
    a retriever that reads none, or SAL, whose own oracle labels what it picks)."""
    sal = "oracle" in parameters(type(selector))  # its own oracle labels what it picks
    if sal or not oracle_labels_demos(selector, retriever) or all(e.label is not None for e in pool):
        return None
    oracle = _labelling_oracle(pool, labels_file, journal, labels, ask)
    if not oracle.labels:
        raise InputError(f"the retriever {retriever.name} scores demos on the labels of the examples picked to "
                         "label, and no label is known yet: pass the label set (--labels a,b,c) or a --labels-file",
                         field="--labels")
    return _Revealer(oracle)


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


def open_reference(stack: ExitStack, name: str, target: Any, base_url: str | None = None,
                   **options: Any) -> Any:
    """An LLM client for the reference model ``name`` (excess-loss ``reference="llm"``), entered on
    ``stack``: on ``base_url`` when given (an endpoint that routes by model name), else the
    configured endpoint, else a local llama-server of that model. ``options`` go to the client
    (``api_key``, ``api``, ``cache_dir``, ``timeout``, ...). Refused (field ``reference_llm``)
    when it would answer as the ``target`` client does: the same model and cache, or an endpoint
    that lists its models without ``name`` (llama-server serves one model per URL and ignores the
    name asked for)."""
    from .llm.server import llm_endpoint

    client = stack.enter_context(llm_endpoint(base_url, name, **options))
    target = getattr(target, "client", target)
    if (getattr(target, "cache_namespace", None), getattr(target, "model", None)) == (
            getattr(client, "cache_namespace", None), name):
        raise InputError(f"the reference LLM {name!r} is the target LLM itself: its excess loss would be 0 for "
                         "every example; name another model", field="reference_llm")
    served = client.served_models() if hasattr(client, "served_models") else None
    if served is not None and name not in served:
        raise InputError(f"the endpoint {client.base_url} serves {', '.join(served)}, not the reference LLM {name!r} "
                         "(llama-server serves one model per URL and answers any name with it): leave --base-url "
                         "out to start a local server for each, or use an endpoint that serves both",
                         field="reference_llm")
    return client


def connect_references(selectors: Sequence[Selector], stack: ExitStack, template: Template, labels: Sequence[str],
                       llm: Any = None, endpoint: Mapping[str, Any] | None = None,
                       calibration: str = "none") -> dict[str, Any]:
    """Give every selector that asks for a reference LLM by name (:func:`~fewshot.selection.reference_wanted`:
    excess-loss with ``reference="llm"``) that model, opened by :func:`open_reference` on the
    target's base URL when ``llm`` is one (else the configured endpoint or a local llama-server),
    one per name. Returns the models opened, by name."""
    opened: dict[str, Any] = {}
    options = {key: value for key, value in dict(endpoint or {}).items() if key not in ("model", "local_model")}
    for selector in selectors:
        name = reference_wanted(selector)
        if name is None:
            continue
        if name not in opened:
            client = open_reference(stack, name, selector.model, llm if isinstance(llm, str) else None, **options)
            opened[name] = open_model(stack, template, labels, client, calibration=calibration)
        selector.set_params(reference_model=opened[name])
    return opened


def _llm_report(model: Any, run: SelectionRun, request: Request, n: int, m: int, sal: bool) -> dict[str, Any]:
    """The endpoint and what selecting cost: ``selection_prompts``, the predictions the method asked
    for (summed over its selections, the label budget's included; the client may answer some from
    its cache: ``stats``). For SAL also what naive SAL would send (``naive_calls``: every pool
    example a candidate in each round, each kept label simulated on every query of the selection)
    beside what it simulated (``simulated_calls``, the same as ``selection_prompts``)."""
    report = _endpoint_report(model)
    prompts = selection_prompts(run.by_method + (run.selections if run.annotated is not None else []))
    report["selection_prompts"] = prompts
    if not sal:
        return report
    labels = len(run.label_set)
    rounds = request.label_budget or request.k
    naive = sum(n * (1 + labels * (1 if s.query is not None else m)) * rounds for s in run.by_method)
    return {**report, "simulated_calls": selection_prompts(run.by_method), "naive_calls": naive}


def _endpoint_report(model: Any) -> dict[str, Any]:
    """A model's endpoint, model name and client counters (cache hits, tokens), where it has a client."""
    client = model if hasattr(model, "base_url") else getattr(model, "client", None)
    if client is None:
        return {}
    return {"base_url": getattr(client, "base_url", None), "model": getattr(client, "model", None),
            "stats": dict(getattr(client, "stats", {}))}


def selection_prompts(selections: Sequence[Selection]) -> int:
    """The LLM predictions selections asked for (``info["prompts"]``; a shared set given to every
    query carries its cost on the first only)."""
    return int(sum(s.info.get("prompts", s.info.get("llm_calls", 0)) for s in selections))


def demo_records(run: SelectionRun, pool: Sequence[Example], queries: Sequence[Example]) -> list[dict[str, Any]]:
    """One record per chosen demo, in pick order (``rank`` 1 = picked first); a label an oracle
    revealed fills an unlabeled example's; ``query_id`` per query. A pool of a store's ids alone
    (:class:`IdsOnly`) gives ``text`` and ``label`` None and ``needs_label`` None (not known)."""
    records = []
    known = has_texts(pool)
    revealed = run.revealed_labels()
    for selection in run.selections:
        for rank, (index, score) in enumerate(zip(selection.indices, selection.scores), start=1):
            example = pool[index]
            label = example.label if example.label is not None else revealed.get(index)
            record = {"id": example.id, "text": example.text, "label": label, "rank": rank,
                      "score": round(score, 6), "pool_index": index, "needs_label": label is None if known else None}
            if run.per_query:
                record["query_id"] = queries[selection.query].id
            records.append(record)
    return records


def run_meta(run: SelectionRun, request: Request, pool: Sequence[Example], queries: Sequence[Example], *,
             embedder: Embedder | None, template: Template, embedding_model: str | None = None) -> dict[str, Any]:
    """What ``OUT.meta.json`` holds. ``trace`` is the method's own (the label budget's picks, where
    SAL's oracle labels show), ``retriever_trace`` the retriever's first selection; ``stopped``
    the reasons some demo lists are short, ``annotation_stopped`` why fewer than B were annotated.
    ``embedding_model``: the model named by the vectors' source (a store's manifest), when known;
    ``candidates`` the index that served the candidates and ``verify`` its measured exactness."""
    annotated = run.annotated
    model = embedding_model or ("precomputed" if embedder is None else embedder.model_id)
    meta = {"method": request.method, "params": run.params, "k": request.k, "seed": request.seed,
            "per_query": run.per_query,
            "embedding_model": model,
            "embeddings_computed": getattr(embedder, "computed", None),
            "selection_seconds": round(run.seconds, 4), "pool_size": len(pool), "queries": len(queries),
            "max_tokens": request.max_tokens, "template": template.name,
            "ids": {"pool": getattr(pool, "id_source", None), "queries": getattr(queries, "id_source", None)},
            "pruned_to": run.pruned_to, "stopped": sorted({s.stopped for s in run.selections if s.stopped}),
            "label_budget": request.label_budget, "retriever": request.retriever if request.label_budget else None,
            "annotation_stopped": None if annotated is None else annotated.stopped,
            "to_label": run.to_label(pool), "trace": [list(s.trace) for s in run.by_method[:1]]}
    if request.label_budget is not None:
        meta["retriever_params"] = run.retriever_params
    if annotated is not None:
        meta["retriever_trace"] = [list(s.trace) for s in run.selections[:1]]
    info = run.by_method[0].info if run.by_method else {}
    if info:  # what the method found on the way: valsearch's candidates and rounds, the probes, ...
        meta["selection_info"] = _json_ready(info)
    if run.llm:
        meta["llm"] = run.llm
    if run.candidates:
        meta["candidates"] = {key: value for key, value in run.candidates.items() if key != "verify"}
        if "verify" in run.candidates:
            meta["verify"] = run.candidates["verify"]
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
