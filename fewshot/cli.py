"""``fewshot`` command line: a thin layer over the library (see ``fewshot.pipeline``)."""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from . import selection as registry
from .data import Example, is_labeled, load_examples, write_jsonl
from .embedding import load_embeddings
from .errors import FewshotError, InputError
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
    for selection in run.selections:
        for rank, (index, score) in enumerate(zip(selection.indices, selection.scores), start=1):
            example = pool[index]
            record = {"id": example.id, "text": example.text, "label": example.label, "rank": rank,
                      "score": round(score, 6), "pool_index": index, "needs_label": example.label is None}
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
    id_field: Optional[str] = typer.Option(None, help="Field holding a unique id (default: line number)."),
    per_query: bool = typer.Option(False, "--per-query", help="One demo list per query instead of one shared set."),
    seed: int = typer.Option(0, help="Seed for every random choice."),
    max_tokens: Optional[int] = typer.Option(None, help="Token budget for the rendered demos (tiktoken cl100k_base)."),
    render: Optional[str] = typer.Option(None, help="Print the finished prompt(s) with this template (name in prompts/ or a .toml path)."),
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
) -> None:
    """Choose k demonstrations from a pool for a set of queries."""
    if method not in registry.SELECTORS:
        raise InputError(f"unknown method {method!r} (known: {', '.join(registry.SELECTORS)})", field="--method")
    pool_examples = load_examples(pool, text_field=text_field, label_field=label_field, id_field=id_field)
    query_examples = load_examples(queries, text_field=text_field, label_field=None)
    if k > len(pool_examples):
        raise InputError(f"k={k} is larger than the pool ({len(pool_examples)} examples)", path=str(pool))
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
    params = {"seed": seed, "label_balance": label_balance, **parse_params(param)}
    selector = registry.make_selector(method, **params)
    run = run_selection(selector, problem, k, per_query=per_query, prune_to=prune_to,
                        prune_policy=prune_policy, seed=seed)
    records = demo_records(run, pool_examples, query_examples)
    meta = {"method": method, "params": selector.get_params(), "k": k, "seed": seed, "per_query": per_query,
            "embedding_model": "precomputed" if embedder is None else embedder.model_id,
            "embeddings_computed": getattr(embedder, "computed", None),
            "selection_seconds": round(run.seconds, 4), "pool_size": len(pool_examples),
            "queries": len(query_examples), "max_tokens": max_tokens, "pruned_to": run.pruned_to,
            "stopped": sorted({s.stopped for s in run.selections if s.stopped}),
            "to_label": sorted({r["id"] for r in records if r["needs_label"]}, key=str),
            "trace": [list(s.trace) for s in run.selections[:1]]}
    if out:
        write_jsonl(out, records)
        Path(f"{out}.meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    elif not render:
        for record in records:
            print(json.dumps(record, ensure_ascii=False, sort_keys=True))
    if render:
        _print_prompts(run, pool_examples, query_examples, demo_template)
    counts = sorted({len(s.indices) for s in run.selections})
    chosen = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    _say(f"{method}: chose {chosen} demo(s){' per query' if per_query else ''} from {len(pool_examples)} "
         f"in {run.seconds:.3f} s" + (f" -> {out}" if out else ""))
    for reason in meta["stopped"]:
        _say(f"note: fewer than k={k} demos for some selections: {reason}")
    if meta["to_label"]:
        _say(f"the pool is unlabeled: label these {len(meta['to_label'])} examples: {', '.join(meta['to_label'][:20])}"
             + (" ..." if len(meta["to_label"]) > 20 else ""))


def _print_prompts(run: SelectionRun, pool: list[Example], queries: list[Example], template) -> None:
    labels = sorted({e.label for e in pool if e.label is not None})
    for j, query in enumerate(queries):
        selection = run.selections[j] if run.per_query else run.selections[0]
        # most important demo last: small LLMs weigh the demo nearest the query most
        demos = [pool[i] for i in reversed(selection.indices)]
        print(f"### query {query.id}")
        print(template.render(demos, query.text, labels))
        print()


@app.command()
def methods() -> None:
    """List every selector with a one-line description and its parameters."""
    for name, cls in registry.SELECTORS.items():
        params = ", ".join(f"{k}={v!r}" for k, v in registry.parameters(cls).items())
        print(f"{name:8s} {registry.summary(cls)}\n{'':8s} parameters: {params}")


if __name__ == "__main__":  # pragma: no cover
    app()
