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
pick (a rank-one update), so a step costs O((n + m) d t) and no n x n matrix exists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np

from ..errors import InputError
from .base import CandidateVectors, GreedySelector, Problem, Selection, batch_picks


@dataclass
class _SharedState:
    pool: np.ndarray  # (n, d)
    queries: np.ndarray  # (m, d)
    pool_var: np.ndarray  # (n,) x^T Sigma x
    query_var: np.ndarray  # (m,) q^T Sigma q
    W: list  # columns u_j . x for the pool
    WQ: list  # columns u_j . q for the queries
    U: list  # the rank-one factors u_j (d,)
    extra: dict


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

    def __init__(self, objective: Literal["g", "v"] = "g", ridge: float = 1.0, noise: float = 0.1,
                 shortlist: int | None = 256, label_balance: bool = False, center: bool = False) -> None:
        if objective not in ("g", "v"):
            raise InputError(f"GO objective must be 'g' or 'v', not {objective!r}")
        if ridge <= 0 or noise <= 0:
            raise InputError("GO needs ridge > 0 and noise > 0")
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
        state = _SharedState(pool, qs, np.einsum("ij,ij->i", pool, pool) / self.ridge,
                             np.einsum("ij,ij->i", qs, qs) / self.ridge, [], [], [], {})
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

    def _gains(self, state: Any, feasible: np.ndarray) -> np.ndarray:
        if not isinstance(state, _SharedState):
            self._catch_up(state)
            return state["g"] ** 2 / (self.noise + state["diag"])
        den = self.noise + state.pool_var
        if self.objective == "v":
            return (self._v_numerator(state) / den)[None, :]
        return -self._g_values(state, feasible[0], den)[None, :]

    def _v_numerator(self, s: _SharedState) -> np.ndarray:
        e = s.extra
        num = e["xCx"] / self.ridge ** 2
        if s.U:
            W, Z = np.stack(s.W, axis=1), np.stack(e["Z"], axis=1)
            G = np.stack(s.U, axis=1).T @ np.stack(e["CU"], axis=1)  # U^T C U (t x t)
            num = num - 2 / self.ridge * np.einsum("ij,ij->i", Z, W) + np.einsum("ij,ij->i", W @ G, W)
        return np.maximum(num, 0.0)

    def _query_rows(self, s: _SharedState, rows: np.ndarray) -> np.ndarray:
        """``Q[rows] Sigma Phi^T``; the ``Q Phi^T`` rows are computed once and kept."""
        P, have = s.extra["P"], s.extra["have"]
        missing = rows[~have[rows]]
        if len(missing):
            P[missing] = s.queries[missing] @ s.pool.T
            have[missing] = True
        block = P[rows] / self.ridge
        if s.U:
            block -= np.stack(s.WQ, axis=1)[rows] @ np.stack(s.W, axis=1).T
        return block

    def _g_values(self, s: _SharedState, feasible: np.ndarray, den: np.ndarray) -> np.ndarray:
        """``max_q v'(q)`` after adding each x, exact for every feasible x.

        Lazy in the queries: with the A highest-variance queries the value is exact wherever it is
        at least the (A+1)-th variance, and a lower bound elsewhere; A doubles until the minimum is
        certain, so most steps touch a few dozen query rows instead of all m.
        """
        order = np.argsort(-s.query_var, kind="stable")
        m, size, done = len(order), min(32, len(order)), 0
        value = np.full(len(den), -np.inf, dtype=den.dtype)
        while True:
            for start in range(done, size, 128):  # row chunks keep temporaries cache-sized
                rows = order[start:min(start + 128, size)]
                block = self._query_rows(s, rows)
                np.square(block, out=block)
                block /= den
                np.subtract(s.query_var[rows, None], block, out=block)
                np.maximum(value, block.max(axis=0), out=value)
            done = s.extra["rows_scored"] = size  # reported in the trace: how lazy this step was
            if size == m:
                return value
            threshold = s.query_var[order[size]]
            exact = value >= threshold
            best = np.min(value[exact & feasible], initial=np.inf)
            unsure = ~exact & feasible
            if not unsure.any() or np.min(value[unsure]) > best:
                return np.where(exact, value, np.inf)  # unsure ones cannot win; inf keeps them out
            size = min(m, 2 * size)

    def _commit(self, state: Any, rows: np.ndarray, cols: np.ndarray) -> None:
        if not isinstance(state, _SharedState):
            return self._commit_per_query(state, rows, cols)
        s, x = state, int(cols[0])
        # u = Sigma x / sqrt(noise + x^T Sigma x): Sigma' = Sigma - u u^T
        sigma_x = s.pool[x] / self.ridge
        if s.U:
            sigma_x = sigma_x - np.stack(s.U, axis=1) @ np.array([w[x] for w in s.W])
        u = sigma_x / np.sqrt(self.noise + s.pool_var[x])
        w, wq = s.pool @ u, s.queries @ u
        s.U.append(u), s.W.append(w), s.WQ.append(wq)
        s.pool_var = s.pool_var - w ** 2
        s.query_var = s.query_var - wq ** 2
        if self.objective == "v":
            cu = s.extra["C"] @ u
            s.extra["CU"].append(cu)
            s.extra["Z"].append(s.extra["PC"] @ u)

    def _note(self, state: Any, row: int) -> dict[str, Any]:
        if not isinstance(state, _SharedState):
            return {"query_variance": float(state["qvar"][row])}
        note = {"max_query_variance": float(state.query_var.max()),
                "mean_query_variance": float(state.query_var.mean())}
        if "rows_scored" in state.extra:
            note["query_rows_scored"] = state.extra["rows_scored"]
        return note

    # -- one query at a time, batched over queries, in kernel form over the candidates -------------
    def _relevance(self, problem: Problem, queries: np.ndarray) -> np.ndarray:
        return np.abs(problem.queries[queries] @ problem.pool.T)

    def _start_per_query(self, problem: Problem, candidates: np.ndarray, queries: np.ndarray) -> dict:
        # Per row b: Sigma_b = I / ridge - U_b U_b^T, and for every candidate x of the row
        # g = q^T Sigma_b x and diag = x^T Sigma_b x. No (M, M) kernel and no (M, t) factors are
        # kept: a pick x* needs Sigma_b x* (O(d t)), then one product with the candidates.
        vectors = CandidateVectors(problem.pool, candidates)
        q = problem.queries[queries]  # (b, d)
        return {"vectors": vectors, "U": [], "g": vectors.dot(q) / self.ridge, "pending": None,
                "diag": vectors.sq_norms() / self.ridge, "qvar": np.einsum("bd,bd->b", q, q) / self.ridge}

    def _commit_per_query(self, s: dict, rows: np.ndarray, cols: np.ndarray) -> None:
        # Only active rows picked; inactive rows keep their state (their gains are ignored).
        # The query variance is down-dated now (it is in the trace); the O(M d) update of g and
        # diag waits for the next ``_gains``, so the last pick costs no pass over the pool.
        idx, picked, live = batch_picks(len(s["g"]), rows, cols)
        scale = np.where(live, 1.0 / np.sqrt(self.noise + s["diag"][idx, picked]), 0.0).astype(s["g"].dtype)
        wq = s["g"][idx, picked] * scale
        s["qvar"] = s["qvar"] - wq ** 2
        s["pending"] = (idx, picked, scale, wq)

    def _catch_up(self, s: dict) -> None:
        """Apply the last pick's rank-one down-date (Sherman-Morrison) to g and diag:
        u = Sigma x* / sqrt(noise + x*^T Sigma x*), w = u . x for every candidate x."""
        if s["pending"] is None:
            return
        idx, picked, scale, wq = s["pending"]
        vectors = s["vectors"]
        x = vectors.at(idx, picked)  # (b, d)
        u = x / self.ridge
        for prev in s["U"]:
            u -= np.einsum("bd,bd->b", prev, x)[:, None] * prev
        u *= scale[:, None]  # rows that did not pick get u = 0
        w = vectors.dot(u)  # (b, M): the one pass over the candidates
        s["U"].append(u)
        s["g"] -= wq[:, None] * w
        np.square(w, out=w)
        s["diag"] -= w
        s["pending"] = None
