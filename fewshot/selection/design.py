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
from .base import CandidateVectors, GreedySelector, Problem, Selection
from .linear import LinearPosterior
from .params import FLAG, SHORTLIST, Interval, Options


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

    >>> rng = np.random.default_rng(0); X = rng.normal(size=(50, 8)); X /= np.linalg.norm(X, axis=1, keepdims=True)
    >>> sel = GO(objective="g").select(Problem(pool=X, queries=X[:5]), k=3)
    >>> len(sel.indices), len(set(sel.indices))
    (3, 3)
    """

    name: ClassVar[str] = "go"
    parameter_constraints: ClassVar[dict] = {
        "objective": [Options("g", "v")], "ridge": [Interval(float, 0, None, closed="neither")],
        "noise": [Interval(float, 0, None, closed="neither")], "shortlist": SHORTLIST, "label_balance": FLAG,
        "center": FLAG}

    def __init__(self, objective: Literal["g", "v"] = "g", ridge: float = 1.0, noise: float = 0.1,
                 shortlist: int | None = 256, label_balance: bool = False, center: bool = False) -> None:
        self.objective, self.ridge, self.noise = objective, ridge, noise
        self.shortlist, self.label_balance, self.center = shortlist, label_balance, center

    def _centered(self, problem: Problem) -> Problem:
        if not self.center:
            return problem
        mean = problem.pool.mean(axis=0)
        return replace(problem, pool=problem.pool - mean, queries=problem.queries - mean)

    def select(self, problem: Problem, k: int) -> Selection:
        return super().select(self._centered(problem), k)

    def select_per_query(self, problem: Problem, k: int) -> list[Selection]:
        return super().select_per_query(self._centered(problem), k)

    # -- shared set over all queries ---------------------------------------------------------
    def _start(self, problem: Problem, candidates: np.ndarray, queries: np.ndarray | None,
               k: int | None = None) -> Any:
        if queries is not None:
            return self._start_per_query(problem, candidates, queries)
        pool, qs = problem.pool, problem.queries
        both = np.concatenate([pool, qs])
        post = LinearPosterior(CandidateVectors(both, np.arange(len(both))[None, :]), self.ridge, self.noise,
                               keep_projections=True)
        state = _SharedState(pool, qs, post, {})
        if self.objective == "v":
            # sum_q (q^T Sigma x)^2 = x^T Sigma C Sigma x with C = Q^T Q: a d x d form, no m x n matrix.
            C = qs.T @ qs
            state.extra["PC"] = pool @ C
            state.extra["xCx"] = np.einsum("ij,ij->i", state.extra["PC"], pool)
            state.extra["C"], state.extra["CU"], state.extra["Z"] = C, [], []
        else:
            state.extra["P"] = np.empty((len(qs), len(pool)), dtype=np.result_type(pool, qs))
            state.extra["have"] = np.zeros(len(qs), dtype=bool)
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
        for u in factors[len(e["Z"]):]:  # C u and PC u of the picks made since the last call
            e["CU"].append(e["C"] @ u[0])
            e["Z"].append(e["PC"] @ u[0])
        if factors:
            W, Z = s.projections()[:len(s.pool)], np.stack(e["Z"], axis=1)
            G = np.stack(factors, axis=-1)[0].T @ np.stack(e["CU"], axis=1)  # U^T C U (t x t)
            num = num - 2 / self.ridge * np.einsum("ij,ij->i", Z, W) + np.einsum("ij,ij->i", W @ G, W)
        return np.maximum(num, 0.0)

    def _query_rows(self, s: _SharedState, rows: np.ndarray, WQ: np.ndarray | None,
                    WT: np.ndarray | None) -> np.ndarray:
        """``Q[rows] Sigma Phi^T``; the ``Q Phi^T`` rows are computed once and kept. ``WQ`` (m, t)
        and ``WT`` (t, n) hold u_j . q and u_j . x (None before any pick)."""
        P, have = s.extra["P"], s.extra["have"]
        missing = rows[~have[rows]]
        if len(missing):
            P[missing] = s.queries[missing] @ s.pool.T
            have[missing] = True
        block = P[rows] / self.ridge
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
            for start in range(done, size, 128):  # row chunks keep temporaries cache-sized
                rows = order[start:min(start + 128, size)]
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
    def _relevance(self, problem: Problem, queries: np.ndarray) -> np.ndarray:
        return np.abs(problem.queries[queries] @ problem.pool.T)

    def _start_per_query(self, problem: Problem, candidates: np.ndarray, queries: np.ndarray) -> LinearPosterior:
        # Per row b: q^T Sigma_b x and x^T Sigma_b x for every candidate x of the row. No (M, M)
        # kernel and no (M, t) factors are kept; the last pick's pass over the candidates is never made.
        return LinearPosterior(CandidateVectors(problem.pool, candidates), self.ridge, self.noise,
                               targets=problem.queries[queries])
