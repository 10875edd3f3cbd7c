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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence, TypeVar

import numpy as np

from ..cache import SqliteStore, default_cache_dir
from ..errors import InputError, LLMError
from .responses import completion_text, top_logprobs

T = TypeVar("T")
R = TypeVar("R")
_NUMBER = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class LabelScores:
    """Probability of each label (normalised over the label set) and the labels the model's top
    logprobs did not reach (their mass is an upper-bound estimate, counted as a fallback)."""

    labels: tuple[str, ...]
    probs: np.ndarray
    missing: tuple[str, ...] = ()

    @property
    def prediction(self) -> str | None:
        """The most likely label, or None when no label was reached at all (never a silent guess)."""
        if len(self.missing) == len(self.labels):
            return None
        return self.labels[int(np.argmax(self.probs))]

    @property
    def entropy(self) -> float:
        p = self.probs[self.probs > 0]
        return float(-(p * np.log(p)).sum())


def check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    labels = tuple(labels)
    if any(not str(label).strip() for label in labels):
        raise InputError("a label is empty: every label needs visible text the LLM can produce")
    if len(set(labels)) < 2:
        raise InputError(f"label scoring needs at least two distinct labels, got {sorted(set(labels))}")
    return labels


class LLMClient:
    """An OpenAI-compatible endpoint.

    ``api="completions"`` (llama-server, vLLM, legacy OpenAI) or ``"chat"`` (hosted chat models;
    labels are then scored from the first answer token only). Responses are cached in sqlite,
    keyed by endpoint + model + request, so a re-run repeats no finished call. Retries with
    exponential backoff on 429, 5xx and connection errors come from the ``openai`` client.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 api: Literal["completions", "chat"] = "completions", timeout: float = 120.0,
                 max_retries: int = 4, concurrency: int = 4, top_logprobs: int = 20,
                 min_branch_prob: float = 0.02, cache: bool = True, cache_dir: str | Path | None = None,
                 cache_namespace: str | None = None) -> None:
        from openai import OpenAI

        self.base_url, self.model, self.api = base_url.rstrip("/"), model, api
        # what identifies the endpoint in the cache: its URL, or a stable name for a local server
        # whose port changes on every start
        self.cache_namespace = cache_namespace or self.base_url
        self.top_logprobs, self.concurrency, self.min_branch_prob = top_logprobs, concurrency, min_branch_prob
        self._client = OpenAI(base_url=self.base_url, api_key=api_key or "not-needed", timeout=timeout,
                              max_retries=max_retries)
        self._store = SqliteStore(Path(cache_dir or default_cache_dir()) / "llm.sqlite", "responses") if cache else None
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()

    # -- raw requests ---------------------------------------------------------------------------
    def request(self, prompt: str, **params: Any) -> dict[str, Any]:
        """One completion request as a plain dict, from the cache when it was made before."""
        key = hashlib.sha256(json.dumps([self.cache_namespace, self.model, self.api, prompt, params],
                                        sort_keys=True).encode()).hexdigest()
        if self._store is not None and (hit := self._store.get(key)) is not None:
            self._count(cached=1)
            return json.loads(hit)
        response = self._call(prompt, params)
        usage = response.get("usage") or {}
        self._count(calls=1, prompt_tokens=usage.get("prompt_tokens") or 0,
                    completion_tokens=usage.get("completion_tokens") or 0)
        if self._store is not None:
            self._store.put_many([(key, json.dumps(response).encode())])
        return response

    def _count(self, **amounts: int) -> None:
        with self._lock:
            self.stats.update(amounts)

    def _call(self, prompt: str, params: dict[str, Any]) -> dict[str, Any]:
        import openai

        try:
            if self.api == "chat":
                chat = dict(params)
                if "logprobs" in chat:
                    chat["top_logprobs"], chat["logprobs"] = min(chat.pop("logprobs"), 20), True
                response = self._client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": prompt}], **chat)
            else:
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
    def next_token(self, prompt: str, top: int | None = None) -> dict[str, float]:
        response = self.request(prompt, max_tokens=1, temperature=0.0, logprobs=top or self.top_logprobs)
        return top_logprobs(response)

    def label_probs(self, prompt: str, labels: Sequence[str]) -> LabelScores:
        """P(label | prompt) for each label, from next-token logprobs.

        A label is scored as its whole continuation: starting from the prompt, every top token that
        is a prefix of a label's remaining text is followed with one more request (prompt + that
        token), and the log-probabilities along the path are summed. So labels that share a first
        token ("sci" in "science" / "sci-fi") or span several tokens are told apart; leading
        whitespace tokens are skipped. Paths less likely than ``min_branch_prob`` are not
        followed, which bounds the calls (usually one per prompt). Completion endpoints only: chat endpoints score the first
        token. A label no path reaches gets the smallest logprob seen (an upper bound) and is
        counted in ``stats["label_fallbacks"]``.
        """
        labels = check_labels(labels)
        mass = dict.fromkeys(labels, 0.0)
        floor = self._walk(prompt, "", 0.0, {label: label for label in labels}, mass, 0, self.top_logprobs)
        missing = tuple(label for label in labels if mass[label] == 0.0)
        if missing and self.api == "completions" and self.top_logprobs < 100:
            # look deeper before estimating: llama-server and vLLM return up to 100 alternatives
            mass = dict.fromkeys(labels, 0.0)
            floor = self._walk(prompt, "", 0.0, {label: label for label in labels}, mass, 0, 100)
            missing = tuple(label for label in labels if mass[label] == 0.0)
        if missing:
            self._count(label_fallbacks=len(missing), **({"unscored_prompts": 1} if len(missing) == len(labels) else {}))
            for label in missing:
                mass[label] = math.exp(floor)
        probs = np.array([mass[label] for label in labels])
        return LabelScores(labels, probs / probs.sum(), missing)

    def _walk(self, prompt: str, prefix: str, logp: float, rests: dict[str, str], mass: dict[str, float],
              depth: int, top_n: int) -> float:
        top = self.next_token(prompt + prefix, top_n)
        floor = logp + min(top.values())
        children: dict[str, dict[str, str]] = {}
        for token, lp in top.items():
            for label, rest in rests.items():
                text = token.lstrip() if rest == label else token  # whitespace may precede the label
                if not text.strip() and rest == label and depth < 2:
                    children.setdefault(token, {})[label] = rest  # a lone space/newline token first
                elif text == rest or (text.startswith(rest) and not text[len(rest):].strip("\n .,!")):
                    mass[label] += math.exp(logp + lp)
                elif text and rest.startswith(text) and self.api == "completions" and depth < 5:
                    children.setdefault(token, {})[label] = rest[len(text):]
        for token, child in children.items():
            if math.exp(logp + top[token]) < self.min_branch_prob:
                continue  # the mass this path could add is below what changes a decision
            floor = min(floor, self._walk(prompt, prefix + token, logp + top[token], child, mass, depth + 1, top_n))
        return floor

    def sample(self, prompt: str, n: int = 5, *, max_tokens: int = 16, temperature: float = 0.8,
               seed: int = 0) -> list[str]:
        """``n`` sampled completions (each its own seeded request, so caching and resume work)."""
        return [completion_text(self.request(prompt, max_tokens=max_tokens, temperature=temperature,
                                             seed=seed + i))[0] for i in range(n)]

    def sample_numbers(self, prompt: str, n: int = 5, **kwargs: Any) -> list[float]:
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


def endpoint_from_env(base_url: str | None = None, api_key: str | None = None,
                      model: str | None = None) -> tuple[str | None, str | None, str | None]:
    """Flags first, then OPENAI_BASE_URL / OPENAI_API_KEY / FEWSHOT_MODEL."""
    return (base_url or os.environ.get("OPENAI_BASE_URL"), api_key or os.environ.get("OPENAI_API_KEY"),
            model or os.environ.get("FEWSHOT_MODEL"))
