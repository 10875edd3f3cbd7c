"""DSPy: :class:`FewshotSelect`, a teleprompter that sets each predictor's demos with a fewshot method."""

from __future__ import annotations

import types
from typing import Any, Sequence

from . import require

dspy = require("dspy", "dspy")

from ..api import DemoPool  # noqa: E402
from ..prompts import prompt_order  # noqa: E402


def _text(example: Any) -> str:
    """An example's inputs (``.with_inputs``) as one text, keys in order; a plain dict: all values."""
    values = example.inputs() if hasattr(example, "inputs") else example
    return " ".join(str(values[key]) for key in values.keys())


class FewshotSelect(dspy.teleprompt.Teleprompter):
    """Demos chosen by a fewshot method (default GO, one shared set) from the trainset.

    ``compile(student, trainset=..., valset=None)``: the queries are the valset's inputs when given,
    else the trainset's. ``per_input=True``: demos are chosen for each call's inputs at forward time
    (as KNNFewShot, without a compile per call; the pool's vectors are computed once); each call
    runs on its own copy of the program, so parallel calls never see each other's demos. Demos are
    in prompt order (:func:`fewshot.prompts.prompt_order`: the first pick last, nearest the input).
    """

    def __init__(self, k: int = 4, method: str = "go", *, per_input: bool = False, seed: int = 0,
                 embedder: Any = None, **params: Any) -> None:
        self.k, self.method, self.per_input, self.seed = k, method, per_input, seed
        self.embedder, self.params = embedder, params

    def compile(self, student: Any, *, trainset: Sequence[Any], teacher: Any = None,
                valset: Sequence[Any] | None = None, **kwargs: Any) -> Any:
        program = student.reset_copy()
        pool = DemoPool(self.method, self.k, per_query=self.per_input or None, seed=self.seed,
                        embedder=self.embedder, **self.params)
        pool.add([_text(e) for e in trainset])
        trainset = list(trainset)
        if not self.per_input:
            chosen = [trainset[i] for i in pool.choose([_text(e) for e in (valset or trainset)], per_query=False)[0]]
            for predictor in program.predictors():
                predictor.demos = prompt_order(chosen)
            program._compiled = True
            return program
        forward = type(program).forward

        def forward_with_demos(self_: Any, **inputs: Any) -> Any:
            chosen = [trainset[i] for i in pool.choose([_text(inputs)], per_query=True)[0]]
            call = self_.deepcopy()  # this call's demos live on its own copy, never on the shared program
            for predictor in call.predictors():
                predictor.demos = prompt_order(chosen)
            return forward(call, **inputs)

        program.forward = types.MethodType(forward_with_demos, program)
        program._compiled = True
        return program


__all__ = ["FewshotSelect"]
