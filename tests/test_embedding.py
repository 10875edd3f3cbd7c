import json
import os
import shutil

import numpy as np
import pytest

import fewshot.embedding as embedding
from fewshot.embedding import (CachedEmbedder, SentenceTransformerEmbedder, check_backend, default_model_path,
                               int8_supported, load_embeddings, quantize_linear_layers)
from fewshot.errors import InputError
from tests.conftest import EXAMPLES


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


# -- texts longer than the model reads ------------------------------------------------------------------

class WordTokenizer:
    """Test double of a model's tokenizer: one token per word plus two special tokens; records
    which texts it was asked to tokenize."""

    def __init__(self):
        self.seen = []

    def num_special_tokens_to_add(self):
        return 2

    def __call__(self, texts, *, add_special_tokens, truncation, verbose):
        assert add_special_tokens and not truncation
        self.seen.extend(texts)
        return {"input_ids": [[0] * (len(t.split()) + 2) for t in texts]}


class TinyModel:
    """Test double of a SentenceTransformer that reads 8 tokens (6 words) of a text."""

    max_seq_length = 8

    def __init__(self):
        self.tokenizer = WordTokenizer()
        self.encoded = []

    def encode(self, texts, **options):
        self.encoded.extend(texts)
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def tiny_embedder(backend="torch"):
    embedder = SentenceTransformerEmbedder(progress=False, backend=backend)
    embedder._model = TinyModel()  # loaded: _load hands it back
    return embedder


SEVEN_WORDS = "one two three four five six seven"


def test_texts_longer_than_the_model_reads_are_named_in_one_warning(caplog):
    embedder = tiny_embedder()
    texts = ["short", "six words is all it reads", SEVEN_WORDS, "abcdefghijklmnop", SEVEN_WORDS + " eight"]
    with caplog.at_level("WARNING", logger="fewshot.embedding"):
        vectors = embedder.embed(texts)
    assert vectors.shape == (5, 2)
    [record] = caplog.records
    assert "2 of the 5 texts embedded now are longer than the 8 tokens" in record.getMessage()
    assert "position 2" in record.getMessage() and "'one two three" in record.getMessage()
    # texts of at most 6 bytes cannot hold 7 words: never tokenized
    assert "short" not in embedder._model.tokenizer.seen and "abcdefghijklmnop" in embedder._model.tokenizer.seen


def test_no_warning_when_every_text_fits(caplog):
    embedder = tiny_embedder()
    with caplog.at_level("WARNING", logger="fewshot.embedding"):
        embedder.embed(["short", "six words is all it reads"])
    assert not caplog.records and embedder._model.tokenizer.seen == ["six words is all it reads"]


def test_cached_embedder_warns_once_per_call_naming_the_callers_position(tmp_path, caplog):
    inner = tiny_embedder()
    cached = CachedEmbedder(inner, tmp_path / "e.sqlite", chunk_size=1)
    with caplog.at_level("WARNING", logger="fewshot.embedding"):
        cached.embed(["short", "short", SEVEN_WORDS, SEVEN_WORDS + " eight"])
    [record] = caplog.records  # not one per chunk
    assert "2 of the 3 texts embedded now" in record.getMessage() and "position 2" in record.getMessage()
    caplog.clear()
    tokenized = len(inner._model.tokenizer.seen)
    with caplog.at_level("WARNING", logger="fewshot.embedding"):
        cached.embed([SEVEN_WORDS, "short"])  # all cached: nothing tokenized, nothing said again
    assert not caplog.records and len(inner._model.tokenizer.seen) == tokenized


@pytest.mark.slow
def test_the_real_model_reads_256_word_pieces(caplog):
    embedder = SentenceTransformerEmbedder(progress=False)
    texts = ["word " * 254, "word " * 255]  # 254 + [CLS] + [SEP] = 256 fit; 255 do not
    assert embedder.truncated(texts).tolist() == [1]
    with caplog.at_level("WARNING", logger="fewshot.embedding"):
        embedder.embed(texts)
    assert "1 of the 2 texts embedded now are longer than the 256 tokens" in caplog.text


# -- the int8 backend -------------------------------------------------------------------------------

needs_fast_int8 = pytest.mark.skipif(not int8_supported(), reason="no AVX-512 VNNI here: backend int8 is refused")


def test_the_backend_is_checked():
    with pytest.raises(InputError, match="field 'backend': backend 'fp8' must be one of torch, int8"):
        SentenceTransformerEmbedder(backend="fp8")
    with pytest.raises(InputError, match="backend 'int8' runs on the CPU only, not on device 'cuda'"):
        SentenceTransformerEmbedder(backend="int8", device="cuda")
    with pytest.raises(InputError, match="field '--backend'"):
        check_backend("onnx", field="--backend")


@needs_fast_int8
def test_int8_is_accepted_where_the_cpu_multiplies_int8_fast():
    assert check_backend("int8") == "int8"


def test_int8_is_refused_where_the_cpu_would_make_it_slow(monkeypatch):
    monkeypatch.setattr(embedding, "int8_supported", lambda: False)
    with pytest.raises(InputError, match="field 'backend': backend 'int8' needs a CPU with AVX-512 VNNI"):
        SentenceTransformerEmbedder(backend="int8")
    assert SentenceTransformerEmbedder().backend == "torch"


@needs_fast_int8
def test_the_model_id_names_a_backend_other_than_torch(model_copy):
    """The torch ids stay as they were (existing caches and stores still match); int8 vectors get
    their own id, so a store or the cache never mixes the two."""
    assert SentenceTransformerEmbedder(backend="torch").model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert SentenceTransformerEmbedder(backend="int8").model_id == "sentence-transformers/all-MiniLM-L6-v2+int8"
    local = SentenceTransformerEmbedder(model_copy).model_id
    assert SentenceTransformerEmbedder(model_copy, backend="int8").model_id == local + "+int8"


@needs_fast_int8
def test_the_cache_keeps_the_backends_apart(tmp_path):
    texts = ["a wonderful film", "stock prices fell"]
    torch_side, int8_side = tiny_embedder(), tiny_embedder(backend="int8")
    CachedEmbedder(torch_side, tmp_path / "e.sqlite").embed(texts)
    cached = CachedEmbedder(int8_side, tmp_path / "e.sqlite")
    cached.embed(texts)
    assert cached.computed == 2 and int8_side._model.encoded == texts


def test_int8_linear_layers_stay_close_to_the_float_ones():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.GELU(), torch.nn.Linear(48, 16, bias=False))
    x = torch.randn(3, 7, 64)
    x[1, 2] = 0  # a zero row: no division by a zero scale
    with torch.inference_mode():
        expected = model(x)
        assert quantize_linear_layers(model) == 2
        got = model(x)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert float((got - expected).norm() / expected.norm()) < 0.02
    assert not torch.equal(got, expected)  # the int8 path really ran


@pytest.mark.slow
@needs_fast_int8
def test_int8_vectors_stay_close_to_the_float32_ones():
    """The real bundled model on 50 SST-2 texts. Measured (torch 2.13 CPU): cosine mean 0.9966, lowest
    0.992; each text's nearest other text the same for 96% of the texts, top-8 lists 95% shared."""
    import torch

    texts = [json.loads(line)["text"] for line in (EXAMPLES / "pool.jsonl").read_text().splitlines()[:50]]
    exact = SentenceTransformerEmbedder(progress=False).embed(texts)
    fast_embedder = SentenceTransformerEmbedder(progress=False, backend="int8")
    fast = fast_embedder.embed(texts)
    assert not any(isinstance(m, torch.nn.Linear) for m in fast_embedder._load().modules())
    cosines = np.einsum("ij,ij->i", exact, fast)
    assert cosines.min() >= 0.98 and cosines.mean() >= 0.99 and cosines.mean() < 0.99999
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1, atol=1e-5)
    exact_sims, fast_sims = exact @ exact.T, fast @ fast.T
    np.fill_diagonal(exact_sims, -np.inf)
    np.fill_diagonal(fast_sims, -np.inf)
    assert np.mean(exact_sims.argmax(axis=1) == fast_sims.argmax(axis=1)) >= 0.85
    top = 8
    exact_top, fast_top = np.argsort(-exact_sims, axis=1)[:, :top], np.argsort(-fast_sims, axis=1)[:, :top]
    shared = np.mean([len(set(a) & set(b)) / top for a, b in zip(exact_top, fast_top)])
    assert shared >= 0.85
