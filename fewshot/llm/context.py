"""Whether every input text can fit the model's context, checked before any work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ..errors import InputError
from ..tokens import count_tokens

if TYPE_CHECKING:
    from .client import LLMClient


def check_fits(items: Iterable[tuple[str, str]], client: "LLMClient", *, reserve_tokens: int = 64,
               limit: int | None = None) -> None:
    """Raise :class:`InputError` naming the first text that cannot fit one prompt of the model.

    ``items``: (text, where) pairs, ``where`` saying where the text comes from, e.g.
    ``"pool.jsonl, line 74, id 'long-1'"``. A text fits when it takes at most ``limit`` minus
    ``reserve_tokens`` tokens (the room kept for the template's words and the answer); ``limit``:
    the context of one prompt, None = ask the endpoint (:meth:`LLMClient.context_size`); when
    neither knows, nothing is checked. Tokens are the server's count where it can count
    (:meth:`LLMClient.count_tokens`), else a tiktoken estimate. Only texts longer in UTF-8 bytes
    than the budget are counted: a token covers at least one byte, so shorter ones always fit.

    >>> class Small:  # an endpoint with a 10-token context that cannot count
    ...     def context_size(self): return 10
    ...     def count_tokens(self, texts): return None
    >>> check_fits([("short", "a.jsonl, line 1")], Small(), reserve_tokens=2)
    >>> check_fits([("one two three four five six seven eight nine", "a.jsonl, line 2")], Small(), reserve_tokens=2)
    Traceback (most recent call last):
    ...
    fewshot.errors.InputError: a.jsonl, line 2: the text is 9 tokens long (a tiktoken estimate), more than ...
    """
    if limit is None:
        limit = client.context_size()
    if limit is None:
        return
    budget = limit - reserve_tokens
    long = [(text, where) for text, where in items if len(text.encode("utf-8", "replace")) > budget]
    if not long:
        return
    texts = [text for text, _ in long]
    counts, how = client.count_tokens(texts), "the server's count"
    if counts is None:
        counts, how = count_tokens(texts).tolist(), "a tiktoken estimate"
    for (_, where), n in zip(long, counts):
        if n > budget:
            raise InputError(f"{where}: the text is {n} tokens long ({how}), more than fits one prompt of the "
                             f"model: its context holds {limit} tokens, {reserve_tokens} of them kept for the "
                             "template and the answer; shorten or leave out this text")
