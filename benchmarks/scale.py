"""Large pools: today's per-query path against the candidate indexes, side by side in one process.

    python benchmarks/scale.py --sizes 100000 1000000 --queries 10000 --out scale.md   # the full run
    python benchmarks/scale.py --sizes 20000 --queries 500 --real 3000 --out small.md  # a quick check
    python benchmarks/scale.py --sizes 20000 --queries 500 --ray                       # + Ray's overhead
    python benchmarks/scale.py --embed 2000 --sizes                                    # embedding rates only
    python benchmarks/scale.py --sizes 1000000 --queries 10000 --methods knn go --engines ivf   # the issue's goal
    python benchmarks/scale.py --sizes 1000000 --queries 100000 --methods --engines   # 1M x 100k, commands only
    python benchmarks/scale.py --sizes --ten-million --queries 10000                   # 10M float16 (7.7 GB)

Data. Real vectors: ``--real`` AG News texts (StaICC, the eval extra; a seeded sample) embedded
once with the bundled all-MiniLM-L6-v2 and cached in ``~/.cache/fewshot/bench/``; the last
``--held`` of them are held out as query seeds. The pool is SYNTHETIC, grown from the others:
each row is a real vector plus seeded Gaussian noise (norm about ``--noise``), renormalised,
written once as a vector store (fewshot.store) and cached. Queries are the held-out real vectors,
and beyond ``--held`` of them, synthetic ones grown the same way (the header says how many).

Rows: kNN, MMR, DPP and GO per query (k = 8, shortlist 256), through today's path
(``make_selector(m).select_per_query`` on the full in-memory Problem), then through
``fewshot.index.select_per_query_with_index`` on the memory-mapped store with the exact index
and faiss flat, IVF and HNSW (default settings).

Columns: build s (the index), select s, peak RSS (the process's VmHWM from /proc/self/status,
reset before each row through /proc/self/clear_refs; it includes the memory-mapped pool pages the
row touched), shortlist recall (against exact search, by |cosine| for GO, on ``--recall-sample``
queries), pick recall against today's picks (all queries), and speed against today's select s.

CLI rows (``--cli-methods``, default kNN and GO): the whole command ``fewshot select --store POOL
--query-store QUERIES --index ivf --method M --per-query --k 8`` in a child process, as a user
runs it: loading, the index build and the selection in one wall time (command s), its build s
and select s from its meta.json, and the child's own peak RSS (``os.wait4``).

``--ten-million``: a SYNTHETIC 10M x 384 float16 store grown the same way (about 7.7 GB on disk,
written chunk by chunk; about twice that while its chunks are assembled), then two commands:
``fewshot index build --kind ivf --encoding sq8`` (IVF over 8-bit vectors: 3.9 GB in memory) and
``fewshot select --index IXDIR --method knn --per-query --k 8 --verify 100``, each with its wall
time and peak RSS (the memory-mapped pool pages it touched count in RSS).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fewshot.index import ExactIndex, overlap, make_index, select_per_query_with_index, shortlists_by
from fewshot.selection import Problem, make_selector
from fewshot.store import embed_to_store

BENCH = Path(os.environ.get("FEWSHOT_BENCH_DIR", Path.home() / ".cache" / "fewshot" / "bench"))
METHODS = ("knn", "mmr", "dpp", "go")
ENGINES = ("exact", "flat", "ivf", "hnsw", "ivf-float32")  # ivf keeps sq8 codes; ivf-float32 the float32 vectors


def engine_index(engine: str):
    if engine == "ivf-float32":
        return make_index("ivf", encoding="flat")
    return make_index(engine)


# -- measuring --------------------------------------------------------------------------------------

def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn):
    reset_peak()
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start, peak_mb()


# -- data -------------------------------------------------------------------------------------------

def agnews_texts(count: int, seed: int) -> list[str]:
    from fewshot.datasets import load_dataset

    examples = load_dataset("agnews").examples
    rows = np.random.default_rng(seed).permutation(len(examples))[:count]
    return [examples[i].text for i in rows]


def real_vectors(count: int, seed: int) -> np.ndarray:
    """``count`` AG News texts embedded with the bundled model, cached as .npy. The model runs in a
    child process, so torch's memory never counts in this process's peak RSS."""
    from fewshot.embedding import DEFAULT_MODEL

    key = hashlib.sha256(f"{DEFAULT_MODEL}:{count}:{seed}".encode()).hexdigest()[:12]
    path = BENCH / f"agnews-{count}-{key}.npy"
    if not path.is_file():
        print(f"embedding {count} AG News texts once (cached in {path}) ...", file=sys.stderr)
        BENCH.mkdir(parents=True, exist_ok=True)
        child = multiprocessing.get_context("spawn").Process(target=_embed_to, args=(count, seed, path))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"embedding the AG News texts failed (exit code {child.exitcode})")
    return np.load(path)


def _embed_to(count: int, seed: int, path: Path) -> None:
    from fewshot.embedding import SentenceTransformerEmbedder

    vectors = SentenceTransformerEmbedder(progress=sys.stderr.isatty()).embed(agnews_texts(count, seed))
    np.save(path, vectors)


class Grower:
    """'Embeds' row numbers: row i = a seeded choice of real vector + Gaussian noise (SYNTHETIC)."""

    def __init__(self, seeds: np.ndarray, noise: float, seed: int) -> None:
        self.seeds, self.noise, self.seed = seeds, noise, seed
        digest = hashlib.sha256(seeds.tobytes()).hexdigest()[:12]
        self.model_id = f"synthetic:agnews-seeds-{digest}+noise{noise}:seed{seed}"

    def embed(self, texts):
        first = int(texts[0])
        rng = np.random.default_rng([self.seed, first])
        d = self.seeds.shape[1]
        out = self.seeds[rng.integers(len(self.seeds), size=len(texts))]
        return out + (self.noise / np.sqrt(d)) * rng.standard_normal(out.shape, dtype=np.float32)


def synthetic_store(seeds: np.ndarray, n: int, noise: float, seed: int, dtype: str = "float32"):
    grower = Grower(seeds, noise, seed)
    suffix = "" if dtype == "float32" else f"-{dtype}"
    folder = BENCH / f"pool-{n}-{hashlib.sha256(grower.model_id.encode()).hexdigest()[:12]}{suffix}"
    return embed_to_store(RowNumbers(n), folder, grower, chunk=1 << 16, dtype=dtype, progress=sys.stderr.isatty())


class RowNumbers(Sequence):
    """The "texts" "0" .. "n-1", made as they are read (a list of 10M strings is a GB)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return str(i)


class Rows:
    """'Embeds' query numbers as the rows of a fixed table, under the pool's model id (a query
    store must name the pool store's model)."""

    def __init__(self, table: np.ndarray, model_id: str) -> None:
        self.table, self.model_id = table, model_id

    def embed(self, texts):
        return self.table[[int(t) for t in texts]]


def query_store(queries: np.ndarray, pool_store):
    """The queries as a vector store beside the pool's (ids "0" .. "m-1")."""
    key = hashlib.sha256(queries.tobytes() + pool_store.model_id.encode()).hexdigest()[:12]
    return embed_to_store([str(i) for i in range(len(queries))], BENCH / f"queries-{len(queries)}-{key}",
                          Rows(queries, pool_store.model_id), chunk=1 << 16, progress=False)


def make_queries(held: np.ndarray, m: int, noise: float, seed: int) -> tuple[np.ndarray, int]:
    """The held-out real vectors, then synthetic ones grown from them; also how many are real."""
    if m <= len(held):
        return held[:m].copy(), m
    extra = Grower(held, noise, seed + 1).embed([str(i) for i in range(m - len(held))])
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return np.concatenate([held, extra.astype(np.float32)]), len(held)


def nn_cosine(vectors: np.ndarray, sample: int = 500) -> float:
    """Mean cosine of a sample's nearest other row (how clustered the data is)."""
    rows = np.arange(min(sample, len(vectors)))
    _, ids = ExactIndex().build(vectors).search(vectors[rows], 2)
    other = np.where(ids[:, 0] == rows, ids[:, 1], ids[:, 0])
    return float(np.mean(np.einsum("ij,ij->i", vectors[rows], vectors[other])))


# -- the table --------------------------------------------------------------------------------------

def picks(selections) -> np.ndarray:
    k = max(len(s.indices) for s in selections)
    return np.array([list(s.indices) + [-1] * (k - len(s.indices)) for s in selections])


def run_size(n: int, args, seeds: np.ndarray, queries: np.ndarray, with_ray: bool = False) -> list[dict]:
    store, seconds, _ = timed(lambda: synthetic_store(seeds, n, args.noise, args.seed))
    print(f"n={n:,}: pool store ready in {seconds:.1f} s ({store.folder})", file=sys.stderr)
    size = max(args.shortlist, 4 * args.k)
    sample = queries[:args.recall_sample]
    rows, today = [], {}
    if args.engines:
        exact = ExactIndex().build(store.vectors)
        truth = {absolute: exact.search(sample, size, absolute=absolute)[1] for absolute in (False, True)}
    if args.methods:
        in_memory, load_s, _ = timed(lambda: np.array(store.vectors))  # today's CLI loads the .npy into memory
    for method in args.methods:
        selector = make_selector(method)
        out, seconds, peak = timed(lambda: selector.select_per_query(Problem(pool=in_memory, queries=queries), args.k))
        today[method] = (picks(out), seconds)
        rows.append({"n": n, "method": method, "engine": "today", "build": load_s, "select": seconds, "peak": peak,
                     "shortlist": 1.0, "picks": 1.0, "ratio": 1.0})
        print(rows[-1], file=sys.stderr)
    if args.methods:
        del in_memory
    for engine in args.engines:
        index, build_s, build_peak = timed(lambda: engine_index(engine).build(store.vectors))
        for method in args.methods:
            selector = make_selector(method)
            absolute = shortlists_by(selector)
            got = index.search(sample, size, absolute=absolute)[1]
            problem = Problem(pool=store.vectors, queries=queries)
            out, seconds, peak = timed(lambda: select_per_query_with_index(selector, problem, index, args.k,
                                                                           args.shortlist))
            want, today_s = today[method]
            rows.append({"n": n, "method": method, "engine": engine, "build": build_s, "select": seconds,
                         "peak": max(peak, build_peak), "shortlist": overlap(got, truth[absolute]),
                         "picks": overlap(picks(out), want), "ratio": today_s / seconds})
            print(rows[-1], file=sys.stderr)
        del index
    if args.cli_methods:
        rows.extend(cli_rows(store, queries, args, today))
    if with_ray:
        rows.extend(ray_rows(store, queries, args, today))
    return rows


# The child reports its own peak: VmHWM of its memory after exec. (os.wait4's ru_maxrss would include
# this process's, which the forked child held until exec.)
LAUNCH = """
import atexit, os, runpy, sys
def report():
    with open("/proc/self/status") as status, open(os.environ["FEWSHOT_BENCH_PEAK"], "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(report)
sys.argv = ["fewshot", *sys.argv[1:]]
runpy.run_module("fewshot", run_name="__main__")
"""


def command(args: list[str]) -> tuple[float, float]:
    """Run ``fewshot ARGS`` in a child process: (wall seconds, the child's peak RSS in MB)."""
    peak_file = Path(tempfile.mkdtemp()) / "peak"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FEWSHOT_BENCH_PEAK": str(peak_file)}
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", LAUNCH, *args], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"fewshot {' '.join(args)} failed:\n{run.stderr[-2000:]}")
    peak = int(peak_file.read_text()) / 1024
    shutil.rmtree(peak_file.parent, ignore_errors=True)
    return seconds, peak


def selected(path: Path, m: int, k: int) -> np.ndarray:
    """(m, k) pool indices in pick order from a per-query output file (query ids "0" .. "m-1")."""
    out = np.full((m, k), -1)
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            r = json.loads(line)
            out[int(r["query_id"]), r["rank"] - 1] = r["pool_index"]
    return out


def cli_rows(store, queries, args, today) -> list[dict]:
    """The whole `fewshot select --store ... --index ivf --per-query` command, per method."""
    qstore = query_store(queries, store)
    rows = []
    folder = Path(tempfile.mkdtemp())
    extra = ["--nprobe", str(args.cli_nprobe)] if args.cli_nprobe else []
    for method in args.cli_methods:
        out = folder / f"{method}.jsonl"
        seconds, peak = command(["select", "--store", str(store.folder), "--query-store", str(qstore.folder),
                                 "--index", "ivf", *extra, "--method", method, "--per-query", "--k", str(args.k),
                                 "--out", str(out)])
        meta = json.loads(Path(f"{out}.meta.json").read_text())
        want, today_s = today.get(method, (None, float("nan")))
        got = selected(out, len(queries), args.k)
        label = f"CLI ivf{f' nprobe {args.cli_nprobe}' if args.cli_nprobe else ''}"
        rows.append({"n": store.n, "method": method, "engine": label, "build": meta["candidates"]["build_s"],
                     "select": meta["selection_seconds"], "command": seconds, "peak": peak,
                     "shortlist": float("nan"), "picks": float("nan") if want is None else overlap(got, want),
                     "ratio": today_s / meta["selection_seconds"]})
        print(rows[-1], file=sys.stderr)
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def ten_million(args, seeds: np.ndarray, queries: np.ndarray) -> str:
    """10M float16 store, IVF over 8-bit vectors, per-query kNN: two commands, timed, peak RSS."""
    n = 10_000_000
    store, seconds, _ = timed(lambda: synthetic_store(seeds, n, args.noise, args.seed, dtype="float16"))
    print(f"n={n:,} float16: store ready in {seconds:.0f} s ({store.folder})", file=sys.stderr)
    qstore = query_store(queries, store)
    folder = Path(tempfile.mkdtemp())
    build_s, build_peak = command(["index", "build", "--store", str(store.folder), "--kind", "ivf", "--encoding",
                                   args.ten_million_encoding, "--out", str(folder / "ivf")])
    out = folder / "knn.jsonl"
    select_s, select_peak = command(["select", "--store", str(store.folder), "--query-store", str(qstore.folder),
                                     "--index", str(folder / "ivf"), "--method", "knn", "--per-query", "--k",
                                     str(args.k), "--verify", str(args.recall_sample), "--out", str(out)])
    meta = json.loads(Path(f"{out}.meta.json").read_text())
    shutil.rmtree(folder, ignore_errors=True)
    size_gb = store.vectors.nbytes / 1e9
    return "\n".join([
        f"10M float16 store ({size_gb:.1f} GB of vectors, SYNTHETIC as above), {len(queries):,} queries, k = {args.k}:",
        "", "| command | wall s | peak RSS MB | notes |", "|---|---|---|---|",
        f"| fewshot index build --kind ivf --encoding {args.ten_million_encoding} | {build_s:.0f} | {build_peak:,.0f} | |",
        f"| fewshot select --index IXDIR --method knn --per-query --verify {args.recall_sample} | {select_s:.0f} | "
        f"{select_peak:,.0f} | select {meta['selection_seconds']:.0f} s; pick recall {meta['verify']['pick_recall']}, "
        f"shortlist recall {meta['verify']['shortlist_recall']} on {meta['verify']['queries']} queries |"])


def ray_rows(store, queries, args, today) -> list[dict]:
    """The Ray engine (a local cluster, 2 actors at 0.5 CPU) on a saved IVF index: select s is each
    call's wall time in a started cluster (actor start, index load, selection, transfer); the
    cluster's own start is on the engine label."""
    from fewshot.distributed import ray_session, select_per_query_ray

    rows = []
    folder = Path(tempfile.mkdtemp()) / "ivf"
    index = make_index("ivf").build(store.vectors)
    index.source = store.checksum
    index.save(folder)
    start = time.perf_counter()
    with ray_session():
        started = time.perf_counter() - start
        for method in ("knn", "go"):
            out, seconds, peak = timed(lambda: select_per_query_ray(make_selector(method), store.folder, folder,
                                                                    queries, args.k, shortlist=args.shortlist))
            want, today_s = today[method]
            rows.append({"n": store.n, "method": method, "engine": f"ivf, ray (start {started:.0f} s)",
                         "build": float("nan"), "select": seconds, "peak": peak, "shortlist": float("nan"),
                         "picks": overlap(picks(out), want), "ratio": today_s / seconds})
            print(rows[-1], file=sys.stderr)
    shutil.rmtree(folder.parent, ignore_errors=True)
    return rows


def table(rows: list[dict]) -> str:
    head = ("| n | method | candidates | build s | select s | command s | peak RSS MB | shortlist recall | pick recall "
            "| x today |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        def f(x, spec):
            return "" if x is None or x != x else format(x, spec)  # NaN or None: not measured
        lines.append(f"| {r['n']:,} | {r['method']} | {r['engine']} | {f(r['build'], '.1f')} | {f(r['select'], '.1f')} | "
                     f"{f(r.get('command'), '.1f')} | {r['peak']:,.0f} | {f(r['shortlist'], '.3f')} | "
                     f"{f(r['picks'], '.3f')} | {f(r['ratio'], '.1f')} |")
    return "\n".join(lines)


# -- embedding rates --------------------------------------------------------------------------------

def embedding_rates(count: int, seed: int) -> str:
    """texts/s of the bundled model, float32 (torch) and int8 backends: the raw encode and
    embed_to_store with the same loaded model; the cosine between their vectors; and ONNX."""
    import torch

    from fewshot.embedding import SentenceTransformerEmbedder, default_model_path, normalize

    texts = agnews_texts(count, seed + 7)
    embedders = {backend: SentenceTransformerEmbedder(batch_size=64, progress=False, backend=backend)
                 for backend in ("torch", "int8")}
    best, vectors = {}, {}
    for backend, embedder in embedders.items():
        embedder._load().encode(texts[:64], batch_size=64)  # warm-up
    for attempt in range(2):  # alternated, best of two: a shared CPU's noise hits all alike
        for backend, embedder in embedders.items():
            model = embedder._load()
            vectors[backend], seconds, _ = timed(lambda: model.encode(texts, batch_size=64, convert_to_numpy=True,
                                                                      show_progress_bar=False))
            best[backend, "raw"] = min(best.get((backend, "raw"), float("inf")), seconds)
            folder = Path(tempfile.mkdtemp()) / "store"
            _, seconds, _ = timed(lambda: embed_to_store(texts, folder, embedder, chunk=1024, progress=False))
            best[backend, "store"] = min(best.get((backend, "store"), float("inf")), seconds)
            shutil.rmtree(folder.parent, ignore_errors=True)
    cosines = np.einsum("ij,ij->i", normalize(vectors["torch"]), normalize(vectors["int8"]))
    raw_s, store_s = best["torch", "raw"], best["torch", "store"]
    lines = [f"Embedding {count} AG News texts, bundled all-MiniLM-L6-v2, batch 64, CPU, {torch.get_num_threads()} "
             f"torch threads (best of 2):",
             f"- raw SentenceTransformer.encode, float32 (backend torch): {count / raw_s:.1f} texts/s",
             f"- embed_to_store, float32 (chunks of 1,024, committed): {count / store_s:.1f} texts/s "
             f"({store_s / raw_s:.2f}x the raw time)",
             f"- raw encode, backend int8 (Linear layers in int8): {count / best['int8', 'raw']:.1f} texts/s "
             f"({raw_s / best['int8', 'raw']:.2f}x the float32 rate)",
             f"- embed_to_store, backend int8: {count / best['int8', 'store']:.1f} texts/s "
             f"({store_s / best['int8', 'store']:.2f}x the float32 rate)",
             f"- int8 vs float32 vectors: cosine mean {cosines.mean():.4f}, lowest {cosines.min():.4f}, "
             f"1st percentile {np.percentile(cosines, 1):.4f}"]
    try:
        from sentence_transformers import SentenceTransformer

        onnx = SentenceTransformer(str(default_model_path()), backend="onnx", device="cpu")
        onnx.encode(texts[:64], batch_size=64)
        _, onnx_s, _ = timed(lambda: onnx.encode(texts, batch_size=64, convert_to_numpy=True, show_progress_bar=False))
        lines.append(f"- ONNX backend: {count / onnx_s:.1f} texts/s ({raw_s / onnx_s:.2f}x the float32 rate)")
    except Exception as err:  # noqa: BLE001 - report why the backend is unavailable, whatever it is
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        lines.append(f"- ONNX backend: unavailable here ({type(err).__name__}: {reason[:200]})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--shortlist", type=int, default=256)
    parser.add_argument("--real", type=int, default=6000, help="AG News texts embedded (pool seeds + held-out)")
    parser.add_argument("--held", type=int, default=1000, help="of them, held out as query seeds")
    parser.add_argument("--noise", type=float, default=0.6, help="norm of the Gaussian noise grown onto real vectors")
    parser.add_argument("--recall-sample", type=int, default=500, help="queries for the shortlist recall")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS,
                        help="methods of the in-process rows (none: only the whole-command rows)")
    parser.add_argument("--engines", nargs="*", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--ray", action="store_true", help="also the Ray engine on the smallest size")
    parser.add_argument("--cli-methods", nargs="*", default=["knn", "go"], choices=METHODS,
                        help="methods of the whole-command rows (none: no such rows)")
    parser.add_argument("--cli-nprobe", type=int, help="the CLI rows' --nprobe (default: the index's)")
    parser.add_argument("--ten-million", action="store_true",
                        help="also a 10M float16 store (7.7 GB on disk, twice that while written): index build and "
                             "per-query kNN as commands, with their peak RSS")
    parser.add_argument("--ten-million-encoding", default="sq8", choices=["flat", "fp16", "sq8"],
                        help="how the 10M IVF index stores vectors (flat: 15 GB in memory)")
    parser.add_argument("--embed", type=int, default=0,
                        help="also time embedding on this many texts (float32 and int8 backends, and ONNX)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    parts = [f"# Large pools, {time.strftime('%Y-%m-%d %H:%M')}",
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
             f"{os.getloadavg()[0]:.1f} at start; k = {args.k}, shortlist {args.shortlist}."]
    if args.sizes or args.ten_million:
        real = real_vectors(args.real, args.seed)
        seeds, held = real[:-args.held], real[-args.held:]
        queries, n_real = make_queries(held, args.queries, args.noise, args.seed)
    if args.sizes:
        smallest = synthetic_store(seeds, min(args.sizes), args.noise, args.seed)
        parts.append(f"Pool: SYNTHETIC, grown from {len(seeds):,} real AG News embeddings (+ Gaussian noise of norm "
                     f"{args.noise}, renormalised). Mean nearest-neighbour cosine {nn_cosine(smallest.vectors):.2f} "
                     f"at n = {smallest.n:,}, {nn_cosine(seeds):.2f} among the real ones. Queries: {args.queries:,} "
                     f"({n_real:,} real held-out texts, {args.queries - n_real:,} synthetic).")
        reset_peak()
        parts.append(f"This process held {peak_mb():,.0f} MB before the first row (Python, numpy, faiss, the "
                     f"queries); every peak below includes it.")
        rows = []
        for n in args.sizes:
            rows.extend(run_size(n, args, seeds, queries, with_ray=args.ray and n == smallest.n))
        parts.append(table(rows))
        parts.append("Peak RSS: VmHWM of this process, reset before each row (/proc/self/clear_refs); index rows "
                     "count the index build too. `today`'s build s is loading the pool into memory. CLI rows: the "
                     "whole command in a child process (command s: its wall time, loading and index build included; "
                     "peak RSS: the child's own); x today compares its select s.")
    if args.ten_million:
        parts.append(ten_million(args, seeds, queries))
    if args.embed:
        parts.append(embedding_rates(args.embed, args.seed))
    report = "\n\n".join(parts) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
