"""GO: greedy optimal design on a Bayesian linear model over embeddings.

Model: ``y = theta^T phi(x) + noise``, noise variance ``noise``, prior ``theta ~ N(0, I / ridge)``.
After choosing S the posterior covariance is ``Sigma = (ridge I + sum phi phi^T / noise)^-1`` and the
predictive variance of a query is ``v(q) = q^T Sigma q``. Adding x lowers it by
``r(q, x) = (q^T Sigma x)^2 / (noise + x^T Sigma x)``. Because v does not depend on labels, the
whole set can be chosen before a single label is bought.

Picks depend on ``ridge`` and ``noise`` only through their product: scaling ridge by c and noise by
1/c scales Sigma by 1/c and every gain by 1/c. So ``noise`` (with ``ridge=1``) is the one
regularisation knob: small values spread the picks (more de-duplication), large values approach
kNN (per query, r(q, x) tends to (q . x)^2 ridge^-2 / noise, a similarity ranking).

Sigma is never formed nor inverted: it is kept as ``I / ridge - U U^T`` with one column of U per
pick (a rank-one update, :class:`~fewshot.selection.linear.LinearPosterior`), so a step costs
O((n + m) d t) and no n x n matrix exists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, Sequence

import numpy as np

from ..errors import InputError
from .base import (BLOCK_ELEMENTS, Candidates, CandidateVectors, GreedySelector, Problem, Selection, ShiftedRows,
                   StackedRows, as_float, block_size, check_k, dot_pool, pool_mean, rows_per_block)
from .linear import LinearPosterior
from .params import FLAG, SEED, SHORTLIST, Interval, Options


@dataclass
class _SharedState:
    pool: np.ndarray  # (n, d)
    queries: np.ndarray  # (m, d)
    # one row over the n pool then the m query vectors (only pool columns are picked), keeping
    # every u_j . x: the lazy G rows need them for the pool and the queries, V for the pool
    post: LinearPosterior
    extra: dict

    @property
    def pool_var(self) -> np.ndarray:
        """``(n,)`` x^T Sigma x."""
        return self.post.variances[0, :len(self.pool)]

    @property
    def query_var(self) -> np.ndarray:
        """``(m,)`` q^T Sigma q."""
        return self.post.variances[0, len(self.pool):]

    def projections(self) -> np.ndarray | None:
        """``(n + m, t)``: u_j . x for the pool rows then the query rows; None before any pick."""
        columns = self.post.projections
        return np.stack(columns, axis=-1)[0] if columns else None


class GO(GreedySelector):
    """Greedy optimal design (G- or V-optimal) on a Bayesian linear model over embeddings.

    ``objective="g"`` minimises the largest query variance left (the paper's GO); ``"v"``
    maximises the total variance removed over all queries. Per query both reduce to picking
    the x with the largest ``r(q, x)``; ``shortlist`` candidates per query (by |cosine|) are scored.
    ``center`` subtracts the pool's mean embedding from pool and queries first: sentence
    embeddings share a large common direction, which otherwise makes the most "generic"
    example look the most informative.

    The shared set at scale: nothing pool-sized is copied (the pool may be a float16 memory map;
    each step reads it block by block), and G's query rows are kept only for the queries the lazy
    scoring touched. Two settings trade exactness for size, both off by default (exact):
    ``query_sample`` designs for a seeded (``seed``) sample of that many queries instead of all
    of them; ``candidate_pool`` scores only about that many pool examples, the union of the (sampled)
    queries' nearest by |cosine| (from the ``index`` given to :meth:`select`, else an exact
    search). Given an ``index`` and no ``candidate_pool``, each query brings its ``shortlist``
    nearest. The selection's ``info`` then says how many queries and candidates were used and the
    largest and mean variance left over all the queries (exact, whatever was sampled).

    >>> rng = np.random.default_rng(0); X = rng.normal(size=(50, 8)); X /= np.linalg.norm(X, axis=1, keepdims=True)
    >>> sel = GO(objective="g").select(Problem(pool=X, queries=X[:5]), k=3)
    >>> len(sel.indices), len(set(sel.indices))
    (3, 3)
    """

    name: ClassVar[str] = "go"
    shortlist_by: ClassVar[str | None] = "abs-cosine"
    shared_index: ClassVar[bool] = True
    g_cache_elements: ClassVar[int] = 1 << 25  # at most ~128 MB of kept q . x rows (shared G)
    parameter_constraints: ClassVar[dict] = {
        "objective": [Options("g", "v")], "ridge": [Interval(float, 0, None, closed="neither")],
        "noise": [Interval(float, 0, None, closed="neither")], "shortlist": SHORTLIST, "label_balance": FLAG,
        "center": FLAG, "candidate_pool": [Interval(int, 1, None), None], "query_sample": [Interval(int, 1, None), None],
        "seed": SEED}

    def __init__(self, objective: Literal["g", "v"] = "g", ridge: float = 1.0, noise: float = 0.1,
                 shortlist: int | None = 256, label_balance: bool = False, center: bool = False,
                 candidate_pool: int | None = None, query_sample: int | None = None, seed: int = 0) -> None:
        self.objective, self.ridge, self.noise = objective, ridge, noise
        self.shortlist, self.label_balance, self.center = shortlist, label_balance, center
        self.candidate_pool, self.query_sample, self.seed = candidate_pool, query_sample, seed

    def _centered(self, problem: Problem, mean: np.ndarray | None = None) -> Problem:
        """Pool and queries minus the pool's mean (``mean``: a given one). A pool of more than one
        block (:data:`~fewshot.selection.base.BLOCK_ELEMENTS`) is shifted as it is read, not copied."""
        if not self.center:
            return problem
        small = isinstance(problem.pool, np.ndarray) and problem.pool.size <= BLOCK_ELEMENTS
        if mean is None:
            mean = problem.pool.mean(axis=0) if small else pool_mean(problem.pool)
        pool = problem.pool - mean if small else ShiftedRows(problem.pool, mean)
        return replace(problem, pool=pool, queries=problem.queries - mean)

    def select(self, problem: Problem, k: int, *, index: Any = None) -> Selection:
        """The shared set; ``index`` (a :class:`~fewshot.index.CandidateIndex` over the pool) picks
        the candidates (see the class notes)."""
        if index is None and self.candidate_pool is None and self.query_sample is None:
            return super().select(self._centered(problem), k)
        check_k(problem, k)
        rows = self._sampled_queries(problem.m)
        keep = self._candidate_pool(problem, rows, k, index)
        mean = None
        if self.center:  # the whole pool's mean, as without candidates
            mean = pool_mean(problem.pool) if keep is not None else None
        sub = problem if keep is None else restrict_pool(problem, keep)
        sub = replace(sub, queries=problem.queries[rows])
        selection = super().select(self._centered(sub, mean), k)
        if keep is not None:
            selection = remap_selection(selection, keep)
        chosen = list(selection.indices)
        left = query_variances(self._centered(problem, mean), chosen, self.ridge, self.noise)
        info = {"queries_used": int(len(rows)), "candidates_scored": int(problem.n if keep is None else len(keep)),
                "max_query_variance": float(left.max()), "mean_query_variance": float(left.mean())}
        return replace(selection, info={**selection.info, **info})

    def _sampled_queries(self, m: int) -> np.ndarray:
        if self.query_sample is None or self.query_sample >= m:
            return np.arange(m)
        return np.sort(np.random.default_rng(self.seed).choice(m, size=self.query_sample, replace=False))

    def _candidate_pool(self, problem: Problem, rows: np.ndarray, k: int, index: Any) -> np.ndarray | None:
        """Sorted pool rows to score: the union of the queries' nearest by |cosine|, about
        ``candidate_pool`` of them (None: the whole pool)."""
        n = problem.n
        if self.candidate_pool is None and index is None:
            return None
        if self.candidate_pool is not None and self.candidate_pool >= n:
            return None
        if index is None:
            from ..index import ExactIndex

            index = ExactIndex().build(problem.pool)
        # each query brings its nearest; without candidate_pool its shortlist, else as many as make
        # the union reach candidate_pool (doubled until it does: at least that many, under about twice)
        want = k if self.candidate_pool is None else max(k, self.candidate_pool)
        per_query = (self.shortlist_size(n, k) if self.candidate_pool is None
                     else max(1, self.candidate_pool // len(rows)))
        queries = problem.queries[rows]
        while True:
            ids = np.concatenate([index.search(queries[s:s + 1024], per_query, absolute=True)[1]
                                  for s in range(0, len(queries), 1024)])
            keep = np.unique(ids[ids >= 0])
            if len(keep) >= want or per_query >= n:
                return keep if len(keep) < n else None
            per_query = min(n, 2 * per_query)

    # -- shared set over all queries ---------------------------------------------------------
    def _start(self, problem: Problem, candidates: np.ndarray, queries: np.ndarray | None,
               k: int | None = None) -> Any:
        if queries is not None:
            return self._start_per_query(problem, candidates, queries)
        pool, qs = problem.pool, problem.queries
        post = LinearPosterior(StackedRows(pool, qs), self.ridge, self.noise, keep_projections=True)
        state = _SharedState(pool, qs, post, {})
        if self.objective == "v":
            # sum_q (q^T Sigma x)^2 = x^T Sigma C Sigma x with C = Q^T Q: a d x d form, no m x n matrix;
            # x C x block by block, and later (P C) u as P (C u): no n x d product is kept
            C = qs.T @ qs
            state.extra["xCx"] = _quadratic_rows(pool, C)
            state.extra["C"], state.extra["CU"], state.extra["Z"] = C, [], []
        else:
            # query row -> its q . x over the pool, kept for rows scored at a second step (the lazy
            # working set: the first step scores every query once), up to g_cache_elements values
            state.extra["P"], state.extra["seen"] = {}, set()
        return state

    def gains(self, problem: Problem, chosen: Sequence[int]) -> np.ndarray:
        """``(n,)``: the shared-set gain (higher is better) of adding each pool example to ``chosen``,
        for all of ``problem.queries`` and exact for every example; ``-inf`` for the chosen ones.
        ``"v"``: the total query variance it removes; ``"g"``: minus the largest query variance left.
        Centers first when ``center`` is set, as ``select`` does. The greedy ``select`` picks the
        argmax of these, step after step (without a token budget or label balance).

        >>> rng = np.random.default_rng(0); X = rng.normal(size=(30, 4)); problem = Problem(pool=X, queries=X[:6])
        >>> go = GO(objective="v"); first = go.select(problem, k=2).indices
        >>> int(np.argmax(go.gains(problem, []))) == first[0], int(np.argmax(go.gains(problem, first[:1]))) == first[1]
        (True, True)
        """
        problem = self._centered(problem)
        chosen = [int(i) for i in chosen]
        if any(not 0 <= i < problem.n for i in chosen):
            raise InputError(f"chosen indices must lie in [0, {problem.n})")
        state = self._start(problem, np.arange(problem.n)[None, :], None)
        for index in chosen:
            self._commit(state, np.array([0]), np.array([index]))
        den = self.noise + state.pool_var
        if self.objective == "v":
            out = self._v_numerator(state) / den
        else:
            out = -self._g_values(state, np.ones(problem.n, dtype=bool), den, lazy=False)
        out[chosen] = -np.inf
        return out

    def _gains(self, state: Any, feasible: np.ndarray) -> np.ndarray:
        if isinstance(state, LinearPosterior):  # per query: r(q, x) for every candidate of the row
            return state.covariances ** 2 / (self.noise + state.variances)
        den = self.noise + state.pool_var
        if self.objective == "v":
            return (self._v_numerator(state) / den)[None, :]
        return -self._g_values(state, feasible[0], den)[None, :]

    def _v_numerator(self, s: _SharedState) -> np.ndarray:
        e = s.extra
        num = e["xCx"] / self.ridge ** 2
        factors = s.post.factors
        for u in factors[len(e["Z"]):]:  # C u and P C u of the picks made since the last call
            e["CU"].append(e["C"] @ u[0])
            e["Z"].append(dot_pool(e["CU"][-1][None, :], s.pool)[0])
        if factors:
            W, Z = s.projections()[:len(s.pool)], np.stack(e["Z"], axis=1)
            G = np.stack(factors, axis=-1)[0].T @ np.stack(e["CU"], axis=1)  # U^T C U (t x t)
            num = num - 2 / self.ridge * np.einsum("ij,ij->i", Z, W) + np.einsum("ij,ij->i", W @ G, W)
        return np.maximum(num, 0.0)

    def _query_rows(self, s: _SharedState, rows: np.ndarray, WQ: np.ndarray | None,
                    WT: np.ndarray | None) -> np.ndarray:
        """``Q[rows] Sigma Phi^T``; the ``Q Phi^T`` rows of the lazy working set (rows scored again
        after the first time) are kept, within ``g_cache_elements``. ``WQ`` (m, t) and ``WT`` (t, n)
        hold u_j . q and u_j . x (None before any pick)."""
        P, seen = s.extra["P"], s.extra["seen"]
        wanted = rows.tolist()
        missing = [q for q in wanted if q not in P]
        fresh = dict(zip(missing, dot_pool(s.queries[missing], s.pool))) if missing else {}
        room = self.g_cache_elements // max(1, len(s.pool)) - len(P)
        for q in missing:
            if q in seen and room > 0:
                P[q], room = fresh[q], room - 1
            seen.add(q)
        block = np.stack([P[q] if q in P else fresh[q] for q in wanted]) / self.ridge
        if WQ is not None:
            block -= WQ[rows] @ WT
        return block

    def _g_values(self, s: _SharedState, feasible: np.ndarray, den: np.ndarray, lazy: bool = True) -> np.ndarray:
        """``max_q v'(q)`` after adding each x, exact for every feasible x.

        Lazy in the queries: with the A highest-variance queries the value is exact wherever it is
        at least the (A+1)-th variance t, and a lower bound elsewhere (an unscored query's variance,
        at most t, only falls). An unsure x's true value is then at most t, and no exact one is
        below t, so an unsure feasible x may be the minimum: A doubles until no feasible x is
        unsure. Most steps touch a few dozen query rows instead of all m (``lazy=False``: all m at
        once, exact for every x).
        """
        query_var, n = s.query_var, len(s.pool)
        order = np.argsort(-query_var, kind="stable")
        m, done = len(order), 0
        size = min(32, m) if lazy else m
        W = s.projections()
        WQ, WT = (None, None) if W is None else (W[n:], np.ascontiguousarray(W[:n].T))
        value = np.full(len(den), -np.inf, dtype=den.dtype)
        while True:
            step = min(128, rows_per_block(n))  # row chunks keep temporaries cache-sized, and bounded
            for start in range(done, size, step):
                rows = order[start:min(start + step, size)]
                block = self._query_rows(s, rows, WQ, WT)
                np.square(block, out=block)
                block /= den
                np.subtract(query_var[rows, None], block, out=block)
                np.maximum(value, block.max(axis=0), out=value)
            done = s.extra["rows_scored"] = size  # reported in the trace: how lazy this step was
            if size == m:
                return value
            exact = value >= query_var[order[size]]
            if not (feasible & ~exact).any():
                return np.where(exact, value, np.inf)  # the unsure ones are infeasible: inf keeps them out
            size = min(m, 2 * size)

    def _commit(self, state: Any, rows: np.ndarray, cols: np.ndarray) -> None:
        # Per query only active rows picked; inactive rows keep their state (their gains are ignored).
        (state if isinstance(state, LinearPosterior) else state.post).condition(rows, cols)

    def _note(self, state: Any, row: int) -> dict[str, Any]:
        if isinstance(state, LinearPosterior):
            return {"query_variance": float(state.target_variances[row])}
        note = {"max_query_variance": float(state.query_var.max()),
                "mean_query_variance": float(state.query_var.mean())}
        if "rows_scored" in state.extra:
            note["query_rows_scored"] = state.extra["rows_scored"]
        return note

    # -- one query at a time, batched over queries, in kernel form over the candidates -------------
    def select_per_query(self, problem: Problem, k: int, *, candidates: Candidates | None = None) -> list[Selection]:
        """Per query (``query_sample`` and ``candidate_pool`` do not apply: each query has its shortlist)."""
        return super().select_per_query(self._centered(problem), k, candidates=candidates)

    def _relevance(self, problem: Problem, queries: np.ndarray) -> np.ndarray:
        return np.abs(dot_pool(problem.queries[queries], problem.pool))

    def _start_per_query(self, problem: Problem, candidates: np.ndarray, queries: np.ndarray) -> LinearPosterior:
        # Per row b: q^T Sigma_b x and x^T Sigma_b x for every candidate x of the row. No (M, M)
        # kernel and no (M, t) factors are kept; the last pick's pass over the candidates is never made.
        return LinearPosterior(CandidateVectors(problem.pool, candidates), self.ridge, self.noise,
                               targets=problem.queries[queries])


def _quadratic_rows(pool: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``(n,)`` x^T C x for every pool row, block by block."""
    parts = []
    for start in range(0, len(pool), block_size(pool)):
        block = as_float(pool[start:start + block_size(pool)])
        parts.append(np.einsum("ij,ij->i", block @ C, block))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def query_variances(problem: Problem, chosen: Sequence[int], ridge: float, noise: float) -> np.ndarray:
    """``(m,)`` q^T Sigma q for every query after observing the pool rows ``chosen``
    (Sigma = (ridge I + X^T X / noise)^-1, a d x d solve), in blocks of queries."""
    X = np.asarray(np.stack([problem.pool[i] for i in chosen]) if chosen else np.zeros((0, problem.queries.shape[1])),
                   dtype=np.float64)
    sigma = np.linalg.inv(ridge * np.eye(problem.queries.shape[1]) + X.T @ X / noise)
    out = np.empty(problem.m)
    for start in range(0, problem.m, 1 << 14):
        q = np.asarray(problem.queries[start:start + (1 << 14)], dtype=np.float64)
        out[start:start + len(q)] = np.einsum("qd,de,qe->q", q, sigma, q)
    return out


def restrict_pool(problem: Problem, keep: np.ndarray) -> Problem:
    from ..pipeline import restrict  # lazily: the pipeline imports the selectors

    return restrict(problem, keep)


def remap_selection(selection: Selection, keep: np.ndarray) -> Selection:
    from ..pipeline import remap

    return remap(selection, keep)
