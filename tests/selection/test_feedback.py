"""The LLM-feedback selectors against deterministic LLM doubles: planted good demos are found within
the prompt budget, probes are never demos, every prompt shows its demos in prompt_order, the same
seed gives the same selection, and labels and an LLM are asked for before any prompt."""

import zlib

import numpy as np
import pytest

from fewshot.errors import InputError
from fewshot.models import Prediction
from fewshot.prompts import prompt_order
from fewshot.selection import KNN, Problem, SAL
from fewshot.selection.feedback import (ExcessLoss, RandomSearch, SALProbes, ValidationSearch, Valued, draw_probes,
                                        generate_sets, halving_schedule, hold_out_probes, reference_losses)
from tests.conftest import unit_rows

LABELS = ("pos", "neg")


class Planted:
    """An LLM double: p(gold) is ``good`` when a ``keys`` text is among the demos, ``bad`` when a
    ``poison`` text is, else ``base``; ``own`` overrides p(gold) for a text answered with no key.
    Every prompt is recorded (demo texts in the order shown, the text answered)."""

    def __init__(self, gold, keys=(), poison=(), good=0.9, base=0.3, bad=0.05, own=None, labels=LABELS):
        self.gold, self.keys, self.poison = gold, set(keys), set(poison)
        self.good, self.base, self.bad, self.own, self.labels = good, base, bad, dict(own or {}), labels
        self.jobs, self.calls = [], 0
        self.cache_key = f"planted-{sorted(self.keys)}-{sorted(self.poison)}-{good}-{base}-{bad}-{sorted(self.own.items())}"

    @property
    def prompts(self):
        return len(self.jobs)

    def predict_many(self, jobs):
        self.calls += 1
        answers = []
        for demos, text in jobs:
            shown = tuple(d.text for d in demos)
            self.jobs.append((shown, text))
            if any(t in self.poison for t in shown):
                p = self.bad
            elif any(t in self.keys for t in shown):
                p = self.good
            else:
                p = self.own.get(text, self.base)
            gold = self.gold[text]
            rest = (1 - p) / (len(self.labels) - 1)
            answers.append(Prediction(probs={y: p if y == gold else rest for y in self.labels}))
        return answers


class Hashed:
    """An LLM double whose answers are a hash of the whole prompt: varied, deterministic."""

    def __init__(self, labels=LABELS):
        self.labels, self.prompts = labels, 0

    def predict_many(self, jobs):
        self.prompts += len(jobs)
        out = []
        for demos, text in jobs:
            key = "|".join(f"{d.text}={d.label}" for d in demos) + "#" + text
            p = np.random.default_rng(zlib.crc32(key.encode())).dirichlet(np.ones(len(self.labels)))
            out.append(Prediction(probs=dict(zip(self.labels, p.tolist()))))
        return out


def labelled(n=60, m=5, d=8, seed=0, labels=LABELS, costs=None, max_tokens=None):
    rng = np.random.default_rng(seed)
    texts = [f"ex{i}" for i in range(n)]
    return Problem(pool=unit_rows(rng, n, d), queries=unit_rows(rng, m, d), pool_texts=texts,
                   query_texts=[f"q{j}" for j in range(m)], labels=[labels[i % len(labels)] for i in range(n)],
                   token_costs=costs, max_tokens=max_tokens)


def gold(problem):
    return dict(zip(problem.pool_texts, problem.labels))


def index(text):
    return int(text[2:])


# -- probes and the schedule ------------------------------------------------------------------

def test_probes_are_stratified_seeded_and_leave_each_label_its_demos():
    labels = ["a"] * 30 + ["b"] * 10 + ["c"] * 2
    probes = draw_probes(labels, 12, seed=3, reserve=2)
    assert len(set(probes.tolist())) == 12 and draw_probes(labels, 12, seed=3, reserve=2).tolist() == probes.tolist()
    counts = {y: sum(labels[i] == y for i in probes) for y in "abc"}
    assert counts["c"] == 0  # both c's are the demos' reserve
    assert 7 <= counts["a"] <= 10 and 2 <= counts["b"] <= 4  # in proportion, about 30:10
    first = draw_probes(labels, 4, seed=3, reserve=2)
    assert {labels[i] for i in first} == {"a", "b"}  # a short prefix still covers the labels
    assert draw_probes(labels, 12, seed=4, reserve=2).tolist() != probes.tolist()


def test_hold_out_keeps_k_demos_and_refuses_a_pool_too_small():
    probes = hold_out_probes(["a", "b"] * 10, 60, 4, 0)
    assert len(probes) == 10  # at most half the pool
    with pytest.raises(InputError, match="leaves no probe"):
        hold_out_probes(["a", "b"], 60, 2, 0)


@pytest.mark.parametrize("n, probes, budget, eta", [(32, 60, 960, 3), (9, 20, 300, 2), (16, 60, 960, None), (5, 8, 40, 3)])
def test_the_schedule_never_exceeds_the_budget(n, probes, budget, eta):
    schedule = halving_schedule(n, probes, budget, eta)
    spent, have = 0, 0
    for alive, upto in schedule:
        spent += alive * (upto - have)
        have = upto
        assert upto <= probes
    assert spent <= budget and schedule[0][0] == n and schedule[0][1] >= 1
    assert [a for a, _ in schedule] == sorted((a for a, _ in schedule), reverse=True)


# -- valsearch and random-search ------------------------------------------------------------------

def held_out_everywhere(model, selection):
    """No prompt shows a probe as a demo, and no prompt answers one of its own demos."""
    held = {f"ex{i}" for i in selection.info["held_out"]}
    for shown, text in model.jobs:
        assert text not in shown
        assert not held & set(shown)
        assert text in held  # every selection prompt answers a probe


@pytest.mark.parametrize("make", [
    lambda model, seed: ValidationSearch(model, candidates=12, generators="random,kmeans", probes=16, budget=240, seed=seed),
    lambda model, seed: RandomSearch(model, probes=16, budget=192, seed=seed),
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_planted_good_demo_is_found_within_the_budget(make, seed):
    """The candidates depend on the pool and the seed, not on the LLM: plant the good demo in the
    last candidate (the one a neutral LLM liked least), and the search must return a set with it,
    within its budget."""
    problem = labelled()
    neutral = make(Hashed(), seed).select(problem, 4)
    candidates = neutral.info["candidates"]
    last = min(candidates, key=lambda c: c["score"])["set"]
    key = next(i for i in last if i not in neutral.indices)
    model = Planted(gold(problem), keys={f"ex{key}"})
    selector = make(model, seed)
    selection = selector.select(problem, 4)
    assert [c["set"] for c in selection.info["candidates"]] == [c["set"] for c in candidates]
    assert key in selection.indices
    assert model.prompts == selection.info["prompts"] <= selector.budget
    held_out_everywhere(model, selection)
    assert not set(selection.indices) & set(selection.info["held_out"])
    assert len(selection.indices) == 4 and selection.stopped is None


def test_valsearch_halves_the_candidates_and_traces_each_one():
    problem = labelled(n=90)
    model = Hashed()
    selection = ValidationSearch(model, candidates=27, probes=30, budget=600, eta=3, seed=1).select(problem, 4)
    rounds = selection.info["rounds"]
    assert [r["candidates"] for r in rounds] == [27, 9, 3]
    assert sum(r["prompts"] for r in rounds) == selection.info["prompts"] == model.prompts <= 600
    candidates = selection.info["candidates"]
    assert len(candidates) == 27 and {c["generator"] for c in candidates} == {"go", "kmeans", "votek", "random"}
    assert sum(c["prompts"] for c in candidates) == model.prompts
    best = max((c for c in candidates if c["round"] == 2), key=lambda c: c["score"])
    assert tuple(best["set"]) == selection.indices
    assert all(t["score"] == best["score"] and t["runner_up_score"] <= t["score"] for t in selection.trace)
    # each round's survivors are the best of the round before (on the same probes)
    for r, survivors in ((0, 9), (1, 3)):
        ranked = sorted((c for c in candidates if c["round"] >= r), key=lambda c: -c["scores"][r])
        assert all(c["round"] > r for c in ranked[:survivors]) and all(c["round"] == r for c in ranked[survivors:])
    assert all(len(c["scores"]) == c["round"] + 1 and c["score"] == c["scores"][-1] for c in candidates)


def test_every_prompt_shows_its_demos_in_prompt_order():
    problem = labelled()
    model = Hashed()
    model.jobs = []
    seen = []
    original = model.predict_many
    model.predict_many = lambda jobs: (seen.extend(jobs), original(jobs))[1]
    selection = ValidationSearch(model, candidates=6, probes=10, budget=120, seed=0).select(problem, 4)
    winner = [problem.pool_texts[i] for i in selection.indices]
    shown = [[d.text for d in demos] for demos, _ in seen if {d.text for d in demos} == set(winner)]
    assert shown and all(s == prompt_order(winner) for s in shown)


def test_random_search_scores_every_set_on_the_same_probes():
    problem = labelled()
    model = Hashed()
    selection = RandomSearch(model, candidates=5, probes=12, budget=60, seed=2).select(problem, 4)
    assert [c["prompts"] for c in selection.info["candidates"]] == [12] * 5
    assert model.prompts == 60 and selection.info["probes"] == selection.info["held_out"][:12]
    assert {c["generator"] for c in selection.info["candidates"]} == {"random"}
    assert selection.scores[0] == max(c["score"] for c in selection.info["candidates"])


@pytest.mark.parametrize("cls", [ValidationSearch, RandomSearch])
def test_same_seed_same_selection_other_seed_other_probes(cls):
    problem = labelled()
    run = lambda seed: cls(Hashed(), probes=16, budget=200, seed=seed).select(problem, 4)  # noqa: E731
    a, b, c = run(3), run(3), run(4)
    assert a.indices == b.indices and a.scores == b.scores and a.info == b.info and a.trace == b.trace
    assert a.info["held_out"] != c.info["held_out"]


def test_label_balance_and_token_budget_hold_for_the_chosen_set():
    rng = np.random.default_rng(0)
    costs = rng.integers(3, 30, size=90)
    problem = labelled(n=90, labels=("a", "b", "c"), costs=costs, max_tokens=60)
    selection = ValidationSearch(Hashed(("a", "b", "c")), candidates=9, probes=15, budget=270, seed=0,
                                 label_balance=True).select(problem, 6)
    assert int(costs[list(selection.indices)].sum()) <= 60
    picked = [problem.labels[i] for i in selection.indices]
    assert max(picked.count(y) for y in "abc") <= 2
    balanced = ValidationSearch(Hashed(("a", "b", "c")), candidates=9, probes=15, budget=270, seed=0,
                                label_balance=True).select(labelled(n=90, labels=("a", "b", "c")), 6)
    assert sorted(problem.labels[i] for i in balanced.indices) == ["a", "a", "b", "b", "c", "c"]


def test_per_query_is_the_shared_set_with_its_costs_once():
    problem = labelled(m=4)
    model = Hashed()
    selections = ValidationSearch(model, candidates=6, probes=10, budget=120).select_per_query(problem, 4)
    assert [s.query for s in selections] == [0, 1, 2, 3]
    assert len({s.indices for s in selections}) == 1
    assert sum(s.info["prompts"] for s in selections) == model.prompts


def test_the_valued_generator_seeds_candidates_from_the_top_valued():
    problem = labelled()
    model = Planted(gold(problem), keys={"ex8"})
    selection = ValidationSearch(model, candidates=4, generators="valued", probes=12, budget=96,
                                 valuation_budget=600, seed=0).select(problem, 4)
    assert 8 in selection.indices
    assert selection.info["valuation_prompts"] == 600 and selection.info["labels_read"] == problem.n
    assert selection.info["prompts"] <= 96
    assert {c["generator"] for c in selection.info["candidates"]} == {"valued"}
    # the valuation is the whole pool's, the one `valued` computes: read back, not asked again
    again = Planted(gold(problem), keys={"ex8"})
    assert Valued(again, budget=600).select(problem, 4).info["prompts"] == again.prompts == 0


def test_generators_give_distinct_feasible_sets_and_stop_when_they_repeat():
    problem = labelled()
    sets = generate_sets(problem, 4, ["go", "votek"], 10, seed=0, label_balance=True)
    keys = [tuple(sorted(c.picks)) for c in sets]
    assert len(keys) == len(set(keys)) <= 6  # go: three noises, votek: three graphs, fewer if they coincide
    for c in sets:
        assert sorted(problem.labels[i] for i in c.picks) == ["neg", "neg", "pos", "pos"]


# -- excess loss ----------------------------------------------------------------------------------

def clusters(n=40, seed=0):
    """Two label clusters; ex3 (pos, in the pos cluster) is hard for the LLM but predictable;
    ex5 sits in the pos cluster labelled neg: a mislabelled example the LLM also gets "wrong"."""
    rng = np.random.default_rng(seed)
    labels = ["pos" if i % 2 == 1 else "neg" for i in range(n)]
    labels[3], labels[5] = "pos", "neg"
    centre = {"pos": np.eye(8)[0], "neg": np.eye(8)[1]}
    side = ["pos" if i % 2 == 1 else "neg" for i in range(n)]
    side[5] = "pos"
    pool = np.array([centre[s] + 0.25 * rng.normal(size=8) for s in side])
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries = pool[[3]] + 0.01
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    texts = [f"ex{i}" for i in range(n)]
    return Problem(pool=pool, queries=queries, pool_texts=texts, query_texts=["q0"], labels=labels)


def test_excess_loss_ranks_the_hard_but_correct_example_first_and_flags_the_mislabelled():
    problem = clusters()
    model = Planted(gold(problem), base=0.8, own={"ex3": 0.1, "ex5": 0.02})
    selector = ExcessLoss(model, calibration="none")
    scores = selector.scores(problem)
    assert model.prompts == problem.n  # one zero-shot prompt per example
    assert all(shown == () for shown, _ in model.jobs)
    assert int(np.argmax(scores.rankable())) == 3
    assert scores.noise[5] and not scores.noise[3]
    assert scores.reference[5] > scores.reference[3]
    # target loss alone (no reference) would put the mislabelled example first
    alone = ExcessLoss(Planted(gold(problem), base=0.8, own={"ex3": 0.1, "ex5": 0.02}), reference="none",
                       calibration="none").scores(problem)
    assert int(np.argmax(alone.rankable())) == 5
    first = ExcessLoss(model, calibration="none", weight=10.0).select_per_query(problem, 2)[0]
    assert first.indices[0] == 3 and first.trace[0]["excess"] > 0 and first.trace[0]["suspected_noise"] is False


def test_excess_loss_scores_only_the_shortlists_and_weight_zero_is_knn():
    problem = labelled(n=50, m=3)
    model = Hashed()
    selections = ExcessLoss(model, weight=0.0, shortlist=10).select_per_query(problem, 4)
    knn = KNN(shortlist=None).select_per_query(problem, 4)
    assert [s.indices for s in selections] == [s.indices for s in knn]
    union = {i for j in range(3) for i in np.argsort(-(problem.pool @ problem.queries[j]))[:10]}
    assert model.prompts == len(union) == selections[0].info["prompts"] == selections[0].info["scored"]
    assert sum(s.info["prompts"] for s in selections) == model.prompts


def test_excess_loss_shared_uses_a_go_shortlist_and_a_context_without_the_candidate():
    problem = labelled(n=50)
    model = Planted(gold(labelled(n=50)))
    selection = ExcessLoss(model, context=2, shortlist=8, seed=1).select(problem, 4)
    context = selection.info["context"]
    assert len(context) == 2 and model.prompts == 8
    for shown, text in model.jobs:
        assert text not in shown and len(shown) == (1 if index(text) in context else 2)
    assert len(selection.indices) == 4 and selection.info["labels_read"] == 50


def test_excess_loss_with_a_reference_llm_subtracts_its_loss_on_the_same_prompts():
    problem = clusters()
    target = Planted(gold(problem), base=0.8, own={"ex3": 0.1, "ex5": 0.02})
    # the reference LLM also fails ex5 (its label is wrong for both), not ex3 (hard only for the target)
    reference = Planted(gold(problem), base=0.8, own={"ex5": 0.02})
    selector = ExcessLoss(target, reference="llm", reference_model=reference, calibration="none")
    scores = selector.scores(problem)
    assert reference.jobs == target.jobs  # the same prompts, one each
    assert scores.prompts == 2 * problem.n
    assert int(np.argmax(scores.rankable())) == 3  # the target's loss alone would put ex5 first
    assert scores.excess[5] == pytest.approx(0.0) and scores.noise[5]  # the reference's worst 10% are suspected
    first = ExcessLoss(target, reference="llm", reference_model=reference, calibration="none",
                       weight=10.0).select_per_query(problem, 2)[0]
    assert first.indices[0] == 3 and first.trace[0]["reference_loss"] == pytest.approx(-np.log(0.8), abs=1e-6)
    assert first.info["reference_prompts"] * 2 == first.info["prompts"]
    assert first.info["labels_read"] == first.info["scored"]  # the reference reads no label beyond the scored


def test_excess_loss_reference_llm_unscored_examples_rank_last_and_are_not_noise():
    problem = clusters(n=12)
    reference = Planted(gold(problem), base=0.8)
    selector = ExcessLoss(Hashed(), reference="llm", reference_model=reference, calibration="none", shortlist=4)
    scores = selector.scores(problem, [0, 1, 2, 3])
    assert np.isfinite(scores.reference[:4]).all() and np.isnan(scores.reference[4:]).all()
    assert not scores.noise[4:].any()
    assert (scores.rankable()[4:] < scores.rankable()[:4].min()).all()


def test_the_default_reference_llm_is_a_model_fewshot_can_serve():
    from fewshot.llm.server import MODELS
    from fewshot.selection.feedback import REFERENCE_LLM

    assert REFERENCE_LLM in MODELS and REFERENCE_LLM != "gemma3-270m"


def test_excess_loss_reference_llm_needs_a_model_before_any_prompt():
    problem = clusters(n=12)
    target = Planted(gold(problem))
    with pytest.raises(InputError, match="reference LLM.*smollm2-135m"):
        ExcessLoss(target, reference="llm").select_per_query(problem, 2)
    assert target.prompts == 0
    with pytest.raises(InputError, match="reference_llm"):
        ExcessLoss(reference="llm", reference_llm="  ")
    # a name where the object goes: the error says where a name goes
    with pytest.raises(InputError, match="must be an object .* give reference=llm reference_llm=NAME"):
        ExcessLoss(reference_model="smollm2-135m")
    # a reference LLM without reference="llm" would be silently unused: refused before any prompt
    for given in ({"reference_llm": "other"}, {"reference_model": Planted(gold(problem))}):
        with pytest.raises(InputError, match="used only with reference='llm'") as refused:
            ExcessLoss(target, **given).select_per_query(problem, 2)
        assert refused.value.field == "reference"
    assert target.prompts == 0


def test_reference_losses_are_cross_fitted():
    rng = np.random.default_rng(0)
    pool = np.concatenate([rng.normal(size=(20, 4)) + 3, rng.normal(size=(20, 4)) - 3])
    labels = ["a"] * 20 + ["b"] * 20
    labels[0] = "b"  # a mislabelled point: a memorising model would fit it, a cross-fitted one cannot
    losses = reference_losses(pool, labels, seed=0)
    assert losses[0] > 2 and np.median(losses[1:]) < 0.1
    assert reference_losses(pool, ["a"] * 40).tolist() == [0.0] * 40


# -- valued ---------------------------------------------------------------------------------------

def test_valued_prunes_a_harmful_example_before_retrieval():
    problem = labelled()
    poison = 11
    problem = Problem(pool=problem.pool, queries=problem.pool[[poison]], pool_texts=problem.pool_texts,
                      query_texts=["q0"], labels=problem.labels)
    assert KNN().select_per_query(problem, 4)[0].indices[0] == poison  # the query's nearest neighbour
    model = Planted(gold(problem), poison={f"ex{poison}"}, base=0.6)
    selections = Valued(model, inner="knn", drop=0.2, budget=600, seed=0).select_per_query(problem, 4)
    assert poison in selections[0].info["dropped"] and poison not in selections[0].indices
    assert len(selections[0].info["dropped"]) == 12 and selections[0].info["prompts"] == model.prompts == 600
    assert all(t["value"] is not None for t in selections[0].trace)
    again = Planted(gold(problem), poison={f"ex{poison}"}, base=0.6)
    assert Valued(again, drop=0.2, budget=600).select_per_query(problem, 4)[0].indices == selections[0].indices
    assert again.prompts == 0  # every valuation prompt came from the store


# -- SAL on probes --------------------------------------------------------------------------------

def test_sal_probes_picks_the_planted_demo_within_budget():
    problem = labelled(n=30)
    model = Planted(gold(problem), keys={"ex12"})
    selector = SALProbes(model, shortlist=None, probes=6, budget=300, seed=0)
    selection = selector.select(problem, 2)
    assert 12 not in selection.info["held_out"]
    assert selection.indices[0] == 12
    assert model.prompts == selection.info["prompts"] <= 300
    held_out_everywhere(model, selection)
    assert selection.trace[0]["runner_up_score"] < selection.trace[0]["score"]


def test_sal_probes_is_deterministic_and_refuses_a_budget_too_small():
    problem = labelled()
    a = SALProbes(Hashed(), seed=5).select(problem, 3)
    b = SALProbes(Hashed(), seed=5).select(problem, 3)
    assert a == b
    model = Hashed()
    with pytest.raises(InputError, match="budget=10 prompts cannot"):
        SALProbes(model, budget=10).select(problem, 3)
    assert model.prompts == 0


# -- what every method asks for before any prompt ---------------------------------------------------

MAKERS = {
    "valsearch": lambda model: ValidationSearch(model, candidates=4, probes=8, budget=64),
    "random-search": lambda model: RandomSearch(model, probes=8, budget=64),
    "excess-loss": lambda model: ExcessLoss(model),
    "valued": lambda model: Valued(model, budget=60),
    "sal-probes": lambda model: SALProbes(model),
}


@pytest.mark.parametrize("method", sorted(MAKERS))
@pytest.mark.parametrize("per_query", [False, True])
def test_labels_and_an_llm_are_required_before_any_prompt(method, per_query):
    problem = labelled()
    model = Hashed()
    run = lambda selector, p: selector.select_per_query(p, 4) if per_query else selector.select(p, 4)  # noqa: E731
    unlabeled = Problem(pool=problem.pool, queries=problem.queries, pool_texts=problem.pool_texts,
                        query_texts=problem.query_texts, labels=[None] * problem.n)
    with pytest.raises(InputError, match="reads the labels of the pool"):
        run(MAKERS[method](model), unlabeled)
    with pytest.raises(InputError, match="reads the labels of the pool"):
        run(MAKERS[method](model), Problem(pool=problem.pool, queries=problem.queries, pool_texts=problem.pool_texts))
    with pytest.raises(InputError, match="needs an LLM"):
        run(MAKERS[method](None), problem)
    regression = Hashed()
    regression.task = "regression"
    with pytest.raises(InputError, match="classification"):
        run(MAKERS[method](regression), problem)
    assert model.prompts == regression.prompts == 0


@pytest.mark.parametrize("method", ["valsearch", "random-search"])
def test_a_budget_too_small_fails_before_any_prompt(method):
    model = Hashed()
    selector = MAKERS[method](model).set_params(budget=1)
    with pytest.raises(InputError, match="budget=1 prompts cannot"):
        selector.select(labelled(), 4)
    assert model.prompts == 0


def test_parameters_are_checked():
    with pytest.raises(InputError, match="generators="):
        ValidationSearch(generators="go,bogus")
    with pytest.raises(InputError, match="metric="):
        RandomSearch(metric="acc")
    with pytest.raises(InputError, match="drop="):
        Valued(drop=1.0)
    with pytest.raises(InputError, match="inner="):
        Valued(inner="sal")
    with pytest.raises(InputError, match="noise_quantile="):
        ExcessLoss(noise_quantile=1.0)
    assert ValidationSearch().clone(budget=100).budget == 100


@pytest.mark.parametrize("method", ["excess-loss", "valued"])
@pytest.mark.parametrize("per_query", [False, True])
def test_excess_loss_and_valued_are_deterministic(method, per_query):
    problem = labelled(m=3)
    make = {"excess-loss": lambda seed: ExcessLoss(Hashed(), context=2, seed=seed),
            "valued": lambda seed: Valued(Hashed(), budget=120, cache=False, seed=seed)}[method]
    run = lambda seed: make(seed).select_per_query(problem, 4) if per_query else [make(seed).select(problem, 4)]  # noqa: E731
    assert run(3) == run(3)
    assert run(3) != run(4)  # the seed moves the context (excess-loss) or the valuation's sets (valued)


# -- picks pinned: a refactor of the selectors must not move them ------------------------------------

PINNED = {  # method: (shared picks, each query's picks), on labelled(m=3), k=4, the Hashed LLM
    "valsearch": (lambda model: ValidationSearch(model, candidates=6, probes=8, budget=96, seed=3,
                                                 generators="valued,random,go", valuation_budget=120),
                  (20, 43, 42, 15), [(20, 43, 42, 15)] * 3),
    "random-search": (lambda model: RandomSearch(model, probes=8, budget=64, seed=2),
                      (16, 2, 18, 55), [(16, 2, 18, 55)] * 3),
    "excess-loss": (lambda model: ExcessLoss(model, context=2, seed=1),
                    (20, 53, 37, 42), [(29, 45, 51, 47), (37, 53, 20, 12), (46, 20, 36, 23)]),
    "valued": (lambda model: Valued(model, budget=120, cache=False, seed=4),
               (29, 23, 37, 17), [(29, 47, 57, 28), (53, 37, 40, 25), (23, 36, 59, 25)]),
    "sal-probes": (lambda model: SALProbes(model, seed=5),
                   (53, 43, 37, 42), [(11, 3, 16, 29), (40, 7, 14, 16), (16, 1, 17, 46)]),
}


@pytest.mark.parametrize("method", sorted(PINNED))
def test_the_picks_for_a_fixed_problem_and_seed_stay_as_pinned(method):
    make, shared, per_query = PINNED[method]
    problem = labelled(m=3)
    assert make(Hashed()).select(problem, 4).indices == shared
    assert [s.indices for s in make(Hashed()).select_per_query(problem, 4)] == per_query


def test_recorded_numbers_are_json_safe_rounded_where_the_trace_rounds():
    problem = labelled(m=3)
    excess = ExcessLoss(Hashed(), context=2, seed=1).select(problem, 4)
    assert excess.trace[0]["target_loss"] == 2.427295 and excess.trace[0]["excess"] == 1.621998  # 6 digits
    valued = Valued(Hashed(), budget=120, cache=False, seed=4).select(problem, 4)
    assert valued.trace[0]["value"] is None and valued.trace[1]["value"] == 0.06059  # unvalued: None, not NaN
    assert valued.info["reliability"] == 0.1711722825928954  # info keeps the whole number


def test_sal_probes_shortlists_as_sal_does_with_the_same_parameters():
    problem = labelled(m=6)
    selection = SALProbes(Hashed(), shortlist=5, query_sample=3, ridge=0.5, noise=0.2, seed=2).select(problem, 3)
    sal = SAL(shortlist=5, query_sample=3, ridge=0.5, noise=0.2, seed=2)
    sample = sal.sampled_queries(problem)
    open_ = np.ones(problem.n, dtype=bool)
    open_[selection.info["held_out"]] = False  # probes are never candidates
    chosen = []
    for step in selection.trace:
        assert step["shortlist"] == sal.shortlist_candidates(problem, sample, chosen, open_).tolist()
        chosen.append(step["index"])
        open_[step["index"]] = False
    assert selection.info["queries_sampled"] == 3
