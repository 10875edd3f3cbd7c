"""Baselines behind the same protocol as GO and SAL: random, kNN (KATE), MMR, BM25,
k-means diversity, fast vote-k and DPP (greedy MAP)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, ClassVar

import numpy as np
from scipy import sparse

from ..clustering import kmeans
from ..errors import InputError
from ..similarity import nearest
from .base import CandidateVectors, GreedySelector, Problem, Selection, StaticGains, check_k
from .linear import LinearPosterior
from .params import FLAG, SEED, SHORTLIST, Interval


def _query_direction(problem: Problem) -> np.ndarray:
    """Mean query embedding: relevance of x to the whole query set is its cosine-sum with it."""
    return problem.queries.mean(axis=0)


def _relevance(problem: Problem, vectors: CandidateVectors, queries: np.ndarray | None) -> np.ndarray:
    """``(b, M)`` cosine of each candidate with its query (shared: the mean over all queries)."""
    targets = _query_direction(problem)[None, :] if queries is None else problem.queries[queries]
    return vectors.dot(targets)


class Random(StaticGains):
    """Uniformly random demos (seeded); the floor every method must beat.

    >>> X = np.eye(6); Random(seed=1).select(Problem(pool=X, queries=X), 3).indices == Random(seed=1).select(Problem(pool=X, queries=X), 3).indices
    True
    """

    name: ClassVar[str] = "random"
    query_independent: ClassVar[bool] = True
    parameter_constraints: ClassVar[dict] = {"seed": SEED, "label_balance": FLAG}

    def __init__(self, seed: int = 0, label_balance: bool = False) -> None:
        self.seed, self.label_balance = seed, label_balance

    def _start(self, problem, candidates, queries, k):
        return np.random.default_rng(self.seed).random(candidates.shape)


class KNN(StaticGains):
    """kNN / KATE (Liu et al. 2022): the pool examples most similar to the query (shared: to the
    mean query)."""

    name: ClassVar[str] = "knn"
    parameter_constraints: ClassVar[dict] = {"shortlist": SHORTLIST, "label_balance": FLAG}

    def __init__(self, shortlist: int | None = 256, label_balance: bool = False) -> None:
        self.shortlist, self.label_balance = shortlist, label_balance

    def _start(self, problem, candidates, queries, k):
        return _relevance(problem, CandidateVectors(problem.pool, candidates), queries)


class MMR(GreedySelector):
    """Maximal marginal relevance: ``lam * relevance - (1 - lam) * max similarity to chosen``."""

    name: ClassVar[str] = "mmr"
    parameter_constraints: ClassVar[dict] = {"lam": [Interval(float, 0, 1)], "shortlist": SHORTLIST,
                                             "label_balance": FLAG}

    def __init__(self, lam: float = 0.7, shortlist: int | None = 256, label_balance: bool = False) -> None:
        self.lam, self.shortlist, self.label_balance = lam, shortlist, label_balance

    def _start(self, problem, candidates, queries, k):
        vectors = CandidateVectors(problem.pool, candidates)
        return {"rel": _relevance(problem, vectors, queries), "vectors": vectors, "pending": None,
                "redundancy": np.full(candidates.shape, -np.inf)}

    def _gains(self, s, feasible):
        if s["pending"] is not None:  # deferred from _commit, so the last pick costs nothing
            rows, cols = s["pending"]
            sims = s["vectors"].dot(s["vectors"].at(rows, cols), rows)  # (r, M)
            s["redundancy"][rows] = np.maximum(s["redundancy"][rows], sims)
            s["pending"] = None
        penalty = np.where(np.isfinite(s["redundancy"]), s["redundancy"], 0.0)
        return self.lam * s["rel"] - (1 - self.lam) * penalty

    def _commit(self, s, rows, cols):
        s["pending"] = (rows, cols)


_TOKEN = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens.

    >>> tokenize("It's a GREAT film!")
    ['it', 's', 'a', 'great', 'film']
    """
    return _TOKEN.findall(text.lower())


class BM25Index:
    """Okapi BM25 over the pool as one sparse matrix, so a batch of queries is one product."""

    def __init__(self, texts: list[str] | tuple[str, ...], k1: float = 1.5, b: float = 0.75) -> None:
        docs = [Counter(tokenize(t)) for t in texts]
        self.vocab = {term: i for i, term in enumerate(sorted({t for d in docs for t in d}))}
        rows, cols, tf = [], [], []
        for r, doc in enumerate(docs):
            for term, count in doc.items():
                rows.append(r), cols.append(self.vocab[term]), tf.append(count)
        tf = np.asarray(tf, dtype=np.float64)
        lengths = np.array([sum(d.values()) for d in docs], dtype=np.float64)
        avg = max(lengths.mean(), 1e-9)
        df = np.bincount(cols, minlength=len(self.vocab))
        self.idf = np.log1p((len(docs) - df + 0.5) / (df + 0.5))
        saturated = tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[rows] / avg))
        self.matrix = sparse.csr_matrix((saturated, (rows, cols)), shape=(len(docs), len(self.vocab)))

    def scores(self, queries: list[str] | tuple[str, ...]) -> np.ndarray:
        """``(len(queries), n)`` BM25 scores."""
        rows, cols = [], []
        for r, text in enumerate(queries):
            for term in set(tokenize(text)):
                if term in self.vocab:
                    rows.append(r), cols.append(self.vocab[term])
        q = sparse.csr_matrix((self.idf[cols], (rows, cols)), shape=(len(queries), len(self.vocab)))
        return np.asarray((q @ self.matrix.T).todense())


class BM25(StaticGains):
    """BM25 lexical relevance (per query; shared: summed over queries, each scaled to max 1)."""

    name: ClassVar[str] = "bm25"
    shortlist_by: ClassVar[str | None] = None  # words, not vectors: no vector index serves it
    parameter_constraints: ClassVar[dict] = {"k1": [Interval(float, 0, None)], "b": [Interval(float, 0, 1)],
                                             "shortlist": SHORTLIST, "label_balance": FLAG}

    def __init__(self, k1: float = 1.5, b: float = 0.75, shortlist: int | None = 256,
                 label_balance: bool = False) -> None:
        self.k1, self.b, self.shortlist, self.label_balance = k1, b, shortlist, label_balance
        self._index: tuple[tuple, BM25Index] | None = None

    def _bm25(self, problem: Problem, queries: np.ndarray) -> np.ndarray:
        if not problem.pool_texts or not problem.query_texts:
            raise InputError("BM25 needs the pool and query texts")
        # The index is kept for the next chunk of queries and the next call, keyed by the texts
        # themselves (and k1, b), never by object identity: a reused selector stays correct.
        key = (tuple(problem.pool_texts), self.k1, self.b)
        cached = self._index
        if cached is None or cached[0] != key:
            cached = (key, BM25Index(list(key[0]), self.k1, self.b))
            self._index = cached
        return cached[1].scores([problem.query_texts[j] for j in queries])

    def _relevance(self, problem, queries):
        return self._bm25(problem, queries)

    def _start(self, problem, candidates, queries, k):
        if queries is None:
            all_scores = self._bm25(problem, np.arange(problem.m))
            top = all_scores.max(axis=1, keepdims=True)
            summed = (all_scores / np.where(top > 0, top, 1.0)).sum(axis=0)
            return summed[candidates]
        return np.take_along_axis(self._bm25(problem, queries), candidates, axis=1)


class KMeansDiversity(GreedySelector):
    """k-means with k clusters; the example nearest each centroid (label-free, shared)."""

    name: ClassVar[str] = "kmeans"
    query_independent: ClassVar[bool] = True
    parameter_constraints: ClassVar[dict] = {"seed": SEED, "label_balance": FLAG}

    def __init__(self, seed: int = 0, label_balance: bool = False) -> None:
        self.seed, self.label_balance = seed, label_balance

    def _start(self, problem, candidates, queries, k):
        clusters = kmeans(problem.pool, k, seed=self.seed)
        # larger clusters first, so a budget that stops early keeps the most representative demos
        size_rank = np.argsort(np.argsort(-np.bincount(clusters.assignment, minlength=k), kind="stable"))
        # hardship scaled into [0, 0.5]: it orders examples within a cluster, never across ranks
        spread = clusters.hardship / (2 * clusters.hardship.max() + 1e-12)
        return {"cluster": clusters.assignment[candidates], "spread": spread[candidates], "k": k,
                "rank": size_rank, "covered": np.zeros((len(candidates), k), dtype=bool)}

    def _gains(self, s, feasible):
        covered = np.take_along_axis(s["covered"], s["cluster"], axis=1)
        # Uncovered clusters first, in size order, each by its most central example: scores in
        # (-k, 0]. A second pick from a covered cluster (only when a budget or label balance rules
        # out every uncovered one) scores below -k, so it can never beat an uncovered cluster.
        score = -s["rank"][s["cluster"]] - s["spread"]
        return np.where(covered, score - s["k"], score)

    def _commit(self, s, rows, cols):
        s["covered"][rows, s["cluster"][rows, cols]] = True


class VoteK(GreedySelector):
    """Fast vote-k (Su et al. 2022): graph of each example's ``neighbors`` nearest; an example's
    score is the votes of its unselected in-neighbours, each discounted by ``rho ** -(selected
    neighbours it already has)`` (``rho >= 1``: 1 is no discount). Label-free and shared."""

    name: ClassVar[str] = "votek"
    query_independent: ClassVar[bool] = True
    shared_index: ClassVar[bool] = True
    # neighbors=0 left a graph without edges: every score 0, and the picks were 0, 1, 2, ...
    parameter_constraints: ClassVar[dict] = {"neighbors": [Interval(int, 1, None)], "rho": [Interval(float, 1, None)],
                                             "label_balance": FLAG}

    def __init__(self, neighbors: int = 15, rho: float = 10.0, label_balance: bool = False) -> None:
        self.neighbors, self.rho, self.label_balance = neighbors, rho, label_balance

    def select(self, problem: Problem, k: int, *, index: Any = None) -> Selection:
        """The shared set; ``index`` (a :class:`~fewshot.index.CandidateIndex` over the pool) finds
        each example's neighbours instead of an all-pairs scan (with an exact index, the same graph)."""
        if index is None:
            return super().select(problem, k)
        check_k(problem, k)
        run = self.clone()  # the graph travels on a copy: this selector keeps no state between calls
        run._graph = self._neighbours(problem, index)
        return GreedySelector.select(run, problem, k)

    def _neighbours(self, problem: Problem, index: Any = None, block: int = 4096) -> np.ndarray:
        """``(n, width)`` each example's nearest pool rows, itself included (-1: none found)."""
        width = min(self.neighbors + 1, problem.n)
        if index is None:
            return nearest(problem.pool, problem.pool, width)[0]
        return np.concatenate([index.search(np.asarray(problem.pool[s:s + block]), width)[1]
                               for s in range(0, problem.n, block)])

    def _start(self, problem, candidates, queries, k):
        n = problem.n
        idx = getattr(self, "_graph", None)
        idx = self._neighbours(problem) if idx is None else idx
        found = idx >= 0
        rows = np.repeat(np.arange(n), idx.shape[1])[found.ravel()]
        graph = sparse.csr_matrix((np.ones(len(rows)), (rows, idx[found])), shape=(n, n))
        graph.setdiag(0)  # an example does not vote for itself
        graph.eliminate_zeros()
        return {"graph": graph, "covered": np.zeros(n), "selected": np.zeros(n, dtype=bool)}

    def _gains(self, s, feasible):
        weight = np.where(s["selected"], 0.0, self.rho ** -s["covered"])
        return (s["graph"].T @ weight)[None, :]

    def _commit(self, s, rows, cols):
        picked = int(cols[0])
        s["selected"][picked] = True
        s["covered"] += s["graph"][:, picked].toarray().ravel()


class DPP(GreedySelector):
    """Determinantal point process, greedy MAP (Chen et al. 2018) with kernel
    ``L = diag(r) S diag(r)``: S = cosine similarity, ``r = exp(quality * relevance)``."""

    name: ClassVar[str] = "dpp"
    parameter_constraints: ClassVar[dict] = {"quality": [Interval(float, 0, None)], "shortlist": SHORTLIST,
                                             "label_balance": FLAG}

    def __init__(self, quality: float = 3.0, shortlist: int | None = 256, label_balance: bool = False) -> None:
        self.quality, self.shortlist, self.label_balance = quality, shortlist, label_balance

    def _start(self, problem, candidates, queries, k):
        vectors = CandidateVectors(problem.pool, candidates)
        r = np.exp(self.quality * _relevance(problem, vectors, queries))
        # L[i, j] = r_i r_j x_i . x_j is the prior covariance of a linear model on features r_i x_i
        # (ridge 1); greedy MAP's gain is a candidate's conditional variance given the picks, the
        # posterior variance with noise 0 (floored, as an incremental Cholesky step would be).
        return LinearPosterior(vectors, ridge=1.0, noise=0.0, weights=r, floor=1e-12)

    def _gains(self, s, feasible):
        return np.log(np.maximum(s.variances, 1e-12))  # marginal gain in log det L_S

    def _commit(self, s, rows, cols):
        s.condition(rows, cols)
