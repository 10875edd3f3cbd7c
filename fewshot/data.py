"""Examples and pools: loading JSONL/CSV files with errors that name the file, line and field."""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from .errors import InputError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


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


class Examples(list):
    """The examples of one file, in file order, with where their ids came from.

    ``id_field`` is the field the ids were read from, or None when they are line numbers.
    """

    def __init__(self, examples: Iterable[Example] = (), id_field: str | None = None) -> None:
        super().__init__(examples)
        self.id_field = id_field

    @property
    def id_source(self) -> str:
        """For metadata: ``"field 'id'"`` or ``"line number"``."""
        return "line number" if self.id_field is None else f"field {self.id_field!r}"


def check_file(path: str | Path) -> Path:
    """The path, or an InputError saying it is missing or a folder (not a file)."""
    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder, not a file (give the path of a .jsonl or .csv file)", path=str(path))
    if not path.is_file():
        raise InputError("file does not exist", path=str(path))
    return path


def load_examples(path: str | Path, *, text_field: str = "text", label_field: str | None = "label",
                  id_field: str | None = None, require_labels: bool = False) -> Examples:
    """Read examples from a ``.jsonl`` or ``.csv`` file.

    Ids come from ``id_field`` when given (every row must have it). Without it, they come from the
    ``id`` field when the file's first row has one (then every row must), else from the line number;
    the result's ``id_field`` says which. Labels are optional unless ``require_labels``: a row without
    the label field (or with null/empty) gets ``label=None``.
    """
    path = check_file(path)
    examples = parse_examples(_records(path), lambda line: {"path": str(path), "line": line}, text_field=text_field,
                              label_field=label_field, id_field=id_field, require_labels=require_labels)
    if not examples:
        raise InputError("no examples in file (it is empty)", path=str(path))
    return examples


def parse_examples(rows: Iterable[tuple[int, Mapping[str, Any]]], where: Callable[[int], dict[str, Any]], *,
                   text_field: str = "text", label_field: str | None = "label", id_field: str | None = None,
                   require_labels: bool = False) -> Examples:
    """Examples from ``(position, record)`` pairs (a file's lines, a list's items), with the id rules
    of :func:`load_examples`; ``where(position)`` gives the ``path``/``line`` an error names.

    >>> parse_examples([(0, {"text": "fine", "label": "pos"})], lambda i: {"path": f"rows[{i}]"})
    [Example(id='0', text='fine', label='pos')]
    """
    examples = Examples()
    seen: dict[str, int] = {}
    for position, record in rows:
        if not examples and id_field is None and "id" in record:
            examples.id_field = "id"  # decided on the first row, so a row without it is an error
        ids_from = id_field or examples.id_field
        text = record.get(text_field)
        if text is None:
            raise InputError(f"missing text field (fields present: {', '.join(map(str, record)) or 'none'})",
                             field=text_field, **where(position))
        if not isinstance(text, str) or not text.strip():
            raise InputError("text is empty or not a string", field=text_field, **where(position))
        label = record.get(label_field) if label_field else None
        if label is not None and str(label).strip() == "":
            label = None
        if label is None and require_labels:
            raise InputError("missing label", field=label_field, **where(position))
        if ids_from:
            value = record.get(ids_from)
            if value is None or str(value).strip() == "":
                raise InputError("missing id", field=ids_from, **where(position))
            ident = str(value)
        else:
            ident = str(position)
        if ident in seen:
            first = where(seen[ident])
            raise InputError(f"duplicate id {ident!r} (first on {_place(first)})", field=ids_from or "id",
                             **where(position))
        seen[ident] = position
        examples.append(Example(id=ident, text=text, label=None if label is None else str(label)))
    examples.id_field = id_field or examples.id_field
    return examples


def _place(where: dict[str, Any]) -> str:
    return f"line {where['line']}" if where.get("line") else str(where.get("path"))


def bundled_folder(package: str, source_folder: str) -> Traversable:
    """Files shipped inside fewshot as package data (wheel or editable install); from a bare source
    checkout on ``sys.path`` (not installed), the top-level ``source_folder`` instead."""
    import importlib.resources

    try:
        return importlib.resources.files(package)
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / source_folder


def read_named_toml(name_or_path: str | Path, folder: Traversable, what: str) -> tuple[Path, dict[str, Any]]:
    """A TOML file given by path, or by bare name from ``folder`` (``NAME.toml``), parsed.

    ``folder`` may be a package resource folder (``importlib.resources.files``), so names resolve
    the same from a wheel as from the source tree.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib

    given = Path(name_or_path)
    resource = folder.joinpath(f"{name_or_path}.toml") if not given.suffix else None
    path = Path(str(resource)) if resource is not None else given
    if resource is not None and not resource.is_file():
        known = ", ".join(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml")))
        raise InputError(f"{what} not found (known {what}s: {known}; or give a .toml path)", path=str(name_or_path))
    if resource is None and not given.is_file():
        raise InputError(f"{what} not found" + (" (is a folder)" if given.is_dir() else ""), path=str(given))
    try:
        text = (resource or given).read_text(encoding="utf-8")
        return path, tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"not a valid TOML {what} ({err})", path=str(path)) from None


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write records as JSONL with sorted keys, so equal inputs give byte-identical files."""
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
