"""Data valuation: how much each labelled pool example, shown as a demo, helps the LLM answer other
pool examples (*probes*), and the one definition of how a demo set is scored on probes.

A demo set S is scored on a probe q by the LLM's answer to q with S in the prompt (demos in
:func:`~fewshot.prompts.prompt_order`), as :func:`gold_scores` says (``metric``):

- ``"loglik"``: log p(gold), the label probabilities renormalised over the labels answered;
- ``"calibrated"``: log p(gold) after batch calibration over the prompts that share S
  (:func:`fewshot.calibration.batch_calibrate`: the model's label prior divided out);
- ``"accuracy"``: 1 when the most likely label is the gold one, else 0.

An answer the scorer could not score counts as wrong (log ``EPS``, accuracy 0), never as a guess.

Valuation (Chang & Jia 2023's CondAcc; Nguyen & Wong 2023's influences) draws ``budget //
probes_per_set`` random label-covering k-sets, each scored on ``probes_per_set`` random probes
outside the set, one prompt per (set, probe). A probe's difficulty is removed first (each outcome
minus the leave-one-out mean of the other prompts that probed the same example), then per set
the residuals are averaged, and an example's value is

- ``"marginal"``: the mean residual of the sets that contain it minus that of the sets that do not;
- ``"datamodel"``: its coefficient in a ridge regression of the set residuals on set membership
  (a linear datamodel, Ilyas et al. 2022; less confounded by the other members of its sets).

Higher is better for both; an example no set contained has no value (NaN). ``reliability`` is the
split-half rank correlation of the marginal values (sets split in two): a low one (below about 0.5)
says the budget bought noise. Every prompt's answer is kept on disk, keyed by the prompt's content
and the model, so a valuation is computed once per (pool, model, template), and a killed run, run
again, asks only the prompts it had not finished (answers are written batch by batch; the LLM
client's own response cache also holds the batch in flight). :func:`write_values` writes the
values to a CSV or JSONL file a person can sort.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from .cache import SqliteStore, default_cache_dir
from .calibration import batch_calibrate, calibrate
from .data import Example, replace_files  # the one atomic writer
from .errors import InputError
from .models import Prediction, PredictiveModel
from .prompts import prompt_order

EPS = 1e-6  # floor on a probability before its log: an answer that rules out the gold label
METRICS = ("loglik", "calibrated", "accuracy")
ESTIMATORS = ("marginal", "datamodel")
Metric = Literal["loglik", "calibrated", "accuracy"]
Estimator = Literal["marginal", "datamodel"]


@dataclass(frozen=True)
class StoredAnswer(Prediction):
    """An answer read back from the valuation store: label probabilities and whether it was scored."""

    unscored: bool = False


def check_model(model: Any, method: str) -> None:
    """An InputError, before any LLM call, when a method that consults the LLM has none, or one that
    answers with numbers (regression) where label probabilities are needed."""
    if model is None:
        raise InputError(f"{method} needs an LLM (model=...); the CLI connects one with --base-url/--model "
                         "or starts a local server")
    if getattr(model, "task", "classification") != "classification":
        raise InputError(f"{method} scores demos by the LLM's probability of the gold label: it needs a "
                         "classification task, not regression")


def check_labels(labels: Sequence[str | None] | None, method: str) -> list[str]:
    """The pool's labels, or an InputError (before any LLM call) when any is missing."""
    if labels is None or any(label is None for label in labels):
        missing = "no labels" if labels is None else f"{sum(label is None for label in labels)} unlabeled examples"
        raise InputError(f"{method} reads the labels of the pool (demos and probes) and the pool has {missing}: "
                         "give a labelled pool (in the eval harness: the full-label setting)")
    return [str(label) for label in labels]


def shown_demos(texts: Sequence[str], labels: Sequence[str], picks: Sequence[int]) -> list[Example]:
    """Pool examples ``picks`` (pick order) as the prompt shows them: :func:`prompt_order`.

    >>> [d.text for d in shown_demos(["a", "b", "c"], ["x", "y", "x"], [2, 0])]
    ['a', 'c']
    """
    return prompt_order([Example(str(int(i)), texts[int(i)], labels[int(i)]) for i in picks])


def gold_scores(predictions: Sequence[Prediction], golds: Sequence[str], metric: Metric = "loglik") -> np.ndarray:
    """Per prediction, how well it backs its gold label, higher is better (see the module docstring).
    For ``"calibrated"`` the predictions are one demo set's answers: they are calibrated together.

    >>> answers = [Prediction(probs={"pos": 0.8, "neg": 0.2}), Prediction(probs={"pos": 0.6, "neg": 0.4})]
    >>> gold_scores(answers, ["pos", "neg"]).round(3).tolist()
    [-0.223, -0.916]
    >>> gold_scores(answers, ["pos", "neg"], "accuracy").tolist()
    [1.0, 0.0]
    >>> gold_scores(answers, ["pos", "neg"], "calibrated").round(3).tolist()  # prior (0.7, 0.3) divided out
    [-0.46, -0.496]
    """
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r} (use one of: {', '.join(METRICS)})")
    if not predictions:
        return np.zeros(0)
    if any(p.probs is None for p in predictions):
        raise InputError("the model answered with sampled numbers, not label probabilities: the probe "
                         "metrics need a classification task")
    labels = sorted({y for p in predictions for y in p.probs} | set(golds))
    probs = np.array([[p.probs.get(y, 0.0) for y in labels] for p in predictions], dtype=float)
    scored = np.array([bool(p.probs) and not getattr(p, "unscored", False) for p in predictions])
    if len(labels) < 2:  # one label in sight: it has all the mass
        probs = np.ones_like(probs)
    elif metric == "calibrated":
        probs = batch_calibrate(probs, scored)
    else:
        probs = calibrate(probs, "none")
    gold = np.array([labels.index(y) for y in golds])
    rows = np.arange(len(predictions))
    if metric == "accuracy":
        return (scored & (np.argmax(probs, axis=1) == gold)).astype(float)
    return np.where(scored, np.log(np.maximum(probs[rows, gold], EPS)), math.log(EPS))


def json_number(x: float, digits: int | None = None) -> float | None:
    """``x`` as a JSON number for a record: a Python float (rounded to ``digits`` when given), or
    None for NaN and infinities (JSON has neither). The one such cleaner: the LLM-feedback
    selectors' traces and info, SAL's trace and :func:`write_values` use it.

    >>> json_number(np.float64(0.12345678), 6), json_number(float("nan")), json_number(-math.inf), json_number(2)
    (0.123457, None, None, 2.0)
    """
    if not math.isfinite(x):
        return None
    return float(x) if digits is None else round(float(x), digits)


def model_key(model: Any) -> str:
    """What identifies a model's answers in the valuation store: its ``cache_key`` attribute if it
    has one, else, for an :class:`~fewshot.llm.predictor.LLMPredictor`, its endpoint, model name,
    API, template, labels and calibration, else its class name (a test double: give it a
    ``cache_key``, or turn the store off)."""
    if getattr(model, "cache_key", None) is not None:
        return str(model.cache_key)
    client, template = getattr(model, "client", None), getattr(model, "template", None)
    if client is not None and template is not None:
        parts = [getattr(client, "cache_namespace", getattr(client, "base_url", None)), getattr(client, "model", None),
                 getattr(client, "api", None), asdict(template) if is_dataclass(template) else repr(template),
                 list(getattr(model, "labels", ())), getattr(model, "calibration", None)]
        return json.dumps(parts, sort_keys=True, default=str)
    return f"{type(model).__module__}.{type(model).__qualname__}"


def label_covering_set(labels: Sequence[str], k: int, rng: np.random.Generator,
                       allowed: np.ndarray | None = None) -> np.ndarray:
    """A random k-set (pick order) with at most ceil(k / #labels) per label while that is possible,
    then topped up at random: every label shown when k allows.

    >>> s = label_covering_set(["a", "a", "a", "b", "b", "b"], 2, np.random.default_rng(0))
    >>> sorted(["a", "a", "a", "b", "b", "b"][i] for i in s)
    ['a', 'b']
    """
    pool = np.arange(len(labels)) if allowed is None else np.asarray(allowed)
    order = pool[rng.permutation(len(pool))]
    cap = math.ceil(k / max(1, len({labels[i] for i in pool})))
    counts: dict[str, int] = {}
    chosen: list[int] = []
    for i in order:
        if counts.get(labels[i], 0) < cap:
            chosen.append(int(i))
            counts[labels[i]] = counts.get(labels[i], 0) + 1
            if len(chosen) == k:
                return np.array(chosen)
    taken = set(chosen)
    rest = [int(i) for i in order if int(i) not in taken]
    return np.array(chosen + rest[:k - len(chosen)])


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation over the entries finite in both (ties: average ranks; NaN with fewer than
    3, or when either side is constant).

    >>> rank_correlation(np.array([1., 2, 3, np.nan]), np.array([10., 30, 20, 5]))
    0.5
    """
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return math.nan
    from scipy.stats import rankdata

    ra, rb = rankdata(a[ok]), rankdata(b[ok])
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def estimate_values(sets: np.ndarray, probes: np.ndarray, scores: np.ndarray, n: int,
                    ridge: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(marginal, datamodel, included)`` values of n examples from ``scores[s, j]``, the outcome
    of set ``sets[s]`` (pool indices) on probe ``probes[s, j]`` (see the module docstring).

    Example 0 is in the sets that do well on both probes:

    >>> sets = np.array([[0, 1], [2, 3], [0, 3], [1, 2]])
    >>> probes = np.array([[4, 5], [4, 5], [4, 5], [4, 5]])
    >>> scores = np.array([[0., 0.], [-1., -1.], [0., 0.], [-1., -1.]])
    >>> marginal, datamodel, included = estimate_values(sets, probes, scores, 6)
    >>> marginal.round(2).tolist()[:4], included.tolist()
    ([1.33, 0.0, -1.33, 0.0], [2, 2, 2, 2, 0, 0])
    >>> int(np.nanargmax(datamodel)), bool(np.isnan(marginal[4]))
    (0, True)
    """
    S, P = probes.shape
    flat, y = probes.ravel(), np.asarray(scores, dtype=float).ravel()
    count = np.bincount(flat, minlength=n)[flat]
    total = np.bincount(flat, weights=y, minlength=n)[flat]
    # a probe's difficulty: the mean of the *other* prompts that probed it (the overall mean if none)
    difficulty = np.where(count > 1, (total - y) / np.maximum(count - 1, 1), y.mean())
    residual = (y - difficulty).reshape(S, P).mean(axis=1)  # (S,)
    member = np.zeros((S, n), dtype=bool)
    member[np.arange(S)[:, None], sets] = True
    included = member.sum(axis=0)
    inside = member.T.astype(float) @ residual
    outside = residual.sum() - inside
    with np.errstate(invalid="ignore", divide="ignore"):
        marginal = np.where((included > 0) & (included < S), inside / included - outside / (S - included), np.nan)
    centred = member - member.mean(axis=0)
    target = residual - residual.mean()
    coef = np.linalg.solve(centred.T @ centred + ridge * np.eye(n), centred.T @ target)
    datamodel = np.where(included > 0, coef, np.nan)
    return marginal, datamodel, included


@dataclass(frozen=True)
class Values:
    """A valuation's result, one entry per pool example (higher is better; NaN: never in a set)."""

    marginal: np.ndarray
    datamodel: np.ndarray
    included: np.ndarray  # how many sets held the example
    reliability: float  # split-half rank correlation of the marginal values
    sets: int
    prompts: int  # prompts in the plan (sets x probes_per_set)
    asked: int  # of those, sent to the model by this run (the rest came from the store)

    def get(self, estimator: Estimator = "marginal") -> np.ndarray:
        if estimator not in ESTIMATORS:
            raise InputError(f"unknown estimator {estimator!r} (use one of: {', '.join(ESTIMATORS)})")
        return self.marginal if estimator == "marginal" else self.datamodel


@dataclass
class Valuation:
    """Values of a labelled pool's examples as demos for ``model`` (see the module docstring):
    ``budget`` prompts, ``budget // probes_per_set`` random k-sets, seeded. ``cache``: keep every
    answer in ``cache_dir/valuation.sqlite`` (default: the fewshot cache folder)."""

    model: PredictiveModel
    k: int = 4
    budget: int = 2400
    probes_per_set: int = 6
    metric: Metric = "loglik"
    seed: int = 0
    ridge: float = 1.0
    cache: bool = True
    cache_dir: str | Path | None = None
    batch_sets: int = 16  # sets per LLM batch: each batch's answers are stored as soon as it finishes

    def plan(self, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(sets (S, k), probes (S, probes_per_set))`` pool indices, a function of the labels, k
        and the seed only; a larger budget extends the plan of a smaller one (same first sets)."""
        n, S = len(labels), self.budget // self.probes_per_set
        if S < 1:
            raise InputError(f"valuation budget={self.budget} prompts is less than one set's {self.probes_per_set} probes")
        if n < self.k + self.probes_per_set:
            raise InputError(f"valuation needs at least k + probes_per_set = {self.k + self.probes_per_set} "
                             f"examples, the pool has {n}")
        rng = np.random.default_rng(self.seed)
        sets, probes = np.empty((S, self.k), dtype=np.int64), np.empty((S, self.probes_per_set), dtype=np.int64)
        for s in range(S):
            sets[s] = label_covering_set(labels, self.k, rng)
            others = np.setdiff1d(np.arange(n), sets[s])
            probes[s] = rng.choice(others, self.probes_per_set, replace=False)
        return sets, probes

    def _key(self, model: str, texts: Sequence[str], labels: Sequence[str], picks: np.ndarray, probe: int) -> str:
        demos = [(d.text, d.label) for d in shown_demos(texts, labels, picks)]
        return hashlib.sha256(json.dumps([model, demos, texts[probe]]).encode()).hexdigest()

    def run(self, texts: Sequence[str], labels: Sequence[str | None]) -> Values:
        """Value every example of the pool (``texts``, ``labels``), asking only what the store lacks."""
        check_model(self.model, "valuation")
        golds = check_labels(labels, "valuation")
        sets, probes = self.plan(golds)
        ident = model_key(self.model)
        keys = [[self._key(ident, texts, golds, sets[s], int(q)) for q in probes[s]] for s in range(len(sets))]
        store = SqliteStore(Path(self.cache_dir or default_cache_dir()) / "valuation.sqlite", "answers") if self.cache else None
        answers: dict[str, Prediction] = {}
        if store is not None:
            for key, raw in store.get_many([key for row in keys for key in row]).items():
                record = json.loads(raw)
                answers[key] = StoredAnswer(probs=record["probs"], unscored=record["unscored"])
        asked = 0
        for start in range(0, len(sets), self.batch_sets):
            todo = [(s, j) for s in range(start, min(start + self.batch_sets, len(sets)))
                    for j in range(probes.shape[1]) if keys[s][j] not in answers]
            if not todo:
                continue
            jobs = [(shown_demos(texts, golds, sets[s]), texts[int(probes[s, j])]) for s, j in todo]
            predictions = ask_in_prefix_order(self.model, jobs, [s for s, _ in todo])
            asked += len(jobs)
            fresh = []
            for (s, j), prediction in zip(todo, predictions):
                if prediction.probs is None:
                    raise InputError("the model answered with sampled numbers, not label probabilities: "
                                     "valuation needs a classification task")
                answers[keys[s][j]] = prediction
                record = {"probs": prediction.probs, "unscored": bool(getattr(prediction, "unscored", False))}
                fresh.append((keys[s][j], json.dumps(record).encode()))
            if store is not None:
                store.put_many(fresh)
        scores = np.array([gold_scores([answers[key] for key in keys[s]], [golds[int(q)] for q in probes[s]],
                                       self.metric) for s in range(len(sets))])
        marginal, datamodel, included = estimate_values(sets, probes, scores, len(golds), self.ridge)
        halves = [estimate_values(sets[h::2], probes[h::2], scores[h::2], len(golds), self.ridge)[0] for h in (0, 1)]
        return Values(marginal, datamodel, included, rank_correlation(*halves), len(sets), probes.size, asked)


def ask_in_prefix_order(model: PredictiveModel, jobs: list, groups: Sequence[Any]) -> list[Prediction]:
    """``model.predict_many(jobs)`` in job order; ``groups[i]`` names job i's demo set (jobs of a set
    consecutive). When every set has as many jobs, they are sent so that the requests in flight
    work on different demo sets (:func:`fewshot.selection.sal.prefix_order`: each set's prefix is
    computed once); the answers do not depend on the order."""
    from .selection.sal import in_flight, prefix_order  # lazily: fewshot.selection imports this module's users

    sizes = [len(list(run)) for _, run in itertools.groupby(groups)]
    if len(set(sizes)) != 1:
        return model.predict_many(jobs)
    order = prefix_order(len(sizes), sizes[0], in_flight(model))
    answered = model.predict_many([jobs[i] for i in order])
    return [answered[i] for i in np.argsort(order)]


def value_pool(texts: Sequence[str], labels: Sequence[str | None], model: PredictiveModel, **options: Any) -> Values:
    """:class:`Valuation` ``(model, **options).run(texts, labels)``: the library call behind ``fewshot value``."""
    return Valuation(model, **options).run(texts, labels)


def write_values(path: str | Path, ids: Sequence[str], values: np.ndarray, *, texts: Sequence[str] | None = None,
                 labels: Sequence[str | None] | None = None,
                 columns: Mapping[str, Sequence[Any]] | None = None) -> Path:
    """Write one row per example, best first (NaN last), to a ``.csv`` or ``.jsonl`` file: ``rank``
    (1 = highest value), ``id``, ``value``, then ``label``, ``text`` and any extra ``columns``.
    The file is replaced atomically (as :func:`fewshot.data.write_outputs`): a failed write (a
    full or read-only disk) or a kill leaves the previous file whole.

    >>> import tempfile; out = Path(tempfile.mkdtemp()) / "v.csv"
    >>> _ = write_values(out, ["a", "b", "c"], np.array([0.1, np.nan, 0.5]), labels=["x", "y", "x"])
    >>> print(out.read_text().strip())
    rank,id,value,label
    1,c,0.5,x
    2,a,0.1,x
    3,b,,y
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise InputError("values are written as .csv or .jsonl", path=str(path))
    values = np.asarray(values, dtype=float)
    extra = dict(columns or {})
    for name, column in [("label", labels), ("text", texts), *extra.items()]:
        if column is not None and len(column) != len(ids):
            raise InputError(f"{name}: {len(column)} entries for {len(ids)} ids", path=str(path))
    order = np.lexsort((np.arange(len(values)), -np.nan_to_num(values, nan=-np.inf)))
    rows = []
    for rank, i in enumerate(order, start=1):
        row: dict[str, Any] = {"rank": rank, "id": ids[i],
                               "value": json_number(values[i], 6)}
        if labels is not None:
            row["label"] = labels[i]
        if texts is not None:
            row["text"] = texts[i]
        for name, column in extra.items():
            value = column[i]
            row[name] = _plain(value.item() if isinstance(value, np.generic) else value)
        rows.append(row)
    if suffix == ".jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        handle = io.StringIO(newline="")
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["rank", "id", "value"])
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
        text = handle.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_files([(path, [text.encode("utf-8")])], field="--out")
    return path


def _plain(value: Any) -> Any:
    """A value for a row: NaN and infinities as None (JSON has none; an empty CSV cell)."""
    return json_number(value) if isinstance(value, float) else value
