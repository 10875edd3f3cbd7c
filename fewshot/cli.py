"""``fewshot`` command line: argument parsing and printing over the library (``fewshot.pipeline``,
``fewshot.evaluation``); every decision about what is selected, and how, lives there."""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer

from . import selection as registry
from .data import Example, check_writable_dir, check_writable_file, label_words, load_examples, write_outputs
from .embedding import check_backend
from .errors import FewshotError, InputError, Interrupted
from .llm.client import DEFAULT_TIMEOUT, check_wait
from .llm.context import check_fits
from .llm.server import MODELS, STOP_SIGNALS, LocalServer, llm_endpoint
from .oracle import journal_path
from .index import IndexChoice
from .pipeline import (Inputs, Request, SelectionRun, check_index_use, check_lengths, demo_records, has_texts,
                       make_embedder, open_model, open_reference, oracle_labels_demos, run_meta, select_examples)
from .prompts import Template, load_template, prompt_order
from .tokens import check_token_budget

TIMEOUT_HELP = "Seconds one LLM request may wait for an answer (each try)."
LLM_METHODS = "Methods that consult an LLM (sal, valsearch, random-search, excess-loss, valued, sal-probes)"
DEADLINE_HELP = "Seconds one LLM request may take in all, retries included (default 2.5 x --timeout)."

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Pick the few-shot demonstrations for an LLM prompt.")

RESUME = "finished work is kept; re-run the same command to resume"


def _say(message: str) -> None:
    print(message, file=sys.stderr)


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM and SIGHUP raise :class:`~fewshot.errors.Interrupted`, so
    ``with`` blocks unwind (a started server stops, caches and journals are closed) and the command
    says what happened. A signal the process ignores (SIGHUP under ``nohup``) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python installs handlers only there
        return

    def on_signal(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {}
    for signum in STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is not signal.SIG_IGN:
            previous[signum] = handler
            signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def handles_errors(command: Callable) -> Callable:
    """Input errors exit 2 with the message; a stop signal exits 128 + its number and Ctrl-C 130,
    each saying what is kept; anything unexpected exits 1 (traceback with FEWSHOT_DEBUG=1)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with stop_signals_interrupt():
                return command(*args, **kwargs)
        except InputError as err:
            _say(f"error: {err}")
            raise typer.Exit(2) from None
        except FewshotError as err:
            _say(f"error: {err}")
            raise typer.Exit(1) from None
        except Interrupted as err:
            # true: embeddings and LLM answers are cached, typed labels journaled, eval cells recorded
            _say(f"terminated ({err.signal_name}): {RESUME}")
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            _say(f"interrupted: {RESUME}")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as err:  # noqa: BLE001 - last line of defence for a clean exit code
            if os.environ.get("FEWSHOT_DEBUG"):
                traceback.print_exc()
            _say(f"internal error: {type(err).__name__}: {err} (set FEWSHOT_DEBUG=1 for the traceback)")
            raise typer.Exit(1) from None

    return wrapper


def parse_params(pairs: list[str], field: str = "--param") -> dict[str, Any]:
    """``["lam=0.5", "objective=v"]`` -> ``{"lam": 0.5, "objective": "v"}`` (values parsed as JSON when they can be)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"{field} expects KEY=VALUE, got {pair!r}", field=field)
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _listed(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


BACKEND_HELP = ("How the local embedding model computes: torch (as shipped) or int8 (its Linear layers in "
                "int8 on the CPU: faster, vectors a cosine of about 0.997 from torch's; stores and the cache "
                "keep the two apart).")


@app.command()
@handles_errors
def select(
    pool: Optional[Path] = typer.Option(None, help="Candidate examples (.jsonl or .csv); labels optional. With --store: the file the store was embedded from (for texts and labels; without it, records carry the store's ids only)."),
    queries: Optional[Path] = typer.Option(None, help="The inputs the prompt must answer (.jsonl or .csv); text only."),
    method: str = typer.Option("go", help="Selector name; see `fewshot methods`."),
    k: int = typer.Option(8, help="Demos per prompt (for a shared set, also the number of labels needed; see --label-budget)."),
    out: Optional[Path] = typer.Option(None, help="Write chosen demos as JSONL here (else stdout); metadata goes to OUT.meta.json."),
    text_field: str = typer.Option("text", help="Field holding the text."),
    label_field: str = typer.Option("label", help="Field holding the label (may be absent)."),
    id_field: Optional[str] = typer.Option(None, help="Field holding a unique id (default: the 'id' field when the file has one, else the line number)."),
    per_query: Optional[bool] = typer.Option(None, "--per-query/--shared", help="One demo list per query, or one shared set. Default: the mode of the method that picks the demos shown (--retriever with --label-budget, else --method): per query for knn, mmr, bm25, dpp; shared for go, random, kmeans, votek, sal."),
    seed: int = typer.Option(0, help="Seed for every random choice."),
    max_tokens: Optional[int] = typer.Option(None, help="Token budget for the rendered demos of one prompt (tiktoken cl100k_base)."),
    render: Optional[str] = typer.Option(None, help="Print every finished prompt with this template (a bundled template name or a .toml path); it also sets the token costs and SAL's prompts."),
    template: Optional[str] = typer.Option(None, help="Template whose demo format sets the token costs and SAL's prompts (default classification; with --render, give only one of the two)."),
    label_balance: bool = typer.Option(False, "--label-balance", help="At most ceil(k / #labels) demos per label (needs labels)."),
    param: list[str] = typer.Option([], "--param", "-p", help="Method parameter KEY=VALUE, repeatable (see `fewshot methods`)."),
    embeddings: Optional[Path] = typer.Option(None, help="Precomputed pool embeddings (.npy, one row per pool example)."),
    query_embeddings: Optional[Path] = typer.Option(None, help="Precomputed query embeddings (.npy)."),
    embedding_model: Optional[str] = typer.Option(None, help="Local sentence-transformers folder, or openai:NAME (default: bundled all-MiniLM-L6-v2)."),
    backend: str = typer.Option("torch", help=BACKEND_HELP),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the embedding cache."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache folder (default: $FEWSHOT_CACHE_DIR or ~/.cache/fewshot)."),
    prune_to: Optional[int] = typer.Option(None, help="Prune the pool to this many examples by k-means hardship first."),
    prune_policy: str = typer.Option("hard", help="Pruning keeps 'hard' (far from centroid) or 'easy' examples."),
    base_url: Optional[str] = typer.Option(None, help=f"{LLM_METHODS}: OpenAI-compatible endpoint (default $OPENAI_BASE_URL; none: a local llama-server is started)."),
    model: Optional[str] = typer.Option(None, help=f"{LLM_METHODS}: model name (default $FEWSHOT_MODEL)."),
    api_key: Optional[str] = typer.Option(None, help=f"{LLM_METHODS}: API key (default $OPENAI_API_KEY)."),
    api: str = typer.Option("completions", help=f"{LLM_METHODS}: 'completions' (llama.cpp, vLLM) or 'chat' (hosted chat models)."),
    local_model: str = typer.Option("gemma3-270m", help=f"{LLM_METHODS}: local model when no endpoint is set (gemma3-270m, smollm2-135m or a .gguf)."),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, help=TIMEOUT_HELP),
    deadline: Optional[float] = typer.Option(None, help=DEADLINE_HELP),
    labels: Optional[str] = typer.Option(None, help=f"{LLM_METHODS}: comma-separated label set (default: the labels in the pool and labels file)."),
    calibration: str = typer.Option("none", help=f"{LLM_METHODS}: calibrate the LLM's label probabilities: none, batch or contextual."),
    labels_file: Optional[Path] = typer.Option(None, help="Labels for an unlabeled pool, asked for as they are needed (SAL's picks; under --label-budget, the B a label-reading --retriever such as valsearch reads): JSONL of {id, label}. Labels typed at the prompt are kept in OUT.labels.jsonl (without --out: in the cache folder), and a re-run asks only the rest."),
    label_budget: Optional[int] = typer.Option(None, help="Annotate then retrieve: --method picks this many examples to label (B), then --retriever picks k of them for each prompt (per query by default)."),
    retriever: str = typer.Option("knn", help="With --label-budget: the method that picks k demos from the labeled ones (knn, go, mmr, ...)."),
    retriever_param: list[str] = typer.Option([], "--retriever-param", "-r", help="With --label-budget: a retriever parameter KEY=VALUE, repeatable (-p sets the method's)."),
    store: Optional[Path] = typer.Option(None, help="The pool's vectors: a vector store written by `fewshot embed` (memory-mapped)."),
    query_store: Optional[Path] = typer.Option(None, help="The queries' vectors: a vector store (same model as --store)."),
    index: Optional[str] = typer.Option(None, help="Candidates from an index: exact, flat, ivf, hnsw (built now), or the folder of one from `fewshot index build`. Serves per-query selection, and the shared sets of GO (its candidates; -p candidate_pool=N, -p query_sample=M) and vote-k (its neighbour graph)."),
    nlist: Optional[int] = typer.Option(None, help="--index ivf: lists (default about sqrt(n))."),
    nprobe: Optional[int] = typer.Option(None, help="ivf index: lists searched per query (default: 48 per 256 candidates, at least nlist/16)."),
    ef_search: Optional[int] = typer.Option(None, help="hnsw index: search breadth (default twice the shortlist)."),
    encoding: Optional[str] = typer.Option(None, help="--index flat/ivf/hnsw built now: flat (float32), fp16 or sq8 vectors in memory (default: sq8 for ivf, flat otherwise)."),
    verify: Optional[int] = typer.Option(None, help="With --index: exact-pick recall on this many sampled queries, in OUT.meta.json ('verify')."),
    engine: str = typer.Option("local", help="Per-query selection here (local) or on a Ray cluster (ray, needs --store)."),
    ray_address: Optional[str] = typer.Option(None, help="--engine ray: the cluster's address (default: start a local one)."),
    actors: int = typer.Option(2, help="--engine ray: actors in the pool."),
    cpus_per_actor: float = typer.Option(0.5, help="--engine ray: CPUs each actor takes (below 1 on small machines: actors on every CPU hang Ray Data)."),
) -> None:
    """Choose k demonstrations from a pool for a set of queries."""
    request = Request(method=method, k=k, per_query=per_query, seed=seed, max_tokens=max_tokens,
                      label_balance=label_balance, params=parse_params(param), prune_to=prune_to,
                      prune_policy=prune_policy, label_budget=label_budget, retriever=retriever,
                      retriever_params=parse_params(retriever_param, field="--retriever-param"))
    request.check()  # bad numbers, methods and parameters cost nothing
    check_wait(timeout, deadline)
    check_backend(backend, field="--backend")
    demo_template = _template(render, template)
    inputs = Inputs(pool, queries, store, query_store, embeddings, query_embeddings, text_field=text_field,
                    label_field=label_field, id_field=id_field)
    settings = {"nlist": nlist, "nprobe": nprobe, "ef_search": ef_search, "encoding": encoding}
    choice = IndexChoice(index, settings) if index else None
    if choice is None and any(value is not None for value in settings.values()):
        raise InputError("--nlist, --nprobe, --ef-search and --encoding set an index: give --index", field="--index")
    check_index_use(request, choice, verify, engine)
    runner = _engine(engine, store, query_store, ray_address, actors, cpus_per_actor)
    if out is not None:
        check_writable_file(out, field="--out")
    if cache_dir is not None and not no_cache:
        check_writable_dir(cache_dir, field="--cache-dir")
    inputs.check(request)  # stores open and fit each other, before any file is read
    if choice is not None:
        choice.check(n=inputs.n, d=inputs.d, source=inputs.source)
    pool_examples, query_examples = inputs.examples()
    request.fits(len(pool_examples), path=str(pool or store))
    if render and not oracle_labels_demos(*request.selectors()) and not labels and (not has_texts(pool_examples)
                                                       or all(e.label is None for e in pool_examples)):
        raise InputError("--render needs labels for the demos, and the pool has none: label the chosen "
                         "examples first (run without --render), or use --method sal, or --label-budget with a "
                         "label-reading --retriever (valsearch, ...), with --labels-file",
                         field="--render")
    pool_vectors, query_vectors = inputs.vectors(pool_examples, query_examples)
    if choice is not None:
        choice.check(n=len(pool_examples), d=pool_vectors.shape[1] if pool_vectors is not None else None)
    embedder = None
    if pool_vectors is None or query_vectors is None:
        embedder = make_embedder(embedding_model, cache=not no_cache, cache_dir=cache_dir, backend=backend)
        inputs.check_embedder(embedder)
    run = select_examples(pool_examples, query_examples, request, template=demo_template, embedder=embedder,
                          pool_vectors=pool_vectors, query_vectors=query_vectors, llm=base_url,
                          endpoint={"model": model, "api_key": api_key, "api": api, "local_model": local_model,
                                    "cache_dir": cache_dir, "timeout": timeout, "deadline": deadline},
                          labels=_listed(labels), labels_file=labels_file,
                          journal=journal_path(pool_examples, out=out, cache_dir=cache_dir)
                          if has_texts(pool_examples) else None, calibration=calibration,
                          label_field=label_field, index=choice, source=inputs.source, verify=verify, engine=runner)
    records = demo_records(run, pool_examples, query_examples)
    meta = run_meta(run, request, pool_examples, query_examples, embedder=embedder, template=demo_template,
                    embedding_model=inputs.model_id)
    if out:
        write_outputs(out, records, meta)
    elif not render:
        with _stdout():
            for record in records:
                print(json.dumps(record, ensure_ascii=False, sort_keys=True))
    pool_labels = [e.label for e in pool_examples] if has_texts(pool_examples) else []
    known = run.label_set or label_words(_listed(labels), pool_labels + [r["label"] or None for r in records])
    if render:
        with _stdout():
            _print_prompts(records, run, query_examples, demo_template, known)
    _show_summary(records, run, query_examples, demo_template, known, show_prompt=not render)
    _report(run, meta, len(pool_examples), out)


def _engine(engine: str, store: Path | None, query_store: Path | None, address: str | None, actors: int,
            cpus_per_actor: float) -> Any:
    """The per-query runner for ``--engine`` (None: local), checked before any work."""
    if engine != "ray":
        return None
    if store is None:
        raise InputError("--engine ray needs --store (each actor memory-maps it)", field="--engine")
    from .distributed import RayEngine

    runner = RayEngine(store, query_store, address=address, num_actors=actors, num_cpus_per_actor=cpus_per_actor)
    runner.check()
    return runner


@app.command()
@handles_errors
def value(
    pool: Path = typer.Option(..., help="Labelled examples (.jsonl or .csv) to value as demos."),
    out: Path = typer.Option(..., help="Values file, .csv or .jsonl: one row per example, best first (rank, id, value, label, text, marginal, datamodel, included)."),
    k: int = typer.Option(4, help="Demos per prompt in the valuation's random demo sets."),
    budget: int = typer.Option(2400, help="LLM prompts in all: budget // probes-per-set random sets, each answering probes-per-set probes."),
    probes_per_set: int = typer.Option(6, help="Probes (other pool examples) each random set answers."),
    metric: str = typer.Option("loglik", help="How a set is scored on a probe: loglik (log p(gold)), calibrated (after batch calibration) or accuracy."),
    estimator: str = typer.Option("marginal", help="The value column: marginal (mean with it minus mean without) or datamodel (a ridge fit); both are written."),
    seed: int = typer.Option(0, help="Seed of the random sets and probes."),
    text_field: str = typer.Option("text", help="Field holding the text."),
    label_field: str = typer.Option("label", help="Field holding the label (every example needs one)."),
    id_field: Optional[str] = typer.Option(None, help="Field holding a unique id (default: the 'id' field when the file has one, else the line number)."),
    template: str = typer.Option("classification", help="Template of the prompts (a bundled template name or a .toml path)."),
    labels: Optional[str] = typer.Option(None, help="Comma-separated label set the LLM answers over (default: the pool's labels)."),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL; none: a local llama-server is started)."),
    model: Optional[str] = typer.Option(None, help="Model name (default $FEWSHOT_MODEL)."),
    api_key: Optional[str] = typer.Option(None, help="API key (default $OPENAI_API_KEY)."),
    api: str = typer.Option("completions", help="'completions' (llama.cpp, vLLM) or 'chat' (hosted chat models)."),
    local_model: str = typer.Option("gemma3-270m", help="Local model when no endpoint is set (gemma3-270m, smollm2-135m or a .gguf)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache folder for the answers (default: $FEWSHOT_CACHE_DIR or ~/.cache/fewshot)."),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, help=TIMEOUT_HELP),
    deadline: Optional[float] = typer.Option(None, help=DEADLINE_HELP),
) -> None:
    """Value every pool example as a demo: its effect on the LLM's answers to other pool examples
    over random prompts (fewshot.valuation); every answer is kept, so a re-run resumes."""
    from .valuation import ESTIMATORS, METRICS, Valuation, value_pool, write_values

    for name, given, allowed in (("--metric", metric, METRICS), ("--estimator", estimator, ESTIMATORS)):
        if given not in allowed:
            raise InputError(f"unknown {name[2:]} {given!r} (use one of: {', '.join(allowed)})", field=name)
    for name, number in (("--k", k), ("--budget", budget), ("--probes-per-set", probes_per_set)):
        if number < 1:
            raise InputError(f"{name[2:].replace('-', '_')}={number} must be at least 1", field=name)
    check_wait(timeout, deadline)
    check_writable_file(out, field="--out")
    if out.suffix.lower() not in (".csv", ".jsonl"):
        raise InputError("values are written as .csv or .jsonl", path=str(out), field="--out")
    if cache_dir is not None:
        check_writable_dir(cache_dir, field="--cache-dir")
    prompt_template = load_template(template)
    examples = load_examples(pool, text_field=text_field, label_field=label_field, id_field=id_field,
                             require_labels=True)
    golds = [str(e.label) for e in examples]
    options = {"k": k, "budget": budget, "probes_per_set": probes_per_set, "metric": metric, "seed": seed,
               "cache_dir": cache_dir}
    Valuation(None, **options).plan(golds)  # a pool too small or a budget under one set fails before a server starts
    label_set = label_words(_listed(labels), golds)
    with contextlib.ExitStack() as stack:
        predictor = open_model(stack, prompt_template, label_set, base_url,  # calibration "none": the raw answers
                               {"model": model, "api_key": api_key, "api": api, "local_model": local_model,
                                "cache_dir": cache_dir, "timeout": timeout, "deadline": deadline})
        check_lengths(predictor, [examples])
        values = value_pool([e.text for e in examples], golds, predictor, **options)
        stats = dict(getattr(predictor.client, "stats", {}))
    write_values(out, [e.id for e in examples], values.get(estimator), texts=[e.text for e in examples], labels=golds,
                 columns={"marginal": values.marginal, "datamodel": values.datamodel, "included": values.included})
    _say(f"valued {len(examples)} examples ({estimator}) from {values.sets} random sets of {k}, {values.prompts} prompts "
         f"({values.asked} asked now, the rest from the store; {stats.get('calls', 0)} LLM calls, "
         f"{stats.get('cached', 0)} from the LLM cache) -> {out}")
    reliability = values.reliability
    if reliability != reliability:  # NaN: too few examples in both halves' sets
        _say("reliability: unknown (too few examples were in sets of both halves; raise --budget)")
    else:
        low = " (below 0.5: the budget bought mostly noise; raise --budget)" if reliability < 0.5 else ""
        _say(f"reliability (split-half rank correlation of the values): {reliability:.2f}{low}")


@contextlib.contextmanager
def _stdout() -> Iterator[None]:
    """Data written to stdout: a full device or a closed pipe is a clear error, not an internal one."""
    try:
        yield
        sys.stdout.flush()
    except OSError as err:
        raise InputError(f"cannot write the selection to standard output ({err.strerror or err}); "
                         "give --out FILE", field="stdout") from None


def _template(render: str | None, template: str | None) -> Template:
    """One template renders the printed prompts, SAL's prompts and the token costs: a budget on a
    format other than the one printed would bound nothing that is shown."""
    chosen = load_template(render or template or "classification")
    if render and template and load_template(template) != chosen:
        raise InputError(f"--render {render} and --template {template} name different templates; the token "
                         "costs, SAL's prompts and the printed prompts come from one: give only --render",
                         field="--template")
    return chosen


def _report(run: SelectionRun, meta: dict[str, Any], pool_size: int, out: Path | None) -> None:
    """The summary lines on stderr: what was chosen, SAL's cost, why anything is short, what to label."""
    counts = sorted({len(s.indices) for s in run.selections})
    chosen = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    _say(f"{meta['method']}: chose {chosen} demo(s){' per query' if run.per_query else ''} from {pool_size} "
         f"in {run.seconds:.3f} s" + (f" -> {out}" if out else ""))
    if run.llm:
        stats = run.llm.get("stats", {})
        calls = f"({stats.get('calls', 0)} calls, {stats.get('cached', 0)} from cache)"
        if "naive_calls" in run.llm:
            _say(f"LLM: {run.llm['simulated_calls']} simulated prompts {calls}; naive SAL: {run.llm['naive_calls']}")
        else:
            _say(f"LLM: {run.llm['selection_prompts']} selection prompts {calls}")
    if meta["annotation_stopped"]:
        _say(f"note: fewer than label_budget={meta['label_budget']} examples picked to label: {meta['annotation_stopped']}")
    for reason in meta["stopped"]:
        _say(f"note: fewer than k={meta['k']} demos for some selections: {reason}")
    if meta["to_label"]:
        _say(f"the pool is unlabeled: label these {len(meta['to_label'])} examples: {', '.join(meta['to_label'][:20])}"
             + (" ..." if len(meta["to_label"]) > 20 else ""))


def _demos_for(records: list[dict[str, Any]], query_id: str | None) -> list[Example]:
    """The demos of one selection as the prompt shows them (:func:`fewshot.prompts.prompt_order`)."""
    chosen = sorted((r for r in records if r.get("query_id") == query_id), key=lambda r: r["rank"])
    return [Example(str(r["id"]), r["text"], r["label"]) for r in prompt_order(chosen)]


def _print_prompts(records, run: SelectionRun, queries: list[Example], template, labels: list[str]) -> None:
    for query in queries:
        demos = _demos_for(records, query.id if run.per_query else None)
        print(f"### query {query.id}")
        print(template.render(demos, query.text, labels))
        print()


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _show_summary(records, run: SelectionRun, queries: list[Example], template, labels: list[str],
                  show_prompt: bool) -> None:
    """A compact table of the chosen demos (the first query's, per query) and one rendered prompt, on stderr."""
    from rich.console import Console
    from rich.table import Table

    query_id = queries[0].id if run.per_query else None
    table = Table(title="chosen demos" + (f" for query {query_id}" if run.per_query else ""), title_justify="left")
    for column in ("rank", "id", "label", "score"):
        table.add_column(column, no_wrap=True)
    table.add_column("text", no_wrap=True)
    for r in sorted((r for r in records if r.get("query_id") == query_id), key=lambda r: r["rank"]):
        unknown = "" if r["needs_label"] is None else "[bold]to label[/]"  # None: a store's ids, labels not known
        table.add_row(str(r["rank"]), str(r["id"]), r["label"] if r["label"] is not None else unknown,
                      f"{r['score']:.4g}", _shorten(r["text"] or "", 44))
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
    console.print(table)
    demos = _demos_for(records, query_id)
    if show_prompt and labels and all(d.label is not None for d in demos):
        console.print(f"[dim]prompt for query {queries[0].id} (--render TEMPLATE prints every prompt):[/]")
        console.print(template.render(demos, queries[0].text, labels), markup=False, highlight=False)


@app.command()
@handles_errors
def embed(
    input_file: Path = typer.Argument(..., metavar="INPUT", help="Texts to embed (.jsonl or .csv)."),
    out: Path = typer.Option(..., help="The vector store folder to write (or to resume: the same command again finishes it)."),
    text_field: str = typer.Option("text", help="Field holding the text."),
    id_field: Optional[str] = typer.Option(None, help="Field holding a unique id (default: the 'id' field when the file has one, else the line number); `select --pool` must use the same."),
    embedding_model: Optional[str] = typer.Option(None, help="Local sentence-transformers folder, or openai:NAME (default: bundled all-MiniLM-L6-v2)."),
    chunk: int = typer.Option(8192, help="Texts per committed chunk (a killed run loses at most one chunk)."),
    dtype: str = typer.Option("float32", help="Stored vectors: float32, or float16 (half the size)."),
    backend: str = typer.Option("torch", help=BACKEND_HELP),
    engine: str = typer.Option("local", help="Embed here (local) or on a Ray cluster (ray)."),
    ray_address: Optional[str] = typer.Option(None, help="--engine ray: the cluster's address (default: start a local one)."),
    actors: int = typer.Option(2, help="--engine ray: embedding actors (each loads the model once)."),
    cpus_per_actor: float = typer.Option(0.5, help="--engine ray: CPUs each actor takes."),
) -> None:
    """Embed a file of texts into a vector store (chunked, resumable, with a progress bar and ETA)."""
    from .store import check_store_folder, embed_examples

    if engine not in ("local", "ray"):
        raise InputError(f"unknown engine {engine!r}: use local or ray", field="--engine")
    check_backend(backend, field="--backend")
    ray_options = None
    if engine == "ray":
        from .distributed import RayEngine

        RayEngine(out, num_actors=actors, num_cpus_per_actor=cpus_per_actor).check()
        ray_options = {"address": ray_address, "num_actors": actors, "num_cpus_per_actor": cpus_per_actor}
    # the store is the cache; the model loads on first use
    embedder = make_embedder(embedding_model, cache=False, backend=backend)
    check_store_folder(out, embedder, chunk=chunk, dtype=dtype)
    examples = load_examples(input_file, text_field=text_field, label_field=None, id_field=id_field)
    store = embed_examples(examples, out, embedder, chunk=chunk, dtype=dtype, ray=ray_options)
    _say(f"store {out}: {store.n} x {store.d} {store.manifest['dtype']}, model {store.model_id}; "
         f"{store.computed} embedded now, {store.n - store.computed} kept from before")


index_app = typer.Typer(help="Candidate indexes over a vector store.", no_args_is_help=True)
app.add_typer(index_app, name="index")


@index_app.command("build")
@handles_errors
def index_build(
    store: Path = typer.Option(..., help="The vector store to index (from `fewshot embed`)."),
    kind: str = typer.Option("ivf", help="exact, flat (faiss, exact), ivf or hnsw (faiss, approximate)."),
    out: Path = typer.Option(..., help="The index folder to write."),
    nlist: Optional[int] = typer.Option(None, help="ivf: lists (default about sqrt(n))."),
    nprobe: Optional[int] = typer.Option(None, help="ivf: lists searched per query (default: 48 per 256 candidates, at least nlist/16)."),
    ef_search: Optional[int] = typer.Option(None, help="hnsw: search breadth (default twice the shortlist)."),
    seed: Optional[int] = typer.Option(None, help="ivf: seed of the training sample and k-means (default 0)."),
    encoding: Optional[str] = typer.Option(None, help="faiss kinds: how vectors are kept in memory: flat (float32; the default of flat and hnsw), fp16 (half) or sq8 (a quarter, recall slightly lower; the default of ivf)."),
) -> None:
    """Build a candidate index over a vector store, for `fewshot select --store DIR --index FOLDER`."""
    from .store import open_store

    choice = IndexChoice(kind, {"nlist": nlist, "nprobe": nprobe, "ef_search": ef_search, "seed": seed,
                                "encoding": encoding})
    if choice.kind is None:
        raise InputError(f"unknown index kind {kind!r} (known: exact, flat, ivf, hnsw)", field="--kind")
    opened = open_store(store, field="--store")
    choice.check(n=opened.n, d=opened.d)
    check_writable_dir(out, field="--out")
    index, described = choice.open(opened.vectors, opened.checksum)
    index.save(out)
    _say(f"{kind} index over {opened.n} x {opened.d} vectors built in {described['build_s']:.1f} s -> {out}")


@app.command()
def methods() -> None:
    """List every selector with a one-line description, what it needs (labels, an LLM) and its parameters."""
    width = max(map(len, registry.SELECTORS))
    for name, cls in registry.SELECTORS.items():
        params = ", ".join(f"{k}={v!r}" for k, v in registry.parameters(cls).items())
        needs = registry.requirements(cls)
        print(f"{name:{width}s} {registry.summary(cls)}")
        if needs:
            print(f"{'':{width}s} needs: {', '.join(needs)}")
        print(f"{'':{width}s} parameters: {params}")


@app.command("eval")
@handles_errors
def evaluate(
    suite: Optional[str] = typer.Option(None, help="A suite in evals/ (quick, full) or a .toml path."),
    data: Optional[str] = typer.Option(None, help="Comma-separated data sets: built-in names or .jsonl/.csv files."),
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods or suite variants; ':q' per query, "
                                                     "':s' shared (e.g. go:q)."),
    k: Optional[str] = typer.Option(None, help="Comma-separated demos per prompt, e.g. 4,8."),
    label_budgets: Optional[str] = typer.Option(None, help="Comma-separated label budgets B for the "
                                                           "annotate-then-retrieve setting, e.g. 16,32,64."),
    annotators: Optional[str] = typer.Option(None, help="Comma-separated annotation selectors (annotate setting)."),
    retriever: Optional[str] = typer.Option(None, help="Comma-separated retrievers of the annotate setting, methods or suite variants (default knn)."),
    seeds: Optional[int] = typer.Option(None, help="Number of seeds (0..seeds-1)."),
    pool_size: Optional[int] = typer.Option(None, help="Pool examples per seed."),
    test_size: Optional[int] = typer.Option(None, help="Test queries per seed."),
    contextual: Optional[bool] = typer.Option(None, "--contextual/--no-contextual",
                                              help="Also ask content-free prompts (contextual calibration)."),
    text_field: Optional[str] = typer.Option(None, help="Text field of data files."),
    label_field: Optional[str] = typer.Option(None, help="Label field of data files."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default results/SUITE or results/DATA); "
                                                  "re-running resumes it."),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint (none: a local llama-server)."),
    model: Optional[str] = typer.Option(None, help="Model name (default $FEWSHOT_MODEL)."),
    api_key: Optional[str] = typer.Option(None, help="API key (default $OPENAI_API_KEY)."),
    api: str = typer.Option("completions", help="'completions' or 'chat'."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache folder for embeddings and LLM answers."),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, help=TIMEOUT_HELP),
    deadline: Optional[float] = typer.Option(None, help=DEADLINE_HELP),
    max_tokens: Optional[int] = typer.Option(None, help="Token budget for each prompt's rendered demos (as in `select`)."),
    allow_code_change: bool = typer.Option(False, "--allow-code-change",
                                           help="Resume a run folder written by other scoring code (both versions are recorded)."),
) -> None:
    """Compare selection methods on benchmarks with a real LLM; writes tables, comparisons, plots and predictions."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from .datasets import load_datasets
    from .evaluation.harness import plan_splits, reference_names, run_suite
    from .evaluation.runfolder import run_lock
    from .evaluation.suites import Suite, load_suite

    if not suite and data is None:
        raise InputError("give --suite NAME or --data FILE_OR_NAME", field="--data")
    plan = load_suite(suite) if suite else Suite()
    listed = lambda text: _listed(text) or None  # noqa: E731 - None: the suite's value stands
    numbers = lambda text, name: text and _integers(text, name)  # noqa: E731
    overrides = {"data": listed(data), "methods": listed(methods), "k": numbers(k, "--k"),
                 "label_budgets": numbers(label_budgets, "--label-budgets"), "annotators": listed(annotators),
                 "seeds": seeds, "pool_size": pool_size, "test_size": test_size,
                 "contextual": contextual, "text_field": text_field, "label_field": label_field}
    for key, value in overrides.items():
        if value is not None:
            setattr(plan, key, value)
    if retriever is not None:  # replaces the suite's retriever or retrievers (one: the shorthand, as before)
        named = _listed(retriever)
        if not named:
            raise InputError("names no retriever: give one or more, comma-separated (knn, valsearch-120, ...)",
                             field="--retriever")
        plan.retriever, plan.retrievers = (named[0], None) if len(named) == 1 else (None, named)
    plan.check()
    check_wait(timeout, deadline)
    check_token_budget(max_tokens)
    if cache_dir is not None:
        check_writable_dir(cache_dir, field="--cache-dir")
    datasets = load_datasets(plan.data, text_field=plan.text_field, label_field=plan.label_field)
    splits = plan_splits(plan, datasets)  # bad data, methods or budgets fail here, before a server starts or a call is made
    out = out or Path("results") / (plan.name if suite else "+".join(d.name for d in datasets))
    check_writable_dir(out, field="--out")
    templates = {"classification": load_template("classification"), "regression": load_template("regression")}
    embedder = make_embedder(cache_dir=cache_dir)
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} cells"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    # the folder is held before a server starts, so a second eval on it fails at once
    with run_lock(out), llm_endpoint(base_url, model, api_key, api=api, local_model=plan.model, cache_dir=cache_dir,
                                     timeout=timeout, deadline=deadline) as client, \
            Progress(*columns, disable=not sys.stderr.isatty(), console=None) as bar, contextlib.ExitStack() as stack:
        texts = _split_texts(datasets, splits)
        check_fits(texts, client)  # a text too long for the model fails before any cell
        task = bar.add_task("eval", total=None)

        def progress(finished: int, total: int, cell: str) -> None:
            bar.update(task, completed=finished, total=total, description=cell)
            if not sys.stderr.isatty():
                _say(f"[{finished}/{total}] {cell}")

        references = {}  # excess-loss's reference LLMs, opened before any cell, stopped before the target's server
        for name in reference_names(plan):
            references[name] = open_reference(stack, name, client, base_url, api_key=api_key, api=api,
                                              cache_dir=cache_dir, timeout=timeout, deadline=deadline)
            check_fits(texts, references[name])
        records = run_suite(plan, datasets, client, templates, embedder, out, progress, splits=splits,
                            max_tokens=max_tokens, allow_code_change=allow_code_change, reference_llms=references)
        _write_report(out, records)


def _split_texts(datasets, splits) -> list[tuple[str, str]]:
    """(text, where) for every example a split uses, for the context-length check."""
    places = {(d.name, e.id): (e.text, d.where(i)) for d in datasets for i, e in enumerate(d.examples)}
    used = dict.fromkeys((name, e.id) for (name, _), parts in splits.items() for part in parts for e in part)
    return [places[key] for key in used]


def _integers(text: str, name: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"expected comma-separated integers, got {text!r}", field=name) from None


def _write_report(out: Path, records: list[dict[str, Any]] | None = None,
                  references: dict[str, str] | None = None) -> None:
    from .evaluation.report import load_references, write_report

    written = write_report(out, records=records,
                           references=None if not references else {**load_references(out), **references})
    _say(f"wrote {out}/summary.md, comparisons.md, pivot.md, {', '.join(p.name for p in written)}")
    print((out / "pivot.md").read_text())
    print((out / "comparisons.md").read_text())
    from .evaluation.results_page import goal_table

    with open(out / "goal.csv", newline="", encoding="utf-8") as handle:
        print("\n".join(goal_table(list(csv.DictReader(handle)))))


@app.command()
@handles_errors
def report(run: Path = typer.Argument(..., help="A run folder written by `fewshot eval`."),
           page: Optional[Path] = typer.Option(None, help="Also write a results page (markdown) here, e.g. evals/RESULTS.md."),
           command: str = typer.Option("", help="With --page: the command that made the run, quoted on the page."),
           title: str = typer.Option("Results", help="With --page: the page's title."),
           notes: Optional[Path] = typer.Option(None, help="With --page: a markdown file placed after the goal check (what was tried)."),
           reference: Optional[list[str]] = typer.Option(None, help="SETTING=METHOD: compare that setting's methods with METHOD instead of the run's reference, e.g. full=random-search-240 (repeatable).")) -> None:
    """Rebuild the tables, comparisons and plots of an eval run from its files (no LLM needed)."""
    if notes is not None and not notes.is_file():
        raise InputError("no such notes file", path=str(notes), field="--notes")
    if page is not None:
        check_writable_file(page, field="--page")
    references = dict(_reference(text) for text in reference or [])
    _write_report(run, references=references)  # the planned cells' records; none is an error
    if page is not None:
        from .evaluation.results_page import results_page
        from .evaluation.runfolder import write_atomic

        write_atomic(page, results_page(run, command or f"fewshot eval ... --out {run}", title, str(page), notes) + "\n")
        _say(f"wrote {page}")


def _reference(text: str) -> tuple[str, str]:
    setting, _, method = text.partition("=")
    if setting not in ("shared", "annotate", "full") or not method:
        raise InputError(f"--reference {text!r}: give SETTING=METHOD, SETTING one of shared, annotate, full",
                         field="--reference")
    return setting, method


llm_app = typer.Typer(help="The local LLM server.", no_args_is_help=True)
app.add_typer(llm_app, name="llm")


@llm_app.command("serve")
@handles_errors
def serve(model: str = typer.Option("gemma3-270m", help=f"One of {', '.join(MODELS)}, or a .gguf path."),
          context: int = typer.Option(16384, help="Context size in tokens, shared by the slots."),
          parallel: int = typer.Option(4, help="Parallel request slots."),
          threads: Optional[int] = typer.Option(None, help="CPU threads (default: all cores; fewer when the machine is busy).")) -> None:
    """Run llama.cpp's OpenAI-compatible server on 127.0.0.1 (free port) until Ctrl-C."""
    with LocalServer(model, context=context, parallel=parallel, threads=threads) as server:
        try:
            print(f"serving {model} at {server.base_url}  (export OPENAI_BASE_URL={server.base_url} "
                  f"FEWSHOT_MODEL={model})", flush=True)
            server.process.wait()
        except KeyboardInterrupt as err:
            _say("stopping the server")
            if isinstance(err, Interrupted):  # SIGTERM, SIGHUP: the exit code names the signal
                raise typer.Exit(err.exit_code) from None


if __name__ == "__main__":  # pragma: no cover
    app()
