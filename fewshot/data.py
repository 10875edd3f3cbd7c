"""Examples and pools: loading JSONL/CSV files with errors that name the file, line and field."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import InputError


@dataclass(frozen=True)
class Example:
    """One candidate demonstration or query. ``label`` is None when unknown.

    >>> Example(id="7", text="a fine film", label="positive").label
    'positive'
    """

    id: str
    text: str
    label: str | None = None


def labels_of(examples: Sequence[Example]) -> list[str | None]:
    return [e.label for e in examples]


def is_labeled(examples: Sequence[Example]) -> bool:
    """True when every example carries a label."""
    return bool(examples) and all(e.label is not None for e in examples)


def _records(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) from a JSONL or CSV file; line numbers are 1-based."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputError(f"not valid UTF-8 (byte {err.start})", path=str(path), line=line) from None
    if path.suffix.lower() in {".csv", ".tsv"}:
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        for row in reader:
            yield reader.line_num, row
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"malformed JSON ({err.msg}, column {err.colno})", path=str(path),
                             line=number) from None
        if not isinstance(record, dict):
            raise InputError("each line must be a JSON object", path=str(path), line=number)
        yield number, record


def load_examples(path: str | Path, *, text_field: str = "text", label_field: str | None = "label",
                  id_field: str | None = None, require_labels: bool = False) -> list[Example]:
    """Read examples from a ``.jsonl`` or ``.csv`` file.

    Ids default to the line number. Labels are optional unless ``require_labels``: a row without
    the label field (or with null/empty) gets ``label=None``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file does not exist", path=str(path))
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for line, record in _records(path):
        text = record.get(text_field)
        if text is None:
            raise InputError(f"missing text field (fields present: {', '.join(map(str, record)) or 'none'})",
                             path=str(path), line=line, field=text_field)
        if not isinstance(text, str) or not text.strip():
            raise InputError("text is empty or not a string", path=str(path), line=line, field=text_field)
        label = record.get(label_field) if label_field else None
        if label is not None and str(label).strip() == "":
            label = None
        if label is None and require_labels:
            raise InputError("missing label", path=str(path), line=line, field=label_field)
        ident = str(record[id_field]) if id_field and record.get(id_field) is not None else None
        if id_field and ident is None:
            raise InputError("missing id", path=str(path), line=line, field=id_field)
        ident = ident or str(line)
        if ident in seen:
            raise InputError(f"duplicate id {ident!r} (first on line {seen[ident]})", path=str(path),
                             line=line, field=id_field or "id")
        seen[ident] = line
        examples.append(Example(id=ident, text=text, label=None if label is None else str(label)))
    if not examples:
        raise InputError("no examples in file (it is empty)", path=str(path))
    return examples


def read_named_toml(name_or_path: str | Path, folder: Path, what: str) -> tuple[Path, dict[str, Any]]:
    """A TOML file given by path, or by bare name from ``folder`` (``NAME.toml``), parsed."""
    import tomllib

    path = Path(name_or_path)
    if not path.suffix:
        path = folder / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.toml")))
        raise InputError(f"{what} not found (in {folder.name}/: {known})", path=str(path))
    try:
        return path, tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"not a valid TOML {what} ({err})", path=str(path)) from None


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write records as JSONL with sorted keys, so equal inputs give byte-identical files."""
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
