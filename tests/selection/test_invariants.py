"""Invariants every selector keeps, whatever its scores: a template every registered method passes,
SAL included (with a deterministic stand-in for the LLM), in the style of scikit-activeml's
TemplateQueryStrategy: k distinct picks, determinism, the token budget, label balance, scores that
are higher for better picks, and for every ``__init__`` parameter at least one refused value."""

import typing
import zlib

import numpy as np
import pytest

from fewshot.errors import InputError
from fewshot.models import Prediction
from fewshot.selection import SELECTORS, Problem, Selector, make_selector, parameters
from fewshot.selection.params import Interval, Options
from tests.conftest import unit_rows

METHODS = sorted(SELECTORS)
LABELS = ("pos", "neg", "neu")


class StubLLM:
    """A deterministic stand-in for the LLM: label probabilities drawn from a seed that is a hash of
    the prompt (its demos, their labels and the text), so different prompts get different answers."""

    def predict_many(self, jobs):
        answers = []
        for demos, text in jobs:
            key = "|".join(f"{d.text}={d.label}" for d in demos) + "#" + text
            p = np.random.default_rng(zlib.crc32(key.encode())).dirichlet(np.ones(len(LABELS)))
            answers.append(Prediction(probs=dict(zip(LABELS, p.tolist()))))
        return answers


def build(method, **params):
    """``make_selector`` with the stub LLM for every selector that consults one (SAL, the LLM-feedback
    selectors); labels come from the problem (SAL's default oracle, the probes' golds)."""
    if "model" in parameters(SELECTORS[method]):
        params.setdefault("model", StubLLM())
    return make_selector(method, **params)


def problem(seed=0, n=120, m=9, d=16, max_tokens=None, labels=None):
    rng = np.random.default_rng(seed)
    words = ["good", "bad", "film", "plot", "actor", "dull", "great", "slow"]
    texts = [" ".join(rng.choice(words, size=rng.integers(2, 9))) for _ in range(n + m)]
    return Problem(pool=unit_rows(rng, n, d), queries=unit_rows(rng, m, d), pool_texts=texts[:n],
                   query_texts=texts[n:], labels=labels or [LABELS[i % 3] for i in range(n)],
                   token_costs=rng.integers(3, 30, size=n), max_tokens=max_tokens)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("per_query", [False, True])
def test_exactly_k_distinct_and_deterministic(method, per_query):
    p = problem()
    run = lambda: (build(method, seed=7).select_per_query(p, 6) if per_query  # noqa: E731
                   else [build(method, seed=7).select(p, 6)])
    first, second = run(), run()
    assert len(first) == (p.m if per_query else 1)
    for a, b in zip(first, second):
        assert len(a.indices) == 6 and len(set(a.indices)) == 6 and a.stopped is None
        assert a.indices == b.indices and a.scores == b.scores
        assert all(0 <= i < p.n for i in a.indices)
        assert [t["index"] for t in a.trace] == list(a.indices)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("per_query", [False, True])
def test_higher_scores_are_better_picks(method, per_query):
    """Selection.scores means one thing for every method: each pick scored at least as high as the
    runner-up of its step (SAL's score is minus its loss, GO-g's minus a variance)."""
    p = problem(1)
    selector = build(method)
    for selection in selector.select_per_query(p, 4) if per_query else [selector.select(p, 4)]:
        assert [t["score"] for t in selection.trace] == list(selection.scores)
        assert all(t["runner_up_score"] <= t["score"] for t in selection.trace if t["runner_up_score"] is not None)
        assert any(t["runner_up_score"] is not None for t in selection.trace)


@pytest.mark.parametrize("method", METHODS)
def test_token_budget_respected_and_reported(method):
    p = problem(max_tokens=40)
    selections = build(method).select_per_query(p, 8)
    # examples a method keeps out of every demo set (probes, pruned examples), named on some selection
    held_out = {i for selection in selections for i in selection.info.get("held_out", ())}
    for selection in selections:
        cost = int(p.token_costs[list(selection.indices)].sum())
        assert cost <= 40
        if len(selection.indices) < 8:
            assert selection.stopped == "token budget exhausted"
            # budget-aware: nothing left unchosen (and not held out) would still have fitted
            unchosen = np.setdiff1d(np.arange(p.n), [*selection.indices, *held_out])
            assert p.token_costs[unchosen].min() > 40 - cost


@pytest.mark.parametrize("method", METHODS)
def test_label_balance(method):
    p = problem()
    selection = build(method, label_balance=True).select(p, 6)
    labels = [p.labels[i] for i in selection.indices]
    assert sorted(labels.count(c) for c in LABELS) == [2, 2, 2]


@pytest.mark.parametrize("method", METHODS)
def test_a_label_balance_that_cannot_be_met_stops_with_the_same_reason(method):
    """Two "neg" among 60: with k=6 the cap is 3 per label, so 5 picks at most. Every method says
    why in the driver's words (SAL used to say "no candidates left")."""
    labels = ["neg" if i in (7, 30) else "pos" for i in range(60)]
    p = problem(2, n=60, labels=labels)
    selection = build(method, label_balance=True).select(p, 6)
    assert sorted(p.labels[i] for i in selection.indices) == ["neg", "neg", "pos", "pos", "pos"]
    assert selection.stopped == "label balance cap reached"


def test_random_seed_changes_the_set():
    p = problem()
    assert make_selector("random", seed=1).select(p, 5).indices != make_selector("random", seed=2).select(p, 5).indices


@pytest.mark.parametrize("k", [0, 121])
def test_bad_k(k):
    with pytest.raises(InputError):
        make_selector("go").select(problem(), k)


def test_knn_picks_the_most_similar():
    p = problem()
    selection = make_selector("knn", shortlist=None).select_per_query(p, 3)[0]
    expected = np.argsort(-(p.pool @ p.queries[0]), kind="stable")[:3]
    assert list(selection.indices) == expected.tolist()


def test_mmr_with_lam_one_is_knn():
    p = problem()
    assert (make_selector("mmr", lam=1.0).select_per_query(p, 4)[2].indices
            == make_selector("knn").select_per_query(p, 4)[2].indices)


@pytest.mark.parametrize("k", [4, 12, 14, 16])
def test_kmeans_covers_distinct_clusters(k):
    """One pick per true cluster, also at k >= 12, where covered clusters used to outscore
    uncovered ones of size rank >= 11 (10 of 12 covered)."""
    rng = np.random.default_rng(k)
    centers = unit_rows(rng, k, 32) * 10
    sizes = rng.integers(10, 40, size=k)
    pool = np.concatenate([c + 0.3 * rng.normal(size=(s, 32)) for c, s in zip(centers, sizes)]).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    truth = np.repeat(np.arange(k), sizes)
    chosen = make_selector("kmeans", seed=0).select(Problem(pool=pool, queries=pool[:2]), k).indices
    assert sorted(truth[list(chosen)]) == list(range(k))


def test_dpp_avoids_duplicates_knn_takes():
    rng = np.random.default_rng(0)
    base = unit_rows(rng, 10, 8)
    pool = np.concatenate([base, base[:1] * 1.0])  # row 10 duplicates row 0
    query = base[:1]
    knn = make_selector("knn").select_per_query(Problem(pool=pool, queries=query), 2)[0].indices
    dpp = make_selector("dpp").select_per_query(Problem(pool=pool, queries=query), 2)[0].indices
    assert set(knn) == {0, 10} and len({0, 10} & set(dpp)) == 1


def test_bm25_prefers_lexical_overlap():
    texts = ["the cat sat", "dogs bark loudly", "a cat and a cat", "stock markets fell"]
    p = Problem(pool=np.eye(4, dtype=np.float32), queries=np.eye(4, dtype=np.float32)[:1],
                pool_texts=texts, query_texts=["cat"])
    assert make_selector("bm25").select_per_query(p, 2)[0].indices == (2, 0)


@pytest.mark.parametrize("seed", range(5))
def test_votek_prefers_dense_regions(seed):
    """A tight cluster of 20 among 200 points: vote-k's first pick lies in it (random: 10%), and the
    discount sends its second pick elsewhere (random after a dense first: 90%, together 9%)."""
    rng = np.random.default_rng(seed)
    dense = unit_rows(rng, 1, 8) + 0.05 * rng.normal(size=(20, 8))
    sparse_points = unit_rows(rng, 180, 8)
    pool = np.concatenate([sparse_points[:90], dense, sparse_points[90:]]).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    first, second = make_selector("votek", neighbors=10).select(Problem(pool=pool, queries=pool[:1]), 2).indices
    assert 90 <= first < 110
    assert not 90 <= second < 110


# -- parameters: declared once, checked once, refused when they make no sense ------------------

# At least one refused value for every __init__ parameter of every selector (by parameter name).
REFUSED = {
    "objective": ["x", "V", 1],  # suites.py's comment once showed "V"
    "ridge": [0, -1.0, float("inf"), "1"],
    "noise": [0, -0.1, float("nan"), "abc"],
    "shortlist": [0, -5, 2.5, "all"],
    "label_balance": ["yes", 1, None],
    "center": ["no", 0],
    "seed": [-1, 2 ** 32, 1.5, None],
    "lam": [-0.1, 1.5, "high"],
    "k1": [-1.0, "x"],
    "b": [-0.1, 1.1],
    "neighbors": [0, -1, 2.0],  # 0 used to pass and pick indices 0, 1, 2, ...
    "rho": [0.5, 0, -1],
    "quality": [-1.0, "x"],
    "model": [object(), "gpt"],
    "oracle": ["labels.jsonl", 3],
    "query_sample": [0, -1, 1.5],  # 0 used to pass and pick indices 0, 1, 2, ...
    "candidate_pool": [0, -1, 2.5, "8"],
    "min_label_prob": [-0.1, 1.5],
    "calibration": ["contextual", None],
    "label_coverage": ["yes"],
    # the LLM-feedback selectors (valsearch, random-search, excess-loss, valued, sal-probes)
    "candidates": [1, 0, 2.5, "8"],
    "generators": ["bogus", "", "go,,random", "go,sal", 3],
    "probes": [0, -1, 1.5, None],
    "budget": [0, -10, 2.5, "960"],
    "eta": [1, 0, 2.5],
    "metric": ["acc", "LOGLIK", None],
    "valuation_budget": [0, 1.5],
    "reference": ["knn", None],
    "reference_model": [object(), "smollm2-135m"],  # a name goes to reference_llm
    "reference_llm": ["", "  ", None, 3],
    "weight": [float("nan"), float("inf"), "high", True],
    "context": [-1, 1.5, "4"],
    "noise_quantile": [1.0, -0.1],
    "folds": [1, 0, 2.5],
    "inner": ["sal", "valued", None],
    "drop": [1.0, -0.1, "half"],
    "probes_per_set": [0, 1.5],
    "estimator": ["mean", None],
    "cache": ["yes", 1, None],
}
PARAMETERS = [(method, name) for method in METHODS for name in parameters(SELECTORS[method])]


@pytest.mark.parametrize("method, name", PARAMETERS)
def test_every_parameter_refuses_a_bad_value(method, name):
    """Derived from the signatures: a new parameter without an entry in REFUSED fails here."""
    assert REFUSED.get(name), f"{method}: add refused values for the new parameter {name!r} to REFUSED"
    cls = SELECTORS[method]
    for value in REFUSED[name]:
        for make in (lambda: make_selector(method, **{name: value}), lambda: cls(**{name: value})):
            with pytest.raises(InputError, match="must be") as err:
                make()
            assert f"parameter {name}={value!r} for method {method!r} must be" in str(err.value)


@pytest.mark.parametrize("method", METHODS)
def test_constraints_match_the_signature_and_its_annotations(method):
    cls = SELECTORS[method]
    assert list(cls.parameter_constraints) == list(parameters(cls))
    hints = typing.get_type_hints(cls.__init__)
    for name, constraints in cls.parameter_constraints.items():
        if typing.get_origin(hints[name]) is typing.Literal:
            assert [c.options for c in constraints if isinstance(c, Options)] == [typing.get_args(hints[name])]


@pytest.mark.parametrize("method", METHODS)
def test_get_params_set_params_and_clone_agree(method):
    selector = build(method)
    settings = selector.get_params()
    assert list(settings) == [n for n in parameters(type(selector)) if n not in ("model", "oracle", "reference_model")]
    twin = selector.clone()
    assert type(twin) is type(selector) and twin is not selector and twin.get_params() == settings
    assert twin.get_params(collaborators=True) == selector.get_params(collaborators=True)  # the same model
    name = next(iter(settings))
    with pytest.raises(InputError, match=f"parameter {name}="):
        selector.set_params(**{name: REFUSED[name][0]})
    assert selector.get_params() == settings  # a refused change changes nothing
    with pytest.raises(InputError, match="unknown parameter 'nosie'"):
        selector.set_params(nosie=1)
    assert repr(selector) == f"{type(selector).__name__}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"


def test_set_params_and_clone_change_the_picks_as_construction_does():
    p = problem()
    go = make_selector("go")
    assert go.clone(objective="v", noise=1).select(p, 4) == make_selector("go", objective="v", noise=1.0).select(p, 4)
    assert go.set_params(objective="v").select(p, 4) == make_selector("go", objective="v").select(p, 4)
    assert go.get_params()["objective"] == "v" and isinstance(go.clone(noise=1).noise, float)


def test_constraints_must_list_exactly_the_init_parameters():
    with pytest.raises(TypeError, match=r"missing \['width'\], extra \['size'\]"):
        class Bad(Selector):  # noqa: F841
            parameter_constraints = {"size": [Interval(int, 1, None)]}

            def __init__(self, width: int = 1) -> None:
                self.width = width
