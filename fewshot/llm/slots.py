"""Which llama-server slot each prompt goes to, so the server's prompt cache is hit."""

from __future__ import annotations

import threading

from ..errors import InputError


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

