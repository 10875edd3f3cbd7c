"""Baselines behind the same protocol as GO and SAL: random, kNN (KATE), MMR, BM25,
k-means diversity, fast vote-k and DPP (greedy MAP)."""

from __future__ import annotations

import re
from collections import Counter
from typing import ClassVar

import numpy as np
from scipy import sparse

from ..clustering import kmeans
from ..errors import InputError
from ..similarity import nearest
from .base import GreedySelector, Problem, batch_picks


def _query_direction(problem: Problem) -> np.ndarray:
    """Mean query embedding: relevance of x to the whole query set is its cosine-sum with it."""
    return problem.queries.mean(axis=0)


def _relevance(problem: Problem, candidates: np.ndarray, queries: np.ndarray | None) -> np.ndarray:
    """``(b, M)`` cosine of each candidate with its query (shared: the mean over all queries)."""
    targets = _query_direction(problem)[None, :] if queries is None else problem.queries[queries]
    return np.einsum("bmd,bd->bm", problem.pool[candidates], targets)


class Random(GreedySelector):
    """Uniformly random demos (seeded); the floor every method must beat.

    >>> X = np.eye(6); Random(seed=1).select(Problem(pool=X, queries=X), 3).indices == Random(seed=1).select(Problem(pool=X, queries=X), 3).indices
    True
    """

    name: ClassVar[str] = "random"
    query_independent: ClassVar[bool] = True

    def __init__(self, seed: int = 0, label_balance: bool = False) -> None:
        self.seed, self.label_balance = seed, label_balance

    def _start(self, problem, candidates, queries):
        return np.random.default_rng(self.seed).random(candidates.shape)

    def _gains(self, state, feasible):
        return state

    def _commit(self, state, rows, cols):
        pass


class KNN(GreedySelector):
    """kNN / KATE (Liu et al. 2022): the pool examples most similar to the query (shared: to the
    mean query)."""

    name: ClassVar[str] = "knn"

    def __init__(self, shortlist: int | None = 256, label_balance: bool = False) -> None:
        self.shortlist, self.label_balance = shortlist, label_balance

    def _start(self, problem, candidates, queries):
        return _relevance(problem, candidates, queries)

    def _gains(self, state, feasible):
        return state

    def _commit(self, state, rows, cols):
        pass


class MMR(GreedySelector):
    """Maximal marginal relevance: ``lam * relevance - (1 - lam) * max similarity to chosen``."""

    name: ClassVar[str] = "mmr"

    def __init__(self, lam: float = 0.7, shortlist: int | None = 256, label_balance: bool = False) -> None:
        if not 0.0 <= lam <= 1.0:
            raise InputError(f"MMR lam must be in [0, 1], not {lam}")
        self.lam, self.shortlist, self.label_balance = lam, shortlist, label_balance

    def _start(self, problem, candidates, queries):
        vectors = problem.pool[candidates]
        return {"rel": _relevance(problem, candidates, queries), "vectors": vectors,
                "redundancy": np.full(candidates.shape, -np.inf)}

    def _gains(self, s, feasible):
        penalty = np.where(np.isfinite(s["redundancy"]), s["redundancy"], 0.0)
        return self.lam * s["rel"] - (1 - self.lam) * penalty

    def _commit(self, s, rows, cols):
        picked = s["vectors"][rows, cols]  # (r, d)
        sims = np.einsum("rmd,rd->rm", s["vectors"][rows], picked)
        s["redundancy"][rows] = np.maximum(s["redundancy"][rows], sims)


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


class BM25(GreedySelector):
    """BM25 lexical relevance (per query; shared: summed over queries, each scaled to max 1)."""

    name: ClassVar[str] = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, shortlist: int | None = 256,
                 label_balance: bool = False) -> None:
        self.k1, self.b, self.shortlist, self.label_balance = k1, b, shortlist, label_balance
        self._index: tuple[int, BM25Index] | None = None

    def _bm25(self, problem: Problem, queries: np.ndarray) -> np.ndarray:
        if not problem.pool_texts or not problem.query_texts:
            raise InputError("BM25 needs the pool and query texts")
        if self._index is None or self._index[0] != id(problem.pool_texts):
            self._index = (id(problem.pool_texts), BM25Index(list(problem.pool_texts), self.k1, self.b))
        return self._index[1].scores([problem.query_texts[j] for j in queries])

    def _relevance(self, problem, queries):
        return self._bm25(problem, queries)

    def _start(self, problem, candidates, queries):
        if queries is None:
            all_scores = self._bm25(problem, np.arange(problem.m))
            top = all_scores.max(axis=1, keepdims=True)
            summed = (all_scores / np.where(top > 0, top, 1.0)).sum(axis=0)
            return summed[candidates]
        return np.take_along_axis(self._bm25(problem, queries), candidates, axis=1)

    def _gains(self, state, feasible):
        return state

    def _commit(self, state, rows, cols):
        pass


class KMeansDiversity(GreedySelector):
    """k-means with k clusters; the example nearest each centroid (label-free, shared)."""

    name: ClassVar[str] = "kmeans"
    query_independent: ClassVar[bool] = True

    def __init__(self, seed: int = 0, label_balance: bool = False) -> None:
        self.seed, self.label_balance = seed, label_balance

    def _start(self, problem, candidates, queries):
        k = self._k
        clusters = kmeans(problem.pool, k, seed=self.seed)
        # larger clusters first, so a budget that stops early keeps the most representative demos
        size_rank = np.argsort(np.argsort(-np.bincount(clusters.assignment, minlength=k), kind="stable"))
        return {"cluster": clusters.assignment[candidates], "hardship": clusters.hardship[candidates],
                "rank": size_rank, "covered": np.zeros((len(candidates), k), dtype=bool)}

    def select(self, problem, k):
        self._k = k
        return super().select(problem, k)

    def _gains(self, s, feasible):
        covered = np.take_along_axis(s["covered"], s["cluster"], axis=1)
        # uncovered clusters first, in size order; within a cluster the most central example
        return np.where(covered, -10.0 - s["hardship"], -s["rank"][s["cluster"]] - s["hardship"] / 10.0)

    def _commit(self, s, rows, cols):
        s["covered"][rows, s["cluster"][rows, cols]] = True


class VoteK(GreedySelector):
    """Fast vote-k (Su et al. 2022): graph of each example's ``neighbors`` nearest; an example's
    score is the votes of its unselected in-neighbours, each discounted by ``rho ** -(selected
    neighbours it already has)``. Label-free and shared."""

    name: ClassVar[str] = "votek"
    query_independent: ClassVar[bool] = True

    def __init__(self, neighbors: int = 15, rho: float = 10.0, label_balance: bool = False) -> None:
        self.neighbors, self.rho, self.label_balance = neighbors, rho, label_balance

    def _start(self, problem, candidates, queries):
        n = problem.n
        k = min(self.neighbors + 1, n)
        idx, _ = nearest(problem.pool, problem.pool, k)
        rows = np.repeat(np.arange(n), k)
        graph = sparse.csr_matrix((np.ones(n * k), (rows, idx.ravel())), shape=(n, n))
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

    def __init__(self, quality: float = 3.0, shortlist: int | None = 256, label_balance: bool = False) -> None:
        self.quality, self.shortlist, self.label_balance = quality, shortlist, label_balance

    def _start(self, problem, candidates, queries):
        r = np.exp(self.quality * _relevance(problem, candidates, queries))
        vectors = problem.pool[candidates] * r[..., None]  # rows whose Gram matrix is L
        return {"vectors": vectors, "d2": np.einsum("bmd,bmd->bm", vectors, vectors), "c": []}

    def _gains(self, s, feasible):
        return np.log(np.maximum(s["d2"], 1e-12))  # marginal gain in log det L_S

    def _commit(self, s, rows, cols):
        idx, picked, live = batch_picks(len(s["d2"]), rows, cols)
        row_j = np.einsum("bmd,bd->bm", s["vectors"], s["vectors"][idx, picked])  # L[j, :]
        for c in s["c"]:
            row_j = row_j - c[idx, picked][:, None] * c
        e = row_j / np.sqrt(np.maximum(s["d2"][idx, picked], 1e-12))[:, None]
        e = np.where(live[:, None], e, 0.0)
        s["c"].append(e)
        s["d2"] = s["d2"] - e ** 2
