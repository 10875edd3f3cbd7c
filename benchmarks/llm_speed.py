"""Seconds per LLM prediction against the floor, on the bundled local server (Gemma 3 270M).

    python benchmarks/llm_speed.py                          # sst2, pool 300, 48 queries, k=4
    python benchmarks/llm_speed.py --queries 60 --seed 1 --save answers.json
    python benchmarks/llm_speed.py --compare answers.json   # same answers as a saved run?

One server, one data set, the same test queries for every method. Each method gets a fresh
response cache (the answer cache must not hide the work) and is answered the way the eval harness
does it, through ``LLMPredictor.predict_many``:

- ``shared``: one random demo set (k demos) repeated by every query: a prefix the server can reuse;
- ``per-query``: kNN demos per query (k), so most of each prompt is new to the server;
- ``zero-shot``: no demos.

The server reports per response how many prompt tokens it reused (``timings.cache_n``) and how
many it computed (``timings.prompt_n``). The floor of a prediction is its uncached tokens divided
by this server's prompt-processing rate, measured in the same run on uncached prompts about as
long as a per-query prompt (the median of ``--probes`` probes before and after the methods).
A prediction can cost no less than one forward pass over its uncached tokens.

The methods take turns (``--rounds`` slices of the queries each), so a change in the load of the
shared machine falls on all of them alike; a shared demo set is then computed again after each
turn of the others (counted in its uncached tokens).

Goals (issue 9): shared <= 1/3 of per-query; per-query <= 1.5 x its floor; <= 1.2 HTTP calls per
prediction with demos, <= 2 zero-shot.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from fewshot.datasets import load_dataset
from fewshot.llm.predictor import LLMPredictor
from fewshot.llm.server import LocalServer
from fewshot.pipeline import build_problem, make_embedder
from fewshot.prompts import load_template
from fewshot.selection import make_selector

GOALS = {"shared / per-query": 1 / 3, "per-query / floor": 1.5, "calls / pred (demos)": 1.2,
         "calls / pred (zero-shot)": 2.0}


def split(n: int, pool: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return order[:pool], order[pool:pool + queries]


def post(base_url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"{base_url}/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as reply:
        return json.loads(reply.read())


def prompt_rate(base_url: str, text: str, probes: int, tag: str) -> list[float]:
    """Tokens/s of prompt processing on uncached prompts (a unique first line defeats every cache)."""
    rates = []
    for i in range(probes):
        timings = post(base_url, {"prompt": f"Probe {tag}-{i} {time.time_ns()}.\n{text}", "max_tokens": 1,
                                  "temperature": 0.0})["timings"]
        rates.append(1000.0 * timings["prompt_n"] / timings["prompt_ms"])
    return rates


def one_token_cost(base_url: str, text: str, probes: int) -> tuple[float, float]:
    """Median server milliseconds and round-trip milliseconds of a request that computes one prompt
    token (the same prompt again: llama-server re-evaluates only its last token). What every
    prediction pays besides its uncached tokens: one decode step with the model's output layer
    (for Gemma 3, 262k vocabulary rows) and top-logprobs, plus HTTP."""
    body = {"prompt": f"Fixed cost {time.time_ns()}.\n{text}", "max_tokens": 1, "temperature": 0.0, "logprobs": 100}
    post(base_url, body)
    server, wall = [], []
    for _ in range(probes):
        start = time.perf_counter()
        timings = post(base_url, body)["timings"]
        wall.append(1000.0 * (time.perf_counter() - start))
        server.append(timings["prompt_ms"] + timings.get("predicted_ms", 0.0))
    return statistics.median(server), statistics.median(wall)


class Method:
    """One method's client (its own fresh response cache) and what its predictions cost so far."""

    def __init__(self, server: LocalServer, template: Any, labels: tuple[str, ...], cache_dir: str) -> None:
        self.client = server.client(cache_dir=cache_dir)  # as llm_endpoint configures it, with its own cache
        self.predictor = LLMPredictor(self.client, template, labels)
        self.seconds, self.answers = 0.0, []

    def run(self, jobs: list) -> None:
        start = time.perf_counter()
        self.answers += self.predictor.predict_many(jobs)
        self.seconds += time.perf_counter() - start

    def summary(self) -> dict[str, Any]:
        n, stats = len(self.answers), self.client.stats  # the server's timings, as the client counts them
        uncached, prompt_ms = stats.get("uncached_prompt_tokens", 0), stats.get("prompt_ms", 0.0)
        return {"n": n, "seconds": self.seconds, "s_per_pred": self.seconds / n,
                "calls": stats.get("calls", 0) / n, "uncached": uncached / n,
                "cached": stats.get("cached_prompt_tokens", 0) / n, "server_prompt_ms": prompt_ms / n,
                "server_rate": 1000.0 * uncached / max(1e-9, prompt_ms), "stats": dict(self.client.stats),
                "labels": [getattr(a, "label", None) for a in self.answers], "probs": [a.probs for a in self.answers]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="sst2")
    parser.add_argument("--pool", type=int, default=300)
    parser.add_argument("--queries", type=int, default=48)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probes", type=int, default=3, help="uncached prompts timed before and after the methods")
    parser.add_argument("--methods", default="shared,per-query,zero-shot")
    parser.add_argument("--rounds", type=int, default=2, help="methods take turns on this many slices of the queries")
    parser.add_argument("--threads", type=int, help="llama-server's -t (default: LocalServer's, all cores)")
    parser.add_argument("--server-args", default="", help="extra llama-server flags, e.g. '--cache-ram 0'")
    parser.add_argument("--server-log", type=Path, help="llama-server's log (for checking slot choices)")
    parser.add_argument("--save", type=Path, help="write every answer (label, probabilities) here")
    parser.add_argument("--compare", type=Path, help="count answers that differ from a --save file")
    args = parser.parse_args()

    data = load_dataset(args.data)
    pool_ix, test_ix = split(len(data.examples), args.pool, args.queries, args.seed)
    pool, test = [data.examples[i] for i in pool_ix], [data.examples[i] for i in test_ix]
    problem = build_problem(pool, test, embedder=make_embedder())
    template = load_template("classification")
    shared = [pool[i] for i in make_selector("random", seed=args.seed).select(problem, args.k).indices]
    per_query = [[pool[i] for i in s.indices] for s in make_selector("knn").select_per_query(problem, args.k)]
    # as the harness orders them: the first pick sits next to the query
    demo_sets = {"shared": [shared] * len(test), "per-query": per_query, "zero-shot": [[]] * len(test)}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    # the probe: about as long as a per-query prompt, built from demos no method uses first
    probe = template.render([pool[i] for i in range(len(pool) - 8, len(pool))], test[0].text, data.labels)

    extra = {"extra_args": args.server_args.split()} if args.server_args else {}
    with LocalServer(log=args.server_log, threads=args.threads, **extra) as server:
        print(f"server: {' '.join(server.command[1:])}")
        post(server.base_url, {"prompt": "warm up", "max_tokens": 1})
        rates = prompt_rate(server.base_url, probe, args.probes, "before")
        with tempfile.TemporaryDirectory() as cache_root:
            runs = {m: Method(server, template, data.labels, f"{cache_root}/{m}") for m in methods}
            # rounds: every method answers a slice of the queries in turn, so a change in the
            # machine's load (it is shared) falls on all methods alike
            for part in np.array_split(np.arange(len(test)), args.rounds):
                for method in methods:
                    runs[method].run([(list(reversed(demo_sets[method][j])), test[j].text) for j in part])
            results = {m: run.summary() for m, run in runs.items()}
            for run in runs.values():
                run.client.close()
        rates += prompt_rate(server.base_url, probe, args.probes, "after")
        fixed_server_ms, fixed_wall_ms = one_token_cost(server.base_url, probe, args.probes)
    rate = statistics.median(rates)

    print(f"\ndata={args.data} pool={len(pool)} queries={len(test)} k={args.k} seed={args.seed} "
          f"prompt rate {rate:.0f} tok/s (probes {', '.join(f'{r:.0f}' for r in rates)})")
    print(f"{'method':<10} {'s/pred':>7} {'floor s':>8} {'x floor':>7} {'calls':>6} {'uncached':>8} "
          f"{'cached':>7} {'srv ms':>7} {'srv tok/s':>9} {'accuracy':>8}")
    gold = [e.label for e in test]
    for method, r in results.items():
        floor = r["uncached"] / rate
        accuracy = np.mean([p == g for p, g in zip(r["labels"], gold)])
        print(f"{method:<10} {r['s_per_pred']:7.3f} {floor:8.3f} {r['s_per_pred'] / floor:7.2f} {r['calls']:6.2f} "
              f"{r['uncached']:8.1f} {r['cached']:7.1f} {r['server_prompt_ms']:7.1f} {r['server_rate']:9.0f} {accuracy:8.3f}")
    ratios = {}
    if "shared" in results and "per-query" in results:
        ratios["shared / per-query"] = results["shared"]["s_per_pred"] / results["per-query"]["s_per_pred"]
    if "per-query" in results:
        ratios["per-query / floor"] = results["per-query"]["s_per_pred"] / (results["per-query"]["uncached"] / rate)
    with_demos = [results[m]["calls"] for m in ("shared", "per-query") if m in results]
    if with_demos:
        ratios["calls / pred (demos)"] = max(with_demos)
    if "zero-shot" in results:
        ratios["calls / pred (zero-shot)"] = results["zero-shot"]["calls"]
    print(f"\none-token request (the fixed cost of any prediction): server {fixed_server_ms:.1f} ms, "
          f"round trip {fixed_wall_ms:.1f} ms")
    if "shared" in results and "per-query" in results:
        with_fixed = [results[m]["uncached"] / rate + fixed_wall_ms / 1000 for m in ("shared", "per-query")]
        print(f"floor + fixed cost: shared {with_fixed[0]:.3f} s, per-query {with_fixed[1]:.3f} s, "
              f"ratio {with_fixed[0] / with_fixed[1]:.2f} (each floor plus one one-token round trip, made alone; "
              "requests in flight together share part of it)")
    print("\ngoal ratios (measured in this run)")
    for name, value in ratios.items():
        print(f"  {name:<26} {value:6.2f}   goal <= {GOALS[name]:.2f}   {'met' if value <= GOALS[name] else 'NOT met'}")
    keys = sorted({k for r in results.values() for k in r["stats"]})
    print("\nclient.stats per prediction: " + "; ".join(
        f"{m}: " + ", ".join(f"{k}={r['stats'].get(k, 0) / r['n']:.2f}" for k in keys) for m, r in results.items()))

    answers = {m: {"labels": r["labels"], "probs": r["probs"]} for m, r in results.items()}
    if args.save:
        args.save.write_text(json.dumps(answers))
    if args.compare:
        saved = json.loads(args.compare.read_text())
        for method, r in answers.items():
            if method not in saved:
                continue
            differ = sum(a != b for a, b in zip(r["labels"], saved[method]["labels"]))
            gap = max(abs(a.get(y, 0.0) - b.get(y, 0.0)) for pa, pb in zip(r["probs"], saved[method]["probs"])
                      for a, b in [(pa or {}, pb or {})] for y in set(a) | set(b)) if r["probs"] else 0.0
            print(f"compare {method}: {differ} of {len(r['labels'])} labels differ; largest probability change {gap:.4f}")


if __name__ == "__main__":
    main()
