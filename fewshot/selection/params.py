"""Declarative parameter constraints for selectors, in the style of scikit-learn's
``_parameter_constraints``.

Every selector class declares ``parameter_constraints``: for each ``__init__`` parameter, the list
of what it may be; a value is valid when it meets any entry. The entries are

- ``Interval(int | float, low, high, closed="both")``: a finite number of that type (ints are
  accepted where floats are; bools never are), with ``None`` for an open end;
- ``Options("g", "v")``: one of these strings;
- ``bool``; ``None``;
- ``callable`` and ``HasMethods("predict_many")``: collaborators (an oracle, a model), objects
  rather than settings.

:class:`~fewshot.selection.base.Selector` checks them in one place, whenever a selector is made
(directly or through ``make_selector``) or changed (``set_params``).

>>> noise = [Interval(float, 0, None, closed="neither")]
>>> check("go", "noise", 1, noise)  # an int where a float is asked for becomes that float
1.0
>>> check("go", "noise", 0.0, noise)
Traceback (most recent call last):
...
fewshot.errors.InputError: field '--param': parameter noise=0.0 for method 'go' must be float > 0
>>> describe([Interval(int, 1, None), None]), describe([Options("g", "v")]), describe([Interval(float, 0, 1)])
('int >= 1 or None', "one of 'g', 'v'", 'float in [0, 1]')
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Literal

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Interval:
    """A finite int or float between ``low`` and ``high`` (None: unbounded on that side)."""

    type: type
    low: float | None = None
    high: float | None = None
    closed: Literal["both", "left", "right", "neither"] = "both"

    def accepts(self, value: Any) -> bool:
        kind = numbers.Integral if self.type is int else numbers.Real
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, kind) or not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (value == self.low and self.closed in ("right", "neither"))):
            return False
        return self.high is None or value < self.high or (value == self.high and self.closed in ("both", "right"))

    def __str__(self) -> str:
        name, left, right = self.type.__name__, self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is None and self.high is None:
            return name
        if self.high is None:
            return f"{name} {'>=' if left else '>'} {self.low}"
        if self.low is None:
            return f"{name} {'<=' if right else '<'} {self.high}"
        return f"{name} in {'[' if left else '('}{self.low}, {self.high}{']' if right else ')'}"


class Options:
    """One of a fixed set of strings."""

    def __init__(self, *options: str) -> None:
        self.options = options

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.options

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


class HasMethods:
    """An object with these methods (a model: a collaborator, not a setting)."""

    def __init__(self, *methods: str) -> None:
        self.methods = methods

    def accepts(self, value: Any) -> bool:
        return all(callable(getattr(value, m, None)) for m in self.methods)

    def __str__(self) -> str:
        return "an object with " + ", ".join(f"{m}()" for m in self.methods)


class Text:
    """Any non-empty string (a name the caller resolves, such as a model's)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def __str__(self) -> str:
        return "a non-empty string"


Constraint = Any  # Interval | Options | Text | HasMethods | bool | None | callable

# shared by many selectors
SEED = [Interval(int, 0, 2 ** 32 - 1)]  # numpy and scikit-learn seeds
SHORTLIST = [Interval(int, 1, None), None]  # None: the whole pool
FLAG = [bool]


def _accepts(constraint: Constraint, value: Any) -> bool:
    if constraint is None:
        return value is None
    if constraint is bool:
        return isinstance(value, (bool, np.bool_))
    if constraint is callable:
        return callable(value)
    return constraint.accepts(value)


def _name(constraint: Constraint) -> str:
    return {None: "None", bool: "bool", callable: "callable"}.get(constraint) or str(constraint)


def describe(constraints: list[Constraint]) -> str:
    """What the constraints allow, in words."""
    return " or ".join(_name(c) for c in constraints)


def is_collaborator(constraints: list[Constraint]) -> bool:
    """Whether a parameter holds an object the selector talks to (a model, an oracle), not a setting."""
    return any(c is callable or isinstance(c, HasMethods) for c in constraints)


def check(owner: str, name: str, value: Any, constraints: list[Constraint]) -> Any:
    """``value`` if it meets one of ``constraints`` (numbers and numpy scalars as the plain Python
    type asked for), else an InputError naming the method, the parameter, the value and what is allowed."""
    for constraint in constraints:
        if _accepts(constraint, value):
            if isinstance(constraint, Interval):
                return constraint.type(value)
            return bool(value) if constraint is bool else value
    raise InputError(f"parameter {name}={value!r} for method {owner!r} must be {describe(constraints)}",
                     field="--param")


def unknown(owner: str, name: str, valid: Iterable[str]) -> InputError:
    """The error for a parameter ``owner`` does not take."""
    return InputError(f"unknown parameter {name!r} for method {owner!r} (valid: {', '.join(valid)})", field="--param")


def init_parameters(cls: type) -> dict[str, Any]:
    """A class's ``__init__`` parameters and their defaults, in signature order."""
    return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"}
