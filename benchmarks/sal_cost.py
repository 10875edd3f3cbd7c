"""SAL's cost on a 1,000-example pool with 100 queries, T = 8, shared set, against naive SAL.

    python benchmarks/sal_cost.py                 # local Gemma 3 270M (started and stopped here)
    python benchmarks/sal_cost.py --shortlist 6 --query-sample 8

Naive SAL asks, every round, for every candidate x: p(y | H, x), then each label x each query:
n * (1 + |Y| * m) prompts per round. Prints the prompts SAL simulated, the HTTP calls it made,
the wall time, the ratio, and SAL's floor: the prompt tokens the server computed divided by its
prompt-processing rate on uncached prompts, measured in the same run (as benchmarks/llm_speed.py).
A simulated prompt ends with its query, after the candidate's demos, so every (demo set, query)
pair computes the query's tokens: the floor counts them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from fewshot.datasets import load_dataset
from fewshot.llm import llm_endpoint
from fewshot.llm.predictor import LLMPredictor
from fewshot.pipeline import build_problem, make_embedder
from fewshot.prompts import load_template
from fewshot.selection import SAL
from llm_speed import post, prompt_rate  # benchmarks/: the same probe as the per-prediction benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="sst2")
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--shortlist", type=int, default=6)
    parser.add_argument("--query-sample", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probes", type=int, default=5, help="Uncached prompts timed before and after, for the rate.")
    args = parser.parse_args()
    data = load_dataset(args.data)
    order = np.random.default_rng(args.seed).permutation(len(data.examples))
    pool = [data.examples[i] for i in order[: args.pool]]
    queries = [data.examples[i] for i in order[args.pool: args.pool + args.queries]]
    problem = build_problem(pool, queries, embedder=make_embedder())
    template = load_template("classification")
    # a fresh response cache, so every call is really made
    probe = template.render(pool[-8:], queries[0].text, data.labels)  # about as long as a late SAL prompt
    with llm_endpoint(cache_dir=tempfile.mkdtemp()) as client:
        post(client.base_url, {"prompt": "warm up", "max_tokens": 1})
        rates = prompt_rate(client.base_url, probe, args.probes, "before")
        sal = SAL(model=LLMPredictor(client, template, data.labels), shortlist=args.shortlist,
                  query_sample=args.query_sample, seed=args.seed)
        start = time.perf_counter()
        selection = sal.select(problem, args.k)
        seconds = time.perf_counter() - start
        stats = dict(client.stats)
        rates += prompt_rate(client.base_url, probe, args.probes, "after")
    rate = statistics.median(rates)
    naive = args.k * len(pool) * (1 + len(data.labels) * len(queries))
    simulated = selection.info["prompts"]
    print(f"data={args.data} pool={len(pool)} queries={len(queries)} T={args.k} model={client.model} "
          f"shortlist={args.shortlist} query_sample={args.query_sample}")
    print(f"SAL time                 {seconds:8.1f} s")
    print(f"prompts simulated        {simulated:8d}")
    print(f"HTTP calls (label walk)  {stats.get('calls', 0):8d}   label fallbacks {stats.get('label_fallbacks', 0)}")
    if "uncached_prompt_tokens" in stats:  # llama-server's timings: what its prompt cache saved
        cached, uncached = stats.get("cached_prompt_tokens", 0), stats["uncached_prompt_tokens"]
        print(f"prompt tokens computed   {uncached:8d}   reused from the server's cache {cached} "
              f"({cached / max(1, cached + uncached):.0%})")
        print(f"prompt rate              {rate:8.0f} tok/s (probes {', '.join(f'{r:.0f}' for r in rates)})")
        print(f"floor (computed / rate)  {uncached / rate:8.1f} s   SAL / floor {seconds / (uncached / rate):.2f}")
    print(f"naive SAL prompts        {naive:8d}")
    print(f"ratio SAL / naive        {simulated / naive:8.5f}")
    print(f"chosen: {list(selection.indices)}")


if __name__ == "__main__":
    main()
