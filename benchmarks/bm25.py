"""Time BM25 (index + score every pool text for every query) three ways, in one process.

    python benchmarks/bm25.py                    # 3,000 pool texts x 200 queries
    python benchmarks/bm25.py --n 20000 --m 1000

- ``fewshot``: ``fewshot.selection.baselines.BM25Index``, the pool as one sparse matrix, so all
  queries are scored by one sparse product;
- ``bm25s``: the ``bm25s`` package (Lucene variant, the same idf), one ``get_scores`` per query;
- ``rank_bm25``: the ``rank-bm25`` package (``BM25Okapi``), one ``get_scores`` per query.

The two packages are not dependencies of fewshot: ``pip install bm25s rank-bm25`` to compare.
All three get the same tokens (``fewshot.selection.baselines.tokenize``), so only the index and
the scoring differ. Texts: synthetic sentences, words drawn from a Zipf law over a 20,000-word
vocabulary, 8 to 40 words each (seeded). Each figure is the best of ``--repeat`` runs. The script
also prints how often the three agree on each query's top 8 (scores differ by a constant factor
and rank-bm25 uses another idf, so rankings can differ slightly).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fewshot.selection.baselines import BM25Index, tokenize


def texts(rng: np.random.Generator, count: int, vocab: int = 20_000) -> list[str]:
    words = [f"w{i}" for i in range(vocab)]
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    return [" ".join(words[i] for i in rng.choice(vocab, size=rng.integers(8, 41), p=p)) for _ in range(count)]


def run_fewshot(pool: list[str], queries: list[str]) -> np.ndarray:
    return BM25Index(pool).scores(queries)


def run_bm25s(pool: list[str], queries: list[str]) -> np.ndarray:
    import bm25s

    index = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    index.index([tokenize(t) for t in pool], show_progress=False)
    out = np.zeros((len(queries), len(pool)), dtype=np.float32)
    for j, text in enumerate(queries):
        ids = index.get_tokens_ids(sorted(set(tokenize(text))))
        if ids:
            out[j] = index.get_scores_from_ids(ids)
    return out


def run_rank_bm25(pool: list[str], queries: list[str]) -> np.ndarray:
    from rank_bm25 import BM25Okapi

    index = BM25Okapi([tokenize(t) for t in pool], k1=1.5, b=0.75)
    return np.stack([index.get_scores(sorted(set(tokenize(text)))) for text in queries])


def best_of(fn, repeat: int, *args) -> tuple[float, np.ndarray]:
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, out


def top_overlap(a: np.ndarray, b: np.ndarray, k: int = 8) -> float:
    ta, tb = np.argsort(-a, axis=1, kind="stable")[:, :k], np.argsort(-b, axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3_000, help="pool texts")
    parser.add_argument("--m", type=int, default=200, help="queries")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    pool, queries = texts(rng, args.n), texts(rng, args.m)
    print(f"BM25 index + score: {args.n} pool texts x {args.m} queries, best of {args.repeat}")
    results = {}
    for name, fn in (("fewshot (sparse product)", run_fewshot), ("bm25s", run_bm25s), ("rank_bm25", run_rank_bm25)):
        try:
            seconds, scores = best_of(fn, args.repeat, pool, queries)
        except ImportError:
            print(f"{name:<26s} not installed (pip install {name.replace('_', '-')})")
            continue
        results[name] = (seconds, scores)
        print(f"{name:<26s} {seconds:8.4f} s")
    base_seconds, base_scores = results["fewshot (sparse product)"]
    for name, (seconds, scores) in results.items():
        print(f"{name:<26s} {seconds / base_seconds:6.2f}x fewshot's time, "
              f"top-8 overlap with fewshot {top_overlap(base_scores, scores):.3f}")


if __name__ == "__main__":
    main()
