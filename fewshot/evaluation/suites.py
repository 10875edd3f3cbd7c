"""Eval suites are declared in TOML files under ``evals/`` (data sets, methods, budgets, seeds,
sizes, model), not in code."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from ..data import bundled_folder, read_named_toml
from ..errors import InputError


@dataclass
class Suite:
    name: str = "custom"
    data: list[str] = field(default_factory=lambda: ["sst2"])
    methods: list[str] = field(default_factory=lambda: ["random", "knn", "go"])
    budgets: list[int] = field(default_factory=lambda: [4])
    seeds: int = 1
    pool_size: int = 300
    test_size: int = 50
    oracle_sets: int = 4  # random demo sets the (test-label-peeking) oracle row chooses among
    zero_shot: bool = True
    model: str = "gemma3-270m"  # local model when no endpoint is configured
    regression_samples: int = 3
    text_field: str = "text"
    label_field: str = "label"


def load_suite(name_or_path: str | Path) -> Suite:
    """A bundled suite by name (``evals/NAME.toml``, shipped as ``fewshot.suites``), or a TOML file by path."""
    path, values = read_named_toml(name_or_path, bundled_folder("fewshot.suites", "evals"), "suite")
    allowed = {f.name for f in fields(Suite)}
    for key in values:
        if key not in allowed:
            raise InputError(f"unknown suite key (allowed: {', '.join(sorted(allowed))})", path=str(path), field=key)
    return Suite(**{"name": path.stem, **values})
