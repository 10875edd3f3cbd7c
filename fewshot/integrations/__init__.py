"""Adapters for prompt frameworks; each needs its extra (``pip install "fewshot[langchain]"``)."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import a framework, or fail with the install command of the extra that brings it.

    >>> require("no_such_framework_xyz", "langchain")
    Traceback (most recent call last):
    ...
    ImportError: fewshot.integrations.langchain needs no_such_framework_xyz: pip install "fewshot[langchain]"
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f'fewshot.integrations.{extra} needs {module}: pip install "fewshot[{extra}]"',
                          name=module) from err
