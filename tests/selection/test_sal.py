"""SAL reduces to GO when the "LLM" is an exact Bayesian linear model (the paper's equivalence)."""

import numpy as np
import pytest

from fewshot.errors import InputError
from fewshot.models import Prediction
from fewshot.selection import GO, SAL, Problem, make_selector
from tests.conftest import unit_rows


class LinearGaussianModel:
    """Test double: an exact Bayesian linear model over known vectors, answering with +-1 sd samples."""

    def __init__(self, vectors, texts, ridge=1.0, noise=0.1):
        self.vec = {t: v for t, v in zip(texts, vectors)}
        self.ridge, self.noise = ridge, noise
        self.calls = 0

    def predict(self, demos, text):
        self.calls += 1
        d = len(next(iter(self.vec.values())))
        X = np.array([self.vec[e.text] for e in demos]).reshape(-1, d)
        y = np.array([float(e.label) for e in demos])
        sigma = np.linalg.inv(self.ridge * np.eye(d) + X.T @ X / self.noise)
        phi = self.vec[text]
        mean, sd = phi @ sigma @ X.T @ y / self.noise, np.sqrt(phi @ sigma @ phi)
        return Prediction(samples=(mean - sd, mean + sd))

    def predict_many(self, jobs):
        return [self.predict(demos, text) for demos, text in jobs]


def linear_problem(seed, n=30, m=12, d=5):
    rng = np.random.default_rng(seed)
    pool, queries = unit_rows(rng, n, d).astype(np.float64), unit_rows(rng, m, d).astype(np.float64)
    theta = rng.normal(size=d)
    texts = [f"x{i}" for i in range(n + m)]
    labels = [f"{v:.6f}" for v in pool @ theta]
    return Problem(pool=pool, queries=queries, pool_texts=texts[:n], query_texts=texts[n:], labels=labels), \
        np.concatenate([pool, queries]), texts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sal_equals_go_on_a_linear_task(seed):
    problem, vectors, texts = linear_problem(seed)
    model = LinearGaussianModel(vectors, texts)
    sal = SAL(model=model, shortlist=None, query_sample=None, ridge=1.0, noise=0.1).select(problem, 5)
    go = GO(objective="v", ridge=1.0, noise=0.1).select(problem, 5)
    assert sal.indices == go.indices
    assert sal.info["prompts"] == model.calls


def test_sal_per_query_equals_go_per_query():
    problem, vectors, texts = linear_problem(4, m=3)
    sal = SAL(model=LinearGaussianModel(vectors, texts), shortlist=None).select_per_query(problem, 4)
    go = GO(shortlist=None).select_per_query(problem, 4)
    assert [s.indices for s in sal] == [g.indices for g in go]


def test_shortlist_and_sample_bound_the_calls():
    problem, vectors, texts = linear_problem(0, n=30, m=12)
    model = LinearGaussianModel(vectors, texts)
    selection = SAL(model=model, shortlist=4, query_sample=3, seed=1).select(problem, 3)
    # per round: 4 candidates x (1 + 2 samples x 3 queries)
    assert model.calls == selection.info["prompts"] == 3 * 4 * (1 + 2 * 3)
    assert [t["prompts"] for t in selection.trace] == [4 * (1 + 2 * 3)] * 3
    assert len(set(selection.indices)) == 3


def test_sal_without_labels_or_oracle_is_a_clear_error():
    problem, vectors, texts = linear_problem(0)
    unlabeled = Problem(pool=problem.pool, queries=problem.queries, pool_texts=problem.pool_texts,
                        query_texts=problem.query_texts, labels=[None] * problem.n)
    with pytest.raises(InputError, match="no label and SAL has no oracle"):
        SAL(model=LinearGaussianModel(vectors, texts)).select(unlabeled, 2)


def test_pruned_pool_asks_the_oracle_about_the_example_sal_picked():
    """With --prune-to, SAL sees pruned indices; the oracle must be asked about the same example."""
    from fewshot.pipeline import run_selection

    problem, vectors, texts = linear_problem(5, n=40)
    asked = []

    def oracle(index):
        asked.append(index)
        return problem.labels[index]

    unlabeled = Problem(pool=problem.pool, queries=problem.queries, pool_texts=problem.pool_texts,
                        query_texts=problem.query_texts, labels=[None] * problem.n)
    sal = SAL(model=LinearGaussianModel(vectors, texts), oracle=oracle, shortlist=None, query_sample=None)
    run = run_selection(sal, unlabeled, 4, prune_to=20, seed=0)
    picked = run.selections[0].indices
    assert sorted(asked) == sorted(picked)
    assert [t["label"] for t in run.selections[0].trace] == [problem.labels[i] for i in picked]


class InFlight:
    """The same model behind an LLM client that keeps ``concurrency`` requests in flight."""

    def __init__(self, model, concurrency):
        self.model, self.seen = model, []
        self.client = type("Client", (), {"concurrency": concurrency})()

    def predict_many(self, jobs):
        self.seen.append([(len(demos), (demos[-1].text, demos[-1].label) if demos else None, text)
                          for demos, text in jobs])
        return self.model.predict_many(jobs)


def test_simulated_prompts_are_sent_demo_set_by_demo_set_with_the_same_picks():
    """With 2 requests in flight, two candidates' prompts go side by side, each candidate's
    queries in turn (so each server slot computes one demo set once); the picks do not change."""
    problem, vectors, texts = linear_problem(0)
    plain = SAL(model=LinearGaussianModel(vectors, texts), shortlist=3, query_sample=4).select(problem, 3)
    wrapped = InFlight(LinearGaussianModel(vectors, texts), 2)
    chosen = SAL(model=wrapped, shortlist=3, query_sample=4).select(problem, 3)
    assert chosen.indices == plain.indices and chosen.scores == plain.scores
    simulated = wrapped.seen[1]  # round 1: 3 candidates x 2 samples (hypotheses) = 6 demo sets x 4 queries
    sets = [demo for _, demo, _ in simulated]
    assert len(simulated) == 24 and sets[:4] == [sets[0], sets[1], sets[0], sets[1]] and sets[0] != sets[1]
    assert [len(set(sets[i:i + 8])) for i in (0, 8, 16)] == [2, 2, 2]  # demo sets in pairs
    assert [text for _, _, text in simulated[:8:2]] == [text for _, _, text in simulated[1:8:2]]  # queries in turn


class RecordingModel:
    """Test double that records every prompt's demo order; answers from a fixed table."""

    def __init__(self, answer):
        self.answer, self.jobs = answer, []

    def predict_many(self, jobs):
        self.jobs += [([d.text for d in demos], text) for demos, text in jobs]
        return [self.answer(demos, text) for demos, text in jobs]


def test_simulated_prompts_show_demos_as_the_final_prompt_does():
    problem, _, _ = linear_problem(5, n=6, m=2)
    model = RecordingModel(lambda demos, text: Prediction(probs={"a": 0.6, "b": 0.4}))
    first, second, _ = SAL(model=model, shortlist=None, query_sample=None, oracle=lambda i: "a").select(problem, 3).indices
    # the final prompt shows the first pick nearest the query: ..., second, first, query. So in the
    # third round a candidate x is simulated as x, second, first, and x's own label is asked given second, first
    shown = [problem.pool_texts[second], problem.pool_texts[first]]
    third_round = [demos for demos, _ in model.jobs if set(shown) <= set(demos)]
    assert third_round and all(demos[-2:] == shown for demos in third_round)
    assert {len(demos) for demos in third_round} == {2, 3}


def test_a_candidate_without_parsable_answers_never_wins():
    """Regression: a candidate whose simulated answer had no number scored 0 uncertainty and won."""
    problem, _, _ = linear_problem(6, n=5, m=2)
    silent = problem.pool_texts[0]

    def answer(demos, text):
        if text == silent or any(d.text == silent for d in demos):
            return Prediction(samples=())
        return Prediction(samples=(1.0, 2.0))

    picks = SAL(model=RecordingModel(answer), shortlist=None, query_sample=None).select(problem, 1)
    assert picks.indices != (0,) and np.isfinite(picks.trace[0]["loss"])


def collapse_or_sort(problem, collapser, sorter):
    """Classification double: after demo ``collapser`` the model answers "a" for every query with
    certainty; after ``sorter`` it answers each query by its index parity and the sorter's label,
    confidently but varied; otherwise it is unsure. The candidate's own label is a coin flip."""
    def answer(demos, text):
        shown = {d.text for d in demos}
        if text in problem.pool_texts:
            return Prediction(probs={"a": 0.5, "b": 0.5})
        if problem.pool_texts[collapser] in shown:
            return Prediction(probs={"a": 0.99, "b": 0.01})
        if problem.pool_texts[sorter] in shown:  # its label decides which half of the queries is "a"
            label = next(d.label for d in demos if d.text == problem.pool_texts[sorter])
            even = (problem.query_texts.index(text) % 2 == 0) == (label == "a")
            return Prediction(probs={"a": 0.95, "b": 0.05} if even else {"a": 0.05, "b": 0.95})
        return Prediction(probs={"a": 0.6, "b": 0.4})
    return RecordingModel(answer)


@pytest.mark.parametrize("objective, wins", [("entropy", "collapser"), ("mi", "sorter"), ("epig", "sorter")])
def test_entropy_rewards_label_collapse_and_mi_and_epig_do_not(objective, wins):
    problem, _, _ = linear_problem(7, n=6, m=4)
    model = collapse_or_sort(problem, collapser=1, sorter=4)
    pick = SAL(model=model, objective=objective, shortlist=None, query_sample=None, oracle=lambda i: "a").select(problem, 1)
    assert pick.indices == ((1,) if wins == "collapser" else (4,))
    assert pick.trace[0]["objective"] == objective


def test_batch_calibration_turns_label_collapse_into_no_information():
    """A demo after which every query gets the same confident answer wins the entropy objective;
    divided by its mean over the sampled queries, that answer is uniform, so it loses."""
    problem, _, _ = linear_problem(8, n=4, m=4)
    collapser = problem.pool_texts[2]

    def answer(demos, text):
        if text in problem.pool_texts:
            return Prediction(probs={"a": 0.5, "b": 0.5})
        if any(d.text == collapser for d in demos):
            return Prediction(probs={"a": 0.99, "b": 0.01})
        lean = 0.6 if problem.query_texts.index(text) % 2 == 0 else 0.4  # the mean is (0.5, 0.5)
        return Prediction(probs={"a": lean, "b": 1 - lean})

    def pick(calibration):
        return SAL(model=RecordingModel(answer), shortlist=None, query_sample=None, oracle=lambda i: "a",
                   objective="entropy", calibration=calibration).select(problem, 1)

    assert pick("none").indices == (2,)
    calibrated = pick("batch")
    assert calibrated.indices == (0,)  # the other candidates tie; the lowest index wins
    assert calibrated.trace[0]["loss"] == pytest.approx(-(0.6 * np.log(0.6) + 0.4 * np.log(0.4)))


def test_unknown_objective_or_calibration_is_a_clear_error():
    with pytest.raises(InputError, match="objective='entropyy' for method 'sal' must be one of 'entropy', 'mi', 'epig'"):
        SAL(objective="entropyy")
    with pytest.raises(InputError, match="calibration='contextual' for method 'sal' must be one of 'none', 'batch'"):
        SAL(calibration="contextual")


@pytest.mark.parametrize("build", [lambda: SAL(query_sample=0), lambda: make_selector("sal", query_sample=0)])
def test_an_empty_query_sample_is_refused(build):
    """query_sample=0 used to pass: no query was simulated, every loss was inf, and SAL picked the
    lowest pool indices."""
    with pytest.raises(InputError, match=r"query_sample=0 for method 'sal' must be int >= 1 or None"):
        build()


def test_the_shortlist_holds_no_duplicates_of_the_best_candidate():
    """The top GO gains alone would be three copies of one sentence; the shortlist conditions on
    each example it takes, so a copy of one already taken has no gain left."""
    problem, vectors, texts = linear_problem(9, n=20, m=6)
    best = int(np.argmax(GO(objective="v").gains(Problem(pool=problem.pool, queries=problem.queries), [])))
    pool = np.concatenate([problem.pool, problem.pool[[best, best]]])
    copies = Problem(pool=pool, queries=problem.queries, pool_texts=[*problem.pool_texts, "copy1", "copy2"],
                     query_texts=problem.query_texts, labels=[*problem.labels, "0", "0"])
    sal = SAL(shortlist=4, query_sample=None)
    shortlist = sal.shortlist_candidates(copies, np.arange(6), [], np.ones(22, dtype=bool))
    assert len(shortlist) == 4 and len({tuple(pool[i]) for i in shortlist}) == 4
    assert best in shortlist


def test_label_coverage_prefers_a_candidate_with_a_label_not_yet_shown():
    """Round 2: the lowest loss belongs to a candidate the model reads as "a", the label already
    revealed; with label coverage only the candidates it reads as "b" compete."""
    problem, _, _ = linear_problem(10, n=5, m=2)
    first, favourite, other_b = 0, 1, 3

    def answer(demos, text):
        if text in problem.pool_texts:  # the candidate's own label
            b = problem.pool_texts.index(text) in (other_b, 4)
            return Prediction(probs={"a": 0.2, "b": 0.8} if b else {"a": 0.8, "b": 0.2})
        if any(d.text == problem.pool_texts[favourite] for d in demos):
            return Prediction(probs={"a": 0.99, "b": 0.01})
        return Prediction(probs={"a": 0.6, "b": 0.4})

    def picks(coverage):
        sal = SAL(model=RecordingModel(answer), shortlist=None, query_sample=None, oracle=lambda i: "a",
                  objective="entropy", label_coverage=coverage)
        return sal.select(problem, 2)

    plain, covered = picks(False), picks(True)
    # round 1 picks the favourite either way (nothing is revealed yet, so coverage decides nothing)
    assert plain.indices[0] == covered.indices[0] == favourite and not covered.trace[0]["covering_only"]
    assert plain.indices[1] == first  # after the favourite every candidate ties: the lowest index
    assert covered.indices[1] in (other_b, 4) and covered.trace[1]["covering_only"]


def test_per_query_mi_scores_by_entropy_instead_of_ignoring_the_model():
    """Mutual information over one query is 0 for every candidate; per query SAL must still follow
    the model (here: only demo 5 makes each query certain)."""
    problem, _, _ = linear_problem(11, n=8, m=2)

    def answer(demos, text):
        if any(d.text == problem.pool_texts[5] for d in demos):
            return Prediction(probs={"a": 0.99, "b": 0.01})
        return Prediction(probs={"a": 0.5, "b": 0.5})

    for selection in SAL(model=RecordingModel(answer), shortlist=None, oracle=lambda i: "a").select_per_query(problem, 1):
        assert selection.indices == (5,) and selection.trace[0]["objective"] == "entropy"
    with pytest.raises(InputError, match=r"shortlist=0 for method 'sal' must be int >= 1 or None"):
        SAL(shortlist=0)


def test_the_query_sample_is_seeded_sorted_and_every_query_when_it_asks_for_as_many():
    problem, _, _ = linear_problem(0, n=30, m=12)
    sample = SAL(query_sample=5, seed=3).sampled_queries(problem)
    assert len(sample) == 5 and len(set(sample.tolist())) == 5 and sample.tolist() == sorted(sample.tolist())
    assert sample.tolist() == SAL(query_sample=5, seed=3).sampled_queries(problem).tolist()
    assert sample.tolist() != SAL(query_sample=5, seed=4).sampled_queries(problem).tolist()
    assert SAL(query_sample=None).sampled_queries(problem).tolist() == list(range(12))
    assert SAL(query_sample=12).sampled_queries(problem).tolist() == list(range(12))
