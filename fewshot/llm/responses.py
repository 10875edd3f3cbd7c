"""Parsing the next-token logprobs out of the three response shapes OpenAI-compatible servers use."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..errors import LLMError


class Token(NamedTuple):
    """One candidate next token: its text, log-probability and, where the server says it
    (llama-server does), its id in the model's vocabulary."""

    text: str
    logprob: float
    id: int | None = None


def top_tokens(response: dict[str, Any], missing_ok: bool = False) -> list[Token]:
    """The candidates for the first generated token, most likely first, whatever the server's shape.
    An answer without logprobs is an error, or no candidates with ``missing_ok``.

    - legacy OpenAI completions: ``choices[0].logprobs.top_logprobs[0]`` is a dict (no ids);
    - llama-server completions and chat completions: ``choices[0].logprobs.content[0].top_logprobs``
      is a list of ``{token, logprob}`` (llama-server adds ``id``).

    >>> top_tokens({"choices": [{"logprobs": {"top_logprobs": [{" no": -2.3, " yes": -0.1}]}}]})
    [Token(text=' yes', logprob=-0.1, id=None), Token(text=' no', logprob=-2.3, id=None)]
    >>> top_tokens({"choices": [{"logprobs": {"content": [{"token": " yes", "logprob": -0.1,
    ...     "top_logprobs": [{"id": 7, "token": " yes", "logprob": -0.1}]}]}}]})
    [Token(text=' yes', logprob=-0.1, id=7)]
    >>> top_tokens({"choices": [{"text": "\\ufffd", "logprobs": None}]}, missing_ok=True)
    []
    """
    choices = response.get("choices") or []
    logprobs = choices[0].get("logprobs") if choices else None
    if not logprobs or not (logprobs.get("top_logprobs") or logprobs.get("content")):
        if missing_ok and choices:
            return []
        raise LLMError("the endpoint returned no logprobs: it cannot score labels (use a server that "
                       "supports logprobs, e.g. llama-server, vLLM or OpenAI chat models)")
    tokens: list[Token] | None = None
    if logprobs.get("top_logprobs"):
        first = logprobs["top_logprobs"][0]
        if isinstance(first, dict) and "token" not in first:
            tokens = [Token(str(k), float(v)) for k, v in first.items()]
    content = logprobs.get("content") or []
    if tokens is None and content and content[0].get("top_logprobs") is not None:
        tokens = [Token(item["token"], float(item["logprob"]),
                        int(item["id"]) if item.get("id") is not None else None)
                  for item in content[0]["top_logprobs"]]
    if tokens is None:
        raise LLMError(f"unrecognised logprobs shape: keys {sorted(logprobs)}")
    return sorted(tokens, key=lambda t: -t.logprob)


def completion_text(response: dict[str, Any]) -> list[str]:
    """Generated texts of every choice (completions ``text`` or chat ``message.content``)."""
    texts = []
    for choice in response.get("choices") or []:
        message = choice.get("message")
        texts.append((message or {}).get("content") or "" if message is not None else choice.get("text") or "")
    return texts
