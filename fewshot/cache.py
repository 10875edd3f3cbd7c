"""A small sqlite3 key-value store shared by the embedding and LLM caches.

Values are bytes; keys are strings. Writes commit immediately, so an interrupted job keeps what
it computed and a re-run picks up from there.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterable


def default_cache_dir() -> Path:
    """``$FEWSHOT_CACHE_DIR``, else ``$XDG_CACHE_HOME/fewshot``, else ``~/.cache/fewshot``."""
    if os.environ.get("FEWSHOT_CACHE_DIR"):
        return Path(os.environ["FEWSHOT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fewshot"


class SqliteStore:
    """Persistent ``key -> bytes`` map in one sqlite table (thread-safe, one connection).

    >>> import tempfile, pathlib
    >>> store = SqliteStore(pathlib.Path(tempfile.mkdtemp()) / "c.sqlite", table="demo")
    >>> store.put_many([("a", b"1")]); store.get_many(["a", "b"])
    {'a': b'1'}
    """

    def __init__(self, path: str | Path, table: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._table = table
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value BLOB)")
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, bytes] = {}
        with self._lock:
            for start in range(0, len(keys), 500):  # sqlite's variable limit
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, value FROM {self._table} WHERE key IN ({marks})", chunk)
                found.update(rows.fetchall())
        return found

    def get(self, key: str) -> bytes | None:
        return self.get_many([key]).get(key)

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        with self._lock:
            self._db.executemany(f"INSERT OR REPLACE INTO {self._table} VALUES (?, ?)", list(items))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM {self._table}").fetchone()[0]

    def close(self) -> None:
        self._db.close()
