import json
import tracemalloc

import numpy as np
import pytest

from fewshot.data import Example
from fewshot.errors import InputError
from fewshot.store import embed_to_store, open_store


class Toy:
    """Deterministic embedder double: text "i" -> a fixed, non-unit vector; records every call."""

    model_id = "toy-model"

    def __init__(self, d=6, fail_after=None, record=True):
        self.d, self.fail_after, self.record, self.calls = d, fail_after, record, []

    def embed(self, texts):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("killed")
        self.calls.append(list(texts) if self.record else None)
        i = np.array([float(t.split()[-1]) for t in texts])[:, None]
        return 3.0 * np.cos(i * np.arange(1, self.d + 1)) + 0.5


def texts(n):
    return [f"text {i}" for i in range(n)]


def test_store_round_trip_is_memory_mapped_unit_rows_with_manifest(tmp_path):
    examples = [Example(id=f"e{i}", text=t) for i, t in enumerate(texts(10))]
    store = embed_to_store(examples, tmp_path / "s", Toy(), chunk=3, progress=False)
    again = open_store(tmp_path / "s")
    assert isinstance(again.vectors, np.memmap) and not again.vectors.flags.writeable
    assert again.ids.tolist() == [f"e{i}" for i in range(10)]
    raw = Toy().embed(texts(10))
    np.testing.assert_allclose(again.vectors, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-6)
    m = again.manifest
    assert (m["model_id"], m["n"], m["d"], m["dtype"], m["normalised"], m["chunk"], m["format_version"]) == \
        ("toy-model", 10, 6, "float32", True, 3, 1)
    assert store.computed == 10 and not (tmp_path / "s" / "chunks").exists()


def test_float16_store(tmp_path):
    store = embed_to_store(texts(5), tmp_path / "s", Toy(), chunk=2, dtype="float16", progress=False)
    assert store.vectors.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(store.vectors.astype(np.float32), axis=1), 1, atol=2e-3)
    with pytest.raises(InputError, match="dtype"):
        embed_to_store(texts(5), tmp_path / "t", Toy(), dtype="int8", progress=False)


def test_killed_run_resumes_without_redoing_a_finished_chunk(tmp_path):
    folder = tmp_path / "s"
    with pytest.raises(RuntimeError, match="killed"):
        embed_to_store(texts(11), folder, Toy(fail_after=2), chunk=3, progress=False)
    progress = json.loads((folder / "progress.json").read_text())
    assert sorted(progress["chunks"]) == ["0", "1"]
    with pytest.raises(InputError, match="unfinished"):
        open_store(folder)
    rerun = Toy()
    resumed = embed_to_store(texts(11), folder, rerun, chunk=3, progress=False)
    assert rerun.calls == [texts(11)[6:9], texts(11)[9:]] and resumed.computed == 5
    once = embed_to_store(texts(11), tmp_path / "once", Toy(), chunk=3, progress=False)
    assert np.array_equal(resumed.vectors, once.vectors) and resumed.ids.tolist() == once.ids.tolist()
    assert resumed.manifest == once.manifest


def test_resume_refuses_other_texts_or_settings(tmp_path):
    folder = tmp_path / "s"
    with pytest.raises(RuntimeError):
        embed_to_store(texts(9), folder, Toy(fail_after=1), chunk=3, progress=False)
    with pytest.raises(InputError, match="chunk 0 .* other texts") as err:
        embed_to_store(["other"] + texts(9)[1:], folder, Toy(), chunk=3, progress=False)
    assert str(folder) in str(err.value)
    with pytest.raises(InputError, match="other settings \\(dtype\\)"):
        embed_to_store(texts(9), folder, Toy(), chunk=3, dtype="float16", progress=False)


def test_finished_store_is_reused_for_the_same_texts_only(tmp_path):
    folder = tmp_path / "s"
    embed_to_store(texts(7), folder, Toy(), chunk=3, progress=False)
    again = Toy()
    assert embed_to_store(texts(7), folder, again, chunk=3, progress=False).computed == 0 and again.calls == []
    with pytest.raises(InputError, match="other texts"):
        embed_to_store(texts(8), folder, Toy(), chunk=3, progress=False)


def test_a_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        embed_to_store(texts(3), tmp_path, Toy(), progress=False)


def test_open_store_refuses_files_that_do_not_match_the_manifest(tmp_path):
    folder = tmp_path / "s"
    embed_to_store(texts(4), folder, Toy(), chunk=2, progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "n": 5}))
    with pytest.raises(InputError, match="manifest says \\(5, 6\\)") as err:
        open_store(folder)
    assert str(folder) in str(err.value)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    np.save(folder / "ids.npy", np.array(["a", "b"]))
    with pytest.raises(InputError, match="ids"):
        open_store(folder)
    with pytest.raises(InputError, match="not a vector store"):
        open_store(tmp_path / "missing")


def test_query_embedder_of_another_model_is_refused(tmp_path):
    folder = tmp_path / "s"
    embed_to_store(texts(4), folder, Toy(), progress=False)
    other = Toy()
    other.model_id = "another-model"
    with pytest.raises(InputError, match="another-model") as err:
        open_store(folder, embedder=other)
    assert str(folder) in str(err.value)
    open_store(folder, embedder=Toy())


def test_non_finite_vectors_are_refused_naming_the_chunk(tmp_path):
    class Broken(Toy):
        def embed(self, texts):
            out = super().embed(texts)
            out[-1, 0] = np.nan
            return out

    with pytest.raises(InputError, match="chunk 0.*NaN"):
        embed_to_store(texts(3), tmp_path / "s", Broken(), progress=False)


def test_peak_memory_is_bounded_by_the_chunk_not_the_pool(tmp_path):
    n, d, chunk = 60_000, 64, 1_000
    items = texts(n)
    tracemalloc.start()
    try:
        embed_to_store(items, tmp_path / "s", Toy(d=d, record=False), chunk=chunk, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    full = n * d * 4  # 15.4 MB of float32 vectors; one chunk's work (float64 included) is about 1 MB
    assert peak < full / 8, peak


def test_progress_bar_on_request_and_silent_otherwise(tmp_path, capsys):
    embed_to_store(texts(4), tmp_path / "a", Toy(), chunk=2, progress=False)
    assert capsys.readouterr().err == ""
    embed_to_store(texts(4), tmp_path / "b", Toy(), chunk=2, progress=True)
    err = capsys.readouterr().err
    assert "embedding" in err and "4/4" in err


def test_a_store_names_its_long_texts_in_one_warning_for_the_whole_run(tmp_path, caplog):
    """Issue 19's leftover: `fewshot embed` warned once per chunk; now once, counting every chunk."""
    from fewshot.store import embed_to_store
    from tests.test_embedding import SEVEN_WORDS, tiny_embedder

    texts = ["short", SEVEN_WORDS, "short too", "six words is all it reads", SEVEN_WORDS + " eight", "fine"]
    with caplog.at_level("WARNING", logger="fewshot.embedding"):
        store = embed_to_store(texts, tmp_path / "s", tiny_embedder(), chunk=2, progress=False)
    assert store.computed == 6
    [record] = [r for r in caplog.records if "longer than" in r.getMessage()]
    assert "2 of the 6 texts embedded are longer than the 8 tokens" in record.getMessage()
    assert "position 1" in record.getMessage() and "'one two three" in record.getMessage()
