"""SlotPool: a prompt goes to the free slot that holds most of it, else the least recently used one."""

import threading
import time

import pytest

from fewshot.errors import InputError
from fewshot.llm.slots import SlotPool, _shared_prefix


def test_a_prompt_goes_where_its_prefix_is_and_ties_go_to_the_least_recently_used():
    pool = SlotPool(3)
    for slot, text in ((pool.acquire("A"), "demos A\nq1"), (pool.acquire("B"), "demos B\nq1"),
                       (pool.acquire("C"), "demos C\nq1")):
        pool.release(slot, text)
    assert pool.acquire("demos B\nq2") == 1
    assert pool.acquire("something else") == 0  # nothing shared: the least recently released
    pool.release(0, "something else")
    assert pool.acquire("x") == 2


def test_a_slot_is_not_given_up_for_a_prompt_that_keeps_less_than_half_of_it():
    held = "shared start, then a long demo set held by slot 0"  # 49 characters
    pool = SlotPool(2)
    zero, one = pool.acquire("a"), pool.acquire("b")
    pool.release(one, "other")
    pool.release(zero, held)  # slot 0 is the most recently used
    assert pool.acquire(held[:30] + ", another query") == 0  # keeps 30 of its 49 characters: goes there
    pool.release(0, held)
    assert pool.acquire("shared start, then something new") == 1  # would keep 19 of 49: slot 0 is spared


def test_acquire_waits_for_a_free_slot():
    pool = SlotPool(1)
    held = pool.acquire("a")
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire("b")))
    waiter.start()
    time.sleep(0.1)
    assert got == []
    pool.release(held, "a")
    waiter.join(5)
    assert got == [0]


def test_a_pool_needs_a_slot():
    with pytest.raises(InputError):
        SlotPool(0)


@pytest.mark.parametrize("a, b, n", [("", "x", 0), ("abc", "abc", 3), ("abcd", "abxy", 2), ("ab", "abc", 2)])
def test_shared_prefix(a, b, n):
    assert _shared_prefix(a, b) == n
