"""From examples to a selection: embed, optionally prune, cost the demos in tokens, select.

The CLI and the eval harness are thin layers over :func:`build_problem` and :func:`run_selection`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .clustering import prune
from .data import Example
from .embedding import CachedEmbedder, Embedder, OpenAIEmbedder, SentenceTransformerEmbedder
from .errors import InputError
from .prompts import Template
from .selection import Problem, Selection, Selector
from .tokens import count_tokens


def make_embedder(model: str | None = None, *, cache: bool = True, cache_dir: str | Path | None = None,
                  base_url: str | None = None, api_key: str | None = None) -> Embedder:
    """``model``: None (bundled all-MiniLM-L6-v2), a local sentence-transformers folder, or
    ``openai:NAME`` for an OpenAI-compatible embeddings endpoint. Cached on disk unless ``cache=False``."""
    if model and model.startswith("openai:"):
        embedder: Embedder = OpenAIEmbedder(model.split(":", 1)[1], base_url=base_url, api_key=api_key)
    else:
        embedder = SentenceTransformerEmbedder(model)
    if not cache:
        return embedder
    return CachedEmbedder(embedder, Path(cache_dir) / "embeddings.sqlite" if cache_dir else None)


def demo_costs(pool: Sequence[Example], template: Template) -> np.ndarray:
    """Tokens each demo adds to the prompt: its rendered text plus the separator."""
    return count_tokens([template.render_demo(e) + template.separator for e in pool])


def build_problem(pool: Sequence[Example], queries: Sequence[Example], *, embedder: Embedder | None = None,
                  pool_vectors: np.ndarray | None = None, query_vectors: np.ndarray | None = None,
                  template: Template | None = None, max_tokens: int | None = None) -> Problem:
    """Embed what was not given as vectors and attach token costs when a token budget is set."""
    if not pool:
        raise InputError("the pool is empty")
    if not queries:
        raise InputError("there are no queries")
    if pool_vectors is None or query_vectors is None:
        if embedder is None:
            raise InputError("give an embedder, or vectors for both the pool and the queries")
        if pool_vectors is None:
            pool_vectors = embedder.embed([e.text for e in pool])
        if query_vectors is None:
            query_vectors = embedder.embed([e.text for e in queries])
    if pool_vectors.shape[1] != query_vectors.shape[1]:
        raise InputError(f"pool vectors have {pool_vectors.shape[1]} dimensions, query vectors {query_vectors.shape[1]}")
    costs = None
    if max_tokens is not None:
        if max_tokens < 1:
            raise InputError(f"max_tokens={max_tokens} must be positive")
        if template is None:
            raise InputError("a token budget needs the template that renders the demos")
        costs = demo_costs(pool, template)
    return Problem(pool=pool_vectors, queries=query_vectors, pool_texts=tuple(e.text for e in pool),
                   query_texts=tuple(e.text for e in queries), labels=[e.label for e in pool],
                   token_costs=costs, max_tokens=max_tokens)


def restrict(problem: Problem, keep: np.ndarray) -> Problem:
    """The same problem over a subset of the pool (indices in the new problem refer to ``keep``)."""
    return Problem(pool=problem.pool[keep], queries=problem.queries,
                   pool_texts=tuple(problem.pool_texts[i] for i in keep) if problem.pool_texts else (),
                   query_texts=problem.query_texts,
                   labels=None if problem.labels is None else [problem.labels[i] for i in keep],
                   token_costs=None if problem.token_costs is None else problem.token_costs[keep],
                   max_tokens=problem.max_tokens)


@dataclass
class SelectionRun:
    """Selections with the pool indices of the original pool, and what it cost."""

    selections: list[Selection]
    seconds: float
    per_query: bool
    pruned_to: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def revealed_labels(self) -> dict[int, str]:
        """Labels SAL's oracle revealed as it picked (they are in its trace), by pool index."""
        selections = self.selections + ([self.info["annotated"]] if "annotated" in self.info else [])
        return {t["index"]: t["label"] for s in selections for t in s.trace if t.get("label") is not None}

    def to_label(self, pool: Sequence[Example]) -> list[str]:
        """Ids a person should label, in pick order: the annotated examples (label budget), else every
        chosen demo, that have no label in ``pool`` and none revealed by an oracle."""
        chosen = [self.info["annotated"]] if "annotated" in self.info else self.selections
        revealed = self.revealed_labels()
        return list(dict.fromkeys(pool[i].id for s in chosen for i in s.indices
                                  if pool[i].label is None and i not in revealed))


def run_selection(selector: Selector, problem: Problem, k: int, *, per_query: bool = False,
                  prune_to: int | None = None, prune_policy: str = "hard", seed: int = 0,
                  label_budget: int | None = None, retriever: Selector | None = None) -> SelectionRun:
    """Run a selector, optionally after pruning the pool to ``prune_to`` examples by hardship.

    With ``label_budget=B`` it is two-stage ("annotate then retrieve"): ``selector`` picks the B
    examples to label, then ``retriever`` (default kNN) picks k demos from those B, per query when
    ``per_query``. ``info["annotated"]`` holds the B picks (pool indices, pick order).
    """
    start = time.perf_counter()
    keep = None
    if prune_to is not None and prune_to < problem.n:
        if prune_to < k:
            raise InputError(f"prune_to={prune_to} is smaller than k={k}")
        keep = prune(problem.pool, prune_to, policy=prune_policy, seed=seed)
        problem = restrict(problem, keep)
        selector = _oracle_on_original_pool(selector, keep)
    info: dict[str, Any] = {}
    if label_budget is not None:
        selections, annotated = _annotate_then_retrieve(selector, retriever, problem, k, label_budget, per_query)
        info["annotated"] = annotated if keep is None else _remap(annotated, keep)
    else:
        selections = selector.select_per_query(problem, k) if per_query else [selector.select(problem, k)]
    if keep is not None:
        selections = [_remap(s, keep) for s in selections]
    return SelectionRun(selections, time.perf_counter() - start, per_query,
                        pruned_to=None if keep is None else len(keep), info=info)


def _annotate_then_retrieve(selector: Selector, retriever: Selector | None, problem: Problem, k: int,
                            label_budget: int, per_query: bool) -> tuple[list[Selection], Selection]:
    from dataclasses import replace

    from .selection import KNN

    if label_budget < k:
        raise InputError(f"label_budget={label_budget} is smaller than k={k}", field="--label-budget")
    annotated = selector.select(problem, label_budget)
    labeled = np.array(annotated.indices, dtype=int)
    revealed = {t["index"]: t["label"] for t in annotated.trace if t.get("label") is not None}  # SAL's oracle
    labels = None if problem.labels is None else [revealed.get(i, problem.labels[i]) for i in labeled]
    subset = replace(restrict(problem, labeled), labels=labels)
    retriever = retriever or KNN()
    selections = retriever.select_per_query(subset, k) if per_query else [retriever.select(subset, k)]
    return [_remap(s, labeled) for s in selections], annotated


def _oracle_on_original_pool(selector: Selector, keep: np.ndarray) -> Selector:
    """A copy of the selector whose oracle (SAL's) is asked about the original pool's examples:
    the selector sees indices into the pruned pool, the oracle was built for the whole one."""
    import copy

    oracle = getattr(selector, "oracle", None)
    if oracle is None:
        return selector
    selector = copy.copy(selector)
    selector.oracle = lambda index: oracle(int(keep[index]))
    return selector


def _remap(selection: Selection, keep: np.ndarray) -> Selection:
    from dataclasses import replace

    trace = tuple({**t, "index": int(keep[t["index"]]),
                   "runner_up": None if t.get("runner_up") is None else int(keep[t["runner_up"]])}
                  for t in selection.trace)
    return replace(selection, indices=tuple(int(keep[i]) for i in selection.indices), trace=trace)
