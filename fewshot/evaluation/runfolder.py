"""The run folder of ``fewshot eval``: its format, defined here only. The harness writes it; the
report, the results page and ``fewshot report`` read it.

- ``run.json``: the configuration (everything besides a cell's key and parameters that changes its
  result), the suite, the references, the planned cells and the code version. A resume writes it
  only after every check has passed, so a refused resume leaves the folder as it was.
- ``predictions.jsonl``: one line per finished cell, its answers; then ``records.jsonl``: one line
  per finished cell, what it was and what it cost. A cell is done once its record is written.
- ``.lock``: held by the one process that writes the folder.

Readers change nothing: a last line torn by a crash (or one an eval is writing right now) is
skipped with a warning, and a damaged line before it is an error naming the file and line. Only the
writer cuts a torn line off, and only while it holds the lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import io
import json
import logging
import os
import tempfile
import tokenize
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..data import replace_files
from ..errors import InputError

log = logging.getLogger(__name__)

# The modules whose code decides a recorded answer or the number made of it: prompt rendering, the
# label walk, the predictor, calibration and the metrics (the best-of-N choice). A resume across a
# change to any of them is refused (see merge_run); comments and docstrings do not count.
SCORING_CODE = ("fewshot.prompts", "fewshot.llm.chat", "fewshot.llm.scoring", "fewshot.llm.predictor",
                "fewshot.calibration", "fewshot.evaluation.metrics")
_MOVED_FROM = {"fewshot.llm.scoring": "fewshot.llm.client"}  # the label walk lived in the client before
UNKNOWN_CODE = {"fewshot": "unknown", "scoring": "unknown"}  # folders written before versions were recorded
# record fields renamed since committed run folders were written: new name -> old name
RENAMED = {"http_requests": "llm_calls", "cached_answers": "cached_calls"}


# -- the cell key -------------------------------------------------------------------------------

@dataclass(frozen=True)
class CellKey:
    """What identifies a cell in the folder: ``DATA|SEED|SETTING|METHOD|B<labels>|k<demos>``.

    >>> str(CellKey("sst2", 0, "shared", "go:s", 4, 4))
    'sst2|0|shared|go:s|B4|k4'
    >>> CellKey.parse("sst2|0|annotate|random:s>knn:q|B32|k4").label_budget
    32
    """

    data: str
    seed: int
    setting: str
    method: str
    label_budget: int
    k: int

    def __post_init__(self) -> None:
        for name in ("data", "setting", "method"):
            if "|" in getattr(self, name):
                raise InputError(f"{getattr(self, name)!r} may not contain '|' (it separates the parts of a cell key)",
                                 field=name)

    def __str__(self) -> str:
        return f"{self.data}|{self.seed}|{self.setting}|{self.method}|B{self.label_budget}|k{self.k}"

    @classmethod
    def parse(cls, text: str) -> "CellKey":
        try:
            data, seed, setting, method, budget, k = text.split("|")
            if budget[:1] != "B" or k[:1] != "k":
                raise ValueError
            return cls(data, int(seed), setting, method, int(budget[1:]), int(k[1:]))
        except ValueError:
            raise InputError(f"not a cell key (DATA|SEED|SETTING|METHOD|B<labels>|k<demos>): {text!r}") from None


# -- JSONL: side-effect-free readers, one append-and-repair writer --------------------------------

def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The lines of a JSONL file an eval appends to, changing nothing. A last line without its
    newline that does not parse (torn by a crash, or being written now) is skipped with a warning;
    any other line that does not parse is an error naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")  # the last item is b"" when the file ends with a newline
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if number < len(lines):
                raise InputError("damaged line (not JSON)", path=str(path), line=number) from None
            log.warning("%s: line %d is torn (a crash mid-write, or an eval writing it now): skipped", path, number)
    return rows


def _repair_tail(path: Path) -> None:
    """End the file on a whole line: cut a torn last line off, or add the newline a complete one lacks."""
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    with open(path, "r+b") as handle:
        try:
            json.loads(data[start:].decode("utf-8"))
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("%s: cut off a torn last line (%d bytes, a crash mid-write)", path, len(data) - start)
            handle.truncate(start)


def _line(row: dict[str, Any]) -> bytes:
    """A row as its line of a run folder's JSONL file."""
    return (json.dumps(row) + "\n").encode("utf-8")


def _append(path: Path, row: dict[str, Any]) -> None:
    """Append one line whole or not at all: a failed write (a full disk) is undone, then reported."""
    line = memoryview(_line(row))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as err:
        raise InputError(f"cannot write ({err.strerror})", path=str(path)) from None
    size = os.fstat(fd).st_size
    try:
        while line:
            line = line[os.write(fd, line):]
    except OSError as err:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass  # the torn line stays; the next resume cuts it off
        raise InputError(f"cannot write ({err.strerror}): the finished cells are kept; make room and run the "
                         "same command again to resume", path=str(path)) from None
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str | bytes | Iterable[bytes]) -> None:
    """Write a whole file or leave the old one (:func:`fewshot.data.replace_files`: a synced
    temporary file beside it, then a rename). ``data``: the text, or its bytes, whole or as chunks
    written as they come (a generator: the file is never held whole in memory)."""
    if isinstance(data, str):
        data = [data.encode("utf-8")]
    elif isinstance(data, bytes):
        data = [data]
    replace_files([(Path(path), data)], None)


# -- the code version -----------------------------------------------------------------------------

def _code_tokens(source: str) -> str:
    """Python source as the tokens that change what it does: no comments, blank lines or docstrings.

    >>> _code_tokens('def f():\\n    \"\"\"Doc.\"\"\"\\n    return 1  # one\\n') == _code_tokens('def f():\\n    return 1\\n')
    True
    """
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type not in (tokenize.COMMENT, tokenize.NL)]
    kept, previous, skip_newline = [], tokenize.NEWLINE, False
    for token, after in zip(tokens, tokens[1:] + tokens[-1:]):
        docstring = (token.type == tokenize.STRING and after.type in (tokenize.NEWLINE, tokenize.ENDMARKER)
                     and previous in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT))
        if not (docstring or (skip_newline and token.type == tokenize.NEWLINE)):
            kept.append(token.string)
        skip_newline, previous = docstring, token.type
    return " ".join(kept)


def code_version() -> dict[str, str]:
    """This fewshot's version and a digest of :data:`SCORING_CODE` (the code, not its comments)."""
    from .. import __version__

    digest = hashlib.sha256()
    for name in SCORING_CODE:
        spec = importlib.util.find_spec(name) or (importlib.util.find_spec(_MOVED_FROM[name]) if name in _MOVED_FROM else None)
        if spec is None or spec.origin is None:
            continue
        digest.update(f"{spec.name}\n{_code_tokens(Path(spec.origin).read_text(encoding='utf-8'))}\n".encode())
    return {"fewshot": __version__, "scoring": digest.hexdigest()[:16]}


# -- run.json ---------------------------------------------------------------------------------------

def merge_run(earlier: dict[str, Any], now: dict[str, Any], path: Path, *,
              allow_code_change: bool = False) -> dict[str, Any]:
    """run.json for a resumed folder: ``now``, keeping what ``earlier`` knew of cells that may be
    finished (planned cells, the variants they name, data digests, reference LLMs' model files,
    earlier code versions). Refuses a changed configuration, a data set whose content changed, a
    reference LLM served from another model file, and (unless ``allow_code_change``) other scoring
    code; a folder from before code versions were recorded resumes with a warning."""
    before, config = earlier.get("configuration", {}), now["configuration"]
    # data sets and reference LLMs may come and go between runs into one folder; a known one must not change
    grows = {"data": "content", "reference_llms": "model"}
    seen = {key: before.get(key, {}) for key in grows}
    changed = [f"{key}: {before.get(key)!r} then, {value!r} now" for key, value in config.items()
               if key not in grows and before.get(key) != value]
    changed += [f"{key} {name}: {what} {seen[key][name]} then, {value} now" for key, what in grows.items()
                for name, value in config.get(key, {}).items() if name in seen[key] and seen[key][name] != value]
    if changed:
        raise InputError("this folder holds results made another way; use another --out or delete it ("
                         + "; ".join(changed) + ")", path=str(path))
    history = list(earlier.get("earlier_code", []))
    old, new = earlier.get("code"), now["code"]
    if old is None:
        log.warning("%s: no code version recorded (the folder is older than that): resuming; its earlier cells "
                    "may have been scored by other code than this fewshot %s", path, new["fewshot"])
        history.append(UNKNOWN_CODE)
    elif old.get("scoring") != new["scoring"]:
        if not allow_code_change:
            raise InputError(f"this folder's cells were scored by fewshot {old.get('fewshot')} (scoring code "
                             f"{old.get('scoring')}), this is fewshot {new['fewshot']} (scoring code {new['scoring']}): "
                             "resuming would mix the two in one table. Use another --out, or allow the mix "
                             "(--allow-code-change; run_suite(allow_code_change=True)), which records both versions",
                             path=str(path))
        history.append(old)
    now_cells = set(now["cells"])  # cells planned before stay planned: the report keeps their records
    variants = {**earlier.get("suite", {}).get("variants", {}), **now["suite"].get("variants", {})}
    grown = {key: {**seen[key], **config.get(key, {})} for key in grows}
    merged = {**now, "configuration": {**config, **{key: value for key, value in grown.items() if value}},
              "suite": {**now["suite"], "variants": variants},
              "cells": [c for c in earlier.get("cells", []) if c not in now_cells] + list(now["cells"])}
    return {**merged, "earlier_code": history} if history else merged


# -- the folder --------------------------------------------------------------------------------------

class RunFolder:
    """One eval's folder: read it anywhere; append to it and repair it only under :meth:`lock`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.run_file = self.path / "run.json"
        self.records_file = self.path / "records.jsonl"
        self.predictions_file = self.path / "predictions.jsonl"

    def read_run(self) -> dict[str, Any]:
        """run.json, or {} where there is none."""
        if not self.run_file.is_file():
            return {}
        try:
            run = json.loads(self.run_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"damaged run file (not JSON: {err})", path=str(self.run_file)) from None
        if not isinstance(run, dict):
            raise InputError("damaged run file (not a JSON object)", path=str(self.run_file))
        return run

    def write_run(self, run: dict[str, Any]) -> None:
        write_atomic(self.run_file, json.dumps(run, indent=2) + "\n")

    def records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.records_file)

    def predictions(self) -> dict[str, dict[str, Any]]:
        """Each recorded cell's answers, by cell key."""
        return {p["cell"]: p for p in read_jsonl(self.predictions_file)}

    def planned_records(self) -> list[dict[str, Any]]:
        """The records of the cells run.json plans (all of them without one): what a report covers.
        A folder with no such record is an error, never an empty report."""
        if not self.records_file.is_file():
            raise InputError("no records.jsonl here: is this a folder written by `fewshot eval`?",
                             path=str(self.records_file))
        records = self.records()
        planned = self.read_run().get("cells")
        if planned:
            records = [r for r in records if r["cell"] in set(planned)]
        if not records:
            raise InputError("no finished cell to report" + (" of the cells run.json plans" if planned else "")
                             + ": run (or resume) the eval first", path=str(self.records_file))
        return records

    def check_writable(self) -> None:
        """Fail now, naming the path, if results could not be written here (call before any work)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.path):
                pass
            for existing in (self.run_file, self.records_file, self.predictions_file):
                if existing.exists():
                    open(existing, "ab").close()
        except OSError as err:
            raise InputError(f"cannot write the run folder ({err.strerror or err})",
                             path=str(err.filename or self.path)) from None

    def lock(self):
        return run_lock(self.path)

    def _require_lock(self) -> None:
        if self.path.resolve() not in _LOCKED:
            raise RuntimeError(f"{self.path}: writing a run folder needs its lock (RunFolder.lock)")

    def repair(self) -> None:
        """After a crash: end both files on a whole line, and drop answers whose record was never
        written (the crash fell between a cell's two lines: the cell is redone)."""
        self._require_lock()
        _repair_tail(self.predictions_file)
        _repair_tail(self.records_file)
        done = {r["cell"] for r in self.records()}
        predictions = read_jsonl(self.predictions_file)
        kept = list({p["cell"]: p for p in predictions if p["cell"] in done}.values())
        if len(kept) < len(predictions):
            write_atomic(self.predictions_file, (_line(p) for p in kept))  # line by line, never one string

    def append_cell(self, prediction: dict[str, Any], record: dict[str, Any]) -> None:
        """A finished cell: its answers, then its record (the line that marks it done)."""
        self._require_lock()
        _append(self.predictions_file, prediction)
        _append(self.records_file, record)


def cost(record: dict[str, Any], name: str, default: Any = 0) -> Any:
    """A record's cost field, under its old name in folders written before it was renamed.

    >>> cost({"llm_calls": 3}, "http_requests"), cost({"http_requests": 4}, "http_requests")
    (3, 4)
    """
    return record.get(name, record.get(RENAMED.get(name, name), default))


_LOCKED: set[Path] = set()  # run folders this process holds


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold a run folder for this process (``out/.lock``, released when the process ends): two evals
    appending to one records.jsonl would interleave their cells. Re-entrant within a process, so
    the CLI can take it before starting a server and :func:`run_suite` again inside. A folder that
    cannot be written is an error naming it, before any work."""
    out = Path(out)
    key = out.resolve()
    if key in _LOCKED:
        yield
        return
    RunFolder(out).check_writable()
    with open(out / ".lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            raise InputError(f"another fewshot eval{f' (pid {holder})' if holder else ''} is writing this run folder: "
                             "wait for it to finish, or give another --out", path=str(out)) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        _LOCKED.add(key)
        try:
            yield
        finally:
            _LOCKED.discard(key)
            fcntl.flock(handle, fcntl.LOCK_UN)
