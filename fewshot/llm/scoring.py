"""Label scoring: P(label | prompt) from next-token logprobs, as a walk over token paths.

Pure: the walk asks a callable for the candidates after each path and needs no HTTP, so every
accuracy number rests on code that is tested with exact probabilities (tests/llm/test_scoring.py).
:meth:`fewshot.llm.client.LLMClient.label_probs` runs it against an endpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError
from .responses import Token

TokenPath = tuple[Token, ...]
# the top candidates after each of several paths (tokens already taken after the prompt), in order
NextTokensMany = Callable[[Sequence[TokenPath]], list[list[Token]]]


@dataclass(frozen=True)
class LabelScores:
    """Probability of each label, normalised over the label set.

    ``missing``: labels no followed token path reached; their entry is an upper bound on the
    mass of any single unexplored path to them (see :func:`walk`), counted as a fallback.
    ``reached``: the model's probability mass on the labels it did reach, before normalising
    (small values mean the model answered off the label set). ``paths``: token paths followed
    past the first token (each one more request); ``partial_credits``: first tokens credited to
    the labels they begin without following them (see :func:`walk`).
    """

    labels: tuple[str, ...]
    probs: np.ndarray
    missing: tuple[str, ...] = ()
    reached: float = 1.0
    paths: int = 0
    partial_credits: int = 0

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
    """The labels as a tuple, or an InputError when they cannot be told apart by scoring.

    >>> check_labels(["negative", "positive"])
    ('negative', 'positive')
    """
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


def walk(next_tokens_many: NextTokensMany, labels: Sequence[str], *, min_branch_prob: float = 0.02,
         max_depth: int = 8, follow: bool | None = True) -> LabelScores:
    r"""P(label | prompt) for each label, from the top candidates for each next token.

    ``next_tokens_many(paths)``: the candidates (most likely first) after the prompt followed by
    each path, a tuple of tokens already taken (``()``: the prompt itself). The paths waiting to
    be followed are asked for together (one HTTP request with llama-server); the walk's order, and
    so every sum, is the same as asking for them one by one.

    A label is scored as its whole continuation, compared case- and whitespace-insensitively
    (leading whitespace tokens are skipped). From the prompt, every top token that is a prefix
    of a label's remaining text is followed (prompt + that token), and the log-probabilities along
    the path are summed; so labels that share tokens ("sci" in "science" / "sci-fi") or span
    several are told apart. A label that is a prefix of another ("sci" / "sci-fi") is credited
    only with the mass of a terminator after it (end of text, whitespace, punctuation); a label no
    other label extends is credited when complete. Paths less likely than ``min_branch_prob`` or
    longer than ``max_depth`` tokens are not followed, which bounds the calls (usually one per
    prompt when every label is one token).

    ``follow``: whether a path can be followed at all: True (completions; chat that continues a
    final assistant message), False, or None = where the server names token ids (llama-server
    does both). Where it cannot, a first token that begins one or more labels ("Sci" for
    "Sci/Tech") is credited to them, split evenly (``partial_credits``): this approximation
    assumes the model goes on to finish the label.

    A label no path reaches (``missing``) gets an upper bound on the mass of any single unexplored
    path to it: the largest of (a) the probability of each node where its text was still open
    times the largest probability a token absent from that node's top list can have (the last
    listed probability, or the unlisted remainder if smaller), and (b) the probability of each
    branch toward it that was not followed. Several tokenisations of one label could add up to
    more; they are rare. A prompt where no label is reached is ``unscored``: its ``prediction``
    is None.

    >>> tops = {(): [Token(" yes", math.log(0.7)), Token(" no", math.log(0.2))]}
    >>> scores = walk(lambda paths: [tops[p] for p in paths], ["no", "yes"])
    >>> scores.prediction, scores.probs.round(3).tolist(), round(scores.reached, 2)
    ('yes', [0.222, 0.778], 0.9)
    """
    labels = check_labels(labels)
    keys = {label: label_key(label) for label in labels}
    mass, bound = dict.fromkeys(labels, 0.0), dict.fromkeys(labels, 0.0)
    stack: list[tuple[TokenPath, float, dict[str, str]]] = [((), 0.0, dict(keys))]
    tops: dict[TokenPath, list[Token]] = {}
    paths = partial_credits = 0
    while stack:
        path, logp, rests = stack.pop()
        if path not in tops:  # every path on the stack is asked for: ask for them together
            waiting = [path, *(p for p, _, _ in stack if p not in tops)]
            tops.update(zip(waiting, next_tokens_many(waiting)))
        top = tops.pop(path)
        paths += bool(path)
        listed = sum(math.exp(t.logprob) for t in top)
        unlisted = min(math.exp(top[-1].logprob), max(0.0, 1.0 - listed)) if top else 1.0
        for label in rests:
            bound[label] = max(bound[label], math.exp(logp) * unlisted)
        can_follow = len(path) < max_depth and (follow if follow is not None else all(t.id is not None for t in top))
        for token in top:
            p = math.exp(logp + token.logprob)
            label, child = _match(token.text, rests, keys, len(path))
            if label is not None:
                mass[label] += p
            elif child and not can_follow:
                for open_label in child:  # cannot look further: an approximation, documented above
                    mass[open_label] += p / len(child)
                partial_credits += 1
            elif child and p < min_branch_prob:
                for open_label in child:  # too unlikely to change a decision; bounds a missing label
                    bound[open_label] = max(bound[open_label], p)
            elif child:
                stack.append(((*path, token), logp + token.logprob, child))
    missing = tuple(label for label in labels if mass[label] == 0.0)
    reached = sum(mass.values())
    for label in missing:
        mass[label] = max(bound[label], 1e-12)
    probs = np.array([mass[label] for label in labels])
    return LabelScores(labels, probs / probs.sum(), missing, reached, paths, partial_credits)
