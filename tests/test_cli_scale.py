"""Large pools from the command line (issue 19): `fewshot embed` writes a resumable vector store,
`fewshot index build` an index over it, and `fewshot select --store ... --index ...` serves the
candidates from it, with the same picks as the in-memory path where the index is exact."""

import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

import fewshot.cli as cli
from fewshot.cli import app
from fewshot.embedding import int8_supported
from fewshot.store import open_store
from tests.conftest import EXAMPLES, write_jsonl

pytest.importorskip("faiss")
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


class Hashing:
    """Embedder double: each text's vector is drawn from a seed that is a hash of the text; counts
    the texts it embeds, and raises after ``fail_after`` calls (a run killed midway)."""

    model_id = "hashing-double"

    def __init__(self, d=16, fail_after=None):
        self.d, self.fail_after, self.calls, self.texts = d, fail_after, 0, []

    def embed(self, texts):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("killed")
        self.calls += 1
        self.texts.extend(texts)
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
        return np.array([np.random.default_rng(s).normal(size=self.d) for s in seeds], dtype=np.float32)


@pytest.fixture
def embedder(monkeypatch):
    """The double behind `make_embedder` (the CLI's one way to an embedding model)."""
    double = Hashing()
    monkeypatch.setattr(cli, "make_embedder", lambda *args, **kwargs: double)
    return double


@pytest.fixture
def stores(tmp_path, embedder):
    """The bundled examples (300 pool, 40 queries) embedded into two stores, and the same vectors
    as .npy files."""
    for name, source in (("pool", "pool.jsonl"), ("queries", "queries.jsonl")):
        result = run("embed", EXAMPLES / source, "--out", tmp_path / name, "--chunk", "64")
        assert result.exit_code == 0, result.output
        np.save(tmp_path / f"{name}.npy", np.asarray(open_store(tmp_path / name).vectors))
    return tmp_path


def picks(path):
    """{query id: [pool ids in pick order]} of a per-query selection file."""
    out = {}
    for record in sorted((json.loads(line) for line in path.read_text().splitlines()),
                         key=lambda r: (r["query_id"], r["rank"])):
        out.setdefault(record["query_id"], []).append(record["id"])
    return out


# -- embed ------------------------------------------------------------------------------------------

def test_embed_is_resumed_by_the_same_command_after_a_kill(tmp_path, monkeypatch):
    texts = [{"id": f"t{i}", "text": f"text number {i}"} for i in range(50)]
    source = write_jsonl(tmp_path / "texts.jsonl", texts)
    dying = Hashing(fail_after=3)
    monkeypatch.setattr(cli, "make_embedder", lambda *args, **kwargs: dying)
    killed = run("embed", source, "--out", tmp_path / "s", "--chunk", "8")
    assert killed.exit_code == 1 and "RuntimeError: killed" in killed.output
    assert (tmp_path / "s" / "progress.json").is_file() and not (tmp_path / "s" / "manifest.json").exists()
    finishing = Hashing()
    monkeypatch.setattr(cli, "make_embedder", lambda *args, **kwargs: finishing)
    resumed = run("embed", source, "--out", tmp_path / "s", "--chunk", "8")
    assert resumed.exit_code == 0, resumed.output
    assert finishing.texts == [t["text"] for t in texts[24:]]  # no finished chunk embedded twice
    assert "26 embedded now, 24 kept from before" in resumed.output
    store = open_store(tmp_path / "s")
    assert store.ids.tolist() == [t["id"] for t in texts] and store.vectors.shape == (50, 16)
    np.testing.assert_allclose(store.vectors, np.asarray(open_store(tmp_path / "s").vectors))
    again = run("embed", source, "--out", tmp_path / "s", "--chunk", "8")
    assert again.exit_code == 0 and "0 embedded now, 50 kept from before" in again.output


def test_embed_float16_and_the_bundled_model(tmp_path):
    """The real bundled model on 50 texts: a float16 store of unit rows, the model named in it."""
    rows = [json.loads(line) for line in (EXAMPLES / "pool.jsonl").read_text().splitlines()[:50]]
    source = write_jsonl(tmp_path / "texts.jsonl", rows)
    result = run("embed", source, "--out", tmp_path / "s", "--dtype", "float16", "--chunk", "20")
    assert result.exit_code == 0, result.output
    store = open_store(tmp_path / "s")
    assert store.vectors.dtype == np.float16 and store.vectors.shape == (50, 384)
    assert store.model_id.endswith("all-MiniLM-L6-v2") and store.ids.tolist() == [r["id"] for r in rows]
    np.testing.assert_allclose(np.linalg.norm(store.vectors.astype(np.float32), axis=1), 1, atol=2e-3)


@pytest.mark.parametrize("extra, message", [
    (["--dtype", "int8"], "dtype 'int8' must be one of float32, float16"),
    (["--chunk", "0"], "chunk=0 must be at least 1"),
    (["--engine", "spark"], "unknown engine 'spark'"),
    (["--backend", "fp8"], "field '--backend': backend 'fp8' must be one of torch, int8"),
])
def test_embed_refuses_bad_options_before_reading_or_embedding(tmp_path, embedder, extra, message):
    result = run("embed", tmp_path / "missing.jsonl", "--out", tmp_path / "s", *extra)
    assert result.exit_code == 2 and message in result.output, result.output
    assert embedder.calls == 0


@pytest.mark.skipif(not int8_supported(), reason="no AVX-512 VNNI here: backend int8 is refused")
def test_embed_and_select_pass_the_backend_to_the_model(tmp_path, monkeypatch):
    """The CLI only passes --backend on: the embedder makes the model and its id (see test_embedding)."""
    asked = []

    def make(*args, **kwargs):
        asked.append(kwargs.get("backend"))
        return Hashing()

    monkeypatch.setattr(cli, "make_embedder", make)
    assert run("embed", EXAMPLES / "queries.jsonl", "--out", tmp_path / "s").exit_code == 0
    assert run("embed", EXAMPLES / "queries.jsonl", "--out", tmp_path / "q", "--backend", "int8").exit_code == 0
    result = run("select", "--pool", EXAMPLES / "pool.jsonl", "--queries", EXAMPLES / "queries.jsonl", "--method",
                 "knn", "--k", "2", "--backend", "int8", "--no-cache", "--out", tmp_path / "picks.jsonl")
    assert result.exit_code == 0, result.output
    assert asked == ["torch", "int8", "int8"]


def test_embed_refuses_a_folder_it_would_not_finish(tmp_path, embedder):
    (tmp_path / "file").write_text("x")
    result = run("embed", EXAMPLES / "pool.jsonl", "--out", tmp_path / "file")
    assert result.exit_code == 2 and "exists and is not a folder" in result.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    result = run("embed", EXAMPLES / "pool.jsonl", "--out", tmp_path / "other")
    assert result.exit_code == 2 and "not empty and holds no store" in result.output
    assert run("embed", EXAMPLES / "queries.jsonl", "--out", tmp_path / "q", "--chunk", "64").exit_code == 0
    calls = embedder.calls
    result = run("embed", EXAMPLES / "queries.jsonl", "--out", tmp_path / "q", "--chunk", "32")
    assert result.exit_code == 2 and "finished store with other settings (chunk)" in result.output
    assert embedder.calls == calls


# -- index build and select ---------------------------------------------------------------------------

def test_index_build_writes_an_index_bound_to_its_store(stores):
    result = run("index", "build", "--store", stores / "pool", "--kind", "ivf", "--nlist", "4", "--out",
                 stores / "ivf")
    assert result.exit_code == 0, result.output
    meta = json.loads((stores / "ivf" / "index.json").read_text())
    assert meta["kind"] == "ivf" and meta["params"]["nlist"] == 4 and (meta["n"], meta["d"]) == (300, 16)
    assert meta["source"] == open_store(stores / "pool").checksum and meta["build_seconds"] >= 0


@pytest.mark.parametrize("method", ["knn", "go", "mmr"])
def test_select_from_a_store_through_flat_equals_select_from_embeddings(stores, method):
    assert run("index", "build", "--store", stores / "pool", "--kind", "flat", "--out", stores / "flat").exit_code == 0
    common = ["--method", method, "--per-query", "--k", "4"]
    through_store = run("select", "--store", stores / "pool", "--query-store", stores / "queries", "--index",
                        stores / "flat", *common, "--out", stores / "a.jsonl")
    assert through_store.exit_code == 0, through_store.output
    today = run("select", "--pool", EXAMPLES / "pool.jsonl", "--queries", EXAMPLES / "queries.jsonl",
                "--embeddings", stores / "pool.npy", "--query-embeddings", stores / "queries.npy", *common,
                "--out", stores / "b.jsonl")
    assert today.exit_code == 0, today.output
    in_memory_index = run("select", "--pool", EXAMPLES / "pool.jsonl", "--queries", EXAMPLES / "queries.jsonl",
                          "--embeddings", stores / "pool.npy", "--query-embeddings", stores / "queries.npy",
                          "--index", "flat", *common, "--out", stores / "c.jsonl")
    assert in_memory_index.exit_code == 0, in_memory_index.output
    assert picks(stores / "a.jsonl") == picks(stores / "b.jsonl") == picks(stores / "c.jsonl")
    assert len(picks(stores / "a.jsonl")) == 40
    record = json.loads((stores / "a.jsonl").read_text().splitlines()[0])
    assert record["text"] is None and record["label"] is None and record["needs_label"] is None
    meta = json.loads((stores / "a.jsonl.meta.json").read_text())
    assert meta["candidates"]["kind"] == "flat" and meta["candidates"]["index"] == str(stores / "flat")
    assert meta["embedding_model"] == "hashing-double" and meta["to_label"] == []
    assert "candidates" not in json.loads((stores / "b.jsonl.meta.json").read_text())


def test_select_from_a_store_with_its_file_gives_texts_and_labels(stores):
    result = run("select", "--store", stores / "pool", "--pool", EXAMPLES / "pool.jsonl", "--queries",
                 EXAMPLES / "queries.jsonl", "--index", "exact", "--method", "knn", "--k", "3",
                 "--out", stores / "s.jsonl")
    assert result.exit_code == 0, result.output  # the queries embedded by the store's model (the double)
    records = [json.loads(line) for line in (stores / "s.jsonl").read_text().splitlines()]
    rows = {r["id"]: r for r in map(json.loads, (EXAMPLES / "pool.jsonl").read_text().splitlines())}
    assert all(r["text"] == rows[r["id"]]["text"] and r["label"] == rows[r["id"]]["label"] for r in records)


def test_verify_writes_pick_recall_and_the_index_into_meta(stores):
    result = run("select", "--store", stores / "pool", "--query-store", stores / "queries", "--index", "ivf",
                 "--nlist", "8", "--nprobe", "1", "--method", "go", "--per-query", "--k", "4", "--verify", "10",
                 "--out", stores / "s.jsonl")
    assert result.exit_code == 0, result.output
    meta = json.loads((stores / "s.jsonl.meta.json").read_text())
    assert meta["candidates"]["index"] == "ivf" and meta["candidates"]["params"]["nprobe"] == 1
    assert meta["candidates"]["params"]["nlist"] == 8 and meta["candidates"]["build_s"] >= 0
    check = meta["verify"]
    assert check["queries"] == 10 and check["shortlist"] == 256
    assert 0 < check["pick_recall"] <= 1 and 0 < check["shortlist_recall"] < 1  # 1 of 8 lists: misses
    exact = run("select", "--store", stores / "pool", "--query-store", stores / "queries", "--index", "exact",
                "--method", "go", "--per-query", "--k", "4", "--verify", "10", "--out", stores / "e.jsonl")
    assert exact.exit_code == 0, exact.output
    assert json.loads((stores / "e.jsonl.meta.json").read_text())["verify"]["pick_recall"] == 1.0


def test_shared_go_and_votek_through_an_index(stores):
    for method, extra in (("go", ["-p", "candidate_pool=100", "-p", "query_sample=20"]), ("votek", [])):
        result = run("select", "--store", stores / "pool", "--query-store", stores / "queries", "--index", "flat",
                     "--method", method, "--k", "5", *extra, "--out", stores / f"{method}.jsonl")
        assert result.exit_code == 0, result.output
        assert len((stores / f"{method}.jsonl").read_text().splitlines()) == 5
    info = json.loads((stores / "go.jsonl.meta.json").read_text())["selection_info"]
    assert info["queries_used"] == 20 and 100 <= info["candidates_scored"] < 300


def not_started(monkeypatch):
    """Make any work (an index build or load, a selection, an embedding model) fail the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the inputs were checked")

    monkeypatch.setattr(cli, "select_examples", refuse)
    monkeypatch.setattr(cli, "make_embedder", refuse)
    monkeypatch.setattr(cli.IndexChoice, "open", refuse)


@pytest.mark.parametrize("args, message", [
    (["--store", "{tmp}/none", "--query-store", "{tmp}/queries"], "{tmp}/none, field '--store': not a vector store"),
    (["--store", "{tmp}/pool", "--query-store", "{tmp}/queries", "--index", "annoy"],
     "annoy, field '--index': neither an index kind"),
    (["--store", "{tmp}/pool", "--query-store", "{tmp}/queries", "--index", "{tmp}/other-ix"],
     "other-ix, field '--index': the index was built from another store"),
    (["--store", "{tmp}/pool", "--query-store", "{tmp}/queries", "--index", "flat", "--method", "bm25"],
     "'bm25' does not shortlist by embedding similarity"),
    (["--store", "{tmp}/pool", "--query-store", "{tmp}/queries", "--index", "flat", "--method", "knn", "--shared"],
     "does not use one for a shared set"),
    (["--store", "{tmp}/pool", "--query-store", "{tmp}/queries", "--verify", "5", "--method", "knn"],
     "--verify measures an index against the exact scan"),
    (["--store", "{tmp}/pool", "--query-store", "{tmp}/queries", "--index", "hnsw", "--nlist", "8"],
     "field '--nlist': --nlist applies to an ivf index, not hnsw"),
    (["--store", "{tmp}/pool", "--query-store", "{tmp}/queries", "--index", "ivf", "--nlist", "500"],
     "more lists than the pool has vectors (300)"),
    (["--store", "{tmp}/pool", "--query-store", "{tmp}/queries", "--index", "{tmp}/ivf", "--nlist", "8"],
     "--nlist is set when an index is built"),
    (["--store", "{tmp}/pool", "--embeddings", "{tmp}/pool.npy", "--query-store", "{tmp}/queries"],
     "give the pool's vectors once"),
    (["--store", "{tmp}/pool", "--pool", "{tmp}/shuffled.jsonl", "--query-store", "{tmp}/queries"],
     "shuffled.jsonl, line 1, field 'id': id "),
    (["--store", "{tmp}/pool", "--query-store", "{tmp}/small"], "the query store has d=8, the pool's store d=16"),
    (["--store", "{tmp}/pool", "--query-store", "{tmp}/queries", "--max-tokens", "50"],
     "--max-tokens costs the pool's texts or labels: give --pool FILE"),
    (["--store", "{tmp}/pool", "--query-store", "{tmp}/queries", "--index", "flat", "--prune-to", "50"],
     "--prune-to cannot be combined with --index"),
    (["--pool", "{tmp}/shuffled.jsonl", "--queries", "{tmp}/shuffled.jsonl", "--engine", "ray", "--method", "knn"],
     "--engine ray needs --store"),
    (["--store", "{tmp}/pool", "--query-store", "{tmp}/queries", "--engine", "ray", "--method", "go"],
     "--engine ray runs per-query selection"),
    (["--queries", "{tmp}/shuffled.jsonl"], "give the pool: --pool FILE, or --store DIR"),
    (["--pool", "{tmp}/shuffled.jsonl", "--queries", "{tmp}/shuffled.jsonl", "--backend", "fp8"],
     "field '--backend': backend 'fp8' must be one of torch, int8"),
])
def test_select_refuses_bad_inputs_before_any_work(stores, monkeypatch, args, message):
    rows = [json.loads(line) for line in (EXAMPLES / "pool.jsonl").read_text().splitlines()]
    write_jsonl(stores / "shuffled.jsonl", rows[1:] + rows[:1])
    assert run("index", "build", "--store", stores / "pool", "--kind", "ivf", "--nlist", "4", "--out",
               stores / "ivf").exit_code == 0
    other = Hashing()
    monkeypatch.setattr(cli, "make_embedder", lambda *a, **k: other)
    assert run("embed", stores / "shuffled.jsonl", "--out", stores / "other").exit_code == 0
    assert run("index", "build", "--store", stores / "other", "--kind", "flat", "--out", stores / "other-ix").exit_code == 0
    small = Hashing(d=8)
    monkeypatch.setattr(cli, "make_embedder", lambda *a, **k: small)
    assert run("embed", EXAMPLES / "queries.jsonl", "--out", stores / "small").exit_code == 0
    not_started(monkeypatch)
    result = run("select", *[a.format(tmp=stores) for a in args], "--out", stores / "s.jsonl")
    assert result.exit_code == 2, result.output
    assert message.format(tmp=stores) in " ".join(result.output.split()), result.output
    assert not (stores / "s.jsonl").exists()


@pytest.mark.parametrize("args, message", [
    (["--store", "{tmp}/none", "--kind", "ivf"], "{tmp}/none, field '--store': not a vector store"),
    (["--store", "{tmp}/pool", "--kind", "annoy"], "field '--kind': unknown index kind 'annoy'"),
    (["--store", "{tmp}/pool", "--kind", "flat", "--nprobe", "4"], "--nprobe applies to an ivf index, not flat"),
    (["--store", "{tmp}/pool", "--kind", "ivf", "--nprobe", "0"], "--nprobe must be a positive integer"),
])
def test_index_build_refuses_bad_inputs(stores, args, message):
    (stores / "file").write_text("x")
    result = run("index", "build", *[a.format(tmp=stores) for a in args], "--out", stores / "ix")
    assert result.exit_code == 2 and message.format(tmp=stores) in " ".join(result.output.split()), result.output
    assert not (stores / "ix").exists()


@pytest.mark.ray
def test_ray_engine_gives_the_local_picks(stores):
    pytest.importorskip("ray")
    assert run("index", "build", "--store", stores / "pool", "--kind", "ivf", "--nlist", "8", "--nprobe", "2",
               "--out", stores / "ivf").exit_code == 0
    common = ["--store", stores / "pool", "--query-store", stores / "queries", "--index", stores / "ivf",
              "--method", "go", "--per-query", "--k", "4"]
    local = run("select", *common, "--out", stores / "local.jsonl")
    assert local.exit_code == 0, local.output
    remote = run("select", *common, "--engine", "ray", "--actors", "2", "--cpus-per-actor", "0.5",
                 "--out", stores / "ray.jsonl")
    assert remote.exit_code == 0, remote.output
    assert (stores / "local.jsonl").read_bytes() == (stores / "ray.jsonl").read_bytes()
