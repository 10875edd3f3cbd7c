"""One call from Python: ``fewshot.api.select(examples, queries, method=..., k=...)`` on plain data.

Examples are dicts (or strings), queries strings (or dicts). The call embeds them (the bundled
all-MiniLM-L6-v2 with the on-disk cache unless an ``embedder`` is given) and runs the library call
``fewshot select`` runs (:func:`fewshot.pipeline.select_examples`): the same parameter checks,
default modes, SAL wiring and labeling oracle. It hands back the chosen example dicts with their
rank and score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .data import Example, parse_examples
from .embedding import Embedder
from .errors import InputError
from .pipeline import Request, make_embedder, run_selection, select_examples
from .prompts import Template, load_template
from .selection import PER_QUERY_METHODS, Selection, make_selector


@dataclass
class SelectResult:
    """What :func:`select` chose.

    ``demos``: one list of chosen example dicts per query when ``per_query``, else a single list
    (the shared set); each dict is the input example plus ``rank`` (1 = picked first) and ``score``
    (the gain it was picked with). ``to_label``: ids of chosen examples that carry no label, in
    pick order, without repeats. ``selections``: the raw :class:`~fewshot.selection.Selection` objects
    (indices into ``examples``, trace).
    """

    method: str
    k: int
    per_query: bool
    demos: list[list[dict[str, Any]]]
    to_label: list[str]
    selections: list[Selection]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def shared(self) -> list[dict[str, Any]]:
        """The shared set (an error for a per-query result)."""
        if self.per_query:
            raise InputError("this result holds one demo list per query; use .demos[j] or .for_query(j)")
        return self.demos[0]

    def for_query(self, j: int) -> list[dict[str, Any]]:
        """The demos for query ``j`` (the shared set for every query when not per query)."""
        return self.demos[j] if self.per_query else self.demos[0]


def _examples(items: Sequence[Any], what: str, *, text_key: str, label_key: str | None,
              id_key: str) -> tuple[list[Example], list[dict[str, Any]]]:
    """Examples (the file loader's rules for text, labels and ids) and the dicts handed back; a
    string item becomes ``{id_key: position, text_key: item}``. Errors name the item, e.g. ``examples[3]``."""
    if isinstance(items, (str, Mapping)):
        raise InputError(f"give a list of {what}, not a single one", path=what)
    records = []
    for i, item in enumerate(items):
        if not isinstance(item, (str, Mapping)):
            raise InputError(f"must be a string or a dict, not {type(item).__name__}", path=f"{what}[{i}]")
        records.append({id_key: str(i), text_key: item} if isinstance(item, str) else dict(item))
    if not records:
        raise InputError("there are none" if what == "queries" else "the pool is empty", path=what)
    examples = parse_examples(enumerate(records), lambda i: {"path": f"{what}[{i}]"}, text_field=text_key,
                              label_field=label_key, id_field=None if id_key == "id" else id_key)
    return examples, records


def select(examples: Sequence[Mapping[str, Any] | str], queries: Sequence[str | Mapping[str, Any]],
           method: str = "go", k: int = 4, *, per_query: bool | None = None, text_key: str = "text",
           label_key: str | None = "label", id_key: str = "id", max_tokens: int | None = None,
           template: str | Template = "classification", label_balance: bool = False, seed: int = 0,
           prune_to: int | None = None, prune_policy: str = "hard", label_budget: int | None = None,
           retriever: str = "knn", retriever_params: Mapping[str, Any] | None = None,
           embedder: Embedder | None = None, llm: Any = None,
           labels: Sequence[str] | None = None, labels_file: str | Path | Mapping[str, str] | None = None,
           labels_journal: str | Path | None = None, llm_calibration: str = "none", **params: Any) -> SelectResult:
    """Choose ``k`` demos from ``examples`` for ``queries``.

    ``per_query``: None = the method's default mode, as in ``fewshot select`` (see
    :class:`~fewshot.pipeline.Request`): per query for the methods whose picks follow the query
    (knn, mmr, bm25, dpp; with a ``label_budget``, the ``retriever``'s mode), one shared set
    otherwise (go, random, vote-k, k-means, sal). ``max_tokens`` is a token budget for the demos as
    ``template`` renders them (budget-aware: a demo that no longer fits is skipped). ``params`` are
    the method's parameters, checked as the CLI's ``--param`` (unknown names and wrong types are
    :class:`~fewshot.errors.InputError`). ``label_budget=B`` is "annotate then retrieve": ``method``
    picks B examples to label, then ``retriever`` picks the k demos from those B (per query when
    ``per_query``, with ``retriever_params``); ``to_label`` lists those of the B that have no label
    (none where an oracle revealed them to a label-reading retriever, from ``labels_file``).

    SAL (``method="sal"``) asks ``llm``: an :class:`~fewshot.llm.LLMClient`, a base URL, or None for
    the configured endpoint (``OPENAI_BASE_URL``, ``FEWSHOT_MODEL``), else a local llama-server
    (``model=`` a ready predictor also works), over ``labels`` (default: the labels the examples,
    ``labels_file`` and the journal hold), calibrated by ``llm_calibration``. The label of each demo it
    picks comes from the example, else ``labels_file`` (a JSONL path or an ``{id: label}`` dict), else
    ``labels_journal`` (default: under the cache folder, keyed by the examples), else a person on
    the terminal, whose answers are appended to the journal as they are typed (``oracle=`` replaces
    all of this). A revealed label fills the returned dict's ``label_key``.

    Any object with ``model_id`` and ``embed(texts)`` is an embedder:

    >>> import numpy as np
    >>> class FirstLetter:  # one axis per first letter
    ...     model_id = "first-letter"
    ...     def embed(self, texts):
    ...         return np.eye(26, dtype=np.float32)[[ord(t[0].lower()) - 97 for t in texts]]
    >>> result = select(["a", "b", "c"], ["b"], method="random", k=2, embedder=FirstLetter())
    >>> [d["rank"] for d in result.shared], result.to_label
    ([1, 2], ['0', '1'])
    >>> select(["a", "b"], ["a"], method="go", k=0, embedder=FirstLetter())
    Traceback (most recent call last):
    ...
    fewshot.errors.InputError: field '--k': k=0 must be at least 1
    """
    request = Request(method=method, k=k, per_query=per_query, seed=seed, max_tokens=max_tokens,
                      label_balance=label_balance, params=params, prune_to=prune_to, prune_policy=prune_policy,
                      label_budget=label_budget, retriever=retriever, retriever_params=dict(retriever_params or {}))
    request.check()  # before anything is embedded or started
    keys = {"text_key": text_key, "label_key": label_key, "id_key": id_key}
    pool, records = _examples(examples, "examples", **keys)
    query_examples, _ = _examples(queries, "queries", **keys)
    demo_template = template if isinstance(template, Template) else load_template(template)
    run = select_examples(pool, query_examples, request, template=demo_template, embedder=embedder or make_embedder(),
                          llm=llm, labels=labels, labels_file=labels_file,
                          journal=None if labels_journal is None else Path(labels_journal),
                          calibration=llm_calibration)
    revealed = run.revealed_labels()

    def shown(i: int, rank: int, score: float) -> dict[str, Any]:
        fill = {label_key: revealed[i]} if label_key and pool[i].label is None and i in revealed else {}
        return {**records[i], **fill, "rank": rank, "score": float(score)}

    demos = [[shown(i, rank, score) for rank, (i, score) in enumerate(zip(s.indices, s.scores), start=1)]
             for s in run.selections]
    return SelectResult(method, k, run.per_query, demos, run.to_label(pool), run.selections, run.params)


class DemoPool:
    """A growing pool of demos for frameworks that select at call time: vectors are kept, so adding
    an example embeds only that example, and queries go through the embedder's on-disk cache.

    ``costs`` (optional, one per example) are the tokens each demo adds; with ``max_tokens`` the
    selection is budget-aware. ``labels`` are needed only for ``label_balance`` and SAL.
    ``per_query=None``: the method's default mode (see :func:`select`).
    """

    def __init__(self, method: str = "knn", k: int = 4, *, per_query: bool | None = None,
                 max_tokens: int | None = None, label_balance: bool = False, seed: int = 0,
                 embedder: Embedder | None = None, **params: Any) -> None:
        import numpy as np

        self.method, self.k, self.max_tokens, self.seed = method, k, max_tokens, seed
        self.per_query = Request(method).per_query_mode if per_query is None else per_query
        self.selector = make_selector(method, seed=seed, label_balance=label_balance, **params)
        self.embedder = embedder or make_embedder()
        self.texts: list[str] = []
        self.labels: list[str | None] = []
        self.costs: list[int] = []
        self.vectors = np.zeros((0, 0), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, texts: Sequence[str], labels: Sequence[str | None] | None = None,
            costs: Sequence[int] | None = None) -> None:
        import numpy as np

        if not texts:
            return
        fresh = self.embedder.embed(list(texts))
        self.vectors = fresh if len(self.texts) == 0 else np.vstack([self.vectors, fresh])
        self.texts += list(texts)
        self.labels += list(labels) if labels is not None else [None] * len(texts)
        self.costs += list(costs) if costs is not None else [0] * len(texts)

    def choose(self, queries: Sequence[str], per_query: bool | None = None) -> list[list[int]]:
        """Pool indices in pick order: one list per query when per query, else one shared list.
        ``k`` is capped at the pool size, so a small pool gives all its examples."""
        import numpy as np

        from .selection import Problem

        if not self.texts:
            raise InputError("the pool is empty: add examples first")
        if not queries:
            raise InputError("there are no queries")
        per_query = self.per_query if per_query is None else per_query
        budget = self.max_tokens is not None
        problem = Problem(pool=self.vectors, queries=self.embedder.embed(list(queries)),
                          pool_texts=tuple(self.texts), query_texts=tuple(queries), labels=list(self.labels),
                          token_costs=np.asarray(self.costs) if budget else None, max_tokens=self.max_tokens)
        if budget and min(self.costs) > self.max_tokens:
            return [[] for _ in queries] if per_query else [[]]
        run = run_selection(self.selector, problem, min(self.k, len(self.texts)), per_query=per_query,
                            seed=self.seed)
        return [list(s.indices) for s in run.selections]


__all__ = ["select", "SelectResult", "DemoPool", "PER_QUERY_METHODS"]
