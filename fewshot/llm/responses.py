"""Parsing the next-token logprobs out of the three response shapes OpenAI-compatible servers use."""

from __future__ import annotations

from typing import Any

from ..errors import LLMError


def top_logprobs(response: dict[str, Any]) -> dict[str, float]:
    """``{token: logprob}`` for the first generated token, whatever the server's shape.

    - legacy OpenAI completions: ``choices[0].logprobs.top_logprobs[0]`` is a dict;
    - llama-server completions and chat completions: ``choices[0].logprobs.content[0].top_logprobs``
      is a list of ``{token, logprob}``.

    >>> top_logprobs({"choices": [{"logprobs": {"top_logprobs": [{" yes": -0.1, " no": -2.3}]}}]})
    {' yes': -0.1, ' no': -2.3}
    >>> top_logprobs({"choices": [{"logprobs": {"content": [{"token": " yes", "logprob": -0.1,
    ...     "top_logprobs": [{"token": " yes", "logprob": -0.1}, {"token": " no", "logprob": -2.3}]}]}}]})
    {' yes': -0.1, ' no': -2.3}
    """
    choices = response.get("choices") or []
    logprobs = choices[0].get("logprobs") if choices else None
    if not logprobs:
        raise LLMError("the endpoint returned no logprobs: it cannot score labels (use a server that "
                       "supports logprobs, e.g. llama-server, vLLM or OpenAI chat models)")
    if logprobs.get("top_logprobs"):
        first = logprobs["top_logprobs"][0]
        if isinstance(first, dict) and "token" not in first:
            return {str(k): float(v) for k, v in first.items()}
    content = logprobs.get("content") or []
    if content and content[0].get("top_logprobs") is not None:
        out: dict[str, float] = {}
        for item in content[0]["top_logprobs"]:
            out.setdefault(item["token"], float(item["logprob"]))  # keep the first (highest) duplicate
        return out
    raise LLMError(f"unrecognised logprobs shape: keys {sorted(logprobs)}")


def completion_text(response: dict[str, Any]) -> list[str]:
    """Generated texts of every choice (completions ``text`` or chat ``message.content``)."""
    texts = []
    for choice in response.get("choices") or []:
        message = choice.get("message")
        texts.append((message or {}).get("content") or "" if message is not None else choice.get("text") or "")
    return texts
