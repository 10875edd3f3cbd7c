"""One client for every OpenAI-compatible endpoint: the transport (a timeout per attempt, a total
deadline, retries, progress while waiting, interruptible bounded concurrency, a local server
started again when it dies), a persistent response cache and counters. What the answers mean is
elsewhere: label scoring in :mod:`fewshot.llm.scoring`, slot choice in :mod:`fewshot.llm.slots`."""

from __future__ import annotations

import email.utils
import hashlib
import itertools
import json
import os
import random
import re
import sys
import threading
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence, TypeVar, Union

from ..cache import SqliteStore, default_cache_dir
from ..errors import InputError, LLMError
from .responses import Token, completion_text, top_tokens
from .scoring import LabelScores, check_labels, label_key, walk
from .slots import SlotPool

__all__ = ["LLMClient", "LabelScores", "Prompt", "SlotPool", "check_labels", "endpoint_from_env", "label_key",
           "say"]

T = TypeVar("T")
R = TypeVar("R")
_NUMBER = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")

Prompt = Union[str, list[dict[str, str]]]  # text (completions) or chat messages (chat)
_TOP_CAPS = {"chat": 20, "completions": 5}  # OpenAI's maxima, used when a server refuses more
_RETRY_AFTER_MAX = 60.0  # a longer Retry-After is a quota reset, not a transient error: give up
_POLL = 0.25  # seconds between looks at a stop flag while waiting


def say(message: str) -> None:
    """The default ``notify`` of :class:`LLMClient`: one line on stderr."""
    print(f"fewshot: {message}", file=sys.stderr, flush=True)


class _Failure(Exception):
    """One attempt failed in a way another attempt may fix. ``kind``: "timeout", "connection" or
    "status" (429, 5xx); ``detail``: what happened, in words."""

    def __init__(self, kind: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


class _Rejected(LLMError):
    """The endpoint refused the request itself (HTTP 400): a caller may ask differently."""


class _Stopped(LLMError):
    """The client was closed or its batch interrupted: no new request is sent."""


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a 429/503 answer asks to wait (``retry-after-ms``; ``retry-after`` in seconds or as
    an HTTP date); None when it does not say.

    >>> _retry_after({"retry-after": "2"}), _retry_after({"retry-after-ms": "1500"}), _retry_after({})
    (2.0, 1.5, None)
    """
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return float(value)
        except ValueError:
            return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError, OverflowError):
        return None


def _backoff(retry: int) -> float:
    """Seconds before retry number ``retry`` (1, 2, ...): 0.5, 1, 2, 4, 8, 8, ... less up to 25%."""
    return min(8.0, 0.5 * 2 ** (retry - 1)) * (1 - 0.25 * random.random())


def _connection_problem(err: BaseException) -> str:
    """A failed connection in words ("connection refused", ...), from the chain of causes.

    >>> err = ConnectionError("x"); err.__cause__ = ConnectionRefusedError(111, "Connection refused")
    >>> _connection_problem(err)
    'connection refused'
    """
    chain: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = " ".join(f"{type(e).__name__} {e}" for e in chain).lower()
    for words, said in (("refused", "connection refused"), ("reset", "connection reset"),
                        ("disconnect", "the server closed the connection without answering"),
                        ("name or service", "unknown host name"), ("nodename", "unknown host name")):
        if words in text:
            return said
    last = chain[-1]
    return f"{type(last).__name__}: {last}" if str(last) else type(last).__name__


DEFAULT_TIMEOUT = 120.0  # seconds per try: a long prompt queued on a 2-core local server takes tens of seconds


def check_wait(timeout: float, deadline: float | None) -> None:
    """Refuse a per-try ``timeout`` or a total ``deadline`` that is not a positive number of seconds.

    >>> check_wait(30, None)
    >>> check_wait(0, None)
    Traceback (most recent call last):
    ...
    fewshot.errors.InputError: field '--timeout': timeout=0 must be a positive number of seconds
    """
    for name, value in (("timeout", timeout), ("deadline", deadline)):
        if value is not None and not value > 0:
            raise InputError(f"{name}={value} must be a positive number of seconds", field=f"--{name}")


class LLMClient:
    """An OpenAI-compatible endpoint.

    ``api="completions"`` (llama-server, vLLM, legacy OpenAI) or ``"chat"`` (chat models; a prompt
    is then a list of messages, see :func:`fewshot.llm.chat.chat_messages`). Responses are cached in
    sqlite, keyed by ``cache_namespace`` (default: the URL) + model + request, so a re-run repeats
    no finished call.

    Waiting: one attempt waits at most ``timeout`` seconds for its answer (120: a long prompt on a
    small CPU server, queued behind a few others, can take tens of seconds). Timeouts, connection
    errors, 408, 409, 429 and 5xx are tried again, up to ``max_retries`` times, after an exponential
    backoff (0.5 s, 1 s, 2 s, ...) or the server's Retry-After; one request, retries included, takes
    at most ``deadline`` seconds (None: 2.5 x ``timeout``, i.e. two full attempts and the waits
    between them). While a request has waited ``progress_every`` seconds or more, ``notify`` gets a
    line every ``progress_every`` seconds ("waiting for URL: 4 requests in flight, longest 45 s");
    it also hears of server restarts. The default, :func:`say`, prints to stderr; None is silent.
    Errors name the endpoint and what happened (timed out, connection refused, HTTP status, a reply
    that is not JSON).

    ``restart``: for a server fewshot started (:meth:`LocalServer.client
    <fewshot.llm.server.LocalServer.client>`). Called when a connection fails; it starts the server
    again if it died and returns its new base URL (the port may change; the cache namespace stays),
    returns None when the server still runs, or raises :class:`LLMError` when it will not restart.
    The request is then sent again, and ``stats["server_restarts"]`` counts the restart.

    ``top_logprobs`` alternatives are asked for each next token (100: llama-server and vLLM give
    that many, so a label is rarely missed; a server that refuses is asked again with OpenAI's
    maximum, 20 for chat and 5 for completions). ``token_ids``: when the server names token ids
    (llama-server), a followed label path is sent as ``[prompt, id, ...]``, so the path scored is
    the path the model saw rather than a re-tokenisation of its text. ``chat_prefill``: whether
    the chat endpoint continues a final assistant message, which lets chat scoring follow a label
    past its first token; None = when the server names token ids (llama-server does both).
    ``slots``: llama-server's number of slots (``-np``); each label walk then holds one slot
    (``id_slot``) chosen by :class:`SlotPool`, so its prompt prefix stays cached. None: the server
    chooses (other endpoints do not know ``id_slot``).

    ``stats`` counts ``calls`` (HTTP requests), ``cached`` (answered from the response cache),
    ``prompt_tokens``/``completion_tokens`` (usage), ``label_paths``, ``label_fallbacks``,
    ``unscored_prompts``, ``partial_credits``, ``empty_answers``, ``server_restarts`` and, where the
    server reports ``timings`` (llama-server), ``cached_prompt_tokens`` (prompt tokens it reused from
    its KV cache, ``cache_n``), ``uncached_prompt_tokens`` (tokens it computed, ``prompt_n``) and
    ``prompt_ms`` (the time it spent on them); the server times only the first prompt of a batch
    (:meth:`request_many`), the others are counted in ``untimed_prompts``.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 api: Literal["completions", "chat"] = "completions", timeout: float = DEFAULT_TIMEOUT,
                 deadline: float | None = None, max_retries: int = 4, concurrency: int = 4,
                 top_logprobs: int = 100, min_branch_prob: float = 0.02, max_depth: int = 8,
                 token_ids: bool = True, chat_prefill: bool | None = None, cache: bool = True,
                 cache_dir: str | Path | None = None, cache_namespace: str | None = None,
                 slots: int | None = None, restart: Callable[[], str | None] | None = None,
                 notify: Callable[[str], None] | None = say, progress_every: float = 20.0) -> None:
        if api not in ("completions", "chat"):
            raise InputError(f"unknown LLM api {api!r}: use 'completions' or 'chat'")
        check_wait(timeout, deadline)
        self.base_url, self.model, self.api, self.api_key = base_url.rstrip("/"), model, api, api_key
        # what identifies the endpoint in the cache: its URL, or a stable name for a local server
        # whose port changes on every start
        self.cache_namespace = cache_namespace or self.base_url
        self.timeout, self.deadline = float(timeout), float(deadline if deadline is not None else 2.5 * timeout)
        self.max_retries = max_retries
        self.top_logprobs, self.concurrency, self.min_branch_prob = top_logprobs, concurrency, min_branch_prob
        self.max_depth, self.token_ids, self.chat_prefill = max_depth, token_ids, chat_prefill
        self.restart, self.notify, self.progress_every = restart, notify, progress_every
        self._client = self._http_client()
        self._store = SqliteStore(Path(cache_dir or default_cache_dir()) / "llm.sqlite", "responses") if cache else None
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.logprobs_seen = False  # set by the first answer with logprobs (see _top)
        self.slots = SlotPool(slots) if slots else None
        self._held = threading.local()  # the slot this thread's current walk holds
        self._local = threading.local()  # the stop flag of the batch this thread works for (see map)
        self._closed = threading.Event()
        self._restart_lock = threading.Lock()
        self._waiting: dict[int, float] = {}  # requests in flight: when each started
        self._ids = itertools.count()
        self._watcher: threading.Thread | None = None

    def _http_client(self) -> Any:
        from openai import OpenAI

        # retries are ours (_send_with_retries): a stop flag and the deadline are checked before each
        return OpenAI(base_url=self.base_url, api_key=self.api_key or "not-needed", timeout=self.timeout,
                      max_retries=0)

    @property
    def _where(self) -> str:
        return (f"the local llama-server fewshot started ({self.base_url})" if self.restart is not None
                else f"the LLM endpoint {self.base_url}")

    # -- raw requests ---------------------------------------------------------------------------
    def request(self, prompt: Prompt | list[str | int], **params: Any) -> dict[str, Any]:
        """One request as a plain dict, from the cache when it was made before. ``prompt``: text or
        ``[text, token id, ...]`` (completions), or a list of messages (chat; text becomes one
        user message)."""
        if self.api == "chat" and isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        key = self._key(prompt, params)
        if self._store is not None and (hit := self._store.get(key)) is not None:
            self._count(cached=1)
            return json.loads(hit)
        return self._ask([prompt], [key], params)[0]

    def _key(self, prompt: Any, params: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps([self.cache_namespace, self.model, self.api, prompt, params],
                                         sort_keys=True).encode()).hexdigest()

    def request_many(self, prompts: Sequence[str | list[str | int]], **params: Any) -> list[dict[str, Any]]:
        """:meth:`request` for several completions prompts, the uncached ones in one HTTP request
        (llama-server answers a list of prompts with one choice each, in order). Each answer is
        cached under its own single-prompt key, so it equals what :meth:`request` gives and a
        re-run finds it."""
        if self.api != "completions":
            raise InputError("several prompts in one request need the completions API")
        keys = [self._key(prompt, params) for prompt in prompts]
        hits = self._store.get_many(keys) if self._store is not None else {}
        answers: list[dict[str, Any] | None] = [json.loads(hits[key]) if key in hits else None for key in keys]
        if hits:
            self._count(cached=sum(key in hits for key in keys))
        todo = [i for i, answer in enumerate(answers) if answer is None]
        if todo:
            for i, answer in zip(todo, self._ask([prompts[i] for i in todo], [keys[i] for i in todo], params)):
                answers[i] = answer
        return answers  # type: ignore[return-value]

    def _ask(self, prompts: list[Any], keys: list[str], params: dict[str, Any]) -> list[dict[str, Any]]:
        """One HTTP request for ``prompts`` (several: llama-server's multi-prompt completions), counted
        and cached answer by answer.

        llama-server answers several prompts with the usage and timings of the first one only
        (it keeps the first prompt's reply and appends the other choices; checked in
        tests/llm/test_local_server.py). So a batch counts: ``prompt_tokens`` from the first
        prompt's count (:func:`_batch_prompt_tokens`), ``completion_tokens`` as the first's for each
        (one token each: a walk asks for max_tokens=1), and the server timings of the first prompt
        only; the others are counted in ``untimed_prompts``."""
        response = self._call(prompts[0] if len(prompts) == 1 else prompts, params)
        answers = [response]
        if len(prompts) > 1:
            choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
            if len(choices) != len(prompts):
                raise LLMError(f"{self._where} answered {len(choices)} of {len(prompts)} prompts sent together")
            answers = [{**response, "choices": [{**choice, "index": 0}]} for choice in choices]
        usage, timings = response.get("usage") or {}, _server_timings(response)
        self._count(calls=1, prompt_tokens=_batch_prompt_tokens(prompts, usage.get("prompt_tokens") or 0),
                    completion_tokens=len(prompts) * (usage.get("completion_tokens") or 0), **timings,
                    **({"untimed_prompts": len(prompts) - 1} if timings and len(prompts) > 1 else {}))
        if self._store is not None:
            self._store.put_many([(key, json.dumps(answer).encode()) for key, answer in zip(keys, answers)])
        return answers

    def _count(self, **amounts: float) -> None:
        with self._lock:
            self.stats.update(amounts)

    @contextmanager
    def holding_slot(self, prompt: Prompt) -> Iterator[None]:
        """Send this thread's requests to one server slot while the block runs (see ``slots``);
        nested blocks keep the outer slot."""
        if self.slots is None or getattr(self._held, "slot", None) is not None:
            yield
            return
        text = prompt if isinstance(prompt, str) else json.dumps(prompt)
        self._held.slot = self.slots.acquire(text)
        try:
            yield
        finally:
            slot, self._held.slot = self._held.slot, None
            self.slots.release(slot, text)

    # -- transport ------------------------------------------------------------------------------
    def _call(self, prompt: Any, params: dict[str, Any]) -> dict[str, Any]:
        if self.api == "completions" and isinstance(prompt, list) and any(isinstance(p, dict) for p in prompt):
            raise InputError("the completions API takes a text prompt; chat messages need api='chat'")
        slot = getattr(self._held, "slot", None)
        if slot is not None:
            params = {**params, "extra_body": {"id_slot": slot}}
        request = self._begin_waiting()
        try:
            return self._send_with_retries(prompt, params)
        finally:
            with self._lock:
                del self._waiting[request]

    def _stopping(self) -> bool:
        cancel = getattr(self._local, "cancel", None)
        return self._closed.is_set() or (cancel is not None and cancel.is_set())

    def _check_stop(self) -> None:
        if self._stopping():
            raise _Stopped(f"stopped: no new request to {self.base_url} (the client was closed or interrupted)")

    def _pause(self, seconds: float) -> None:
        """Sleep, looking at the stop flag every fraction of a second."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._check_stop()
            time.sleep(min(_POLL, left))
        self._check_stop()

    def _send_with_retries(self, prompt: Any, params: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        end, tries, last = started + self.deadline, 0, None
        while True:
            self._check_stop()  # nothing new is sent once stopped, not even a retry
            if (left := end - time.monotonic()) <= 0:
                raise self._gave_up(last, tries, started, deadline_hit=True)
            url = self.base_url
            try:
                answer = self._send(prompt, params, min(self.timeout, left))
            except _Failure as failure:
                if failure.kind == "connection" and self._revived(url):
                    continue  # the server died and was started again: this try does not count
                tries, last = tries + 1, failure
                wait = failure.retry_after if failure.retry_after is not None else _backoff(tries)
                if tries > self.max_retries or wait > _RETRY_AFTER_MAX:
                    raise self._gave_up(last, tries, started, deadline_hit=False) from None
                if time.monotonic() + wait >= end:
                    raise self._gave_up(last, tries, started, deadline_hit=True) from None
                self._pause(max(0.0, wait))
                continue
            self._check_stop()  # an answer that arrives after a stop is dropped, not cached
            return answer

    def _gave_up(self, last: _Failure | None, tries: int, started: float, *, deadline_hit: bool) -> LLMError:
        tried = f"{tries} {'try' if tries == 1 else 'tries'} in {time.monotonic() - started:.0f} s"
        if deadline_hit:
            tried += f", the deadline of {self.deadline:g} s"
        if last is None or last.kind == "timeout":
            return LLMError(f"{self._where} timed out: no answer ({tried}, each try waiting up to "
                            f"{self.timeout:g} s); set a longer timeout or deadline if it is only slow")
        if last.kind == "connection":
            hint = "" if self.restart is not None else "; is a server running at that address?"
            return LLMError(f"cannot reach {self._where}: {last.detail} ({tried}){hint}")
        return LLMError(f"{self._where} failed: {last.detail} ({tried})")

    def _send(self, prompt: Any, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One attempt: the answer as a dict, a :class:`_Failure` to retry, or an LLMError."""
        import openai

        try:
            if self.api == "chat":
                chat = dict(params)
                if "logprobs" in chat:
                    chat["top_logprobs"], chat["logprobs"] = chat.pop("logprobs"), True
                raw = self._client.chat.completions.with_raw_response.create(
                    model=self.model, messages=prompt, timeout=timeout, **chat)
            else:
                raw = self._client.completions.with_raw_response.create(
                    model=self.model, prompt=prompt, timeout=timeout, **params)
        except openai.APITimeoutError:
            raise _Failure("timeout", f"no answer within {timeout:g} s") from None
        except openai.APIConnectionError as err:
            raise _Failure("connection", _connection_problem(err)) from None
        except openai.APIStatusError as err:
            status, message = err.status_code, _error_message(err)
            if status in (408, 409, 429) or status >= 500:
                raise _Failure("status", f"HTTP {status} {message}", _retry_after(err.response.headers)) from None
            if status == 404:
                raise LLMError(f"{self._where} has no model {self.model!r} or no such path "
                               f"(HTTP 404 {message}); check the model name and that the URL ends in /v1") from None
            if status == 400 and any(w in message.lower() for w in ("context", "too long", "exceed")):
                raise LLMError(f"the prompt is longer than the model's context ({message}); "
                               "use fewer demos or --max-tokens") from None
            if status == 400:
                raise _Rejected(f"{self._where} rejected the request: {message}") from None
            raise LLMError(f"{self._where} refused the request: HTTP {status} {message}") from None
        text = raw.text
        try:
            answer = json.loads(text)
        except ValueError:
            answer, what = None, "not valid JSON"
        else:
            what = "not a JSON object"
        if not isinstance(answer, dict):
            shown = f"{text[:200]!r}{' ...' if len(text) > 200 else ''}"
            raise LLMError(f"{self._where} sent a reply that is {what}: {shown}")
        return answer

    def _revived(self, url: str) -> bool:
        """After a failed connection to ``url``: True when the server is running again there or
        elsewhere (another thread or ``restart`` started it; the client now points to it)."""
        if self.restart is None or self._stopping():
            return False
        with self._restart_lock:
            if self.base_url != url:
                return True  # another request restarted it meanwhile
            new_url = self.restart()
            if new_url is None:
                return False
            self.base_url = new_url.rstrip("/")
            self._client = self._http_client()
            self._count(server_restarts=1)
        self._notify(f"the local llama-server fewshot started had died; started it again at {self.base_url} "
                     f"(restart {self.stats['server_restarts']}); the run goes on")
        return True

    def _notify(self, message: str) -> None:
        if self.notify is not None:
            self.notify(message)

    # -- waiting: progress and interrupts ----------------------------------------------------------
    def _begin_waiting(self) -> int:
        with self._lock:
            request = next(self._ids)
            self._waiting[request] = time.monotonic()
            if self._watcher is None and self.notify is not None and self.progress_every > 0:
                self._watcher = threading.Thread(target=self._watch, name="fewshot-llm-progress", daemon=True)
                self._watcher.start()
        return request

    def _watch(self) -> None:
        """Every ``progress_every`` seconds while a request has waited that long: one line to
        ``notify``. Ends when nothing is in flight (the next request starts another)."""
        last = time.monotonic()
        while not self._closed.wait(min(1.0, self.progress_every / 4)):
            with self._lock:
                if not self._waiting:
                    self._watcher = None
                    return
                now, n, oldest = time.monotonic(), len(self._waiting), min(self._waiting.values())
            if now - oldest >= self.progress_every and now - last >= self.progress_every:
                last = now
                self._notify(f"waiting for {self.base_url}: {n} request{'s' if n > 1 else ''} in flight, "
                             f"longest {now - oldest:.0f} s")
        with self._lock:
            self._watcher = None

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(x) for x in items]`` with at most ``concurrency`` calls at once.

        The first error, or an interrupt (Ctrl-C; a stop signal raised as an exception) stops the
        batch at once: no worker starts another item or sends another request (retries
        included), the error is raised without waiting for requests in flight, and their answers
        are dropped when they come. The workers are daemon threads, so a request that never
        answers does not hold the process open.
        """
        items = list(items)
        if self.concurrency <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        cancel, lock = threading.Event(), threading.Lock()
        todo = iter(range(len(items)))
        results: list[Any] = [None] * len(items)
        errors: list[tuple[int, BaseException]] = []

        def work() -> None:
            self._local.cancel = cancel
            while not cancel.is_set():
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    results[i] = fn(items[i])
                except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                    with lock:
                        errors.append((i, err))
                    cancel.set()

        workers = [threading.Thread(target=work, name=f"fewshot-llm-{n}", daemon=True)
                   for n in range(min(self.concurrency, len(items)))]
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                while worker.is_alive():
                    worker.join(_POLL)  # short waits: an interrupt is raised here at once
        except BaseException:
            cancel.set()
            raise
        if errors:
            real = [e for e in errors if not isinstance(e[1], _Stopped)] or errors
            raise min(real, key=lambda e: e[0])[1]
        return results

    # -- what callers use -------------------------------------------------------------------------
    def _path_request(self, prompt: Prompt, path: Sequence[Token]) -> Any:
        if not path:
            return prompt
        if self.api == "chat":
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            return messages + [{"role": "assistant", "content": "".join(t.text for t in path)}]
        if self.token_ids and all(t.id is not None for t in path):
            return [prompt, *(t.id for t in path)]  # llama-server: text, then the very tokens
        return prompt + "".join(t.text for t in path)  # type: ignore[operator]

    def next_tokens_many(self, prompt: Prompt, paths: Sequence[Sequence[Token]]) -> list[list[Token]]:
        """:meth:`next_tokens` for several paths; with llama-server (``slots`` set) in one HTTP
        request, answered by the slot this walk holds, where ``prompt`` is cached."""
        if len(paths) < 2 or self.slots is None or self.api != "completions":
            return [self.next_tokens(prompt, path) for path in paths]
        requests = [self._path_request(prompt, path) for path in paths]
        try:
            answers = self.request_many(requests, max_tokens=1, temperature=0.0, logprobs=self.top_logprobs)
        except _Rejected:
            return [self.next_tokens(prompt, path) for path in paths]  # each adapts to the refusal
        return [self._top(answer) for answer in answers]

    def _top(self, response: dict[str, Any]) -> list[Token]:
        """:func:`top_tokens`, except that an answer without logprobs from an endpoint known to give
        them (llama-server, which adds ``timings``, or one that gave logprobs before) is an answer
        with no candidates (``stats["empty_answers"]``): llama-server leaves out the logprobs of a
        first token that is only part of a UTF-8 character. The walk then reaches no label, and
        the prompt is unscored."""
        tokens = top_tokens(response, missing_ok=self.logprobs_seen or "timings" in response)
        if tokens:
            self.logprobs_seen = True
        else:
            self._count(empty_answers=1)
        return tokens

    def next_tokens(self, prompt: Prompt, path: Sequence[Token] = ()) -> list[Token]:
        """The top candidates for the token after ``prompt`` and ``path`` (tokens already taken),
        most likely first."""
        request = self._path_request(prompt, path)
        try:
            return self._top(self.request(request, max_tokens=1, temperature=0.0, logprobs=self.top_logprobs))
        except _Rejected as err:
            if "logprob" in str(err).lower() and self.top_logprobs > _TOP_CAPS[self.api]:
                self.top_logprobs = _TOP_CAPS[self.api]  # e.g. OpenAI: at most 20 (chat) or 5
            elif isinstance(request, list) and self.api == "completions" and self.token_ids:
                self.token_ids = False  # a server that names ids but takes no id prompts
            else:
                raise
            return self.next_tokens(prompt, path)

    def label_probs(self, prompt: Prompt, labels: Sequence[str]) -> LabelScores:
        """P(label | prompt) for each label: :func:`fewshot.llm.scoring.walk` (which documents the
        scoring) over this endpoint's next-token logprobs. The walk holds one server slot, so its
        follow-up requests find their prompt cached; paths are followed where the endpoint can
        continue an answer (completions; chat with ``chat_prefill``). Counted in ``stats``:
        ``label_paths``, ``partial_credits``, ``label_fallbacks`` (missing labels) and
        ``unscored_prompts``."""
        labels = check_labels(labels)
        with self.holding_slot(prompt):  # the walk's follow-ups find their prompt cached
            scores = walk(lambda paths: self.next_tokens_many(prompt, paths), labels,
                          min_branch_prob=self.min_branch_prob, max_depth=self.max_depth,
                          follow=True if self.api == "completions" else self.chat_prefill)
        counts = {"label_paths": scores.paths, "partial_credits": scores.partial_credits,
                  "label_fallbacks": len(scores.missing), "unscored_prompts": int(scores.unscored)}
        self._count(**{key: n for key, n in counts.items() if n})
        return scores

    def sample(self, prompt: Prompt, n: int = 5, *, max_tokens: int = 16, temperature: float = 0.8,
               seed: int = 0) -> list[str]:
        """``n`` sampled completions (each its own seeded request, so caching and resume work)."""
        with self.holding_slot(prompt):
            return [completion_text(self.request(prompt, max_tokens=max_tokens, temperature=temperature,
                                                 seed=seed + i))[0] for i in range(n)]

    def sample_numbers(self, prompt: Prompt, n: int = 5, **kwargs: Any) -> list[float]:
        """Sampled completions parsed as numbers (the first number in each; unparsable ones dropped)."""
        values = []
        for text in self.sample(prompt, n, **kwargs):
            match = _NUMBER.search(text)
            if match:
                values.append(float(match.group()))
        return values

    # -- what the endpoint can hold -----------------------------------------------------------------
    def context_size(self) -> int | None:
        """Tokens one prompt and its answer may take: llama-server's context per slot (GET /props,
        ``default_generation_settings.n_ctx``), else vLLM's ``max_model_len`` for this model
        (GET /v1/models); None when the endpoint cannot tell."""
        props = self._get_json(self._root + "/props")
        if isinstance(props, dict) and isinstance(props.get("default_generation_settings"), dict):
            n_ctx = props["default_generation_settings"].get("n_ctx")
        else:
            models = self._get_json(self.base_url + "/models")
            listed = models.get("data") if isinstance(models, dict) else None
            n_ctx = next((m.get("max_model_len") for m in listed or [] if isinstance(m, dict)
                          and m.get("id") == self.model), None)
        return int(n_ctx) if isinstance(n_ctx, (int, float)) and n_ctx > 0 else None

    def served_models(self) -> list[str] | None:
        """The model ids the endpoint lists (GET /v1/models; llama-server: its one ``--alias``), None
        when it lists none or cannot be asked."""
        models = self._get_json(self.base_url + "/models")
        listed = models.get("data") if isinstance(models, dict) else None
        ids = [m["id"] for m in listed or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
        return ids or None

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """The number of tokens of each text in the served model's vocabulary, without special
        tokens (llama-server: POST /tokenize); None when the endpoint cannot count."""
        counts = []
        for text in texts:
            reply = self._get_json(self._root + "/tokenize", {"content": text, "add_special": False})
            if not isinstance(reply, dict) or not isinstance(reply.get("tokens"), list):
                return None
            counts.append(len(reply["tokens"]))
        return counts

    @property
    def _root(self) -> str:
        """Where llama-server's own API is (/props, /tokenize): the base URL without /v1."""
        return self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url

    def _get_json(self, url: str, body: Any = None) -> Any:
        """GET ``url`` (POST ``body`` as JSON): the parsed reply, or None when the endpoint has no
        such path, cannot be reached in time or answers with something else."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers),
                                        timeout=min(self.timeout, 30.0)) as reply:
                return json.loads(reply.read())
        except (OSError, ValueError):  # HTTP errors, refused, timed out, not JSON
            return None

    def close(self) -> None:
        """Stop: requests in flight are abandoned, none is sent any more, the cache is closed."""
        self._closed.set()
        self._client.close()
        if self._store is not None:
            self._store.close()


def _error_message(err: Any) -> str:
    """The message of an HTTP error answer: the body's ``error.message`` where there is one."""
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(err, "message", err))


def _batch_prompt_tokens(prompts: Sequence[Any], first: int) -> int:
    """The prompt tokens of a batch from ``first``, the count of its first prompt (all llama-server
    reports). The prompts of one label walk are ``[text, token id, ...]`` with the same text: each
    counts as the first plus its extra ids. Any other prompt counts as the first.

    >>> _batch_prompt_tokens([["Label:", 7], ["Label:", 8, 9], "Label: x"], 10)
    31
    """
    def ids(prompt: Any) -> int | None:
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str) \
                and all(isinstance(i, int) for i in prompt[1:]):
            return len(prompt) - 1
        return None

    base, total = ids(prompts[0]), 0
    for prompt in prompts:
        extra = ids(prompt)
        total += first + (extra - base if extra is not None and base is not None else 0)
    return total


def _server_timings(response: dict[str, Any]) -> dict[str, float]:
    """What llama-server says it did for a response: prompt tokens reused from its cache
    (``cache_n``), computed (``prompt_n``), and the milliseconds computing them.

    >>> _server_timings({"timings": {"cache_n": 115, "prompt_n": 5, "prompt_ms": 20.5}})
    {'cached_prompt_tokens': 115, 'uncached_prompt_tokens': 5, 'prompt_ms': 20.5}
    >>> _server_timings({"usage": {}})
    {}
    """
    timings = response.get("timings")
    if not isinstance(timings, dict) or "prompt_n" not in timings:
        return {}
    return {"cached_prompt_tokens": int(timings.get("cache_n") or 0), "uncached_prompt_tokens": int(timings["prompt_n"]),
            "prompt_ms": float(timings.get("prompt_ms") or 0.0)}


def endpoint_from_env(base_url: str | None = None, api_key: str | None = None,
                      model: str | None = None) -> tuple[str | None, str | None, str | None]:
    """Flags first, then OPENAI_BASE_URL / OPENAI_API_KEY / FEWSHOT_MODEL."""
    return (base_url or os.environ.get("OPENAI_BASE_URL"), api_key or os.environ.get("OPENAI_API_KEY"),
            model or os.environ.get("FEWSHOT_MODEL"))
