"""The selector protocol shared by every method, and the greedy driver that enforces the budget.

Every selector is a small object with explicit parameters and two calls:

- ``select(problem, k)`` -> one shared :class:`Selection` for all queries;
- ``select_per_query(problem, k)`` -> one :class:`Selection` per query.

Per-query selectors that shortlist by embedding similarity (``shortlist_by`` is not None) also take
``select_per_query(problem, k, candidates=source)``: ``source(rows, size)`` gives each query row its
``size`` candidate pool ids (a vector index's shortlist, :mod:`fewshot.index`) instead of a scan of
the whole pool.

Selectors only score candidates. The driver here picks the best feasible one, T times, and so
enforces for every method alike: no duplicates, the token budget (budget-aware: a demo that no
longer fits is skipped, never truncated afterwards) and optional label balance.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ..errors import InputError
from ..similarity import top_k
from .params import Constraint, check, init_parameters, is_collaborator, unknown

# A candidate source: ``source(rows, size)`` -> ``(len(rows), size)`` pool ids for the query rows
# ``rows``, best first; -1 where it has none (such a slot is never picked).
Candidates = Callable[[np.ndarray, int], np.ndarray]

# Pool rows per block when a product or a pass runs over the whole pool (a memory map, float16 or
# not): about 64 MB of float32 per block, so nothing pool-sized is ever copied.
BLOCK_ELEMENTS = 1 << 24


def as_float(array: np.ndarray) -> np.ndarray:
    """float32 or float64 rows to compute with (float16 is widened; float32 and float64 are not copied)."""
    return np.asarray(array, dtype=np.result_type(array.dtype, np.float32))


def rows_per_block(width: int) -> int:
    """Rows of ``width`` entries in a block of :data:`BLOCK_ELEMENTS`."""
    return max(1, BLOCK_ELEMENTS // max(1, width))


def block_size(pool: np.ndarray) -> int:
    """Pool rows per block of :data:`BLOCK_ELEMENTS` entries."""
    return rows_per_block(pool.shape[1])


def dot_pool(targets: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """``targets @ pool.T`` block by block over the pool rows, each block widened to float32 at
    most: a float16 or memory-mapped pool is never copied whole. One block (the plain product)
    for a pool under :data:`BLOCK_ELEMENTS` entries.

    >>> dot_pool(np.array([[1., 2.]]), np.array([[1., 0.], [0., 1.], [1., 1.]], dtype=np.float16)).tolist()
    [[1.0, 2.0, 3.0]]
    """
    step = block_size(pool)
    if len(pool) <= step:
        return targets @ as_float(pool).T
    out = np.empty((len(targets), len(pool)), dtype=np.result_type(targets.dtype, as_float(pool[:0]).dtype))
    for start in range(0, len(pool), step):
        out[:, start:start + step] = targets @ as_float(pool[start:start + step]).T
    return out


def row_norms(pool: np.ndarray) -> np.ndarray:
    """``(n,)`` squared norms of the rows, block by block."""
    step = block_size(pool)
    if len(pool) <= step:
        block = as_float(pool)
        return np.einsum("ij,ij->i", block, block)
    parts = []
    for start in range(0, len(pool), step):
        block = as_float(pool[start:start + step])
        parts.append(np.einsum("ij,ij->i", block, block))
    return np.concatenate(parts)


@dataclass(frozen=True)
class Problem:
    """What a selector sees. Embeddings are unit-norm rows; labels are used only for label balance
    (and, in SAL, as the oracle that reveals a chosen demo's label)."""

    pool: np.ndarray
    queries: np.ndarray
    pool_texts: Sequence[str] = ()
    query_texts: Sequence[str] = ()
    labels: Sequence[str | None] | None = None
    token_costs: np.ndarray | None = None
    max_tokens: int | None = None

    @property
    def n(self) -> int:
        return len(self.pool)

    @property
    def m(self) -> int:
        return len(self.queries)


@dataclass(frozen=True)
class Selection:
    """Chosen pool indices in pick order, the score each pick won with, and a trace of why.

    ``scores[i]`` is pick i's value on its method's own scale, and for every method higher is
    better: the pick is the best-scoring feasible candidate of its step (the trace's
    ``runner_up_score`` is the next best). Scores compare candidates within one selection, not
    across methods or steps. Per method:

    - ``go``: ``"g"``, minus the largest query variance left after the pick; ``"v"``, the total query
      variance it removes; per query, the query's variance it removes;
    - ``sal``: minus the objective's loss (the trace also gives the ``loss``);
    - ``random``: a seeded uniform draw in [0, 1);
    - ``knn``: the cosine with the query (shared: with the mean query);
    - ``mmr``: ``lam * relevance - (1 - lam) * (largest cosine with an earlier pick)``;
    - ``bm25``: the BM25 score (shared: summed over queries, each scaled to a maximum of 1);
    - ``kmeans``: minus the cluster's size rank, minus a spread in [0, 0.5] (minus k more for a
      cluster already covered);
    - ``votek``: the discounted votes of the example's unselected in-neighbours;
    - ``dpp``: the log of its conditional variance, the gain in log det of the kernel;
    - ``valsearch``, ``random-search``: the winning set's probe score, the same for every pick (the
      set is chosen whole): its mean ``metric`` over the probes it answered (log p(gold), after
      batch calibration with ``"calibrated"``, or accuracy); the runner-up is the best other set;
    - ``excess-loss``: relevance percentile + ``weight`` x excess-loss percentile, both ranks
      within the shortlist scaled to [0, 1]; an example outside the shortlist scores -10 plus its
      cosine (a fallback);
    - ``valued``: the ``inner`` method's score (the trace adds each pick's ``value``);
    - ``sal-probes``: the mean probe ``metric`` of the demos so far plus the pick.

    ``query`` is None for a shared set, else the query's index. ``stopped`` says why fewer
    than k demos were chosen (for instance the token budget), None when k were chosen.
    """

    indices: tuple[int, ...]
    scores: tuple[float, ...]
    trace: tuple[dict[str, Any], ...] = ()
    query: int | None = None
    stopped: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def pool_mean(pool: np.ndarray) -> np.ndarray:
    """The mean row, summed block by block in float64 (no full copy of a float16 or memory-mapped pool)."""
    total = np.zeros(pool.shape[1], dtype=np.float64)
    for start in range(0, len(pool), block_size(pool)):
        total += as_float(pool[start:start + block_size(pool)]).sum(axis=0, dtype=np.float64)
    return (total / max(1, len(pool))).astype(np.float32)


class ShiftedRows:
    """The rows of ``pool`` minus ``shift``, computed as they are read: a centred pool without a
    pool-sized copy, for the selectors' gathers (``rows[ids]``) and block passes.

    >>> rows = ShiftedRows(np.array([[1., 2.], [3., 4.]]), np.array([1., 1.]))
    >>> rows[np.array([1])].tolist(), len(rows), rows.shape
    ([[2.0, 3.0]], 2, (2, 2))
    """

    def __init__(self, pool: np.ndarray, shift: np.ndarray) -> None:
        self.pool, self.shift = pool, shift
        self.shape, self.dtype = pool.shape, np.result_type(as_float(pool[:0]).dtype, shift.dtype)

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, index: Any) -> np.ndarray:
        return as_float(self.pool[index]) - self.shift

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


class Selector:
    """Base class: parameters live on the instance under their ``__init__`` names, as in scikit-learn.

    Each subclass declares ``parameter_constraints`` (see :mod:`fewshot.selection.params`), one entry
    per ``__init__`` parameter; every construction checks the values against it before ``__init__``
    runs, so ``GO(noise=-1)`` and ``make_selector("go", noise=-1)`` fail alike. ``get_params``,
    ``set_params`` and ``clone`` read and write the same parameters.

    >>> from fewshot.selection import MMR
    >>> mmr = MMR(lam=0.5); mmr.get_params()
    {'lam': 0.5, 'shortlist': 256, 'label_balance': False}
    >>> mmr.clone(lam=1), mmr.set_params(shortlist=None)
    (MMR(lam=1.0, shortlist=256, label_balance=False), MMR(lam=0.5, shortlist=None, label_balance=False))
    >>> MMR(lam=2)
    Traceback (most recent call last):
    ...
    fewshot.errors.InputError: field '--param': parameter lam=2 for method 'mmr' must be float in [0, 1]
    """

    name: ClassVar[str] = ""
    query_independent: ClassVar[bool] = False  # the set does not depend on the queries
    # How per-query candidates are shortlisted: "cosine", "abs-cosine" (GO), or None (not by embedding
    # similarity: BM25 scores words, SAL asks an LLM), which refuses a candidate source (a vector index).
    shortlist_by: ClassVar[str | None] = None
    # Whether select(problem, k, index=...) uses a candidate index for the shared set (GO, vote-k).
    shared_index: ClassVar[bool] = False
    parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {}
    # what to do instead, added to the error when a parameter's value is refused (e.g. a name given for an object)
    parameter_hints: ClassVar[dict[str, str]] = {}
    label_balance: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        declared, signature = set(cls.parameter_constraints), set(init_parameters(cls))
        if declared != signature:
            raise TypeError(f"{cls.__name__}.parameter_constraints must list exactly its __init__ parameters: "
                            f"missing {sorted(signature - declared)}, extra {sorted(declared - signature)}")
        cls.__init__ = _checked_init(cls, cls.__init__)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` checked against ``parameter_constraints`` (unknown names are errors)."""
        checked = {}
        for key, value in params.items():
            if key not in cls.parameter_constraints:
                raise unknown(cls.name, key, cls.parameter_constraints)
            try:
                checked[key] = check(cls.name or cls.__name__, key, value, cls.parameter_constraints[key])
            except InputError as err:
                if key not in cls.parameter_hints:
                    raise
                raise InputError(f"{err.message}: {cls.parameter_hints[key]}", field=err.field) from None
        return checked

    def get_params(self, collaborators: bool = False) -> dict[str, Any]:
        """The ``__init__`` parameters' current values, in signature order. Collaborators (SAL's model
        and oracle: objects, not settings) only with ``collaborators=True``, so by default the result
        is plain data (JSON-ready)."""
        constraints = self.parameter_constraints
        return {key: getattr(self, key) for key in init_parameters(type(self))
                if collaborators or not is_collaborator(constraints[key])}

    def set_params(self, **params: Any) -> "Selector":
        """Change parameters in place, checked as at construction; returns the selector."""
        for key, value in self.check_params(params).items():
            setattr(self, key, value)
        return self

    def clone(self, **changes: Any) -> "Selector":
        """A new selector with the same parameters (collaborators shared, not copied), ``changes``
        applied, and no state from earlier selections."""
        return type(self)(**{**self.get_params(collaborators=True), **changes})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def select(self, problem: Problem, k: int) -> Selection:
        raise NotImplementedError

    def select_per_query(self, problem: Problem, k: int) -> list[Selection]:
        raise NotImplementedError


def _checked_init(cls: type[Selector], init: Callable[..., None]) -> Callable[..., None]:
    """``init`` behind the constraint check: the arguments are bound to its signature (defaults
    filled in) and checked before it runs."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def checked(self: Selector, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, **cls.check_params({k: v for k, v in bound.arguments.items() if k != "self"}))

    return checked


def check_k(problem: Problem, k: int) -> None:
    if problem.n == 0:
        raise InputError("the pool is empty")
    if k < 1:
        raise InputError(f"k={k} must be at least 1")
    if k > problem.n:
        raise InputError(f"k={k} is larger than the pool ({problem.n} examples)")
    if problem.max_tokens is not None and problem.token_costs is not None:
        cheapest = int(np.min(problem.token_costs))
        if cheapest > problem.max_tokens:
            raise InputError(f"every demo alone exceeds max_tokens={problem.max_tokens} (shortest: {cheapest} tokens)")


class Feasibility:
    """Which candidates may still be picked, for a batch of b independent selections over
    candidate matrices ``(b, M)`` of pool indices."""

    def __init__(self, problem: Problem, candidates: np.ndarray, k: int, label_balance: bool) -> None:
        b, _ = candidates.shape
        self.complete = candidates.strides[0] == 0 or bool((candidates >= 0).all())  # no -1 (no candidate) slot
        self.open = np.ones(candidates.shape, dtype=bool) if self.complete else candidates >= 0
        self.costs = None
        if problem.max_tokens is not None and problem.token_costs is not None:
            self.costs = np.asarray(problem.token_costs)[candidates]
            self.remaining = np.full(b, problem.max_tokens, dtype=np.int64)
        self.codes = None
        if label_balance:
            if problem.labels is None or any(label is None for label in problem.labels):
                raise InputError("label balance needs a label for every pool example")
            classes, codes = np.unique(np.asarray(problem.labels, dtype=object).astype(str), return_inverse=True)
            self.codes = codes[candidates]
            self.counts = np.zeros((b, len(classes)), dtype=np.int64)
            self.cap = math.ceil(k / len(classes))

    def mask(self) -> np.ndarray:
        ok = self.open.copy()
        if self.costs is not None:
            ok &= self.costs <= self.remaining[:, None]
        if self.codes is not None:
            ok &= np.take_along_axis(self.counts, self.codes, axis=1) < self.cap
        return ok

    def stop_reason(self) -> str:
        """Why a selection under these constraints ended with fewer than k picks: the one wording
        every method reports."""
        if self.costs is not None:
            return "token budget exhausted"
        return "label balance cap reached" if self.codes is not None else "no candidates left"

    def take(self, rows: np.ndarray, cols: np.ndarray) -> None:
        self.open[rows, cols] = False
        if self.costs is not None:
            self.remaining[rows] -= self.costs[rows, cols]
        if self.codes is not None:
            self.counts[rows, self.codes[rows, cols]] += 1


def batch_picks(b: int, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(arange(b), picked column per row, which rows picked)`` for batched rank-one updates;
    rows that did not pick get column 0 and must be masked out with ``live``."""
    picked = np.zeros(b, dtype=np.int64)
    picked[rows] = cols
    live = np.zeros(b, dtype=bool)
    live[rows] = True
    return np.arange(b), picked, live


class CandidateVectors:
    """The embeddings of a batch of candidate sets ``(b, M)``, for products with one vector per row.

    When every row holds the whole pool in order (the exact per-query mode, and shared sets), the
    pool is not copied b times: ``dot`` is then one matrix product ``targets @ pool.T`` (block by
    block for a large pool, :func:`dot_pool`). Otherwise the candidates' vectors are gathered once,
    widened to float32 from float16; a -1 candidate (none) gathers some row, never picked.

    >>> pool = np.eye(3); whole = CandidateVectors(pool, np.tile(np.arange(3), (2, 1)))
    >>> whole.whole, whole.dot(np.array([[1., 0, 0], [0, 2, 0]])).tolist()
    (True, [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    >>> CandidateVectors(pool, np.array([[2, 0]])).dot(np.array([[0., 0, 3]])).tolist()
    [[3.0, 0.0]]
    """

    def __init__(self, pool: np.ndarray, candidates: np.ndarray) -> None:
        self.pool, self.candidates = pool, candidates
        n = len(pool)
        rows = candidates[:1] if candidates.strides[0] == 0 else candidates  # a broadcast: one row
        self.whole = candidates.shape[1] == n and bool((rows == np.arange(n)).all())
        self.gathered = None if self.whole else as_float(pool[candidates])  # (b, M, d)

    def dot(self, targets: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``(r, M)``: each target vector ``(r, d)`` against the candidates of its row (``rows``:
        sorted distinct row indices, default all rows)."""
        if self.whole:
            return dot_pool(targets, self.pool)
        block = self.gathered if rows is None or len(rows) == len(self.gathered) else self.gathered[rows]
        return np.matmul(block, targets[:, :, None])[:, :, 0]

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``(r, d)``: the vectors of candidates ``candidates[rows, cols]``."""
        return as_float(self.pool[self.candidates[rows, cols]])

    def sq_norms(self) -> np.ndarray:
        """``(b, M)`` squared norms of the candidates (of the gathered rows only: no pass over the pool)."""
        if self.whole:
            return np.broadcast_to(row_norms(self.pool), self.candidates.shape).copy()
        flat = self.gathered.reshape(-1, self.gathered.shape[-1])
        return np.einsum("ij,ij->i", flat, flat).reshape(self.candidates.shape)


class StackedRows:
    """The rows of ``pool`` then those of ``queries`` as one candidate row (``b = 1``, every
    column), for a shared design's posterior over both, without concatenating them: the pool (a
    memory map, float16 or not) is read block by block (:func:`dot_pool`), never copied.

    >>> rows = StackedRows(np.eye(2), np.array([[1., 1.]]))
    >>> rows.dot(np.array([[1., 2.]])).tolist(), rows.sq_norms().tolist(), rows.at(np.array([0]), np.array([2])).tolist()
    ([[1.0, 2.0, 3.0]], [[1.0, 1.0, 2.0]], [[1.0, 1.0]])
    """

    whole = True

    def __init__(self, pool: np.ndarray, queries: np.ndarray) -> None:
        self.pool, self.queries = pool, queries
        self.dtype = np.result_type(as_float(pool[:0]).dtype, as_float(queries[:0]).dtype)

    def dot(self, targets: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        return np.concatenate([dot_pool(targets, self.pool), targets @ as_float(self.queries).T], axis=1)

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        n = len(self.pool)
        return np.stack([self.pool[c] if c < n else self.queries[c - n] for c in cols.tolist()]).astype(self.dtype)

    def sq_norms(self) -> np.ndarray:
        return np.concatenate([row_norms(self.pool), row_norms(self.queries)])[None, :]


class GreedySelector(Selector):
    """A selector defined by three hooks over a batch of candidate sets ``(b, M)``:

    - ``_start(problem, candidates, queries, k)``: build state. ``queries`` is None for a shared
      set (all queries matter), else the ``(b,)`` query index each row selects for; ``k`` is the
      number of demos asked for (state lives here, never on the instance, so a selector is re-entrant);
    - ``_gains(state, feasible)``: ``(b, M)`` scores, higher is better (only feasible ones are read);
    - ``_commit(state, rows, cols)``: the pick ``candidates[rows, cols]`` was made; update state.

    Per-query mode shortlists each query's ``shortlist`` most relevant candidates first
    (``shortlist=None``: the whole pool, exact), or takes them from a candidate source
    (``candidates=``: a vector index's shortlists, ranked by ``shortlist_by``). Queries are
    processed in chunks of as many rows as fit ``chunk_elements`` state entries, so memory stays
    bounded for any m; in exact mode the candidates' vectors are the pool itself (see
    :class:`CandidateVectors`), not b copies of it.

    Selectors whose gains never change after a pick (:class:`StaticGains`: kNN, BM25, random) skip
    the k-step loop when no token budget or label balance is active: their picks are the top k.
    """

    shortlist: int | None = None
    shortlist_by: ClassVar[str | None] = "cosine"
    static_gains: ClassVar[bool] = False
    chunk_elements: ClassVar[int] = 1 << 24  # ~64 MB of float32 state per chunk of queries

    def _start(self, problem: Problem, candidates: np.ndarray, queries: np.ndarray | None, k: int) -> Any:
        raise NotImplementedError

    def _gains(self, state: Any, feasible: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _commit(self, state: Any, rows: np.ndarray, cols: np.ndarray) -> None:
        raise NotImplementedError

    def _note(self, state: Any, row: int) -> dict[str, Any]:
        """Extra, method-specific facts for the trace after a pick (e.g. remaining variance)."""
        return {}

    def _relevance(self, problem: Problem, queries: np.ndarray) -> np.ndarray:
        """``(b, n)`` relevance used to shortlist candidates per query (cosine by default)."""
        return dot_pool(problem.queries[queries], problem.pool)

    def shortlist_size(self, n: int, k: int) -> int:
        """Candidates per query: ``shortlist`` (at least 4k), or the whole pool when it is None."""
        return n if self.shortlist is None else min(n, max(self.shortlist, 4 * k))

    def select(self, problem: Problem, k: int) -> Selection:
        check_k(problem, k)
        candidates = np.arange(problem.n)[None, :]
        return self._drive(problem, candidates, None, k)[0]

    def select_per_query(self, problem: Problem, k: int, *, candidates: Candidates | None = None) -> list[Selection]:
        """One selection per query. ``candidates(rows, size)``: each query row's ``size`` candidate
        pool ids (-1: none) instead of the top ``size`` by relevance over the whole pool."""
        check_k(problem, k)
        if self.query_independent:
            shared = self.select(problem, k)
            return [replace(shared, query=j) for j in range(problem.m)]
        if candidates is not None and self.shortlist_by is None:
            raise InputError(f"method {self.name!r} does not shortlist by embedding similarity: a vector index "
                             "cannot serve it", field="--index")
        n, d = problem.n, problem.pool.shape[1]
        size = self.shortlist_size(n, k)
        if candidates is None and size < n and self.shortlist_by is not None:
            candidates = _exact_shortlists(problem, absolute=self.shortlist_by == "abs-cosine")
        # state per query row: ~k + 8 arrays over its candidates; a shortlist also gathers their
        # vectors, and without a candidate source scores the whole pool once to find them
        if candidates is not None:
            per_row = size * (k + 8 + d)
        else:
            per_row = size * (k + 8) + (0 if size == n else size * d + n)
        chunk = max(1, min(problem.m, self.chunk_elements // per_row))
        out: list[Selection] = []
        for start in range(0, problem.m, chunk):
            queries = np.arange(start, min(start + chunk, problem.m))
            if candidates is not None:
                ids = _checked_candidates(candidates(queries, size), len(queries), size, n)
            elif size == n:
                ids = np.broadcast_to(np.arange(n), (len(queries), n))
            else:
                ids = top_k(self._relevance(problem, queries), size)
            out.extend(self._drive(problem, ids, queries, k))
        return out

    def _drive(self, problem: Problem, candidates: np.ndarray, queries: np.ndarray | None,
               k: int) -> list[Selection]:
        b, M = candidates.shape
        feasible = Feasibility(problem, candidates, k, self.label_balance)
        state = self._start(problem, candidates, queries, k)
        picks: list[list[int]] = [[] for _ in range(b)]
        scores: list[list[float]] = [[] for _ in range(b)]
        traces: list[list[dict]] = [[] for _ in range(b)]
        if self.static_gains and feasible.costs is None and feasible.codes is None and feasible.complete:
            # Gains never change and nothing but distinctness constrains a pick: the greedy loop
            # would take the top k in order (ties: lower column, as np.argmax), so take them at once.
            gains = self._gains(state, feasible.mask())
            order = top_k(gains, min(k + 1, M))
            ranked = np.full((b, k + 1), -np.inf, dtype=gains.dtype)
            ranked[:, :order.shape[1]] = np.take_along_axis(gains, order, axis=1)
            chosen = np.zeros((b, k + 1), dtype=np.int64)
            chosen[:, :order.shape[1]] = np.take_along_axis(candidates, order, axis=1)
            rows = np.arange(b)
            for step in range(k):
                self._append(state, picks, scores, traces, step, rows, chosen[:, step], ranked[:, step],
                             np.full(b, M - step), chosen[:, step + 1], ranked[:, step + 1])
            return self._results(picks, scores, traces, queries, k, feasible)
        active = np.ones(b, dtype=bool)
        for step in range(k):
            ok = feasible.mask()
            count = np.count_nonzero(ok, axis=1)
            active &= count > 0
            if not active.any():
                break
            rows = np.flatnonzero(active)
            gains = self._gains(state, ok)
            if len(rows) < b:
                gains, ok, count = gains[rows], ok[rows], count[rows]
            gains = np.where(ok, gains, -np.inf)
            at = np.arange(len(rows))
            cols = np.argmax(gains, axis=1)  # ties go to the lower column: deterministic
            best = gains[at, cols]
            gains[at, cols] = -np.inf
            second = np.argmax(gains, axis=1)
            feasible.take(rows, cols)
            self._commit(state, rows, cols)
            self._append(state, picks, scores, traces, step, rows, candidates[rows, cols], best, count,
                         candidates[rows, second], gains[at, second])
        return self._results(picks, scores, traces, queries, k, feasible)

    def _append(self, state: Any, picks: list, scores: list, traces: list, step: int, rows: np.ndarray,
                index: np.ndarray, score: np.ndarray, feasible: np.ndarray, runner_up: np.ndarray,
                runner_up_score: np.ndarray) -> None:
        """Record one step's picks (arrays over ``rows``); a runner-up scored -inf is None."""
        noted = type(self)._note is not GreedySelector._note
        for row, i, sc, f, r, rs in zip(rows.tolist(), index.tolist(), score.tolist(), feasible.tolist(),
                                        runner_up.tolist(), runner_up_score.tolist()):
            real = math.isfinite(rs)
            picks[row].append(i)
            scores[row].append(sc)
            entry = {"step": step + 1, "index": i, "score": sc, "feasible": f,
                     "runner_up": r if real else None, "runner_up_score": rs if real else None}
            if noted:
                entry.update(self._note(state, row))
            traces[row].append(entry)

    @staticmethod
    def _results(picks: list, scores: list, traces: list, queries: np.ndarray | None, k: int,
                 feasible: Feasibility) -> list[Selection]:
        results = []
        for row in range(len(picks)):
            stopped = feasible.stop_reason() if len(picks[row]) < k else None
            results.append(Selection(tuple(picks[row]), tuple(scores[row]), tuple(traces[row]),
                                     query=None if queries is None else int(queries[row]), stopped=stopped))
        return results


def _checked_candidates(ids: Any, rows: int, size: int, n: int) -> np.ndarray:
    """A candidate source's answer as ``(rows, size)`` int64 pool ids in [-1, n), or an error."""
    ids = np.asarray(ids)
    if ids.shape != (rows, size) or ids.dtype.kind not in "iu":
        raise InputError(f"the candidate source gave {ids.shape} {ids.dtype} for {rows} queries x {size} candidates")
    if ids.size and (ids.min() < -1 or ids.max() >= n):
        raise InputError(f"the candidate source gave pool ids outside [-1, {n})")
    return ids.astype(np.int64, copy=False)


class StaticGains(GreedySelector):
    """A greedy selector whose gains are fixed when it starts: ``_start`` returns the ``(b, M)``
    scores, a pick changes nothing, and the driver takes the top k at once when no token budget or
    label balance is active."""

    static_gains: ClassVar[bool] = True

    def _gains(self, state: np.ndarray, feasible: np.ndarray) -> np.ndarray:
        return state

    def _commit(self, state: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
        pass


def _exact_shortlists(problem: Problem, *, absolute: bool) -> Candidates:
    """Each query's top candidates by (absolute) cosine over the whole pool, by the blocked exact
    search (:class:`~fewshot.index.ExactIndex`): a block of queries reads the pool once, where
    scoring each chunk of queries against the whole pool reads it once per few queries (at 1M
    vectors the pool no longer fits the CPU's caches and that is memory-bound). The same
    shortlists as :meth:`GreedySelector._relevance`'s top ``size``."""
    from ..index import ExactIndex  # the index module imports this one

    index = ExactIndex().build(problem.pool)
    return lambda rows, size: index.search(problem.queries[rows], size, absolute=absolute)[1]
