"""Time GO against one exact kNN pass on the same data, in one process, and print the ratios.

    python benchmarks/go_vs_knn.py                       # n=100,000, m=1,000, d=384, T=16
    python benchmarks/go_vs_knn.py --n 20000 --cli       # smaller, plus the same comparison via the CLI
    python benchmarks/go_vs_knn.py --exact-only          # only the exact per-query section below

Data: random normal vectors, L2-normalised, float32. kNN = one chunked matrix product plus top-k
per query (fewshot.similarity.nearest), the reference any similarity selector pays.

Exact per-query section (``shortlist=None``, every query scores the whole pool): 3,000 pool x 200
queries, d=384, k=8 by default, clustered unit float32 vectors (20 centres). Floors: kNN is one
product ``Q @ P.T`` (one pass over the pool per query); per-query GO is k such products (one
rank-one update per pick). Each figure is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fewshot.selection import GO, KNN, Problem
from fewshot.similarity import nearest


def unit(rng, n, d):
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed(label, fn):
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    print(f"{label:<34s} {seconds:8.2f} s")
    return seconds, out


def clustered(rng, n, d, centres):
    x = centres[rng.integers(len(centres), size=n)] + 0.5 * rng.standard_normal((n, d), dtype=np.float32) / np.sqrt(d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def best_of(fn, repeat):
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def exact_per_query(n, m, d, k, repeat):
    """Exact per-query KNN and GO against their matrix-product floors."""
    rng = np.random.default_rng(0)
    centres = unit(rng, 20, d)
    pool, queries = clustered(rng, n, d, centres), clustered(rng, m, d, centres)
    problem = Problem(pool=pool, queries=queries)
    print(f"exact per query (shortlist=None): n={n} m={m} d={d} k={k} float32 clustered, best of {repeat}")
    product = best_of(lambda: queries @ pool.T, max(repeat, 10))
    knn = best_of(lambda: KNN(shortlist=None).select_per_query(problem, k), repeat)
    go = best_of(lambda: GO(noise=0.01, shortlist=None).select_per_query(problem, k), repeat)
    print(f"{'floor: Q @ P.T (one pass)':<34s} {product:8.4f} s")
    print(f"{'KNN(shortlist=None)':<34s} {knn:8.4f} s  {knn / product:5.2f}x its floor (1 pass)")
    print(f"{'GO(noise=0.01, shortlist=None)':<34s} {go:8.4f} s  {go / (k * product):5.2f}x its floor "
          f"({k} passes = {k * product:.4f} s)")


def cli_comparison(pool, queries, T):
    """Same comparison through `fewshot select` with precomputed embeddings and --no-cache."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "p.npy", pool), np.save(tmp / "q.npy", queries)
        for name, rows in (("pool", len(pool)), ("queries", len(queries))):
            with open(tmp / f"{name}.jsonl", "w") as f:
                f.writelines(json.dumps({"text": f"{name} item {i}"}) + "\n" for i in range(rows))
        base = [sys.executable, "-m", "fewshot", "select", "--pool", str(tmp / "pool.jsonl"), "--queries",
                str(tmp / "queries.jsonl"), "--embeddings", str(tmp / "p.npy"), "--query-embeddings",
                str(tmp / "q.npy"), "--no-cache", "--k", str(T)]
        runs = {"knn (per query)": ["--method", "knn", "--per-query"], "go g (shared)": ["--method", "go"],
                "go v (shared)": ["--method", "go", "-p", "objective=v"], "go (per query)": ["--method", "go", "--per-query"]}
        seconds = {}
        for label, extra in runs.items():
            out = tmp / "out.jsonl"
            start = time.perf_counter()
            subprocess.run(base + extra + ["--out", str(out)], check=True, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            inner = json.loads(Path(f"{out}.meta.json").read_text())["selection_seconds"]
            seconds[label] = (wall, inner)
            print(f"CLI {label:<30s} {wall:8.2f} s wall, {inner:7.2f} s selecting")
        knn_wall = seconds["knn (per query)"][0]
        for label in ("go g (shared)", "go v (shared)", "go (per query)"):
            print(f"CLI ratio {label} / knn (wall)      {seconds[label][0] / knn_wall:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--m", type=int, default=1_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--T", type=int, default=16)
    parser.add_argument("--cli", action="store_true", help="also compare through the CLI")
    parser.add_argument("--exact-n", type=int, default=3_000, help="pool size, exact per-query section")
    parser.add_argument("--exact-m", type=int, default=200, help="queries, exact per-query section")
    parser.add_argument("--exact-k", type=int, default=8, help="demos, exact per-query section")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure, exact per-query section")
    parser.add_argument("--exact-only", action="store_true", help="run only the exact per-query section")
    args = parser.parse_args()
    if args.exact_only:
        exact_per_query(args.exact_n, args.exact_m, args.d, args.exact_k, args.repeat)
        return
    rng = np.random.default_rng(0)
    pool, queries = unit(rng, args.n, args.d), unit(rng, args.m, args.d)
    problem = Problem(pool=pool, queries=queries)
    print(f"n={args.n} m={args.m} d={args.d} T={args.T} float32, {os.cpu_count()} cores")
    knn, _ = timed("exact kNN (matmul + top-T)", lambda: nearest(queries, pool, args.T))
    go_g, sel_g = timed("GO shared, G-optimal", lambda: GO(objective="g").select(problem, args.T))
    go_v, sel_v = timed("GO shared, V-optimal", lambda: GO(objective="v").select(problem, args.T))
    go_q, _ = timed("GO per query (all m queries)", lambda: GO().select_per_query(problem, args.T))
    print(f"ratio GO-G / kNN                    {go_g / knn:6.2f}x")
    print(f"ratio GO-V / kNN                    {go_v / knn:6.2f}x")
    print(f"ratio GO per query / kNN            {go_q / knn:6.2f}x")
    print(f"max query variance after GO-G: {sel_g.trace[-1]['max_query_variance']:.4f}")
    exact_per_query(args.exact_n, args.exact_m, args.d, args.exact_k, args.repeat)
    if args.cli:
        cli_comparison(pool, queries, args.T)


if __name__ == "__main__":
    main()
