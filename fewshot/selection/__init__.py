"""Every selection method behind one protocol; ``make_selector(name, **params)`` builds one."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from ..errors import InputError
from .base import GreedySelector, Problem, Selection, Selector
from .baselines import BM25, DPP, KNN, MMR, KMeansDiversity, Random, VoteK
from .design import GO
from .linear import LinearPosterior
from .sal import SAL

SELECTORS: dict[str, type[Selector]] = {cls.name: cls for cls in (GO, SAL, Random, KNN, MMR, BM25, KMeansDiversity, VoteK, DPP)}
# Methods whose demos follow the query: they pick per query unless told otherwise (CLI eval, API).
PER_QUERY_METHODS = frozenset({"knn", "mmr", "bm25", "dpp"})
# Set by the caller's context (CLI, harness), not by the user: passed only to selectors that take them.
CONTEXT_PARAMETERS = ("seed", "label_balance")


def parameters(cls: type[Selector]) -> dict[str, Any]:
    """Constructor parameters and their defaults."""
    return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"}


def summary(cls: type[Selector]) -> str:
    return (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` fits a (resolved) type annotation; ints are accepted where floats are."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (str, bool):
        return isinstance(value, annotation)
    return True  # protocols and callables: checked by the selector itself


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "") if not isinstance(annotation, type) else annotation.__name__


def make_selector(name: str, **params: Any) -> Selector:
    """Build a selector by registry name. Unknown parameters and values of the wrong type are errors;
    ``seed`` and ``label_balance`` (set by the calling context) go only to selectors that take them.

    >>> make_selector("mmr", lam=0.5, seed=3)
    MMR(lam=0.5, shortlist=256, label_balance=False)
    >>> make_selector("go", nosie=0.1)
    Traceback (most recent call last):
    ...
    fewshot.errors.InputError: field '--param': unknown parameter 'nosie' for method 'go' (valid: objective, ridge, noise, shortlist, label_balance, center)
    """
    if name not in SELECTORS:
        raise InputError(f"unknown method {name!r} (known: {', '.join(SELECTORS)})", field="--method")
    cls = SELECTORS[name]
    accepted = parameters(cls)
    hints = typing.get_type_hints(cls.__init__)
    chosen: dict[str, Any] = {}
    for key, value in params.items():
        if key not in accepted:
            if key in CONTEXT_PARAMETERS:
                continue
            raise InputError(f"unknown parameter {key!r} for method {name!r} (valid: {', '.join(accepted)})",
                             field="--param")
        annotation = hints.get(key, inspect.Parameter.empty)
        if isinstance(value, int) and not isinstance(value, bool) and annotation is float:
            value = float(value)
        if not _accepts(annotation, value):
            raise InputError(f"parameter {key}={value!r} for method {name!r} must be {_type_name(annotation)}",
                             field="--param")
        chosen[key] = value
    try:
        return cls(**chosen)
    except (TypeError, ValueError) as err:
        raise InputError(f"bad parameters for method {name!r}: {err}", field="--param") from None


__all__ = ["SELECTORS", "PER_QUERY_METHODS", "Problem", "Selection", "Selector", "GreedySelector", "make_selector",
           "LinearPosterior",
           "GO", "SAL", "Random", "KNN", "MMR", "BM25", "KMeansDiversity", "VoteK", "DPP", "parameters", "summary"]
