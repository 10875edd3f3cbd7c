"""``fewshot`` command line: a thin layer over the library (see ``fewshot.pipeline``)."""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from . import selection as registry
from .data import Example, load_examples, write_jsonl
from .embedding import load_embeddings
from .errors import FewshotError, InputError
from .calibration import METHODS as CALIBRATIONS
from .llm.predictor import LLMPredictor
from .llm.server import MODELS, LocalServer, llm_endpoint
from .pipeline import SelectionRun, build_problem, make_embedder, run_selection
from .prompts import load_template

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Pick the few-shot demonstrations for an LLM prompt.")


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def handles_errors(command: Callable) -> Callable:
    """Input errors exit 2 with the message; anything unexpected exits 1 (traceback with FEWSHOT_DEBUG=1)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except InputError as err:
            _say(f"error: {err}")
            raise typer.Exit(2) from None
        except FewshotError as err:
            _say(f"error: {err}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            _say("interrupted: finished work is cached; re-run the same command to resume")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as err:  # noqa: BLE001 - last line of defence for a clean exit code
            if os.environ.get("FEWSHOT_DEBUG"):
                traceback.print_exc()
            _say(f"internal error: {type(err).__name__}: {err} (set FEWSHOT_DEBUG=1 for the traceback)")
            raise typer.Exit(1) from None

    return wrapper


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["lam=0.5", "objective=v"]`` -> ``{"lam": 0.5, "objective": "v"}`` (values parsed as JSON when they can be)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--param expects KEY=VALUE, got {pair!r}", field="--param")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def demo_records(run: SelectionRun, pool: list[Example], queries: list[Example]) -> list[dict[str, Any]]:
    records = []
    revealed = run.revealed_labels()
    for selection in run.selections:
        for rank, (index, score) in enumerate(zip(selection.indices, selection.scores), start=1):
            example = pool[index]
            label = example.label if example.label is not None else revealed.get(index)
            record = {"id": example.id, "text": example.text, "label": label, "rank": rank,
                      "score": round(score, 6), "pool_index": index, "needs_label": label is None}
            if run.per_query:
                record["query_id"] = queries[selection.query].id
            records.append(record)
    return records


@app.command()
@handles_errors
def select(
    pool: Path = typer.Option(..., help="Candidate examples (.jsonl or .csv); labels optional."),
    queries: Path = typer.Option(..., help="The inputs the prompt must answer (.jsonl or .csv); text only."),
    method: str = typer.Option("go", help="Selector name; see `fewshot methods`."),
    k: int = typer.Option(8, help="Number of demos to choose (the labeling budget T)."),
    out: Optional[Path] = typer.Option(None, help="Write chosen demos as JSONL here (else stdout); metadata goes to OUT.meta.json."),
    text_field: str = typer.Option("text", help="Field holding the text."),
    label_field: str = typer.Option("label", help="Field holding the label (may be absent)."),
    id_field: Optional[str] = typer.Option(None, help="Field holding a unique id (default: the 'id' field when the file has one, else the line number)."),
    per_query: bool = typer.Option(False, "--per-query", help="One demo list per query instead of one shared set."),
    seed: int = typer.Option(0, help="Seed for every random choice."),
    max_tokens: Optional[int] = typer.Option(None, help="Token budget for the rendered demos (tiktoken cl100k_base)."),
    render: Optional[str] = typer.Option(None, help="Print every finished prompt with this template (a bundled template name or a .toml path)."),
    template: str = typer.Option("classification", help="Template whose demo format sets the token costs."),
    label_balance: bool = typer.Option(False, "--label-balance", help="At most ceil(k / #labels) demos per label (needs labels)."),
    param: list[str] = typer.Option([], "--param", "-p", help="Method parameter KEY=VALUE, repeatable (see `fewshot methods`)."),
    embeddings: Optional[Path] = typer.Option(None, help="Precomputed pool embeddings (.npy, one row per pool example)."),
    query_embeddings: Optional[Path] = typer.Option(None, help="Precomputed query embeddings (.npy)."),
    embedding_model: Optional[str] = typer.Option(None, help="Local sentence-transformers folder, or openai:NAME (default: bundled all-MiniLM-L6-v2)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the embedding cache."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache folder (default: $FEWSHOT_CACHE_DIR or ~/.cache/fewshot)."),
    prune_to: Optional[int] = typer.Option(None, help="Prune the pool to this many examples by k-means hardship first."),
    prune_policy: str = typer.Option("hard", help="Pruning keeps 'hard' (far from centroid) or 'easy' examples."),
    base_url: Optional[str] = typer.Option(None, help="SAL: OpenAI-compatible endpoint (default $OPENAI_BASE_URL; none: a local llama-server is started)."),
    model: Optional[str] = typer.Option(None, help="SAL: model name (default $FEWSHOT_MODEL)."),
    api_key: Optional[str] = typer.Option(None, help="SAL: API key (default $OPENAI_API_KEY)."),
    api: str = typer.Option("completions", help="SAL: 'completions' (llama.cpp, vLLM) or 'chat' (hosted chat models)."),
    local_model: str = typer.Option("gemma3-270m", help="SAL: local model when no endpoint is set (gemma3-270m, smollm2-135m or a .gguf)."),
    labels: Optional[str] = typer.Option(None, help="SAL: comma-separated label set (default: the labels in the pool)."),
    calibration: str = typer.Option("none", help="SAL: calibrate the LLM's label probabilities: none, batch or contextual."),
    labels_file: Optional[Path] = typer.Option(None, help="SAL oracle: JSONL of {id, label} for pool examples SAL asks about."),
    label_budget: Optional[int] = typer.Option(None, help="Annotate then retrieve: --method picks this many examples to label, then --retriever picks k of them (per query with --per-query)."),
    retriever: str = typer.Option("knn", help="With --label-budget: the method that picks k demos from the labeled ones (knn, go, mmr, ...)."),
) -> None:
    """Choose k demonstrations from a pool for a set of queries."""
    # built before any work, so a bad method or parameter costs nothing; SAL gets its LLM and oracle below
    selector = registry.make_selector(method, seed=seed, label_balance=label_balance, **parse_params(param))
    second = registry.make_selector(retriever, seed=seed, label_balance=label_balance) if label_budget else None
    if calibration not in CALIBRATIONS:
        raise InputError(f"unknown calibration {calibration!r} (use one of: {', '.join(CALIBRATIONS)})",
                         field="--calibration")
    if out is not None:
        _prepare_output(out)
    pool_examples = load_examples(pool, text_field=text_field, label_field=label_field, id_field=id_field)
    query_examples = load_examples(queries, text_field=text_field, label_field=None)
    if k > len(pool_examples):
        raise InputError(f"k={k} is larger than the pool ({len(pool_examples)} examples)", path=str(pool))
    if render and method != "sal" and not labels and all(e.label is None for e in pool_examples):
        raise InputError("--render needs labels for the demos, and the pool has none: label the chosen "
                         "examples first (run without --render), or use --method sal with --labels-file",
                         field="--render")
    demo_template = load_template(render or template)
    pool_vectors = load_embeddings(embeddings, len(pool_examples), what="pool") if embeddings else None
    query_vectors = load_embeddings(query_embeddings, len(query_examples), what="queries") if query_embeddings else None
    embedder = None
    if pool_vectors is None or query_vectors is None:
        embedder = make_embedder(embedding_model, cache=not no_cache, cache_dir=cache_dir)
    problem = build_problem(pool_examples, query_examples, embedder=embedder, pool_vectors=pool_vectors,
                            query_vectors=query_vectors, template=demo_template, max_tokens=max_tokens)
    if max_tokens is not None and problem.token_costs is not None and problem.token_costs.min() > max_tokens:
        shortest = int(problem.token_costs.argmin())
        raise InputError(f"every demo alone exceeds --max-tokens {max_tokens} (shortest is id "
                         f"{pool_examples[shortest].id}, {int(problem.token_costs[shortest])} tokens)", field="--max-tokens")
    llm_stats: dict[str, Any] = {}
    label_set: list[str] = []
    with ExitStack() as stack:
        if method == "sal":
            client = stack.enter_context(llm_endpoint(base_url, model, api_key, api=api, local_model=local_model,
                                                      cache_dir=cache_dir))
            from_file = _read_labels_file(labels_file) if labels_file else {}
            label_set = _label_set(labels, pool_examples, from_file)
            selector.model = LLMPredictor(client, demo_template, label_set, calibration=calibration)
            selector.oracle = make_oracle(pool_examples, from_file, label_set)
            llm_stats = {"base_url": client.base_url, "model": client.model, "stats": client.stats}
        run = run_selection(selector, problem, k, per_query=per_query, prune_to=prune_to,
                            prune_policy=prune_policy, seed=seed, label_budget=label_budget, retriever=second)
    if llm_stats:
        calls = sum(s.info.get("llm_calls", 0) for s in run.selections)
        naive = len(pool_examples) * (1 + len(label_set) * (1 if per_query else len(query_examples))) * k
        llm_stats.update(simulated_calls=calls, naive_calls=naive * (len(query_examples) if per_query else 1),
                         stats=dict(llm_stats["stats"]))
    records = demo_records(run, pool_examples, query_examples)
    meta = {"method": method, "params": selector.get_params(), "k": k, "seed": seed, "per_query": per_query,
            "embedding_model": "precomputed" if embedder is None else embedder.model_id,
            "embeddings_computed": getattr(embedder, "computed", None),
            "selection_seconds": round(run.seconds, 4), "pool_size": len(pool_examples),
            "queries": len(query_examples), "max_tokens": max_tokens,
            "ids": {"pool": pool_examples.id_source, "queries": query_examples.id_source}, "pruned_to": run.pruned_to,
            "stopped": sorted({s.stopped for s in run.selections if s.stopped}),
            "label_budget": label_budget, "retriever": retriever if label_budget else None,
            "to_label": run.to_label(pool_examples),
            "trace": [list(s.trace) for s in run.selections[:1]], **({"llm": llm_stats} if llm_stats else {})}
    if out:
        write_jsonl(out, records)
        Path(f"{out}.meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    elif not render:
        for record in records:
            print(json.dumps(record, ensure_ascii=False, sort_keys=True))
    known = _known_labels(labels, pool_examples, records, label_set)
    if render:
        _print_prompts(records, run, query_examples, demo_template, known)
    _show_summary(records, run, query_examples, demo_template, known, show_prompt=not render)
    counts = sorted({len(s.indices) for s in run.selections})
    chosen = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    _say(f"{method}: chose {chosen} demo(s){' per query' if per_query else ''} from {len(pool_examples)} "
         f"in {run.seconds:.3f} s" + (f" -> {out}" if out else ""))
    if llm_stats:
        _say(f"LLM: {llm_stats['simulated_calls']} simulated prompts ({llm_stats['stats'].get('calls', 0)} calls, "
             f"{llm_stats['stats'].get('cached', 0)} from cache); naive SAL: {llm_stats['naive_calls']}")
    for reason in meta["stopped"]:
        _say(f"note: fewer than k={k} demos for some selections: {reason}")
    if meta["to_label"]:
        _say(f"the pool is unlabeled: label these {len(meta['to_label'])} examples: {', '.join(meta['to_label'][:20])}"
             + (" ..." if len(meta["to_label"]) > 20 else ""))


def _label_set(labels: str | None, pool: list[Example], from_file: dict[str, str]) -> list[str]:
    if labels:
        return [label.strip() for label in labels.split(",") if label.strip()]
    found = {e.label for e in pool if e.label is not None} | set(from_file.values())
    if not found:
        raise InputError("SAL needs the label set: pass --labels a,b,c (the pool has no labels)", field="--labels")
    return sorted(found)


def _read_labels_file(path: Path) -> dict[str, str]:
    rows = load_examples(path, text_field="label", label_field=None, id_field="id")
    return {row.id: row.text for row in rows}


def make_oracle(pool: list[Example], from_file: dict[str, str], label_set: list[str]) -> Callable[[int], str]:
    """Reveal a chosen demo's label: the pool's label, else the labels file, else ask on the terminal."""

    def oracle(index: int) -> str:
        example = pool[index]
        if example.label is not None:
            return example.label
        if example.id in from_file:
            return from_file[example.id]
        if sys.stdin.isatty():
            return typer.prompt(f"Label for example {example.id}: {example.text!r}\n({' / '.join(label_set)})",
                                type=typer.Choice(label_set), err=True)
        raise InputError(f"SAL chose pool example id {example.id!r}, which has no label: add it to --labels-file "
                         "or run on a terminal to label it interactively", field="--labels-file")

    return oracle


def _prepare_output(out: Path) -> None:
    """Refuse a folder and create missing parent folders before any work, so nothing computed is lost."""
    if out.is_dir():
        raise InputError("is a folder: --out takes a file path, e.g. selection.jsonl", path=str(out), field="--out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the output folder ({err.strerror})", path=str(out.parent),
                         field="--out") from None


def _known_labels(labels: str | None, pool: list[Example], records: list[dict[str, Any]],
                  label_set: list[str]) -> list[str]:
    """The label set for the instruction: --labels (or SAL's label set), else the labels of the pool
    and of SAL's reveals."""
    if labels or label_set:
        return label_set or [label.strip() for label in labels.split(",") if label.strip()]
    return sorted({e.label for e in pool if e.label is not None} | {r["label"] for r in records if r["label"]})


def _demos_for(records: list[dict[str, Any]], query_id: str | None) -> list[Example]:
    """The demos of one selection as the prompt shows them: most important last, nearest the query
    (small LLMs weigh the demo nearest the query most)."""
    chosen = [r for r in records if r.get("query_id") == query_id]
    chosen.sort(key=lambda r: r["rank"], reverse=True)
    return [Example(str(r["id"]), r["text"], r["label"]) for r in chosen]


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
        table.add_row(str(r["rank"]), str(r["id"]), r["label"] if r["label"] is not None else "[bold]to label[/]",
                      f"{r['score']:.4g}", _shorten(r["text"], 44))
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
    console.print(table)
    demos = _demos_for(records, query_id)
    if show_prompt and labels and all(d.label is not None for d in demos):
        console.print(f"[dim]prompt for query {queries[0].id} (--render TEMPLATE prints every prompt):[/]")
        console.print(template.render(demos, queries[0].text, labels), markup=False, highlight=False)


@app.command()
def methods() -> None:
    """List every selector with a one-line description and its parameters."""
    for name, cls in registry.SELECTORS.items():
        params = ", ".join(f"{k}={v!r}" for k, v in registry.parameters(cls).items())
        print(f"{name:8s} {registry.summary(cls)}\n{'':8s} parameters: {params}")


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
    retriever: Optional[str] = typer.Option(None, help="Retriever of the annotate setting (default knn)."),
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
) -> None:
    """Compare selection methods on benchmarks with a real LLM; writes tables, comparisons, plots and predictions."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from .datasets import load_datasets
    from .evaluation.harness import plan_splits, run_lock, run_suite
    from .evaluation.suites import Suite, load_suite

    if not suite and data is None:
        raise InputError("give --suite NAME or --data FILE_OR_NAME", field="--data")
    plan = load_suite(suite) if suite else Suite()
    listed = lambda text: text and [t.strip() for t in text.split(",") if t.strip()]  # noqa: E731
    numbers = lambda text, name: text and _integers(text, name)  # noqa: E731
    overrides = {"data": listed(data), "methods": listed(methods), "k": numbers(k, "--k"),
                 "label_budgets": numbers(label_budgets, "--label-budgets"), "annotators": listed(annotators),
                 "retriever": retriever, "seeds": seeds, "pool_size": pool_size, "test_size": test_size,
                 "contextual": contextual, "text_field": text_field, "label_field": label_field}
    for key, value in overrides.items():
        if value is not None:
            setattr(plan, key, value)
    plan.check()
    datasets = load_datasets(plan.data, text_field=plan.text_field, label_field=plan.label_field)
    plan_splits(plan, datasets)  # bad data, methods or budgets fail here, before a server starts or a call is made
    out = out or Path("results") / (plan.name if suite else "+".join(d.name for d in datasets))
    templates = {"classification": load_template("classification"), "regression": load_template("regression")}
    embedder = make_embedder(cache_dir=cache_dir)
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} cells"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    # the folder is held before a server starts, so a second eval on it fails at once
    with run_lock(out), llm_endpoint(base_url, model, api_key, api=api, local_model=plan.model, cache_dir=cache_dir) as client, \
            Progress(*columns, disable=not sys.stderr.isatty(), console=None) as bar:
        task = bar.add_task("eval", total=None)

        def progress(finished: int, total: int, cell: str) -> None:
            bar.update(task, completed=finished, total=total, description=cell)
            if not sys.stderr.isatty():
                _say(f"[{finished}/{total}] {cell}")

        records = run_suite(plan, datasets, client, templates, embedder, out, progress)
        _write_report(out, records)


def _integers(text: str, name: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"expected comma-separated integers, got {text!r}", field=name) from None


def _write_report(out: Path, records: list[dict[str, Any]] | None = None) -> None:
    from .evaluation.report import load_references, load_variants, write_report

    written = write_report(out, load_references(out), records, variants=load_variants(out))
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
           notes: Optional[Path] = typer.Option(None, help="With --page: a markdown file placed after the goal check (what was tried).")) -> None:
    """Rebuild the tables, comparisons and plots of an eval run from its files (no LLM needed)."""
    from .evaluation.harness import read_jsonl

    path = run / "records.jsonl"
    if not path.is_file():
        raise InputError("no records.jsonl here: is this a folder written by `fewshot eval`?", path=str(path))
    records = read_jsonl(path)
    plan_file = run / "run.json"
    if plan_file.is_file():  # the cells of the plan the folder was last run with
        planned = set(json.loads(plan_file.read_text()).get("cells") or [r["cell"] for r in records])
        records = [r for r in records if r["cell"] in planned]
    _write_report(run, records)
    if page is not None:
        from .evaluation.results_page import results_page

        if notes is not None and not notes.is_file():
            raise InputError("no such notes file", path=str(notes))
        page.write_text(results_page(run, command or f"fewshot eval ... --out {run}", title, str(page), notes) + "\n",
                        encoding="utf-8")
        _say(f"wrote {page}")


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
        except KeyboardInterrupt:
            _say("stopping the server")


if __name__ == "__main__":  # pragma: no cover
    app()
