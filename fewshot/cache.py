"""A small sqlite3 key-value store shared by the embedding and LLM caches.

Values are bytes; keys are strings. Writes commit immediately, so an interrupted job keeps what
it computed and a re-run picks up from there.

Several processes (pipeline workers, two ``fewshot select`` runs) may share one cache file: it
runs in WAL mode (readers never block the writer), every write is one short ``BEGIN IMMEDIATE``
transaction, and a locked database is waited for, never an error. A cache file that is damaged
or not a database at all is set aside (``NAME.corrupt-<time>``) with a warning and rebuilt: a
cache only saves work, it must never stop a run: a cache that cannot be opened or written (full
disk, read-only file system, no such folder) gives one warning naming its path and the reason, and
the run goes on without it (reads go on while they work; writes stop).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar
from urllib.parse import quote

try:  # POSIX: serialises setting a damaged file aside between processes
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
T = TypeVar("T")
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def default_cache_dir() -> Path:
    """``$FEWSHOT_CACHE_DIR``, else ``$XDG_CACHE_HOME/fewshot``, else ``~/.cache/fewshot``."""
    if os.environ.get("FEWSHOT_CACHE_DIR"):
        return Path(os.environ["FEWSHOT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fewshot"


def _is_busy(err: sqlite3.Error) -> bool:
    """Another connection holds a lock sqlite would not wait for (journal-mode switch, WAL recovery)."""
    return isinstance(err, sqlite3.OperationalError) and ("locked" in str(err) or "busy" in str(err))


def _is_damaged(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)  # Python >= 3.11; the message before that
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return "not a database" in str(err) or "malformed" in str(err)


def _unusable(err: BaseException) -> bool:
    """An error of the disk or the file rather than of the code: full, read-only, cannot open, I/O,
    a lock held past the timeout, a file still damaged after one rebuild."""
    return isinstance(err, (OSError, sqlite3.OperationalError)) or (
        isinstance(err, sqlite3.DatabaseError) and _is_damaged(err))


_warned: set[Path] = set()  # one warning per cache file and process, however many stores open it
_warned_lock = threading.Lock()


def _warn_once(path: Path, message: str) -> None:
    with _warned_lock:
        if path in _warned:
            return
        _warned.add(path)
    log.warning("%s", message)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class SqliteStore:
    """Persistent ``key -> bytes`` map in one sqlite table, safe across threads and processes.

    ``timeout``: seconds to wait for another process's lock before giving up.

    >>> import tempfile, pathlib
    >>> store = SqliteStore(pathlib.Path(tempfile.mkdtemp()) / "c.sqlite", table="demo")
    >>> store.put_many([("a", b"1")]); store.get_many(["a", "b"])
    {'a': b'1'}
    """

    def __init__(self, path: str | Path, table: str, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self._table, self.timeout = table, timeout
        self._lock = threading.Lock()
        self._inode: int | None = None
        self._db: sqlite3.Connection | None = None
        self.writable = True  # False once a write failed for good: later writes are skipped
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._retry(self._connect, reopen=False)
        except Exception as err:  # noqa: BLE001 - _unusable decides
            if not _unusable(err):
                raise
            self._db, self.writable = self._read_only(), False
            self._warn(err, "cannot be opened for writing" if self._db else "cannot be used")

    @property
    def usable(self) -> bool:
        """False once the cache could not even be read: every lookup misses."""
        return self._db is not None

    # -- connection -------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self._inode = _inode(self.path)
        # autocommit: this class opens its own short transactions; timeout = sqlite's busy timeout
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")  # persistent: only the first opener switches
            db.execute("PRAGMA synchronous=NORMAL")  # with WAL: a power cut may lose the last writes, not the file
            db.execute(f"CREATE TABLE IF NOT EXISTS {self._table} (key TEXT PRIMARY KEY, value BLOB)")
        except BaseException:
            db.close()
            raise
        if self._inode is None:
            self._inode = _inode(self.path)
        return db

    def _read_only(self) -> sqlite3.Connection | None:
        """A read-only connection to an existing cache (a full or read-only disk), else None. On a
        full disk sqlite cannot even make its WAL side files: ``immutable`` reads the file as it is
        (no locks, no WAL), which is safe only because nobody can write there either."""
        if not self.path.is_file():
            return None
        for mode in ("mode=ro", "immutable=1"):
            try:
                db = sqlite3.connect(f"file:{quote(str(self.path))}?{mode}", uri=True, timeout=self.timeout,
                                     isolation_level=None, check_same_thread=False)
            except sqlite3.Error:
                continue
            try:
                db.execute(f"SELECT 1 FROM {self._table} LIMIT 1").fetchall()
                return db
            except sqlite3.Error:
                db.close()
        return None

    def _warn(self, err: BaseException, what: str) -> None:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        with contextlib.suppress(OSError):  # sqlite says "disk I/O error" when it cannot map its side files
            if "full" not in reason and shutil.disk_usage(self.path.parent).free == 0:
                reason += "; the disk is full"
        going_on = "reads go on, nothing new is saved" if self._db is not None else "running without it"
        _warn_once(self.path, f"cache {self.path} {what} ({reason}): {going_on}; free space there or "
                              "point --cache-dir / FEWSHOT_CACHE_DIR elsewhere to keep results")

    def _give_up(self, err: BaseException, *, reads: bool) -> None:
        """After an unusable-cache error: stop writing, and stop reading too when a read failed."""
        self.writable = False
        if reads and self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        self._warn(err, "cannot be read" if reads else "cannot be written")

    def _retry(self, work: Callable[[], T], *, reopen: bool = True) -> T:
        """Run ``work``, waiting out locks sqlite's busy handler does not cover and rebuilding a
        damaged file once."""
        deadline, pause, rebuilt = time.monotonic() + self.timeout, 0.01, False
        while True:
            try:
                return work()
            except sqlite3.DatabaseError as err:
                if _is_damaged(err) and not rebuilt:
                    self._set_aside(err, close=reopen)
                    if reopen:
                        self._db = None  # stays None if the new file cannot be made either
                        self._db = self._retry(self._connect, reopen=False)
                    rebuilt = True
                elif _is_busy(err) and time.monotonic() < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.5)
                else:
                    raise

    def _set_aside(self, err: sqlite3.Error, *, close: bool) -> None:
        if close:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        with _file_lock(self.path.with_name(self.path.name + ".lock")):
            # another process may already have replaced the file: move only the one we found damaged
            if self._inode is not None and _inode(self.path) == self._inode:
                aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
                # the side files first (a stale WAL must not replay into the new file), the database
                # last: once it is gone, other processes create a new one with side files of its own
                for suffix in ("-wal", "-shm", "-journal", ""):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
                log.warning("cache %s is damaged (%s): moved it to %s and started a new one", self.path, err, aside)

    # -- key-value API ----------------------------------------------------------------------------
    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        keys = list(dict.fromkeys(keys))

        def read() -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            for start in range(0, len(keys), 500):  # sqlite's variable limit
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, value FROM {self._table} WHERE key IN ({marks})", chunk)
                found.update(rows.fetchall())
            return found

        return self._read(read, {})

    def _read(self, work: Callable[[], T], empty: T) -> T:
        """A read that a full, damaged or unreadable cache turns into ``empty`` (and no more reads)."""
        with self._lock:
            if self._db is None:
                return empty
            try:
                return self._retry(work)
            except Exception as err:  # noqa: BLE001 - _unusable decides
                if not _unusable(err):
                    raise
                self._give_up(err, reads=True)
                return empty

    def get(self, key: str) -> bytes | None:
        return self.get_many([key]).get(key)

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Save ``items``; when the cache cannot take them, warn once and go on (nothing raised)."""
        items = list(items)

        def write() -> None:
            assert self._db is not None
            # IMMEDIATE takes the write lock up front, where the busy timeout applies; a deferred
            # transaction that upgrades from read to write fails at once instead of waiting
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(f"INSERT OR REPLACE INTO {self._table} VALUES (?, ?)", items)
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise

        if items:
            with self._lock:
                if self._db is None or not self.writable:
                    return
                try:
                    self._retry(write)
                except Exception as err:  # noqa: BLE001 - _unusable decides
                    if not _unusable(err):
                        raise
                    self._give_up(err, reads=False)

    def __len__(self) -> int:
        return self._read(lambda: self._db.execute(f"SELECT COUNT(*) FROM {self._table}").fetchone()[0], 0)

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
