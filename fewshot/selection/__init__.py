"""Every selection method behind one protocol; ``make_selector(name, **params)`` builds one."""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import InputError
from .base import GreedySelector, Problem, Selection, Selector, StaticGains
from .baselines import BM25, DPP, KNN, MMR, KMeansDiversity, Random, VoteK
from .design import GO
from .linear import LinearPosterior
from .params import init_parameters as parameters, unknown
from .sal import SAL

SELECTORS: dict[str, type[Selector]] = {cls.name: cls for cls in (GO, SAL, Random, KNN, MMR, BM25, KMeansDiversity, VoteK, DPP)}
# Methods whose demos follow the query: they pick per query unless told otherwise (CLI eval, API).
PER_QUERY_METHODS = frozenset({"knn", "mmr", "bm25", "dpp"})
# Set by the caller's context (CLI, harness), not by the user: passed only to selectors that take them.
CONTEXT_PARAMETERS = ("seed", "label_balance")


def summary(cls: type[Selector]) -> str:
    return (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")


def make_selector(name: str, **params: Any) -> Selector:
    """Build a selector by registry name. Unknown parameters and values its ``parameter_constraints``
    refuse are errors; ``seed`` and ``label_balance`` (set by the calling context) go only to
    selectors that take them.

    >>> make_selector("mmr", lam=0.5, seed=3)
    MMR(lam=0.5, shortlist=256, label_balance=False)
    >>> make_selector("go", nosie=0.1)
    Traceback (most recent call last):
    ...
    fewshot.errors.InputError: field '--param': unknown parameter 'nosie' for method 'go' (valid: objective, ridge, noise, shortlist, label_balance, center)
    >>> make_selector("votek", neighbors=0)
    Traceback (most recent call last):
    ...
    fewshot.errors.InputError: field '--param': parameter neighbors=0 for method 'votek' must be int >= 1
    """
    if name not in SELECTORS:
        raise InputError(f"unknown method {name!r} (known: {', '.join(SELECTORS)})", field="--method")
    cls = SELECTORS[name]
    accepted = parameters(cls)
    for key in params:
        if key not in accepted and key not in CONTEXT_PARAMETERS:
            raise unknown(name, key, accepted)
    return cls(**{key: value for key, value in params.items() if key in accepted})  # checked as it is made


__all__ = ["SELECTORS", "PER_QUERY_METHODS", "Problem", "Selection", "Selector", "GreedySelector", "StaticGains", "make_selector",
           "LinearPosterior",
           "GO", "SAL", "Random", "KNN", "MMR", "BM25", "KMeansDiversity", "VoteK", "DPP", "parameters", "summary"]
