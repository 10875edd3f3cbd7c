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

from dataclasses import dataclass, field, fields
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
    ``label_budgets`` examples to label, then ``retriever`` picks k of them per query
    (annotate-then-retrieve)."""

    name: str = "custom"
    data: list[str] = field(default_factory=lambda: ["sst2"])
    methods: list[str] = field(default_factory=lambda: ["random", "knn", "go"])
    k: list[int] = field(default_factory=lambda: [4])
    label_budgets: list[int] = field(default_factory=list)
    annotators: list[str] = field(default_factory=lambda: ["random", "kmeans", "votek", "go"])
    retriever: str = "knn"
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

    def check(self) -> None:
        """Every method, variant and budget is valid (before any expensive work)."""
        for text in [*self.variants, *self.methods, *self.annotators, self.retriever]:
            self.spec(text)
        for text in self.annotators:
            if self.spec(text).per_query:
                raise InputError(f"annotator {text!r} must pick one shared set (use {text.split(':')[0]}:s)",
                                 field="annotators")
        if self.spec(self.retriever).name == "sal":
            raise InputError("the retriever picks among already labeled examples: use knn, go:q, mmr, ... not sal",
                             field="retriever")
        # the annotate setting's pool is unlabeled (B counts every label bought): a method that reads
        # the whole pool's labels belongs to the full-label setting (list it under methods)
        for field_name, texts in (("annotators", self.annotators), ("retriever", [self.retriever])):
            for text in texts:
                if needs_labels(SELECTORS[self.spec(text).name]):
                    raise InputError(f"{text!r} reads the labels of the whole pool, and the annotate setting's pool is "
                                     "unlabeled: list it under methods (the full-label setting)", field=field_name)
        if not self.k or min(self.k) < 1:
            raise InputError(f"k (demos per prompt) must be positive integers, got {self.k}", field="k")
        if self.label_budgets and min(self.label_budgets) < min(self.k):
            raise InputError(f"label budgets {self.label_budgets} must be at least k={min(self.k)}",
                             field="label_budgets")


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
