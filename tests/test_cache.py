"""The sqlite cache under concurrent processes and threads, and with a damaged file."""

import logging
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
import traceback

import numpy as np
import pytest

from fewshot.cache import SqliteStore
from fewshot.embedding import CachedEmbedder
from tests.conftest import EXAMPLES, ROOT, fill_disk, make_read_only

WORKERS, ENTRIES = 4, 6


def _context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _value(worker, i):
    return f"{worker}:{i}".encode() * 10


def _worker(path, worker, barrier, failures):
    """Opens the store the moment the others do, then writes one entry at a time and reads back."""
    try:
        barrier.wait()
        store = SqliteStore(path, "t")
        for i in range(ENTRIES):
            store.put_many([(f"{worker}-{i}", _value(worker, i))])
            assert store.get(f"{worker}-{i}") == _value(worker, i)
            store.get_many(f"{other}-{i}" for other in range(WORKERS))
        store.close()
        failures.put(None)
    except BaseException:  # noqa: BLE001 - report it to the test, whatever it is
        failures.put(traceback.format_exc())


@pytest.mark.parametrize("start", ["new", "damaged"])
def test_processes_opening_and_writing_one_store_together_lose_nothing(tmp_path, start):
    # Each round opens a new file from all workers at once: the switch to WAL used to fail with
    # "database is locked" in about one round in five. A damaged file is set aside exactly once.
    context, errors = _context(), []
    for round_ in range(40 if start == "new" else 20):
        path = tmp_path / f"round{round_}.sqlite"
        if start == "damaged":
            path.write_bytes(b"torn write" * 300)
        barrier, failures = context.Barrier(WORKERS), context.Queue()
        workers = [context.Process(target=_worker, args=(path, w, barrier, failures)) for w in range(WORKERS)]
        for process in workers:
            process.start()
        errors += [e for e in (failures.get(timeout=120) for _ in workers) if e]
        for process in workers:
            process.join(timeout=60)
        assert not errors, errors[0]
        store = SqliteStore(path, "t")
        expected = {f"{w}-{i}": _value(w, i) for w in range(WORKERS) for i in range(ENTRIES)}
        assert store.get_many(expected) == expected and len(store) == len(expected)
        store.close()
        aside = list(tmp_path.glob(f"{path.name}.corrupt-*"))
        assert len(aside) == (start == "damaged"), aside


def test_threads_share_one_store_and_open_their_own(tmp_path):
    path, errors = tmp_path / "c.sqlite", []
    shared = SqliteStore(path, "t")

    def work(worker):
        try:
            own = SqliteStore(path, "t")
            for i in range(20):
                (shared if i % 2 else own).put_many([(f"{worker}-{i}", b"x")])
                own.get_many([f"{worker}-{i}"])
        except Exception:  # noqa: BLE001
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert len(shared) == 6 * 20


def test_a_file_that_is_not_a_database_is_set_aside_and_rebuilt(tmp_path, caplog):
    path = tmp_path / "c.sqlite"
    garbage = b"half-written cache after a full disk " * 40
    path.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="fewshot.cache"):
        store = SqliteStore(path, "t")
    store.put_many([("a", b"1")])
    assert store.get_many(["a"]) == {"a": b"1"}
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("c.sqlite.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert "damaged" in caplog.text and aside[0].name in caplog.text


def test_a_file_damaged_while_open_is_rebuilt_on_the_next_use(tmp_path, caplog):
    path = tmp_path / "c.sqlite"
    store = SqliteStore(path, "t")
    store.put_many([("a", b"1")])
    store.close()
    reader = SqliteStore(path, "t")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"c.sqlite{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"\0garbage" * 2048)  # e.g. another program wrote over it
    with caplog.at_level(logging.WARNING, logger="fewshot.cache"):
        assert reader.get_many(["a"]) == {}
    reader.put_many([("b", b"2")])
    assert SqliteStore(path, "t").get_many(["a", "b"]) == {"b": b"2"}
    assert "damaged" in caplog.text


def test_embedding_cache_survives_a_damaged_file(tmp_path):
    class Fixed:
        model_id = "fixed"

        def embed(self, texts):
            return np.ones((len(texts), 2), dtype=np.float32)

    (tmp_path / "e.sqlite").write_bytes(b"not sqlite" * 100)
    embedder = CachedEmbedder(Fixed(), tmp_path / "e.sqlite")
    assert embedder.embed(["a", "b"]).shape == (2, 2) and embedder.computed == 2
    assert CachedEmbedder(Fixed(), tmp_path / "e.sqlite").embed(["a"]).shape == (1, 2)


def _select(tmp_path, name):
    command = [str(ROOT / ".venv" / "bin" / "fewshot"), "select", "--pool", str(tmp_path / "pool.jsonl"),
               "--queries", str(EXAMPLES / "queries.jsonl"), "--method", "knn", "--k", "2",
               "--out", str(tmp_path / f"{name}.jsonl")]
    if not os.path.exists(command[0]):
        command[:1] = [sys.executable, "-m", "fewshot"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "FEWSHOT_CACHE_DIR": str(tmp_path / "shared-cache")})


@pytest.mark.slow  # CLI processes that load the bundled model
def test_two_cli_runs_started_together_share_a_new_cache(tmp_path):
    lines = (EXAMPLES / "pool.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:150]
    (tmp_path / "pool.jsonl").write_text("".join(lines), encoding="utf-8")
    runs = [_select(tmp_path, name) for name in ("a", "b")]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert [code for code, _ in results] == [0, 0], results
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert len(SqliteStore(tmp_path / "shared-cache" / "embeddings.sqlite", "embeddings")) >= 150


@pytest.mark.slow  # CLI processes that load the bundled model
def test_cli_run_goes_on_past_a_damaged_cache(tmp_path):
    lines = (EXAMPLES / "pool.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:20]
    (tmp_path / "pool.jsonl").write_text("".join(lines), encoding="utf-8")
    (tmp_path / "shared-cache").mkdir()
    (tmp_path / "shared-cache" / "embeddings.sqlite").write_bytes(b"\x00\xff" * 3000)
    run = _select(tmp_path, "a")
    assert run.wait(timeout=300) == 0
    assert "damaged" in run.stderr.read()


# -- a cache that cannot be written or read never stops a run ------------------------------------------

class Vectors:
    """Embedder double: records the texts it embeds."""

    model_id = "vectors"

    def __init__(self):
        self.seen = []

    def embed(self, texts):
        self.seen.extend(texts)
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


class _Failing:
    """A sqlite connection whose statements starting with ``fails_on`` raise ``message``."""

    def __init__(self, db, fails_on, message):
        self._db, self._fails_on, self._message = db, fails_on, message

    def execute(self, sql, *args):
        if sql.startswith(self._fails_on):
            raise sqlite3.OperationalError(self._message)
        return self._db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._db, name)


def _failing_connections(monkeypatch, fails_on, message):
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: _Failing(real(*a, **k), fails_on, message))


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_full_cache_warns_once_keeps_reading_and_returns_what_it_computed(tmp_path, monkeypatch, caplog):
    path = tmp_path / "e.sqlite"
    CachedEmbedder(Vectors(), path).embed(["a"])
    _failing_connections(monkeypatch, "BEGIN IMMEDIATE", "database or disk is full")
    inner = Vectors()
    embedder = CachedEmbedder(inner, path, chunk_size=2)
    with caplog.at_level(logging.WARNING, logger="fewshot.cache"):
        vectors = embedder.embed(["a", "bb", "ccc", "dddd", "eeeee"])
        assert embedder.embed(["ffffff"]).tolist() == [[6.0, 1.0]]
        SqliteStore(path, "responses").put_many([("k", b"v")])  # the LLM cache on the same file
    assert vectors[:, 0].tolist() == [1, 2, 3, 4, 5]
    assert inner.seen == ["bb", "ccc", "dddd", "eeeee", "ffffff"]  # "a" still read from the cache
    (warning,) = _warnings(caplog)
    assert str(path) in warning and "database or disk is full" in warning


def test_a_cache_folder_that_cannot_be_created_is_skipped_with_one_warning(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "cache" / "e.sqlite"
    with caplog.at_level(logging.WARNING, logger="fewshot.cache"):
        embedder = CachedEmbedder(Vectors(), path)
        assert embedder.embed(["a", "bb"]).shape == (2, 2) and embedder.embed(["a"]).shape == (1, 2)
    assert embedder.computed == 3 and not embedder.store.usable
    (warning,) = _warnings(caplog)
    assert str(path) in warning and "cannot be used" in warning


def test_a_cache_that_cannot_be_read_is_dropped_with_one_warning(tmp_path, monkeypatch, caplog):
    path = tmp_path / "e.sqlite"
    CachedEmbedder(Vectors(), path).embed(["a"])
    _failing_connections(monkeypatch, "SELECT key", "disk I/O error")
    embedder = CachedEmbedder(Vectors(), path)
    with caplog.at_level(logging.WARNING, logger="fewshot.cache"):
        assert embedder.embed(["a", "bb"]).shape == (2, 2) and embedder.embed(["a"]).shape == (1, 2)
    assert embedder.inner.seen == ["a", "bb", "a"]
    (warning,) = _warnings(caplog)
    assert str(path) in warning and "disk I/O error" in warning


def test_a_cache_on_a_full_file_system(mounted, caplog):
    path = mounted / "cache" / "e.sqlite"
    CachedEmbedder(Vectors(), path).embed(["old"])
    fill_disk(mounted)
    inner = Vectors()
    with caplog.at_level(logging.WARNING, logger="fewshot.cache"):
        embedder = CachedEmbedder(inner, path, chunk_size=100)
        vectors = embedder.embed(["old"] + [f"new text {i} " * 40 for i in range(1000)])
        fresh = CachedEmbedder(Vectors(), mounted / "other" / "e.sqlite")  # a new cache on the full disk
        assert fresh.embed(["x"]).shape == (1, 2)
    assert vectors.shape == (1001, 2) and "old" not in inner.seen
    warnings = _warnings(caplog)
    assert len(warnings) == 2 and all("disk is full" in w for w in warnings)
    assert str(path) in warnings[0] and str(mounted / "other" / "e.sqlite") in warnings[1]


def test_a_cache_on_a_read_only_file_system(mounted, caplog):
    path = mounted / "e.sqlite"
    writer = CachedEmbedder(Vectors(), path)
    writer.embed(["old"])
    writer.store.close()
    make_read_only(mounted)
    inner = Vectors()
    with caplog.at_level(logging.WARNING, logger="fewshot.cache"):
        assert CachedEmbedder(inner, path).embed(["old", "new"]).shape == (2, 2)
    (warning,) = _warnings(caplog)
    assert str(path) in warning and inner.seen in (["new"], ["old", "new"])


def test_counting_a_cache_that_fails_is_empty_not_an_error(tmp_path, monkeypatch):
    """len() went around the unusable-cache handling that get_many and put_many have."""
    store = SqliteStore(tmp_path / "c.sqlite", "t")
    store.put_many([("a", b"1")])
    monkeypatch.setattr(store, "_retry", lambda work, **_: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error")))
    assert len(store) == 0 and store.get("a") is None
