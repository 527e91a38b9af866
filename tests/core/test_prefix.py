"""The prefix cache's slot bookkeeping (no model: the rules alone)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from llcuda_tui.core.engine._prefix import (
    KEEP_ALIGN,
    SlotCache,
    choose_slot,
    common_prefix,
    reusable_prefix,
)


def _slow_common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@given(st.lists(st.integers(0, 3), max_size=60), st.lists(st.integers(0, 3), max_size=60))
def test_common_prefix_matches_a_plain_loop(a: list[int], b: list[int]) -> None:
    assert common_prefix(a, b) == _slow_common_prefix(a, b)
    assert common_prefix(a, a + b) == len(a)


def test_common_prefix_of_long_histories() -> None:
    rng = random.Random(7)
    a = [rng.randrange(50_000) for _ in range(30_000)]
    for cut in (0, 1, 4095, 29_999):
        b = [*a[:cut], -1, *a[cut + 1 :]]
        assert common_prefix(a, b) == cut
    assert common_prefix(a, a) == 30_000


def test_the_last_prompt_token_is_always_decoded_again_from_an_aligned_position() -> None:
    a = KEEP_ALIGN
    assert reusable_prefix(3 * a + 1, 3 * a + 1) == 3 * a  # the prompt equals the cached tokens
    assert reusable_prefix(3 * a, 3 * a) == 2 * a  # ... and its last token ends a block
    assert reusable_prefix(10 * a, 2 * a + 5) == 2 * a  # the prompt is a prefix of them
    assert reusable_prefix(2 * a + 3, 10 * a) == 2 * a  # diverges 3 tokens after a block
    assert reusable_prefix(a - 1, 10 * a) == 0
    assert reusable_prefix(0, 10) == 0
    assert reusable_prefix(0, 0) == 0


def test_the_longest_prefix_wins_then_the_least_recently_used() -> None:
    caches = [SlotCache([1, 2, 3], 5.0), SlotCache([1, 2, 9, 9], 1.0), SlotCache([], 0.5)]
    choice = choose_slot([0, 1, 2], caches, [1, 2, 3, 4])
    assert (choice.slot, choice.n_common) == (0, 3)
    # slot 0 busy: slot 1 shares two tokens, more than the empty slot
    choice = choose_slot([1, 2], caches, [1, 2, 3, 4])
    assert (choice.slot, choice.n_common) == (1, 2)
    # nothing shared anywhere: the least recently used slot
    choice = choose_slot([0, 1, 2], caches, [7])
    assert (choice.slot, choice.n_common) == (2, 0)
    choice = choose_slot([0, 1], caches, [7])
    assert (choice.slot, choice.n_common) == (1, 0)


def test_keep_drops_the_tail() -> None:
    cache = SlotCache([1, 2, 3, 4])
    cache.keep(2)
    assert cache.tokens == [1, 2]
    cache.clear()
    assert cache.tokens == []
