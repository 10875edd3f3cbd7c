"""Eval suites are declared in TOML files under ``evals/`` (data sets, methods and their variants,
demos per prompt, label budgets, seeds, sizes, model), not in code.

A method is a selector name (``go``), with a mode (``go:q`` per query, ``knn:s`` one shared set),
or a variant the suite names with parameters::

    [variants.go-v]
    method = "go"        # a selector name, optionally with :q or :s
    objective = "v"      # any other key is a parameter of that selector

Unknown parameters and wrong types are errors that name the suite file and the variant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..data import bundled_folder, read_named_toml
from ..errors import InputError
from ..selection import PER_QUERY_METHODS, SELECTORS, make_selector, needs_labels

@dataclass(frozen=True)
class MethodSpec:
    """A selector, its mode and parameters, under the name the results use.

    >>> MethodSpec.parse("knn").label, MethodSpec.parse("go").label, MethodSpec.parse("go:q").label
    ('knn:q', 'go:s', 'go:q')
    >>> MethodSpec.parse("go-v", {"go-v": {"method": "go", "objective": "v"}}).params
    (('objective', 'v'),)
    """

    name: str
    per_query: bool
    params: tuple[tuple[str, Any], ...] = ()
    variant: str | None = None

    @classmethod
    def parse(cls, text: str, variants: dict[str, dict[str, Any]] | None = None) -> "MethodSpec":
        text = text.strip()
        if variants and text in variants:
            values = dict(variants[text])
            if not isinstance(values.get("method"), str):
                raise InputError(f"variant {text!r} needs method = \"NAME\" (a selector, e.g. \"go:s\"); a name "
                                 "with a dot must be quoted: [variants.\"go-0.1\"]", field="variants")
            base = cls.parse(values.pop("method"))
            try:
                make_selector(base.name, **values)  # unknown parameters and wrong types fail here
            except InputError as err:
                raise InputError(f"variant {text!r}: {err.message}", field="variants") from None
            return cls(base.name, base.per_query, tuple(sorted(values.items())), text)
        name, _, mode = text.partition(":")
        if name not in SELECTORS:
            known = list(SELECTORS) + sorted(variants or ())
            raise InputError(f"unknown method {text!r} (known: {', '.join(known)})", field="methods")
        if mode not in ("", "q", "s"):
            raise InputError(f"method mode must be ':q' (per query) or ':s' (shared), got {text!r}", field="methods")
        return cls(name, mode == "q" or (mode == "" and name in PER_QUERY_METHODS))

    @property
    def label(self) -> str:
        return self.variant or f"{self.name}:{'q' if self.per_query else 's'}"


@dataclass
class Suite:
    """What an eval runs. ``k``: demos per prompt. ``methods`` run in the shared setting (B = k)
    or, per query, in the full-labels setting (so do the methods that read every pool label,
    shared sets included: valsearch, random-search, ...); each of ``annotators`` picks
    ``label_budgets`` examples to label, then each of ``retrievers`` picks k of them
    (annotate-then-retrieve; cells ``annotator>retriever``). ``retriever`` is the one-retriever
    form (default knn); give it or ``retrievers``, not both. A retriever that reads labels
    (valsearch, random-search, ...) reads only the B annotated ones: its probes count in B.

    >>> Suite().retriever_names, Suite(retrievers=["knn", "valsearch"]).retriever_names
    (['knn'], ['knn', 'valsearch'])
    """

    name: str = "custom"
    data: list[str] = field(default_factory=lambda: ["sst2"])
    methods: list[str] = field(default_factory=lambda: ["random", "knn", "go"])
    k: list[int] = field(default_factory=lambda: [4])
    label_budgets: list[int] = field(default_factory=list)
    annotators: list[str] = field(default_factory=lambda: ["random", "kmeans", "votek", "go"])
    retriever: str | None = None  # the one-retriever form; None: knn (unless retrievers says)
    retrievers: list[str] | None = None
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: int = 1
    pool_size: int = 300
    test_size: int = 50
    oracle_sets: int = 4  # random demo sets the test-label-peeking "best-of-N random" row chooses among
    zero_shot: bool = True
    contextual: bool = False  # also ask content-free prompts per demo set (contextual calibration)
    model: str = "gemma3-270m"  # local model when no endpoint is configured
    regression_samples: int = 3
    text_field: str = "text"
    label_field: str = "label"

    def spec(self, text: str) -> MethodSpec:
        return MethodSpec.parse(text, self.variants)

    @property
    def retriever_names(self) -> list[str]:
        """The retrievers of the annotate setting, in cell order."""
        if self.retrievers is not None:
            return list(self.retrievers)
        return [self.retriever or "knn"]

    def check(self) -> None:
        """Every method, variant and budget is valid (before any expensive work)."""
        self._check_retriever_fields()
        for text in [*self.variants, *self.methods, *self.annotators, *self.retriever_names]:
            self.spec(text)
        for text in self.annotators:
            if self.spec(text).per_query:
                raise InputError(f"annotator {text!r} must pick one shared set (use {text.split(':')[0]}:s)",
                                 field="annotators")
        field_name = "retrievers" if self.retrievers is not None else "retriever"
        for text in self.retriever_names:
            if self.spec(text).name == "sal":
                raise InputError("the retriever picks among already labeled examples: use knn, go:q, mmr, ... not sal",
                                 field=field_name)
        # the annotate setting's pool is unlabeled (B counts every label bought): an annotator that reads
        # the whole pool's labels belongs to the full-label setting; a retriever reads only the B it is given
        for text in self.annotators:
            if needs_labels(SELECTORS[self.spec(text).name]):
                raise InputError(f"{text!r} reads the labels of the whole pool, and the annotate setting's pool is "
                                 "unlabeled: list it under methods (the full-label setting), or under retrievers "
                                 "(it then reads only the B annotated labels)", field="annotators")
        if not self.k or min(self.k) < 1:
            raise InputError(f"k (demos per prompt) must be positive integers, got {self.k}", field="k")
        if self.label_budgets and min(self.label_budgets) < min(self.k):
            raise InputError(f"label budgets {self.label_budgets} must be at least k={min(self.k)}",
                             field="label_budgets")

    def _check_retriever_fields(self) -> None:
        if self.retrievers is None:
            return
        if self.retriever is not None:
            raise InputError(f"give retriever = {self.retriever!r} (one) or retrievers = [...] (several), not both",
                             field="retrievers")
        if not isinstance(self.retrievers, list) or not all(isinstance(r, str) for r in self.retrievers):
            raise InputError(f"retrievers must be a list of method names, got {self.retrievers!r}", field="retrievers")
        if not self.retrievers:
            raise InputError("retrievers is empty: name one at least (or leave it out: knn)", field="retrievers")
        labels = [self.spec(text).label for text in self.retrievers]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise InputError(f"retrievers name {', '.join(twice)} twice (their cells would have one key)",
                             field="retrievers")

    def record(self) -> dict[str, Any]:
        """The suite as run.json keeps it: a one-retriever suite exactly as before ``retrievers``
        existed (``retriever``, no ``retrievers``), so run folders written then compare alike."""
        values = asdict(self)
        if self.retrievers is None:
            values["retriever"] = self.retriever or "knn"
            del values["retrievers"]
        return values


def load_suite(name_or_path: str | Path) -> Suite:
    """A bundled suite by name (``evals/NAME.toml``, shipped as ``fewshot.suites``), or a TOML file by path."""
    path, values = read_named_toml(name_or_path, bundled_folder("fewshot.suites", "evals"), "suite")
    allowed = {f.name for f in fields(Suite)}
    for key in values:
        if key not in allowed:
            raise InputError(f"unknown suite key (allowed: {', '.join(sorted(allowed))})", path=str(path), field=key)
    suite = Suite(**{"name": path.stem, **values})
    try:
        suite.check()
    except InputError as err:
        raise InputError(err.message, path=str(path), field=err.field) from None
    return suite
