"""LocalServer's command line, without starting llama-server."""

import pytest

from fewshot.errors import LLMError
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
        return self
    monkeypatch.setattr(LocalServer, "_start", start)
    LocalServer(extra_args=["--cache-ram", "0"]).start()
    assert tried == [("--cache-ram", "0"), ("--cache-ram", "0", "--no-repack")]

    def fails(self, extra_args):
        tried.append(tuple(extra_args))
        raise LLMError("llama-server exited with code 1 while starting")
    monkeypatch.setattr(LocalServer, "_start", fails)
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
    monkeypatch.setattr(server_module, "model_path", lambda name: tmp_path / "gemma.gguf")
    client = LocalServer(parallel=3).client(cache_dir=tmp_path)
    assert client.slots is not None and len(client.slots.last) == 3 and client.concurrency == 3
    assert client.cache_namespace == "local-llama-server:gemma.gguf"
