"""Every selection method behind one protocol; ``make_selector(name, **params)`` builds one."""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import InputError
from .base import GreedySelector, Problem, Selection, Selector
from .baselines import BM25, DPP, KNN, MMR, KMeansDiversity, Random, VoteK
from .design import GO
from .sal import SAL

SELECTORS: dict[str, type[Selector]] = {cls.name: cls for cls in (GO, SAL, Random, KNN, MMR, BM25, KMeansDiversity, VoteK, DPP)}


def register(cls: type[Selector]) -> type[Selector]:
    """Add a selector class to the registry (used by SAL, which lives with the LLM code)."""
    SELECTORS[cls.name] = cls
    return cls


def parameters(cls: type[Selector]) -> dict[str, Any]:
    """Constructor parameters and their defaults."""
    return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"}


def summary(cls: type[Selector]) -> str:
    return (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")


def make_selector(name: str, **params: Any) -> Selector:
    """Build a selector by registry name, keeping only the parameters it takes.

    >>> make_selector("mmr", lam=0.5, seed=3)
    MMR(lam=0.5, shortlist=256, label_balance=False)
    """
    if name not in SELECTORS:
        raise InputError(f"unknown method {name!r} (known: {', '.join(SELECTORS)})")
    cls = SELECTORS[name]
    accepted = parameters(cls)
    return cls(**{k: v for k, v in params.items() if k in accepted})


__all__ = ["SELECTORS", "Problem", "Selection", "Selector", "GreedySelector", "make_selector", "register",
           "GO", "SAL", "Random", "KNN", "MMR", "BM25", "KMeansDiversity", "VoteK", "DPP", "parameters", "summary"]
