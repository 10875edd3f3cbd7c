"""One client for every OpenAI-compatible endpoint: label scoring from next-token logprobs,
sampling, retries, bounded concurrency, a persistent response cache and counters."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence, TypeVar, Union

import numpy as np

from ..cache import SqliteStore, default_cache_dir
from ..errors import InputError, LLMError
from .responses import Token, completion_text, top_tokens

T = TypeVar("T")
R = TypeVar("R")
_NUMBER = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")


Prompt = Union[str, list[dict[str, str]]]  # text (completions) or chat messages (chat)
_TOP_CAPS = {"chat": 20, "completions": 5}  # OpenAI's maxima, used when a server refuses more


@dataclass(frozen=True)
class LabelScores:
    """Probability of each label, normalised over the label set.

    ``missing``: labels no followed token path reached; their entry is an upper bound on the
    mass of any single unexplored path to them (see :meth:`LLMClient.label_probs`), counted as a
    fallback. ``reached``: the model's probability mass on the labels it did reach, before
    normalising (small values mean the model answered off the label set).
    """

    labels: tuple[str, ...]
    probs: np.ndarray
    missing: tuple[str, ...] = ()
    reached: float = 1.0

    @property
    def unscored(self) -> bool:
        """True when no label was reached at all: the probabilities are only bounds."""
        return len(self.missing) == len(self.labels)

    @property
    def prediction(self) -> str | None:
        """The most likely label, or None when no label was reached at all (never a silent guess)."""
        return None if self.unscored else self.labels[int(np.argmax(self.probs))]


def label_key(label: str) -> str:
    """How labels are compared with the model's tokens: case- and surrounding-whitespace-insensitive.

    >>> label_key("  Positive ") == label_key("positive")
    True
    """
    return label.strip().casefold()


def check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    labels = tuple(labels)
    if any(not str(label).strip() for label in labels):
        raise InputError("a label is empty: every label needs visible text the LLM can produce")
    if len(set(labels)) < 2:
        raise InputError(f"label scoring needs at least two distinct labels, got {sorted(set(labels))}")
    seen: dict[str, str] = {}
    for label in labels:
        if (other := seen.setdefault(label_key(label), label)) != label:
            raise InputError(f"labels {other!r} and {label!r} differ only in case or surrounding whitespace, "
                             "which label scoring ignores: rename one")
    return labels


def _match(text: str, rests: dict[str, str], keys: dict[str, str], depth: int) -> tuple[str | None, dict[str, str]]:
    r"""What one candidate token does to the labels still open at a node.

    ``rests[label]`` is the label text still to come ("" = complete, waiting for a terminator).
    Returns (the label the token completes, or None; the open labels after the token, to follow).

    >>> keys = {"sci": "sci", "sci-fi": "sci-fi"}
    >>> _match(" Sci", keys, keys, 0)  # a prefix of both: follow, "sci" needs a terminator next
    (None, {'sci-fi': '-fi', 'sci': ''})
    >>> _match("\n", {"sci": "", "sci-fi": "-fi"}, keys, 1)  # a terminator after "sci"
    ('sci', {})
    >>> _match("-", {"sci": "", "sci-fi": "-fi"}, keys, 1)  # goes on to "sci-fi": not a terminator
    (None, {'sci-fi': 'fi'})
    """
    t = text.casefold()
    follow: dict[str, str] = {}
    complete: list[tuple[str, bool]] = []
    waiting = None
    for label, rest in rests.items():
        started = rest != keys[label]
        s = t if started else t.lstrip()  # whitespace may precede a label
        if not rest:
            waiting = label
        elif not started and t and not s and depth < 2:
            follow[label] = rest  # a lone space/newline token first
        elif s == rest:
            complete.append((label, True))
        elif s.startswith(rest) and not s[len(rest)].isalnum():
            complete.append((label, False))  # the label and a terminator in one token ("positive.")
        elif s and rest.startswith(s):
            follow[label] = rest[len(s):]
    if follow:
        # a longer label goes on: a label this token completes exactly needs a terminator next
        return None, {**follow, **{label: "" for label, exact in complete if exact}}
    if complete:
        return max((label for label, _ in complete), key=lambda label: len(keys[label])), {}
    if waiting is not None and (not t or not t[0].isalnum()):
        return waiting, {}  # end of text (an empty token), whitespace or punctuation
    return None, {}


def _shared_prefix(a: str, b: str) -> int:
    r"""Length of the common prefix of two strings.

    >>> _shared_prefix("Text: a\nLabel:", "Text: b\nLabel:")
    6
    """
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]: bisect in C-speed slice compares
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid)
    return lo


class SlotPool:
    r"""Which llama-server slot (``id_slot``) a prompt is sent to, so the server's prompt cache is hit.

    Every slot keeps the KV cache of the last prompt it processed. A prompt goes to the free slot
    whose last prompt shares the longest prefix with it, counted where that is at least half of the
    slot's prompt (else 0; ties: the least recently used slot), and keeps
    it until :meth:`release`: a label walk's follow-up requests then find their whole prompt
    cached, and a shared demo set stays cached in every slot. Letting the server choose races:
    between two calls of one walk another request may take the slot that holds its prompt.

    >>> pool = SlotPool(2)
    >>> a = pool.acquire("demos A\nquery 1"); b = pool.acquire("demos B\nquery 1"); (a, b)
    (0, 1)
    >>> pool.release(a, "demos A\nquery 1"); pool.release(b, "demos B\nquery 1")
    >>> pool.acquire("demos B\nquery 2")  # the slot that holds "demos B"
    1
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise InputError(f"slots={slots}: a server has at least one slot")
        self.last = [""] * slots
        self.used = [0] * slots  # when each slot was last released (a counter)
        self.free = set(range(slots))
        self._clock = 0
        self._cond = threading.Condition()

    def acquire(self, text: str) -> int:
        with self._cond:
            self._cond.wait_for(lambda: bool(self.free))
            slot = max(sorted(self.free), key=lambda s: (self._reuse(s, text), -self.used[s]))
            self.free.remove(slot)
            return slot

    def _reuse(self, slot: int, text: str) -> int:
        """The prefix of ``text`` that ``slot`` holds, counted only when it is at least half of
        what the slot holds: a slot is not given up to a prompt that would keep little of it."""
        shared = _shared_prefix(self.last[slot], text)
        return shared if 2 * shared >= len(self.last[slot]) else 0

    def release(self, slot: int, text: str) -> None:
        with self._cond:
            self._clock += 1
            self.last[slot], self.used[slot] = text, self._clock
            self.free.add(slot)
            self._cond.notify()


class LLMClient:
    """An OpenAI-compatible endpoint.

    ``api="completions"`` (llama-server, vLLM, legacy OpenAI) or ``"chat"`` (chat models; a prompt
    is then a list of messages, see :func:`fewshot.llm.chat.chat_messages`). Responses are cached in
    sqlite, keyed by endpoint + model + request, so a re-run repeats no finished call. Retries with
    exponential backoff on 429, 5xx and connection errors come from the ``openai`` client.

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
    ``unscored_prompts``, ``partial_credits``, ``empty_answers`` and, where the server reports ``timings``
    (llama-server), ``cached_prompt_tokens`` (prompt tokens it reused from its KV cache,
    ``cache_n``), ``uncached_prompt_tokens`` (tokens it computed, ``prompt_n``) and
    ``prompt_ms`` (the time it spent on them).
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 api: Literal["completions", "chat"] = "completions", timeout: float = 120.0,
                 max_retries: int = 4, concurrency: int = 4, top_logprobs: int = 100,
                 min_branch_prob: float = 0.02, max_depth: int = 8, token_ids: bool = True,
                 chat_prefill: bool | None = None, cache: bool = True, cache_dir: str | Path | None = None,
                 cache_namespace: str | None = None, slots: int | None = None) -> None:
        from openai import OpenAI

        if api not in ("completions", "chat"):
            raise InputError(f"unknown LLM api {api!r}: use 'completions' or 'chat'")
        self.base_url, self.model, self.api = base_url.rstrip("/"), model, api
        # what identifies the endpoint in the cache: its URL, or a stable name for a local server
        # whose port changes on every start
        self.cache_namespace = cache_namespace or self.base_url
        self.top_logprobs, self.concurrency, self.min_branch_prob = top_logprobs, concurrency, min_branch_prob
        self.max_depth, self.token_ids, self.chat_prefill = max_depth, token_ids, chat_prefill
        self._client = OpenAI(base_url=self.base_url, api_key=api_key or "not-needed", timeout=timeout,
                              max_retries=max_retries)
        self._store = SqliteStore(Path(cache_dir or default_cache_dir()) / "llm.sqlite", "responses") if cache else None
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.logprobs_seen = False  # set by the first answer with logprobs (see _top)
        self.slots = SlotPool(slots) if slots else None
        self._held = threading.local()  # the slot this thread's current walk holds

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
        and cached answer by answer. llama-server reports usage and timings for one prompt of a
        batch: they are counted for each (the prompts of one label walk differ by a token or two)."""
        response = self._call(prompts[0] if len(prompts) == 1 else prompts, params)
        answers = [response]
        if len(prompts) > 1:
            choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
            if len(choices) != len(prompts):
                raise LLMError(f"the endpoint answered {len(choices)} of {len(prompts)} prompts sent together")
            answers = [{**response, "choices": [{**choice, "index": 0}]} for choice in choices]
        n, usage = len(prompts), response.get("usage") or {}
        self._count(calls=1, prompt_tokens=n * (usage.get("prompt_tokens") or 0),
                    completion_tokens=n * (usage.get("completion_tokens") or 0),
                    **{k: n * v for k, v in _server_timings(response).items()})
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

    def _call(self, prompt: Any, params: dict[str, Any]) -> dict[str, Any]:
        import openai

        slot = getattr(self._held, "slot", None)
        if slot is not None:
            params = {**params, "extra_body": {"id_slot": slot}}
        try:
            if self.api == "chat":
                chat = dict(params)
                if "logprobs" in chat:
                    chat["top_logprobs"], chat["logprobs"] = chat.pop("logprobs"), True
                response = self._client.chat.completions.create(model=self.model, messages=prompt, **chat)
            else:
                if isinstance(prompt, list) and any(isinstance(p, dict) for p in prompt):
                    raise InputError("the completions API takes a text prompt; chat messages need api='chat'")
                response = self._client.completions.create(model=self.model, prompt=prompt, **params)
        except openai.APIConnectionError as err:
            raise LLMError(f"cannot reach the LLM endpoint {self.base_url} ({err.__class__.__name__}); "
                           "is the server running? (no endpoint set: fewshot starts a local one)") from None
        except openai.NotFoundError as err:
            raise LLMError(f"the endpoint {self.base_url} has no model {self.model!r} ({err.message})") from None
        except openai.BadRequestError as err:
            text = str(err.message).lower()
            if "context" in text or "too long" in text or "exceed" in text:
                raise LLMError(f"the prompt is longer than the model's context ({err.message}); "
                               "use fewer demos or --max-tokens") from None
            raise LLMError(f"the endpoint rejected the request: {err.message}") from None
        except openai.APIStatusError as err:
            raise LLMError(f"the endpoint failed after retries: HTTP {err.status_code} {err.message}") from None
        return response.model_dump()

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(x) for x in items]`` with at most ``concurrency`` requests in flight."""
        items = list(items)
        if self.concurrency <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(fn, items))

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
        except LLMError as err:
            if "rejected" not in str(err):
                raise
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
        except LLMError as err:
            if "rejected" not in str(err):
                raise
            if "logprob" in str(err).lower() and self.top_logprobs > _TOP_CAPS[self.api]:
                self.top_logprobs = _TOP_CAPS[self.api]  # e.g. OpenAI: at most 20 (chat) or 5
            elif isinstance(request, list) and self.api == "completions" and self.token_ids:
                self.token_ids = False  # a server that names ids but takes no id prompts
            else:
                raise
            return self.next_tokens(prompt, path)

    def label_probs(self, prompt: Prompt, labels: Sequence[str]) -> LabelScores:
        """P(label | prompt) for each label, from next-token logprobs.

        A label is scored as its whole continuation, compared case- and whitespace-insensitively
        (leading whitespace tokens are skipped). From the prompt, every top token that is a prefix
        of a label's remaining text is followed with one more request (prompt + that token), and
        the log-probabilities along the path are summed; so labels that share tokens ("sci" in
        "science" / "sci-fi") or span several are told apart. A label that is a prefix of another
        ("sci" / "sci-fi") is credited only with the mass of a terminator after it (end of text,
        whitespace, punctuation); a label no other label extends is credited when complete.
        Paths less likely than ``min_branch_prob`` are not followed, which bounds the calls
        (usually one per prompt when every label is one token). The paths waiting to be followed
        are asked for together (:meth:`next_tokens_many`: one HTTP request with llama-server); the
        walk's order, and so every sum, is the same as asking for them one by one.

        Chat endpoints that cannot continue an assistant message (``chat_prefill``) cannot follow
        a path: a first token that begins one or more labels ("Sci" for "Sci/Tech") is credited to
        them, split evenly. This approximation assumes the model goes on to finish the label; it
        is counted in ``stats["partial_credits"]``.

        A label no path reaches (``missing``, counted in ``stats["label_fallbacks"]``) gets an
        upper bound on the mass of any single unexplored path to it: the largest of (a) the
        probability of each node where its text was still open times the largest probability a
        token absent from that node's top list can have (the last listed probability, or the
        unlisted remainder if smaller), and (b) the probability of each branch toward it that was
        not followed. Several tokenisations of one label could add up to more; they are rare. A
        prompt where no label is reached is ``unscored`` (``stats["unscored_prompts"]``): its
        ``prediction`` is None.
        """
        labels = check_labels(labels)
        with self.holding_slot(prompt):  # the walk's follow-ups find their prompt cached
            return self._walk(prompt, labels)

    def _walk(self, prompt: Prompt, labels: tuple[str, ...]) -> LabelScores:
        keys = {label: label_key(label) for label in labels}
        mass, bound = dict.fromkeys(labels, 0.0), dict.fromkeys(labels, 0.0)
        stack: list[tuple[tuple[Token, ...], float, dict[str, str]]] = [((), 0.0, dict(keys))]
        tops: dict[tuple[Token, ...], list[Token]] = {}
        while stack:
            path, logp, rests = stack.pop()
            if path not in tops:  # every path on the stack is asked for: ask for them together
                waiting = [path, *(p for p, _, _ in stack if p not in tops)]
                tops.update(zip(waiting, self.next_tokens_many(prompt, waiting)))
            top = tops.pop(path)
            if path:
                self._count(label_paths=1)
            listed = sum(math.exp(t.logprob) for t in top)
            unlisted = min(math.exp(top[-1].logprob), max(0.0, 1.0 - listed)) if top else 1.0
            for label in rests:
                bound[label] = max(bound[label], math.exp(logp) * unlisted)
            can_follow = len(path) < self.max_depth and (self.api == "completions" or (
                self.chat_prefill if self.chat_prefill is not None else all(t.id is not None for t in top)))
            for token in top:
                p = math.exp(logp + token.logprob)
                label, child = _match(token.text, rests, keys, len(path))
                if label is not None:
                    mass[label] += p
                elif child and not can_follow:
                    for open_label in child:  # cannot look further: an approximation, documented above
                        mass[open_label] += p / len(child)
                    self._count(partial_credits=1)
                elif child and p < self.min_branch_prob:
                    for open_label in child:  # too unlikely to change a decision; bounds a missing label
                        bound[open_label] = max(bound[open_label], p)
                elif child:
                    stack.append(((*path, token), logp + token.logprob, child))
        missing = tuple(label for label in labels if mass[label] == 0.0)
        reached = sum(mass.values())
        if missing:
            self._count(label_fallbacks=len(missing), **({"unscored_prompts": 1} if len(missing) == len(labels) else {}))
            for label in missing:
                mass[label] = max(bound[label], 1e-12)
        probs = np.array([mass[label] for label in labels])
        return LabelScores(labels, probs / probs.sum(), missing, reached)

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

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


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
