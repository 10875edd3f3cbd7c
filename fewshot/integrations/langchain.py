"""LangChain: :class:`FewshotExampleSelector`, a ``langchain_core`` example selector backed by fewshot.

It plugs into ``FewShotPromptTemplate(example_selector=...)`` and
``FewShotChatMessagePromptTemplate(example_selector=...)``. Per-query methods (knn, mmr, bm25,
dpp, or any method with ``per_query=True``) select for each input; shared methods (go, vote-k, ...)
pick one set, for a batch of expected inputs given to :meth:`FewshotExampleSelector.fit`.
"""

from __future__ import annotations

from typing import Any, Sequence

from . import require

require("langchain_core", "langchain")

from langchain_core.example_selectors import BaseExampleSelector  # noqa: E402

from ..api import DemoPool  # noqa: E402
from ..data import label_text  # noqa: E402
from ..embedding import Embedder  # noqa: E402
from ..prompts import prompt_order  # noqa: E402
from ..tokens import count_tokens  # noqa: E402


def _joined(values: dict[str, Any], keys: Sequence[str] | None) -> str:
    """The text that stands for an example or an input: its ``keys`` in order (all keys, sorted, when
    None), joined by spaces, as LangChain's SemanticSimilarityExampleSelector does."""
    if keys is None:
        return " ".join(str(values[key]) for key in sorted(values))
    return " ".join(str(values[key]) for key in keys)


class FewshotExampleSelector(BaseExampleSelector):
    """Selects examples with a fewshot method (default kNN; ``method="go"`` for optimal design).

    ``input_keys``: the keys whose values are embedded (examples and inputs alike; default all).
    ``max_tokens``: a token budget for the selected examples as ``example_prompt`` renders them
    (tiktoken cl100k_base; without a prompt, the joined values): budget-aware, so a demo that would not
    fit is skipped for the next best one, never cut. ``label_key``: the key holding a label (for
    ``label_balance=True``). Other keyword options are the method's parameters (``lam=0.5``, ...).
    Embeddings are computed once per example (and cached on disk across runs by the default embedder).
    """

    def __init__(self, examples: Sequence[dict[str, Any]] = (), *, method: str = "knn", k: int = 4,
                 input_keys: Sequence[str] | None = None, per_query: bool | None = None,
                 max_tokens: int | None = None, example_prompt: Any = None, label_key: str | None = None,
                 label_balance: bool = False, seed: int = 0, embedder: Embedder | None = None,
                 **params: Any) -> None:
        self.input_keys = list(input_keys) if input_keys is not None else None
        self.example_prompt, self.label_key = example_prompt, label_key
        self.examples: list[dict[str, Any]] = []
        self.pool = DemoPool(method, k, per_query=per_query, max_tokens=max_tokens, label_balance=label_balance,
                             seed=seed, embedder=embedder, **params)
        self._fitted: list[str] | None = None
        self._shared: list[int] | None = None
        self._add(list(examples))

    @classmethod
    def from_examples(cls, examples: Sequence[dict[str, Any]], method: str = "knn", k: int = 4,
                      input_keys: Sequence[str] | None = None, **options: Any) -> "FewshotExampleSelector":
        """Build a selector over ``examples`` (LangChain's ``from_examples`` style)."""
        return cls(examples, method=method, k=k, input_keys=input_keys, **options)

    @property
    def per_query(self) -> bool:
        return self.pool.per_query

    def _costed_text(self, example: dict[str, Any]) -> str:
        """What a demo adds to the prompt, for the token budget."""
        if self.example_prompt is not None:
            return self.example_prompt.format(**example)
        return _joined(example, self.input_keys)

    def _add(self, examples: list[dict[str, Any]]) -> None:
        if not examples:
            return
        costs = count_tokens([self._costed_text(e) for e in examples]).tolist() if self.pool.max_tokens is not None else None
        labels = [None if self.label_key is None or e.get(self.label_key) is None else label_text(e[self.label_key])
                  for e in examples]
        self.pool.add([_joined(e, self.input_keys) for e in examples], labels, costs)
        self.examples += [dict(e) for e in examples]
        self._shared = None  # a shared set is chosen again over the grown pool

    def add_example(self, example: dict[str, Any]) -> None:
        """Add one example; only it is embedded."""
        self._add([example])

    def fit(self, inputs: Sequence[dict[str, Any]]) -> "FewshotExampleSelector":
        """Choose the shared set once for a batch of expected inputs (shared methods); every later
        :meth:`select_examples` returns it."""
        self._fitted = [_joined(i, self.input_keys) for i in inputs]
        self._shared = None
        return self

    def select_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        """The chosen example dicts in the order the prompt shows them (:func:`fewshot.prompts.prompt_order`:
        the first pick last, nearest the input, as SAL scores them). An unfitted shared method
        selects for this input alone."""
        # the input's keys among ``input_keys``; none of them (a prompt variable named otherwise): all keys
        keys = [k for k in self.input_keys or () if k in input_variables] or None
        text = _joined(input_variables, keys)
        if self.per_query or self._fitted is None:
            indices = self.pool.choose([text], per_query=self.per_query)[0]
        else:
            if self._shared is None:
                self._shared = self.pool.choose(self._fitted, per_query=False)[0]
            indices = self._shared
        return [dict(self.examples[i]) for i in prompt_order(indices)]


__all__ = ["FewshotExampleSelector"]
