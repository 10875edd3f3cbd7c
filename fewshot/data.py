"""Examples and pools: loading JSONL/CSV files with errors that name the file, line and field."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import numbers
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

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
    """The examples of one file, in file order, with where each came from.

    ``id_field`` is the field the ids were read from, or None when they are line numbers.
    ``lines`` holds each example's 1-based line in the file (for a list of records, its position),
    parallel to the examples; :meth:`where` names it in a message.
    """

    def __init__(self, examples: Iterable[Example] = (), id_field: str | None = None, *,
                 lines: Iterable[int] = (), place: Callable[[int], dict[str, Any]] | None = None) -> None:
        super().__init__(examples)
        self.id_field = id_field
        self.lines = list(lines)
        self._place = place

    @property
    def id_source(self) -> str:
        """For metadata: ``"field 'id'"`` or ``"line number"``."""
        return "line number" if self.id_field is None else f"field {self.id_field!r}"

    def where(self, i: int) -> str:
        """Where example ``i`` came from, for a message: ``"pool.jsonl, line 4, id 'x7'"``.

        >>> rows = parse_examples([(3, {"id": "x7", "text": "fine"})], lambda n: {"path": "p.jsonl", "line": n})
        >>> rows.where(0), rows.lines
        ("p.jsonl, line 3, id 'x7'", [3])
        """
        place = self._place(self.lines[i]) if self._place and i < len(self.lines) else {}
        return place_of(place.get("path"), place.get("line"), self[i].id)


def place_of(source: str | None, line: int | None, ident: str) -> str:
    """How a message names one example: ``"pool.jsonl, line 4, id 'x7'"`` (parts that are None left out).

    >>> place_of("sst2", None, "sst2-12")
    "sst2, id 'sst2-12'"
    """
    return ", ".join(p for p in (source, f"line {line}" if line else None, f"id {ident!r}") if p)


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
    the label field (or with null/empty) gets ``label=None``. In a JSONL file every label has one JSON
    type (all strings, all numbers or all booleans), so ``1`` and ``"positive"`` never become two classes
    by accident, nor ``1`` and ``"1"`` (a string is never read as a number: the mix is refused, naming
    the lines of each type); numbers equal to an integer are written as it, so ``1`` and ``1.0`` are one
    class, ``"1"`` (see :func:`label_text`). A CSV's values are all strings, kept as written, so there is
    no type to check. The result's ``lines`` and ``where(i)`` give each example's line.
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
    examples = Examples(place=where)
    seen: dict[str, int] = {}
    label_kinds: dict[str, list[int]] = {}  # JSON type of the label -> positions
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
        if label is not None:
            label_kinds.setdefault(_label_kind(label, label_field, where(position)), []).append(position)
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
        examples.append(Example(id=ident, text=text, label=None if label is None else label_text(label)))
        examples.lines.append(position)
    if len(label_kinds) > 1:
        raise _mixed_labels(label_kinds, where, label_field)
    examples.id_field = id_field or examples.id_field
    return examples


def label_text(label: Any) -> str:
    """A label as its class: a number equal to an integer is written as that integer, so ``1``,
    ``1.0`` and numpy's ``1.0`` are one class, ``"1"``; every other label as ``str`` writes it
    (a string is kept exactly, so ``"1.0"`` and ``"1"`` in a CSV stay two classes).

    >>> label_text(1.0), label_text(1), label_text(2.5), label_text("1.0"), label_text(True)
    ('1', '1', '2.5', '1.0', 'True')
    """
    if isinstance(label, numbers.Real) and not isinstance(label, bool):
        try:
            whole = int(label)
            if whole == label:
                return str(whole)
        except (ValueError, ArithmeticError):  # NaN and infinities (also Decimal's) stay as written
            pass
    return str(label)


def label_words(given: Iterable[str] | None, labels: Iterable[str | None] = ()) -> list[str]:
    """The label set: ``given`` (e.g. ``--labels``) stripped, without blanks and repeats, in its
    order; when that leaves none, the distinct ``labels`` present, sorted (a None label is no label).

    >>> label_words([" pos", "neg", "pos", ""]), label_words(None, ["b", None, "a", "b"])
    (['pos', 'neg'], ['a', 'b'])
    """
    listed = dict.fromkeys(word.strip() for word in given or ())
    listed.pop("", None)
    return list(listed) or sorted({label for label in labels if label is not None})


def _label_kind(label: Any, field: str | None, place: dict[str, Any]) -> str:
    """The type of a label: ``"boolean"``, ``"number"``, ``"string"`` (JSON's), or for a list of
    Python objects, the class name; a list or a dict is an error."""
    if isinstance(label, bool):  # before numbers: True is an int to Python, not to JSON
        return "boolean"
    if isinstance(label, numbers.Number):  # numpy's too, from a data frame's rows
        return "number"
    if isinstance(label, str):
        return "string"
    if isinstance(label, (list, tuple, dict, set)):
        raise InputError(f"a label must be a string, a number or a boolean, not {type(label).__name__}",
                         field=field, **place)
    return type(label).__name__


def _mixed_labels(kinds: dict[str, list[int]], where: Callable[[int], dict[str, Any]],
                  field: str | None) -> InputError:
    """The error for labels of several JSON types, naming the first few rows of each type."""
    first = where(min(p for positions in kinds.values() for p in positions))
    in_file = bool(first.get("line"))

    def rows(positions: list[int]) -> str:
        shown = [where(p) for p in positions[:5]]
        named = (f"line{'s' if len(positions) > 1 else ''} " + ", ".join(str(w["line"]) for w in shown)
                 if in_file else ", ".join(str(w["path"]) for w in shown))
        return named + (f" and {len(positions) - 5} more" if len(positions) > 5 else "")

    listed = "; ".join(f"{kind}s on {rows(positions)}" for kind, positions in kinds.items())
    return InputError(f"labels mix {len(kinds)} JSON types ({listed}): the same classes written two ways? "
                      "Give every label one type (e.g. all strings), else each spelling is its own class",
                      path=first.get("path") if in_file else None, field=field)


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


# -- outputs ----------------------------------------------------------------------------------------
# A file is written beside its target and renamed over it, so a full or read-only disk, or a kill,
# leaves the previous file whole. Writability is checked before any work, so a bad --out costs nothing.

def check_writable_file(path: str | Path, *, field: str | None = "--out") -> Path:
    """The path of an output file, once it is sure a file can be created there: refuses a folder,
    creates missing parent folders and creates (then removes) a file beside it. Errors are
    InputError naming the path, ``field`` and the system's reason.

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> check_writable_file(folder / "new" / "sel.jsonl") == folder / "new" / "sel.jsonl"
    True
    """
    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder: give a file path, e.g. selection.jsonl", path=str(path), field=field)
    _make_folder(path.parent, field)
    _probe(Path(os.path.realpath(path)).parent, path, field)  # where write_outputs will write (past a symlink)
    return path


def check_writable_dir(path: str | Path, *, field: str | None = None) -> Path:
    """The path of a folder to write in (a cache, a run folder), created when missing, once it is
    sure a file can be created in it; else InputError naming the path, ``field`` and the reason."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("is a file, not a folder", path=str(path), field=field)
    _make_folder(path, field)
    _probe(path, path, field)
    return path


def _make_folder(folder: Path, field: str | None) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError("cannot create this folder: a file is in the way", path=str(folder), field=field) from None
    except OSError as err:
        raise InputError(f"cannot create this folder ({err.strerror})", path=str(folder), field=field) from None


def _probe(folder: Path, shown: Path, field: str | None) -> None:
    """Create, fill with 64 KiB and remove a file in ``folder``: the one sure test (as root, permission
    bits say nothing; a full disk still lets a file be created, not written)."""
    try:
        fd, temp = _create_temp(folder / ".fewshot-write-test")
        try:
            os.write(fd, bytes(1 << 16))
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(temp)
    except OSError as err:
        raise InputError(f"cannot write in {folder} ({err.strerror})", path=str(shown), field=field) from None


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]], *, field: str | None = None) -> None:
    """Write records as JSONL with sorted keys (equal inputs give byte-identical files), atomically:
    the file is either the new one, whole, or the previous one, untouched. A write that fails (full
    or read-only disk) is an InputError naming the path and the reason."""
    replace_files([(Path(path), _jsonl_chunks(records))], field)


def write_outputs(path: str | Path, records: Iterable[Mapping[str, Any]], meta: Mapping[str, Any], *,
                  field: str | None = "--out") -> None:
    """Write ``path`` (JSONL, as :func:`write_jsonl`) and ``path.meta.json`` (``meta``) together.

    Both are written to temporary files first; if either write fails, both old files stay exactly
    as they were. Then the old meta is removed, the data renamed into place, the new meta last: a
    process killed in between leaves a data file without meta, never a meta that describes another
    file. A meta file, when present, always belongs to the data beside it.

    >>> import tempfile; out = Path(tempfile.mkdtemp()) / "sel.jsonl"
    >>> write_outputs(out, [{"id": "a"}], {"k": 1}); out.read_text(), Path(f"{out}.meta.json").read_text()
    ('{"id": "a"}\\n', '{\\n  "k": 1\\n}\\n')
    """
    data = Path(path)
    text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    replace_files([(data, _jsonl_chunks(records)), (Path(f"{data}.meta.json"), [text.encode("utf-8")])], field)


def _jsonl_chunks(records: Iterable[Mapping[str, Any]], size: int = 1 << 20) -> Iterator[bytes]:
    lines: list[str] = []
    held = 0
    for record in records:
        lines.append(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        held += len(lines[-1])
        if held >= size:
            yield "".join(lines).encode("utf-8")
            lines, held = [], 0
    yield "".join(lines).encode("utf-8")


def replace_files(files: Sequence[tuple[Path, Iterable[bytes]]], field: str | None) -> None:
    """Write each ``(target, chunks)`` to a temporary file beside its target, then rename them over
    the targets: the first is the data, the others describe it (removed before the data is replaced)."""
    targets = [Path(os.path.realpath(target)) for target, _ in files]  # a symlink is written through
    existed = [given.name for given, _ in files if given.exists()]
    temps: list[str] = []
    try:
        for target, (_, chunks) in zip(targets, files):
            temps.append(_write_temp(target, chunks))
    except BaseException as err:
        _remove(temps)
        if not isinstance(err, OSError):
            raise
        state = (f"the previous {' and '.join(existed)} {'is' if len(existed) == 1 else 'are'} unchanged"
                 if existed else "nothing was written")
        raise InputError(f"cannot write ({err.strerror}); {state}", path=str(files[len(temps)][0]),
                         field=field) from None
    done = 0
    try:
        for described in targets[1:]:
            described.unlink(missing_ok=True)
        for done, (target, temp) in enumerate(zip(targets, temps)):
            os.replace(temp, target)
    except OSError as err:  # a rename in one folder: rare (I/O error, a folder in the way)
        _remove(temps)
        raise InputError(f"cannot put the new file in place ({err.strerror})", path=str(files[done][0]),
                         field=field) from None
    for folder in {target.parent for target in targets}:
        _fsync_folder(folder)


def _create_temp(beside: Path) -> tuple[int, str]:
    """A new file next to ``beside``, open for writing, with the mode a plain ``open`` would give it."""
    temp = f"{beside.parent / ('.' + beside.name)}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temp


def _write_temp(target: Path, chunks: Iterable[bytes]) -> str:
    """Write ``chunks`` to a new file beside ``target``, flushed to disk; its name, or it is removed."""
    fd, temp = _create_temp(target)
    try:
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            os.fsync(fd)  # before the rename: a crash must not put an empty file in place of the old one
        finally:
            os.close(fd)
    except BaseException:
        _remove([temp])
        raise
    return temp


def _remove(paths: Iterable[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _fsync_folder(folder: Path) -> None:
    """Make the renames durable; some file systems cannot sync a folder, which only costs durability."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
