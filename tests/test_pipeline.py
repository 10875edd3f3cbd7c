"""fewshot.pipeline: the plain-parameter checks, one default mode per method, annotate-then-retrieve
under a token budget (R1), SAL's wiring and cost report (R16), records and metadata."""

from dataclasses import replace

import numpy as np
import pytest

from fewshot.data import Example
from fewshot.errors import InputError
from fewshot.models import Prediction
from fewshot.pipeline import Request, build_problem, demo_records, run_meta, run_selection, select_examples
from fewshot.prompts import load_template
from fewshot.selection import KNN, Problem, Random
from tests.conftest import unit_rows

TEMPLATE = load_template("classification")


def examples(n, labeled=True):
    return [Example(f"p{i}", f"example text {i}", ("neg", "pos")[i % 2] if labeled else None) for i in range(n)]


def vectors(n, m, seed=0):
    rng = np.random.default_rng(seed)
    return unit_rows(rng, n, 8), unit_rows(rng, m, 8)


class Stub:
    """A PredictiveModel that answers every prompt the same and counts them."""

    labels = ("neg", "pos")

    def __init__(self):
        self.prompts = 0

    def predict_many(self, jobs):
        self.prompts += len(jobs)
        return [Prediction(probs={"neg": 0.3, "pos": 0.7}) for _ in jobs]


@pytest.mark.parametrize("request_, message", [
    (Request("go", k=0), "k=0 must be at least 1"),
    (Request("go", k=-1), "k=-1 must be at least 1"),
    (Request("go", k=4, label_budget=3), "label_budget=3 is smaller than k=4"),
    (Request("go", k=4, max_tokens=0), "max_tokens=0 must be positive"),
    (Request("go", k=4, prune_to=3), "prune_to=3 is smaller than k=4"),
    (Request("go", k=4, prune_to=10, label_budget=16), "prune_to=10 is smaller than label_budget=16"),
    (Request("go", k=4, prune_policy="middle"), "unknown pruning policy 'middle'"),
    (Request("nope", k=4), "unknown method 'nope'"),
    (Request("go", k=4, label_budget=8, retriever="nope"), "unknown method 'nope'"),
    (Request("go", k=4, params={"nosie": 0.1}), "unknown parameter 'nosie'"),
    (Request("go", k=4, params={"seed": 1}), "field '--param': seed is set by --seed"),
    (Request("go", k=4, label_budget=8, retriever="mmr", retriever_params={"label_balance": True}),
     "field '--retriever-param': label_balance is set by --label-balance"),
])
def test_plain_parameters_are_checked_before_any_work(request_, message):
    with pytest.raises(InputError, match=message):
        request_.check()


def test_one_default_mode_per_method_name():
    for method in ("knn", "mmr", "bm25", "dpp"):
        assert Request(method).per_query_mode
    for method in ("go", "random", "kmeans", "votek", "sal"):
        assert not Request(method).per_query_mode
    assert Request("go", label_budget=16).per_query_mode  # knn retrieves the demos shown
    assert not Request("go", label_budget=16, retriever="go").per_query_mode
    assert not Request("knn", per_query=False).per_query_mode and Request("go", per_query=True).per_query_mode


def test_label_budget_is_not_shrunk_by_the_token_budget():
    """R1: a token budget for one prompt's demos must not cut the B examples to label."""
    pool = examples(30)
    pool_vectors, query_vectors = vectors(30, 3)
    problem = build_problem(pool, [Example("q", "q")] * 3, pool_vectors=pool_vectors, query_vectors=query_vectors,
                            template=TEMPLATE, max_tokens=25)
    assert problem.token_costs.max() <= 12  # so 2 demos fit one prompt, 3 do not
    run = run_selection(Random(seed=1), problem, 2, per_query=True, label_budget=10, retriever=KNN())
    assert len(run.annotated.indices) == 10 and run.annotated.stopped is None
    for selection in run.selections:
        assert set(selection.indices) <= set(run.annotated.indices)
        assert problem.token_costs[list(selection.indices)].sum() <= 25


def test_token_budget_still_bounds_each_prompt_under_a_label_budget():
    pool = examples(30)
    pool_vectors, query_vectors = vectors(30, 2)
    problem = build_problem(pool, [Example("q", "q")] * 2, pool_vectors=pool_vectors, query_vectors=query_vectors,
                            template=TEMPLATE, max_tokens=25)
    run = run_selection(Random(seed=1), problem, 4, per_query=True, label_budget=10, retriever=KNN())
    assert all(len(s.indices) == 2 and s.stopped == "token budget exhausted" for s in run.selections)


def test_a_too_small_token_budget_is_refused_before_embedding():
    class Refuses:
        model_id = "refuses"

        def embed(self, texts):
            raise AssertionError("embedded before the token budget was checked")

    with pytest.raises(InputError, match="every demo alone exceeds --max-tokens 3 .shortest is id p"):
        build_problem(examples(4), [Example("q", "q")], embedder=Refuses(), template=TEMPLATE, max_tokens=3)


def test_sal_cost_and_trace_under_a_label_budget():
    """R16: SAL's prompts are counted where its selection is (the label budget's picks), and the
    trace in the metadata is SAL's, with the labels its oracle revealed."""
    pool, queries = examples(12), [Example(f"q{j}", f"query {j}") for j in range(3)]
    pool_vectors, query_vectors = vectors(12, 3)
    model = Stub()
    request = Request("sal", k=2, label_budget=4)
    run = select_examples(pool, queries, request, template=TEMPLATE, pool_vectors=pool_vectors,
                          query_vectors=query_vectors, llm=model)
    assert run.llm["simulated_calls"] == model.prompts > 0
    assert run.llm["naive_calls"] == 12 * (1 + 2 * 3) * 4
    meta = run_meta(run, request, pool, queries, embedder=None, template=TEMPLATE)
    assert [t["index"] for t in meta["trace"][0]] == list(run.annotated.indices)
    assert all(t["label"] == pool[t["index"]].label for t in meta["trace"][0])
    assert meta["retriever_trace"] and meta["per_query"] is True and meta["llm"] == run.llm
    assert run.label_set == ["neg", "pos"] and meta["annotation_stopped"] is None


def test_sal_on_an_unlabeled_pool_asks_the_oracle_and_records_show_the_answers(tmp_path):
    pool, queries = examples(8, labeled=False), [Example("q0", "query")]
    pool_vectors, query_vectors = vectors(8, 1)
    asked = []

    def person(example, labels):
        asked.append(example.id)
        return "pos"

    run = select_examples(pool, queries, Request("sal", k=2), template=TEMPLATE, pool_vectors=pool_vectors,
                          query_vectors=query_vectors, llm=Stub(), labels=["neg", "pos"],
                          journal=tmp_path / "typed.jsonl", ask=person)
    records = demo_records(run, pool, queries)
    assert [r["id"] for r in records] == asked and all(r["label"] == "pos" and not r["needs_label"] for r in records)
    assert run.to_label(pool) == []


def test_sal_without_a_label_set_fails_before_embedding():
    with pytest.raises(InputError, match="SAL needs the label set"):
        select_examples(examples(4, labeled=False), [Example("q", "q")], Request("sal", k=2), template=TEMPLATE,
                        embedder=None)


def test_records_are_in_pick_order_with_ranks():
    pool = examples(6)
    pool_vectors, query_vectors = vectors(6, 2)
    problem = Problem(pool=pool_vectors, queries=query_vectors)
    run = run_selection(KNN(), problem, 3, per_query=True)
    records = demo_records(run, pool, [Example("a", "a"), Example("b", "b")])
    assert [r["rank"] for r in records] == [1, 2, 3, 1, 2, 3] and [r["query_id"] for r in records[:3]] == ["a"] * 3
    assert [r["pool_index"] for r in records[:3]] == list(run.selections[0].indices)


# -- the methods that read the pool's labels and consult an LLM (issue 18) ---------------------------

class Refuses:
    """An embedder and an LLM that must not be reached."""

    model_id = "refuses"

    def embed(self, texts):
        raise AssertionError("embedded before the labels were checked")

    def predict_many(self, jobs):
        raise AssertionError("the LLM was asked before the labels were checked")


def test_an_llm_feedback_method_gets_the_llm_and_reports_its_selection_prompts():
    pool, queries = examples(40), [Example(f"q{j}", f"query {j}") for j in range(3)]
    pool_vectors, query_vectors = vectors(40, 3)
    model = Stub()
    request = Request("valsearch", k=2, params={"candidates": 4, "probes": 8, "budget": 32})
    run = select_examples(pool, queries, request, template=TEMPLATE, pool_vectors=pool_vectors,
                          query_vectors=query_vectors, llm=model)
    assert run.llm["selection_prompts"] == model.prompts == run.selections[0].info["prompts"] > 0
    assert "naive_calls" not in run.llm and run.label_set == ["neg", "pos"]
    assert not set(run.selections[0].indices) & set(run.selections[0].info["held_out"])
    meta = run_meta(run, request, pool, queries, embedder=None, template=TEMPLATE)
    assert meta["llm"]["selection_prompts"] == model.prompts and "model" not in meta["params"]
    # every candidate set with its generator and probe score, as the issue asks of valsearch's trace
    assert [c["set"] for c in meta["selection_info"]["candidates"]] == [
        c["set"] for c in run.selections[0].info["candidates"]] and len(meta["selection_info"]["candidates"]) == 4


def test_excess_loss_opens_its_reference_llm_by_name_on_the_targets_endpoint(monkeypatch):
    import contextlib

    import fewshot.llm.server as server

    opened = []

    class Client:
        api, model = "completions", "fake"

        def label_probs(self, prompt, labels):
            from fewshot.llm.client import LabelScores
            return LabelScores(tuple(labels), np.array([0.6, 0.4]))

        def map(self, fn, items):
            return [fn(x) for x in items]

    @contextlib.contextmanager
    def endpoint(base_url=None, model=None, api_key=None, **options):
        opened.append((base_url, model))
        yield Client()

    monkeypatch.setattr(server, "llm_endpoint", endpoint)
    pool, queries = examples(30), [Example(f"q{j}", f"query {j}") for j in range(2)]
    pool_vectors, query_vectors = vectors(30, 2)
    target = Stub()
    request = Request("excess-loss", k=2, params={"reference": "llm", "reference_llm": "tiny", "shortlist": 5})
    run = select_examples(pool, queries, request, template=TEMPLATE, pool_vectors=pool_vectors,
                          query_vectors=query_vectors, llm=target)
    assert opened == [(None, "tiny")]
    assert run.llm["selection_prompts"] == 2 * target.prompts > 0  # the reference answered the same prompts
    meta = run_meta(run, request, pool, queries, embedder=None, template=TEMPLATE)
    assert meta["params"]["reference_llm"] == "tiny" and "reference_model" not in meta["params"]
    assert meta["llm"]["references"]["tiny"]["model"] == "fake" and "stats" in meta["llm"]["references"]["tiny"]
    opened.clear()  # a base URL for the target: the reference is asked for on the same endpoint
    select_examples(pool, queries, request, template=TEMPLATE, pool_vectors=pool_vectors, query_vectors=query_vectors,
                    llm="http://127.0.0.1:9/v1", endpoint={"model": "big"})
    assert opened == [("http://127.0.0.1:9/v1", "big"), ("http://127.0.0.1:9/v1", "tiny")]


@pytest.mark.parametrize("served, namespace, message", [
    (["gemma3-270m"], "other-file", "serves gemma3-270m, not the reference LLM 'tiny'"),
    (None, "target-file", "is the target LLM itself")])
def test_a_reference_llm_that_would_answer_as_the_target_is_refused(monkeypatch, served, namespace, message):
    import contextlib

    import fewshot.llm.server as server
    from fewshot.pipeline import open_reference

    class Client:
        base_url, stats = "http://127.0.0.1:9/v1", {}

        def __init__(self, model, cache_namespace):
            self.model, self.cache_namespace = model, cache_namespace

        def served_models(self):
            return served

    @contextlib.contextmanager
    def endpoint(base_url=None, model=None, api_key=None, **options):
        yield Client(model, namespace)

    monkeypatch.setattr(server, "llm_endpoint", endpoint)
    target = Client("tiny" if served is None else "gemma3-270m", "target-file")
    with contextlib.ExitStack() as stack, pytest.raises(InputError, match=message) as refused:
        open_reference(stack, "tiny", target, "http://127.0.0.1:9/v1")
    assert refused.value.field == "reference_llm"
    with contextlib.ExitStack() as stack:  # another model file on an endpoint that lists it: accepted
        served = ["tiny"] if served else None
        namespace = "tiny-file"
        assert open_reference(stack, "tiny", target).model == "tiny"


@pytest.mark.parametrize("method", ["valsearch", "random-search", "excess-loss", "valued", "sal-probes"])
def test_a_method_that_reads_labels_is_refused_on_an_unlabeled_pool_before_any_work(method):
    pool = examples(20)
    pool[5] = Example("p5", "example text 5", None)
    with pytest.raises(InputError, match=rf"id 'p5', field 'gold': {method} reads the pool's labels .*1 of the 20"):
        select_examples(pool, [Example("q", "q")], Request(method, k=2), template=TEMPLATE, embedder=Refuses(),
                        llm=Refuses(), label_field="gold")


def test_a_retriever_that_reads_labels_asks_an_oracle_for_the_b_annotated_on_an_unlabeled_pool(tmp_path):
    """`fewshot select --label-budget 6 --retriever excess-loss` on an unlabeled pool: the labels of the 6
    picked to label come from the labels file, else the journal, else a person (as SAL's do)."""
    request = Request("random", k=2, label_budget=6, retriever="excess-loss")
    pool, queries = examples(20, labeled=False), [Example("q0", "a"), Example("q1", "b")]
    with pytest.raises(InputError, match="field '--labels': the retriever excess-loss .* no label is known yet"):
        select_examples(pool, queries, request, template=TEMPLATE, embedder=Refuses(), llm=Refuses(), ask=None,
                        journal=tmp_path / "none.jsonl")
    pool_vectors, query_vectors = vectors(20, 2)
    asked = []

    def person(example, labels):
        asked.append(example.id)
        return labels[len(asked) % 2]

    given = {"p0": "neg", "p1": "pos"}  # whichever of these the annotator picks is not asked
    run = select_examples(pool, queries, request, template=TEMPLATE, pool_vectors=pool_vectors,
                          query_vectors=query_vectors, llm=Stub(), labels_file=given, ask=person,
                          journal=tmp_path / "typed.jsonl")
    annotated = [pool[i].id for i in run.annotated.indices]
    assert asked == [i for i in annotated if i not in given] and set(run.revealed) == set(run.annotated.indices)
    records = demo_records(run, pool, queries)
    assert all(r["label"] in ("neg", "pos") and not r["needs_label"] for r in records) and run.to_label(pool) == []
    again = select_examples(pool, queries, request, template=TEMPLATE, pool_vectors=pool_vectors,
                            query_vectors=query_vectors, llm=Stub(), labels_file=given, ask=None,
                            journal=tmp_path / "typed.jsonl")  # the typed labels are kept: nobody is asked
    assert again.revealed == run.revealed
    every = {e.id: ("neg", "pos")[i % 3 == 0] for i, e in enumerate(pool)}  # after --prune-to: whole-pool indices
    pruned = select_examples(pool, queries, replace(request, prune_to=12), template=TEMPLATE, pool_vectors=pool_vectors,
                             query_vectors=query_vectors, llm=Stub(), labels_file=every, ask=None,
                             journal=tmp_path / "pruned.jsonl")
    assert set(pruned.revealed) == set(pruned.annotated.indices) and len(pruned.revealed) == 6
    assert all(pruned.revealed[i] == every[pool[i].id] for i in pruned.revealed)
    with pytest.raises(InputError, match="was picked to label and has no label: add it to --labels-file"):
        select_examples(pool, queries, request, template=TEMPLATE, pool_vectors=pool_vectors,
                        query_vectors=query_vectors, llm=Stub(), labels=["neg", "pos"], ask=None,
                        journal=tmp_path / "other.jsonl")
    model = Stub()
    run = select_examples(examples(20), [Example("q0", "a"), Example("q1", "b")], request, template=TEMPLATE,
                          pool_vectors=pool_vectors, query_vectors=query_vectors, llm=model)
    assert model.prompts > 0 and run.llm["selection_prompts"] == model.prompts  # the retriever got the LLM
    assert all(set(s.indices) <= set(run.annotated.indices) for s in run.selections)


def test_sal_probes_is_connected_without_an_oracle_and_a_pruned_pool_keeps_its_indices():
    """The probes SAL-on-probes answered are named in the whole pool's indices after --prune-to
    (the selection's info and trace were left in the pruned pool's)."""
    pool, queries = examples(40), [Example("q0", "query")]
    pool_vectors, query_vectors = vectors(40, 1)
    answered = []

    class Recording(Stub):
        def predict_many(self, jobs):
            answered.extend(text for _, text in jobs)
            return super().predict_many(jobs)

    model = Recording()
    request = Request("sal-probes", k=2, prune_to=30, params={"probes": 4, "budget": 48})
    run = select_examples(pool, queries, request, template=TEMPLATE, pool_vectors=pool_vectors,
                          query_vectors=query_vectors, llm=model)
    selection = run.selections[0]
    assert model.prompts == selection.info["prompts"] > 0 and run.pruned_to == 30
    assert set(answered) == {pool[i].text for i in selection.info["probes"]}
    assert not set(selection.indices) & set(selection.info["held_out"])
    assert all(set(t["shortlist"]) >= {t["index"]} for t in selection.trace)


def test_an_index_serves_the_selection_and_is_described_in_meta():
    """Issue 19: select_examples with an IndexChoice; an exact index gives the picks of no index."""
    from fewshot.index import IndexChoice

    pool, queries = examples(200), [Example(f"q{j}", f"query {j}") for j in range(6)]
    pool_vectors, query_vectors = vectors(200, 6)
    request = Request("mmr", k=3)
    plain = select_examples(pool, queries, request, template=TEMPLATE, pool_vectors=pool_vectors,
                            query_vectors=query_vectors)
    served = select_examples(pool, queries, request, template=TEMPLATE, pool_vectors=pool_vectors,
                             query_vectors=query_vectors, index=IndexChoice("exact"), verify=4)
    assert [s.indices for s in served.selections] == [s.indices for s in plain.selections]
    meta = run_meta(served, request, pool, queries, embedder=None, template=TEMPLATE)
    assert meta["candidates"]["kind"] == "exact" and meta["verify"]["pick_recall"] == 1.0
    assert meta["verify"]["queries"] == 4 and "candidates" not in run_meta(plain, request, pool, queries,
                                                                           embedder=None, template=TEMPLATE)
    with pytest.raises(InputError, match="'bm25' does not shortlist by embedding similarity"):
        select_examples(pool, queries, Request("bm25", k=3), template=TEMPLATE, pool_vectors=pool_vectors,
                        query_vectors=query_vectors, index=IndexChoice("exact"))


def test_a_store_without_its_file_gives_ids_and_unknown_labels():
    from fewshot.pipeline import IdsOnly

    pool = IdsOnly(np.array([f"s{i}" for i in range(30)]))
    queries = [Example("q0", "query")]
    pool_vectors, query_vectors = vectors(30, 1)
    run = select_examples(pool, queries, Request("knn", k=2), template=TEMPLATE, pool_vectors=pool_vectors,
                          query_vectors=query_vectors)
    records = demo_records(run, pool, queries)
    assert [r["id"] for r in records] == [pool[i].id for i in run.selections[0].indices]
    assert all(r["text"] is None and r["label"] is None and r["needs_label"] is None for r in records)
    assert run.to_label(pool) == []


def test_a_feedback_retriever_holds_its_probes_among_the_b_annotated_and_caps_them_to_half_of_b():
    """`fewshot select --label-budget 32 --retriever valsearch` on a labelled pool: the retriever's
    defaults (60 probes) are capped to half of B, its probes and demos among the B annotated."""
    pool, queries = examples(80), [Example("q0", "a"), Example("q1", "b")]
    pool_vectors, query_vectors = vectors(80, 2)
    model = Stub()
    request = Request("random", k=4, label_budget=32, retriever="valsearch")
    run = select_examples(pool, queries, request, template=TEMPLATE, pool_vectors=pool_vectors,
                          query_vectors=query_vectors, llm=model)
    (selection,) = run.selections  # valsearch: one shared set
    annotated = set(run.annotated.indices)
    assert len(annotated) == 32 and len(selection.info["held_out"]) == 16
    assert set(selection.info["held_out"]) <= annotated and set(selection.indices) <= annotated
    assert not set(selection.indices) & set(selection.info["held_out"])
    assert run.llm["selection_prompts"] == model.prompts == selection.info["prompts"] > 0


def test_a_retriever_reads_revealed_labels_of_the_annotated_examples_only_in_whole_pool_indices():
    """The eval's problem has no labels: ``reveal`` gives the retriever those of the B annotated,
    asked by their index in the whole pool (after --prune-to too)."""
    from fewshot.selection import make_selector

    pool_vectors, query_vectors = vectors(60, 2)
    pool = examples(60)
    problem = Problem(pool=pool_vectors, queries=query_vectors, pool_texts=tuple(e.text for e in pool),
                      query_texts=("a", "b"), labels=None)
    for prune_to in (None, 40):
        asked = []

        def reveal(i):
            asked.append(i)
            return pool[i].label

        retriever = make_selector("random-search", model=Stub(), probes=6, budget=24)
        run = run_selection(Random(seed=1), problem, 2, label_budget=16, retriever=retriever, reveal=reveal,
                            prune_to=prune_to)
        annotated = set(run.annotated.indices)
        assert sorted(asked) == sorted(annotated)
        assert set(run.selections[0].info["held_out"]) <= annotated and set(run.selections[0].indices) <= annotated
    with pytest.raises(InputError, match="random-search"):  # without reveal the retriever has no labels
        run_selection(Random(seed=1), problem, 2, label_budget=16, retriever=retriever)
