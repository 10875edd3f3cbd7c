"""The selector protocol shared by every method, and the greedy driver that enforces the budget.

Every selector is a small object with explicit parameters and two calls:

- ``select(problem, k)`` -> one shared :class:`Selection` for all queries;
- ``select_per_query(problem, k)`` -> one :class:`Selection` per query.

Selectors only score candidates. The driver here picks the best feasible one, T times, and so
enforces for every method alike: no duplicates, the token budget (budget-aware: a demo that no
longer fits is skipped, never truncated afterwards) and optional label balance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Sequence

import numpy as np

from ..errors import InputError


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

    ``query`` is None for a shared set, else the query's index. ``stopped`` says why fewer
    than k demos were chosen (for instance the token budget), None when k were chosen.
    """

    indices: tuple[int, ...]
    scores: tuple[float, ...]
    trace: tuple[dict[str, Any], ...] = ()
    query: int | None = None
    stopped: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Selector:
    """Base class: parameters live on the instance (``get_params`` lists them, as in scikit-learn)."""

    name: ClassVar[str] = ""
    query_independent: ClassVar[bool] = False  # the set does not depend on the queries
    label_balance: bool = False

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def select(self, problem: Problem, k: int) -> Selection:
        raise NotImplementedError

    def select_per_query(self, problem: Problem, k: int) -> list[Selection]:
        raise NotImplementedError


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
        self.open = np.ones(candidates.shape, dtype=bool)
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


class GreedySelector(Selector):
    """A selector defined by three hooks over a batch of candidate sets ``(b, M)``:

    - ``_start(problem, candidates, queries)``: build state. ``queries`` is None for a shared set
      (all queries matter), else the ``(b,)`` query index each row selects for;
    - ``_gains(state, feasible)``: ``(b, M)`` scores, higher is better (only feasible ones are read);
    - ``_commit(state, rows, cols)``: the pick ``candidates[rows, cols]`` was made; update state.

    Per-query mode shortlists each query's ``shortlist`` most relevant candidates first
    (``shortlist=None``: the whole pool, exact but O(n) per query and step).
    """

    shortlist: int | None = None
    query_chunk: ClassVar[int] = 64

    def _start(self, problem: Problem, candidates: np.ndarray, queries: np.ndarray | None) -> Any:
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
        return problem.queries[queries] @ problem.pool.T

    def select(self, problem: Problem, k: int) -> Selection:
        check_k(problem, k)
        candidates = np.arange(problem.n)[None, :]
        return self._drive(problem, candidates, None, k)[0]

    def select_per_query(self, problem: Problem, k: int) -> list[Selection]:
        check_k(problem, k)
        if self.query_independent:
            shared = self.select(problem, k)
            return [replace(shared, query=j) for j in range(problem.m)]
        size = problem.n if self.shortlist is None else min(problem.n, max(self.shortlist, 4 * k))
        out: list[Selection] = []
        for start in range(0, problem.m, self.query_chunk):
            queries = np.arange(start, min(start + self.query_chunk, problem.m))
            if size == problem.n:
                candidates = np.tile(np.arange(problem.n), (len(queries), 1))
            else:
                from ..similarity import top_k

                candidates = top_k(self._relevance(problem, queries), size)
            out.extend(self._drive(problem, candidates, queries, k))
        return out

    def _drive(self, problem: Problem, candidates: np.ndarray, queries: np.ndarray | None,
               k: int) -> list[Selection]:
        b = len(candidates)
        feasible = Feasibility(problem, candidates, k, self.label_balance)
        state = self._start(problem, candidates, queries)
        picks: list[list[int]] = [[] for _ in range(b)]
        scores: list[list[float]] = [[] for _ in range(b)]
        traces: list[list[dict]] = [[] for _ in range(b)]
        active = np.ones(b, dtype=bool)
        for step in range(k):
            ok = feasible.mask()
            active &= ok.any(axis=1)
            if not active.any():
                break
            gains = np.where(ok, self._gains(state, ok), -np.inf)
            rows = np.flatnonzero(active)
            cols = np.argmax(gains[rows], axis=1)  # ties go to the lower column: deterministic
            for row, col in zip(rows, cols):
                row_gains = gains[row].copy()
                row_gains[col] = -np.inf
                second = int(np.argmax(row_gains))
                picks[row].append(int(candidates[row, col]))
                scores[row].append(float(gains[row, col]))
                traces[row].append({"step": step + 1, "index": int(candidates[row, col]),
                                    "score": float(gains[row, col]), "feasible": int(ok[row].sum()),
                                    "runner_up": int(candidates[row, second]) if np.isfinite(row_gains[second]) else None,
                                    "runner_up_score": float(row_gains[second]) if np.isfinite(row_gains[second]) else None})
            feasible.take(rows, cols)
            self._commit(state, rows, cols)
            for row in rows:
                traces[row][-1].update(self._note(state, int(row)))
        results = []
        for row in range(b):
            stopped = None
            if len(picks[row]) < k:
                stopped = ("token budget exhausted" if feasible.costs is not None
                           else "label balance cap reached" if feasible.codes is not None else "no candidates left")
            results.append(Selection(tuple(picks[row]), tuple(scores[row]), tuple(traces[row]),
                                     query=None if queries is None else int(queries[row]), stopped=stopped))
        return results
