import os
import shutil

import numpy as np
import pytest

from fewshot.embedding import CachedEmbedder, SentenceTransformerEmbedder, default_model_path, load_embeddings
from fewshot.errors import InputError


class CountingEmbedder:
    """Test double: records which texts it was asked to embed."""

    model_id = "counting"

    def __init__(self):
        self.seen = []

    def embed(self, texts):
        self.seen.extend(texts)
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def test_cache_embeds_each_text_once(tmp_path):
    inner = CountingEmbedder()
    first = CachedEmbedder(inner, tmp_path / "e.sqlite").embed(["a", "bb", "a"])
    second_embedder = CachedEmbedder(inner, tmp_path / "e.sqlite")
    second = second_embedder.embed(["bb", "a"])
    assert inner.seen == ["a", "bb"] and second_embedder.computed == 0
    assert np.array_equal(first[[1, 0]], second)


class DiesAfter(CountingEmbedder):
    """Test double: embeds ``chunks`` calls' worth, then dies as a killed encode would."""

    def __init__(self, chunks):
        super().__init__()
        self.left = chunks

    def embed(self, texts):
        if not self.left:
            raise RuntimeError("killed")
        self.left -= 1
        return super().embed(texts)


def test_finished_chunks_stay_cached_when_embedding_dies(tmp_path):
    texts = [f"text {i}" for i in range(7)]
    with pytest.raises(RuntimeError, match="killed"):
        CachedEmbedder(DiesAfter(2), tmp_path / "e.sqlite", chunk_size=3).embed(texts)
    resumed = CachedEmbedder(CountingEmbedder(), tmp_path / "e.sqlite", chunk_size=3)
    assert resumed.embed(texts).shape == (7, 2)
    assert resumed.inner.seen == texts[6:] and resumed.computed == 1


def test_real_model_offline_and_cached(tmp_path):
    embedder = CachedEmbedder(SentenceTransformerEmbedder(progress=False), tmp_path / "e.sqlite")
    vectors = embedder.embed(["a wonderful film", "a terrible film", "stock prices fell"])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    again = CachedEmbedder(SentenceTransformerEmbedder(progress=False), tmp_path / "e.sqlite")
    assert np.array_equal(again.embed(["stock prices fell"]), vectors[2:]) and again.computed == 0


def test_precomputed_embeddings_are_checked(tmp_path):
    path = tmp_path / "e.npy"
    np.save(path, np.ones((3, 4)))
    with pytest.raises(InputError, match=r"shape \(3, 4\) does not match the pool: expected \(5, d\)"):
        load_embeddings(path, 5)
    bad = np.ones((3, 4))
    bad[1, 2] = np.nan
    np.save(path, bad)
    with pytest.raises(InputError, match="row 1 holds NaN"):
        load_embeddings(path, 3)


def test_missing_model_folder():
    with pytest.raises(InputError, match="never downloaded"):
        SentenceTransformerEmbedder("/no/such/model")


@pytest.fixture
def model_copy(tmp_path):
    """The bundled model's small files copied, its weights linked (cheap, same bytes)."""
    source, copy = default_model_path(), tmp_path / "models" / "mini"
    copy.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_dir():
            shutil.copytree(item, copy / item.name)
        elif item.stat().st_size > 1 << 20:
            (copy / item.name).symlink_to(item)
        else:
            shutil.copy(item, copy / item.name)
    return copy


def test_local_model_id_is_its_resolved_path(model_copy, monkeypatch):
    monkeypatch.chdir(model_copy.parent)
    relative, absolute = SentenceTransformerEmbedder("mini"), SentenceTransformerEmbedder(model_copy)
    assert relative.model_id == absolute.model_id and relative.model_id.startswith(str(model_copy.resolve()) + "@")
    monkeypatch.chdir(model_copy)  # the same relative name elsewhere is another model
    (model_copy / "mini").mkdir()
    (model_copy / "mini" / "config.json").write_text("{}")
    assert SentenceTransformerEmbedder("mini").model_id != absolute.model_id


def test_local_model_id_changes_when_the_model_is_replaced(model_copy):
    before = SentenceTransformerEmbedder(model_copy).model_id
    assert SentenceTransformerEmbedder(model_copy).model_id == before
    config = model_copy / "config.json"
    config.write_text(config.read_text().replace('"num_hidden_layers": 6', '"num_hidden_layers": 3'))
    edited = SentenceTransformerEmbedder(model_copy).model_id
    assert edited != before
    weights = model_copy / "model.safetensors"
    target = weights.resolve()
    weights.unlink()
    shutil.copy(target, weights)  # new weight file: same size, new modification time
    os.utime(weights, ns=(target.stat().st_mtime_ns + 10**9,) * 2)
    assert SentenceTransformerEmbedder(model_copy).model_id not in (before, edited)


def test_bundled_model_id_is_stable():
    assert SentenceTransformerEmbedder().model_id == "sentence-transformers/all-MiniLM-L6-v2"


def test_precomputed_embeddings_are_memory_mapped_and_checked_in_chunks(tmp_path):
    """Issue 19: the .npy was loaded whole, then isfinite and normalize made two more full-size
    copies (over 30 GB at 10M x 384). Unit rows now come back as the memory map itself."""
    rng = np.random.default_rng(0)
    unit = rng.normal(size=(1000, 8)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    np.save(tmp_path / "unit.npy", unit)
    mapped = load_embeddings(tmp_path / "unit.npy", 1000, chunk=64)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable and np.array_equal(mapped, unit)
    np.save(tmp_path / "half.npy", unit.astype(np.float16))
    assert isinstance(load_embeddings(tmp_path / "half.npy", 1000, chunk=64), np.memmap)
    scaled = unit * np.arange(1, 1001, dtype=np.float32)[:, None]
    scaled[7] = 0  # a zero row stays zero
    np.save(tmp_path / "scaled.npy", scaled)
    normalised = load_embeddings(tmp_path / "scaled.npy", 1000, chunk=64)
    assert not isinstance(normalised, np.memmap) and normalised.dtype == np.float32
    np.testing.assert_allclose(np.delete(normalised, 7, axis=0), np.delete(unit, 7, axis=0), atol=1e-6)
    assert not normalised[7].any()
    bad = unit.copy()
    bad[[700, 900]] = np.inf  # in later chunks: every chunk is checked
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(InputError, match=r"row 700 holds NaN or infinite values \(2 such rows\)"):
        load_embeddings(tmp_path / "bad.npy", 1000, chunk=64)
