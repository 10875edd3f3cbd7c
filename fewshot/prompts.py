"""Prompt templates (TOML files in ``prompts/``): instruction, demos, then the query last."""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TypeVar

from .data import Example, bundled_folder, read_named_toml
from .errors import InputError

T = TypeVar("T")

ALLOWED = {"instruction": {"labels"}, "demo": {"text", "label"}, "query": {"text"}, "separator": set()}


@dataclass(frozen=True)
class Template:
    """A prompt in three parts. Demos come first and the query last (prefix-cache friendly).

    >>> t = Template(instruction="Labels: {labels}.", demo="{text} => {label}", query="{text} =>")
    >>> print(t.render([Example("1", "good", "pos")], "fine", labels=["pos", "neg"]))
    Labels: pos, neg.
    <BLANKLINE>
    good => pos
    <BLANKLINE>
    fine =>
    """

    instruction: str
    demo: str
    query: str
    separator: str = "\n\n"
    name: str = "inline"

    def render_demo(self, example: Example) -> str:
        return self.demo.format(text=example.text, label="" if example.label is None else example.label)

    def prefix(self, demos: Sequence[Example], labels: Sequence[str] = ()) -> str:
        """Instruction and demos, ending with the separator: the part shared by every query."""
        parts = [self.instruction.format(labels=", ".join(labels))] if self.instruction else []
        parts += [self.render_demo(d) for d in demos]
        return "".join(p + self.separator for p in parts)

    def render(self, demos: Sequence[Example], query: str, labels: Sequence[str] = ()) -> str:
        return self.prefix(demos, labels) + self.query.format(text=query)


def prompt_order(picks: Sequence[T]) -> list[T]:
    """The one demo-order policy: demos in the order the prompt shows them, given pick order.

    The first pick (the most relevant, for kNN, MMR, per-query GO and DPP) goes last, nearest the
    query: small LLMs weigh the demo nearest the query most. SAL scores candidates in this order,
    and the CLI, the eval harness and the LangChain and DSPy adapters all show demos in it.

    >>> prompt_order(["first pick", "second", "third"])
    ['third', 'second', 'first pick']
    """
    return list(reversed(picks))


def load_template(name_or_path: str | Path) -> Template:
    """Load a bundled template by name (``prompts/NAME.toml``, shipped as ``fewshot.templates``), or
    a TOML file by path; unknown placeholders are errors."""
    path, fields = read_named_toml(name_or_path, bundled_folder("fewshot.templates", "prompts"), "template")
    for key, value in fields.items():
        if key not in ALLOWED:
            raise InputError(f"unknown template key (allowed: {', '.join(ALLOWED)})", path=str(path), field=key)
        names = {n for _, n, _, _ in string.Formatter().parse(value) if n is not None}
        unknown = names - ALLOWED[key]
        if unknown:
            allowed = ", ".join("{" + a + "}" for a in sorted(ALLOWED[key])) or "none"
            raise InputError(f"unknown placeholder {{{sorted(unknown)[0]}}} (allowed here: {allowed})",
                             path=str(path), field=key)
    for key in ("demo", "query"):
        if key not in fields:
            raise InputError("missing template key", path=str(path), field=key)
    return Template(name=path.stem, **{k: fields.get(k, "") if k != "separator" else fields.get(k, "\n\n")
                                       for k in ALLOWED})
