"""LocalServer without llama-server: its command line, its client's cache namespace, stop signals
and restarts (a stand-in process plays the server)."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from fewshot.errors import Interrupted, LLMError
from fewshot.llm import server as server_module
from fewshot.llm.server import SPEED_FLAGS, LocalServer, _CrashedWhileStarting


def test_a_server_that_crashes_while_starting_is_started_again_without_repacking(monkeypatch):
    """A CPU that lists AMX where the machine cannot run it: llama-server dies (SIGILL/SIGSEGV)
    in its warm-up; the second start adds --no-repack. Other failures are not retried."""
    tried = []

    def start(self, extra_args):
        tried.append(tuple(extra_args))
        if "--no-repack" not in extra_args:
            raise _CrashedWhileStarting("llama-server exited with code -4 while starting")
    monkeypatch.setattr(LocalServer, "_launch", start)
    LocalServer(extra_args=["--cache-ram", "0"]).start()
    assert tried == [("--cache-ram", "0"), ("--cache-ram", "0", "--no-repack")]

    def fails(self, extra_args):
        tried.append(tuple(extra_args))
        raise LLMError("llama-server exited with code 1 while starting")
    monkeypatch.setattr(LocalServer, "_launch", fails)
    tried.clear()
    with pytest.raises(LLMError, match="code 1"):
        LocalServer().start()
    assert tried == [()]


def test_the_command_keeps_shared_prefixes_cached(monkeypatch, tmp_path):
    """--swa-full (Gemma 3's sliding window otherwise defeats the prompt cache); each of 4 slots
    gets 4096 tokens of context by default."""
    assert "--swa-full" in SPEED_FLAGS
    seen = {}

    class Stop(Exception):
        pass

    def popen(cmd, **kwargs):
        seen["cmd"] = cmd
        raise Stop
    monkeypatch.setattr(server_module, "server_binary", lambda: tmp_path / "llama-server")
    monkeypatch.setattr(server_module, "model_path", lambda name: tmp_path / "m.gguf")
    monkeypatch.setattr(server_module.subprocess, "Popen", popen)
    with pytest.raises(Stop):
        LocalServer(parallel=3, extra_args=["--cache-ram", "0"]).start()
    cmd = seen["cmd"]
    assert cmd[cmd.index("-np") + 1] == "3" and cmd[-2:] == ["--cache-ram", "0"]
    assert "--swa-full" in cmd and cmd[cmd.index("-c") + 1] == "16384"


def test_the_servers_client_spreads_walks_over_its_slots(monkeypatch, tmp_path):
    (tmp_path / "gemma.gguf").write_bytes(b"GGUF model")
    monkeypatch.setattr(server_module, "model_path", lambda name: tmp_path / "gemma.gguf")
    server = LocalServer(parallel=3)
    client = server.client(cache_dir=tmp_path, timeout=7, deadline=9)
    assert client.slots is not None and len(client.slots.last) == 3 and client.concurrency == 3
    assert client.cache_namespace.startswith("local-llama-server:") and client.restart == server.restart
    assert (client.timeout, client.deadline) == (7.0, 9.0)


def test_the_answer_cache_is_keyed_by_the_model_files_content_not_its_name(tmp_path):
    """R8: two different files named model.gguf shared one cache namespace, so one model's
    answers were served for the other."""
    def namespace(path):
        return LocalServer(str(path)).client(cache=False).cache_namespace
    for name, data in (("a", b"GGUF" + bytes(3 << 20)), ("b", b"GGUF" + bytes(3 << 20) + b"fine-tuned"),
                       ("c", b"GGUF" + bytes(3 << 20))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.gguf").write_bytes(data)
    a, b, c = (namespace(tmp_path / name / "model.gguf") for name in "abc")
    assert a != b  # same name, other content
    assert a == namespace(tmp_path / "a" / "model.gguf") == c  # same content, wherever it lies
    (tmp_path / "a" / "model.gguf").write_bytes(b"GGUF" + bytes((3 << 20) - 1) + b"x")  # only the last byte changed
    assert namespace(tmp_path / "a" / "model.gguf") != a


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="POSIX signals")
def test_sigterm_while_the_server_runs_is_raised_as_interrupted():
    """The CLI can say 'terminated (SIGTERM)' and exit 143; the previous handler comes back."""
    before = signal.getsignal(signal.SIGTERM)
    server = LocalServer()
    server._catch_stop_signals()
    try:
        with pytest.raises(Interrupted) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    finally:
        server._restore_signals()
    assert info.value.exit_code == 143 and info.value.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.fixture
def stand_in(monkeypatch):
    """LocalServer whose 'llama-server' is a sleeping process: launches are recorded."""
    launched = []

    def launch(self, extra_args):
        with self._lock:
            if self._stopped:
                raise LLMError("stopped")
            self.port = 10000 + len(launched)
            self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            launched.append(self.process)
    monkeypatch.setattr(LocalServer, "_launch", launch)
    yield launched
    for process in launched:
        process.kill()
        process.wait()


def test_a_dead_server_is_restarted_on_a_new_port_at_most_max_restarts_times(stand_in):
    with LocalServer(max_restarts=2) as server:
        assert server.restart() is None  # it runs: nothing to do
        for n in (1, 2):
            stand_in[-1].kill()
            stand_in[-1].wait()
            assert server.restart() == f"http://127.0.0.1:{10000 + n}/v1" and server.restarts == n
        stand_in[-1].kill()
        stand_in[-1].wait()
        with pytest.raises(LLMError, match=r"died \(killed by SIGKILL\) after 2 restarts: giving up"):
            server.restart()
    assert len(stand_in) == 3 and all(p.poll() is not None for p in stand_in)
    with pytest.raises(LLMError, match="has been stopped"):
        server.restart()  # after stop (Ctrl-C unwinding), nothing starts again


def test_restarts_from_many_threads_start_one_server(stand_in):
    with LocalServer() as server:
        stand_in[-1].kill()
        stand_in[-1].wait()
        urls = []
        threads = [threading.Thread(target=lambda: urls.append(server.restart())) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(urls, key=str) == [None, None, None, "http://127.0.0.1:10001/v1"] and len(stand_in) == 2
