"""fewshot.api.select on plain data, with the real bundled embedder on examples/sst2."""

import json

import numpy as np
import pytest

from fewshot.api import PER_QUERY_METHODS, DemoPool, select
from fewshot.errors import InputError
from conftest import EXAMPLES, unit_rows


def rows(name, n):
    return [json.loads(line) for line in (EXAMPLES / name).read_text().splitlines()[:n]]


class Fixed:
    """Known vectors, so the expected picks are computable by hand."""

    model_id = "fixed"

    def __init__(self, table):
        self.table, self.calls = table, []

    def embed(self, texts):
        self.calls.append(list(texts))
        return np.stack([self.table[t] for t in texts])


def test_go_and_knn_with_the_bundled_embedder_on_sst2():
    pool, queries = rows("pool.jsonl", 40), [r["text"] for r in rows("queries.jsonl", 3)]
    go = select(pool, queries, method="go", k=4)
    assert not go.per_query and len(go.shared) == 4
    assert [d["rank"] for d in go.shared] == [1, 2, 3, 4]
    assert {d["id"] for d in go.shared} <= {r["id"] for r in pool}
    assert go.to_label == []  # sst2 pool rows carry labels
    knn = select(pool, queries, method="knn", k=3)
    assert knn.per_query and len(knn.demos) == 3
    # kNN's first pick for a query is the pool row with the highest cosine to it
    from fewshot.pipeline import make_embedder

    emb = make_embedder()
    sims = emb.embed([queries[1]]) @ emb.embed([r["text"] for r in pool]).T
    assert knn.for_query(1)[0]["id"] == pool[int(np.argmax(sims))]["id"]
    assert all(a["score"] >= b["score"] for a, b in zip(knn.for_query(1), knn.for_query(1)[1:]))


def test_unlabeled_examples_are_returned_to_label_and_strings_get_index_ids():
    rng = np.random.default_rng(0)
    texts = [f"t{i}" for i in range(6)]
    table = dict(zip(texts + ["q"], unit_rows(rng, 7, 4)))
    result = select(texts, ["q"], method="go", k=3, embedder=Fixed(table))
    ids = [d["id"] for d in result.shared]
    assert result.to_label == ids and all(i in {str(n) for n in range(6)} for i in ids)
    assert [d["text"] for d in result.shared] == [texts[int(i)] for i in ids]


def test_per_query_default_follows_the_method_and_can_be_forced():
    rng = np.random.default_rng(1)
    texts = [f"t{i}" for i in range(8)]
    table = dict(zip(texts + ["q1", "q2"], unit_rows(rng, 10, 5)))
    for method in ("knn", "go"):
        result = select(texts, ["q1", "q2"], method=method, k=2, embedder=Fixed(table))
        assert result.per_query == (method in PER_QUERY_METHODS)
    forced = select(texts, ["q1", "q2"], method="go", k=2, per_query=True, embedder=Fixed(table))
    assert forced.per_query and len(forced.demos) == 2
    with pytest.raises(InputError):
        forced.shared


def test_token_budget_is_budget_aware():
    texts = ["short", "a much much much much much much much much much much longer demo text", "tiny"]
    table = {t: v for t, v in zip(texts + ["q"], np.eye(4, dtype=np.float32))}
    table["q"] = np.array([0.1, 0.9, 0.1, 0.0], dtype=np.float32)  # the long one is the most similar
    result = select(texts, ["q"], method="knn", k=3, max_tokens=15, embedder=Fixed(table))
    assert [d["text"] for d in result.for_query(0)] == ["short", "tiny"]
    assert result.selections[0].stopped == "token budget exhausted"  # 7 + 7 tokens; the long demo costs 20


def test_errors_name_the_field_and_parameter():
    table = {"a": np.array([1.0, 0.0], dtype=np.float32), "b": np.array([0.0, 1.0], dtype=np.float32)}
    with pytest.raises(InputError, match=r"examples\[1\], field 'text': missing text field"):
        select([{"text": "a"}, {"body": "b"}], ["a"], embedder=Fixed(table))
    with pytest.raises(InputError, match="unknown parameter 'nosie'"):
        select(["a", "b"], ["a"], method="go", k=1, nosie=0.1, embedder=Fixed(table))
    with pytest.raises(InputError, match="must be float"):
        select(["a", "b"], ["a"], method="mmr", k=1, lam="high", embedder=Fixed(table))
    with pytest.raises(InputError, match="unknown method"):
        select(["a", "b"], ["a"], method="nope", embedder=Fixed(table))
    with pytest.raises(InputError, match="larger than the pool"):
        select(["a", "b"], ["a"], method="knn", k=3, embedder=Fixed(table))
    with pytest.raises(InputError, match="duplicate id 'x'"):
        select([{"id": "x", "text": "a"}, {"id": "x", "text": "b"}], ["a"], embedder=Fixed(table))


def test_label_balance_uses_the_label_key():
    texts = [f"t{i}" for i in range(4)]
    table = dict(zip(texts + ["q"], [np.array(v, dtype=np.float32) for v in
                                     ([1, 0], [0.99, 0.14], [0.98, 0.2], [0, 1], [1, 0])]))
    pool = [{"text": t, "y": y} for t, y in zip(texts, ["pos", "pos", "pos", "neg"])]
    result = select(pool, ["q"], method="knn", k=2, label_key="y", label_balance=True, embedder=Fixed(table))
    assert sorted(d["y"] for d in result.for_query(0)) == ["neg", "pos"]


def test_demo_pool_embeds_only_new_examples():
    table = {t: v for t, v in zip(["a", "b", "c", "q"], np.eye(4, dtype=np.float32))}
    embedder = Fixed(table)
    pool = DemoPool("knn", k=1, embedder=embedder)
    pool.add(["a", "b"])
    pool.add(["c"])
    assert embedder.calls == [["a", "b"], ["c"]]
    table["q"] = table["c"]
    assert pool.choose(["q"]) == [[2]]


def test_label_budget_lists_the_examples_to_label():
    rows = [{"id": f"u{i}", "text": json.loads(line)["text"]}
            for i, line in enumerate((EXAMPLES / "pool.jsonl").read_text().splitlines()[:40])]
    result = select(rows, ["a dull film", "a lovely film"], method="kmeans", k=2, label_budget=6, per_query=True)
    assert len(result.to_label) == 6
    assert all(d["id"] in result.to_label for demos in result.demos for d in demos)


class Letters:
    """A toy embedder: one axis per distinct first letter (moved here from fewshot/api.py)."""

    model_id = "letters"

    def embed(self, texts):
        vectors = np.zeros((len(texts), 26), dtype=np.float32)
        vectors[np.arange(len(texts)), [ord(t[0].lower()) % 26 for t in texts]] = 1.0
        return vectors


def test_demo_pool_grows_and_picks_by_first_letter():
    pool = DemoPool(method="knn", k=1, embedder=Letters())
    pool.add(["apple", "banana"])
    pool.add(["cherry"])
    assert pool.choose(["cake"]) == [[2]]


def test_plain_parameters_are_refused_before_anything_is_embedded():
    class Refuses:
        model_id = "refuses"

        def embed(self, texts):
            raise AssertionError("embedded before the parameters were checked")

    for bad, message in [({"k": 0}, "k=0 must be at least 1"), ({"max_tokens": 0}, "max_tokens=0 must be positive"),
                         ({"label_budget": 1, "k": 2}, "label_budget=1 is smaller than k=2")]:
        with pytest.raises(InputError, match=message):
            select(["a", "b", "c"], ["a"], **{"method": "go", **bad}, embedder=Refuses())


def test_under_a_label_budget_the_retriever_sets_the_default_mode():
    """R14: one rule on every surface: the mode of the method that picks the demos shown."""
    texts = [f"{c}{i}" for i, c in enumerate("abcdefgh")]
    result = select(texts, ["a", "b"], method="go", k=2, label_budget=4, embedder=Letters())
    assert result.per_query and len(result.demos) == 2
    assert not select(texts, ["a", "b"], method="go", k=2, label_budget=4, retriever="go", embedder=Letters()).per_query


def test_sal_from_python_with_a_model_and_a_labels_file():
    """fewshot.select wires SAL as the CLI does: an LLM (here a stand-in), and an oracle that reads
    the labels file; revealed labels fill the returned dicts."""
    from fewshot.models import Prediction

    class Stub:
        labels = ("neg", "pos")

        def predict_many(self, jobs):
            return [Prediction(probs={"neg": 0.4, "pos": 0.6}) for _ in jobs]

    texts = [f"{c}{i}" for i, c in enumerate("abcdef")]
    labels = {str(i): "neg" if i % 2 else "pos" for i in range(6)}
    result = select(texts, ["a", "b"], method="sal", k=2, llm=Stub(), labels_file=labels, embedder=Letters())
    assert not result.per_query and result.to_label == []
    assert all(d["label"] == labels[d["id"]] for d in result.shared)
