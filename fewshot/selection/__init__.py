"""Every selection method behind one protocol; ``make_selector(name, **params)`` builds one."""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import InputError
from .base import GreedySelector, Problem, Selection, Selector, StaticGains
from .baselines import BM25, DPP, KNN, MMR, KMeansDiversity, Random, VoteK
from .design import GO
from .feedback import ExcessLoss, RandomSearch, SALProbes, ValidationSearch, Valued
from .linear import LinearPosterior
from .params import init_parameters as parameters, unknown
from .sal import SAL

SELECTORS: dict[str, type[Selector]] = {
    cls.name: cls for cls in (GO, SAL, Random, KNN, MMR, BM25, KMeansDiversity, VoteK, DPP,
                              ValidationSearch, RandomSearch, ExcessLoss, Valued, SALProbes)}
# Methods whose demos follow the query: they pick per query unless told otherwise (CLI eval, API).
# excess-loss and valued rank each query's nearest examples (valued through its inner kNN by default).
PER_QUERY_METHODS = frozenset({"knn", "mmr", "bm25", "dpp", "excess-loss", "valued"})
# Set by the caller's context (CLI, harness), not by the user: passed only to selectors that take them.
CONTEXT_PARAMETERS = ("seed", "label_balance")


def summary(cls: type[Selector]) -> str:
    return (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")


def _class(selector: Selector | type[Selector]) -> type[Selector]:
    return selector if isinstance(selector, type) else type(selector)


def needs_labels(selector: Selector | type[Selector]) -> bool:
    """Whether a selector reads the labels of the whole pool (demos, probes, a reference model):
    it refuses an unlabeled pool. SAL is not one: its oracle reveals only the labels it picks.

    >>> needs_labels(SELECTORS["valsearch"]), needs_labels(SELECTORS["sal"]), needs_labels(KNN())
    (True, False, False)
    """
    return bool(getattr(_class(selector), "needs_labels", False))


def needs_model(selector: Selector | type[Selector]) -> bool:
    """Whether a selector consults an LLM (its ``model`` parameter): the CLI and the eval connect one.

    >>> needs_model(SELECTORS["sal"]), needs_model(SELECTORS["excess-loss"]), needs_model(GO)
    (True, True, False)
    """
    cls = _class(selector)
    return bool(getattr(cls, "needs_model", "model" in parameters(cls)))


def reference_wanted(selector: Selector) -> str | None:
    """The name of the reference LLM a selector asks its caller to open (excess-loss with
    ``reference="llm"`` and no ``reference_model`` yet), else None: the CLI and the eval open it
    beside the target LLM.

    >>> reference_wanted(make_selector("excess-loss", reference="llm")), reference_wanted(make_selector("excess-loss"))
    ('smollm2-135m', None)
    """
    if getattr(selector, "reference", None) == "llm" and getattr(selector, "reference_model", None) is None:
        return selector.reference_llm
    return None


def requirements(selector: Selector | type[Selector]) -> list[str]:
    """What a selector needs beyond embeddings, in words, for ``fewshot methods`` and errors.

    >>> requirements(SELECTORS["valsearch"]), requirements(SELECTORS["sal"]), requirements(GO)
    (["the pool's labels", 'an LLM'], ['an LLM'], [])
    """
    return ["the pool's labels"] * needs_labels(selector) + ["an LLM"] * needs_model(selector)


def make_selector(name: str, **params: Any) -> Selector:
    """Build a selector by registry name. Unknown parameters and values its ``parameter_constraints``
    refuse are errors; ``seed`` and ``label_balance`` (set by the calling context) go only to
    selectors that take them.

    >>> make_selector("mmr", lam=0.5, seed=3)
    MMR(lam=0.5, shortlist=256, label_balance=False)
    >>> make_selector("go", nosie=0.1)
    Traceback (most recent call last):
    ...
    fewshot.errors.InputError: field '--param': unknown parameter 'nosie' for method 'go' (valid: objective, ridge, noise, shortlist, label_balance, center, candidate_pool, query_sample, seed)
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
           "GO", "SAL", "Random", "KNN", "MMR", "BM25", "KMeansDiversity", "VoteK", "DPP",
           "ValidationSearch", "RandomSearch", "ExcessLoss", "Valued", "SALProbes",
           "parameters", "summary", "needs_labels", "needs_model", "reference_wanted", "requirements"]
