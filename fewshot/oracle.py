"""Who reveals a chosen demo's label when SAL needs it: the pool, a labels file, earlier answers, or a person.

An :class:`Oracle` answers for a pool example from, in order: the pool's own label; the labels
file (JSONL of ``{"id": ..., "label": ...}``); the answers journal (labels a person typed in an
earlier run); and, when it may ask (on a terminal), a person asked now. Each typed answer is
appended to the journal as one JSON line and flushed before it is used, so a run stopped by
Ctrl-C, SIGTERM or a crash loses no answer, and the same command run again asks only what it had
not asked. The journal has the labels file's format (plus the text that was labeled), so it can be
passed as ``--labels-file`` later.

Where the journal lives (:func:`journal_path`): next to the output, ``OUT.labels.jsonl``, where the
person sees it; without an output file, in the cache folder under a digest of the pool's ids and
texts (``labels/<digest>.jsonl``), so the same pool finds it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .cache import default_cache_dir
from .data import Example, label_text, label_words, load_examples
from .errors import InputError

Ask = Callable[[Example, Sequence[str]], str]


def read_labels_file(path: str | Path) -> dict[str, str]:
    """``{id: label}`` from a JSONL or CSV file with ``id`` and ``label`` fields."""
    rows = load_examples(path, text_field="label", label_field=None, id_field="id")
    return {row.id: row.text for row in rows}


def journal_path(pool: Sequence[Example], *, out: str | Path | None = None,
                 cache_dir: str | Path | None = None) -> Path:
    """Where typed labels are kept: ``OUT.labels.jsonl`` with an output file, else the cache folder.

    >>> journal_path([Example("1", "fine")], out="runs/sel.jsonl").as_posix()
    'runs/sel.jsonl.labels.jsonl'
    >>> journal_path([Example("1", "fine")], cache_dir="c").as_posix()
    'c/labels/69e8e17a7fa1822e.jsonl'
    """
    if out is not None:
        return Path(f"{out}.labels.jsonl")
    digest = hashlib.sha256()
    for example in pool:
        digest.update(f"{example.id}\0{example.text}\0".encode("utf-8"))
    return Path(cache_dir or default_cache_dir()) / "labels" / f"{digest.hexdigest()[:16]}.jsonl"


def read_journal(path: Path, pool: Sequence[Example]) -> dict[str, str]:
    """Typed labels by id; later lines win. A line about a text the pool no longer holds under that
    id is not used, nor is a line cut by a kill mid-write: those examples are asked again."""
    if not path.is_file():
        return {}
    texts = {e.id: e.text for e in pool}
    labels: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        ident = str(row.get("id")) if isinstance(row, dict) else None
        if ident in texts and row.get("text") == texts[ident] and row.get("label") is not None:
            labels[ident] = label_text(row["label"])
    return labels


def append_journal(path: Path, example: Example, label: str) -> None:
    """Append one answer and push it to disk before it is used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        torn = handle.tell() > 0 and _last_byte(path) != b"\n"
        line = json.dumps({"id": example.id, "label": label, "text": example.text}, ensure_ascii=False)
        handle.write((("\n" if torn else "") + line + "\n").encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


def ask_on_terminal(example: Example, labels: Sequence[str]) -> str:
    """Ask a person on the terminal (prompt on stderr: stdout carries only data). Ctrl-C or a stop
    signal at the prompt stays what it was (click would turn it into a bare "Aborted!", exit 1)."""
    import click

    choices = f"\n({' / '.join(labels)})" if labels else ""
    try:
        return click.prompt(f"Label for example {example.id}: {example.text!r}{choices}",
                            type=click.Choice(list(labels)) if labels else str, err=True)
    except click.exceptions.Abort as abort:
        if isinstance(abort.__context__, KeyboardInterrupt):  # Interrupted (SIGTERM) included
            raise abort.__context__ from None
        raise InputError(f"input ended before the label of example {example.id!r} was typed "
                         "(the labels typed so far are kept)") from None


class Oracle:
    """Reveal the label of pool example ``index``: the pool's, the labels file's, the journal's, or
    a person's. ``ask(example, labels)`` asks a person (default: on the terminal, when stdin is
    one); None never asks, and an unknown label is then an :class:`InputError`.

    >>> pool = [Example("a", "fine", "pos"), Example("b", "dull")]
    >>> Oracle(pool, from_file={"b": "neg"})(1)
    'neg'
    """

    def __init__(self, pool: Sequence[Example], *, from_file: Mapping[str, str] | None = None,
                 journal: Path | None = None, labels: Sequence[str] = (), ask: Ask | None = ask_on_terminal) -> None:
        self.pool, self.from_file = pool, dict(from_file or {})
        self.journal, self.labels, self.ask = journal, list(labels), ask
        self.typed = read_journal(journal, pool) if journal is not None else {}
        self._told = False

    def known_labels(self) -> set[str]:
        """Every label the pool, the file and the journal hold."""
        return {e.label for e in self.pool if e.label is not None} | set(self.from_file.values()) | set(self.typed.values())

    def __call__(self, index: int) -> str:
        example = self.pool[index]
        if example.label is not None:
            return example.label
        for source in (self.from_file, self.typed):
            if example.id in source:
                return source[example.id]
        if self.ask is None or (self.ask is ask_on_terminal and not sys.stdin.isatty()):
            raise InputError(f"pool example id {example.id!r} was picked to label and has no label: add it to --labels-file "
                             "or run on a terminal to label it interactively", field="--labels-file")
        if self.journal is not None and not self._told:
            print(f"labels you type are saved in {self.journal} as you type them; a re-run asks only the rest",
                  file=sys.stderr)
            self._told = True
        label = self.ask(example, self.labels)
        if self.journal is not None:
            append_journal(self.journal, example, label)  # before SAL uses it: a stop now loses nothing
        self.typed[example.id] = label
        return label


def make_oracle(pool: Sequence[Example], *, labels_file: str | Path | Mapping[str, str] | None = None,
                journal: Path | None = None, labels: Sequence[str] | None = None,
                ask: Ask | None = ask_on_terminal) -> Oracle:
    """The oracle the CLI and ``fewshot.select`` give SAL. ``labels_file``: a path or an ``{id: label}``
    mapping. ``labels``: the label set (the LLM's answers, a person's choices); default: every
    label the pool, the file and the journal hold (possibly none: the caller says what is missing).

    >>> make_oracle([Example("a", "fine", "pos"), Example("b", "dull")], labels_file={"b": "neg"}).labels
    ['neg', 'pos']
    """
    from_file = read_labels_file(labels_file) if isinstance(labels_file, (str, Path)) else labels_file
    oracle = Oracle(pool, from_file=from_file, journal=journal, ask=ask)
    oracle.labels = label_words(labels, oracle.known_labels())
    return oracle
