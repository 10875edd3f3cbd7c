import errno
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "sst2"


def pytest_collection_modifyitems(items):
    """Ray tests are slow too: `-m "not llm and not slow"` leaves out everything that starts a server,
    a cluster or another process."""
    for item in items:
        if item.get_closest_marker("ray") or item.get_closest_marker("llm"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own cache folder so runs never leak into each other."""
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))


def unit_rows(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- a real small file system (needs mount: root), for full-disk and read-only faults ----------------------

@pytest.fixture
def mounted(tmp_path):
    """A 256 KiB tmpfs mounted at tmp_path/mnt (skipped with the reason where mounting is not allowed)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if run.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({run.stderr.strip() or 'not permitted'})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill_disk(folder):
    """Fill the file system up to the last byte."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)


def make_read_only(mnt):
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
