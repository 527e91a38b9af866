"""Saved KV states on disk: found by prefix, verified byte for byte, evicted by LRU."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from llcuda_tui.core.engine._kvstore import (
    CHUNK_BYTES,
    KvStateError,
    KvStateStore,
    layout_fingerprint,
)

LAYOUT = layout_fingerprint(model="a" * 64, n_ctx=4096, type_k="f16", type_v="f16")
TOKENS = list(range(100, 400))


def _payload(n: int, seed: int = 1) -> memoryview:
    return memoryview(bytes((i * 31 + seed) % 251 for i in range(n)))


def test_a_saved_state_is_found_by_prefix_and_reads_back(tmp_path: Path) -> None:
    kv = KvStateStore(tmp_path / "kv")
    payload = _payload(CHUNK_BYTES + 4097)  # two chunks: the parallel hash path
    saved = kv.save(LAYOUT, TOKENS, payload)
    assert saved.n_tokens == len(TOKENS)
    hit = kv.find(LAYOUT, [*TOKENS, 7, 8, 9])
    assert hit is not None and hit[0].key == saved.key and hit[1] == len(TOKENS)
    # a prompt diverging after 200 tokens still uses the state's first 200
    hit = kv.find(LAYOUT, [*TOKENS[:200], -5])
    assert hit is not None and hit[1] == 200
    assert bytes(kv.read(saved)) == bytes(payload)
    # other layouts and short overlaps never match
    other = layout_fingerprint(model="a" * 64, n_ctx=8192, type_k="f16", type_v="f16")
    assert kv.find(other, TOKENS) is None
    assert kv.find(LAYOUT, TOKENS[:5]) is None
    # saving the same state again writes nothing new
    assert kv.save(LAYOUT, TOKENS, payload).key == saved.key
    assert len(kv.states()) == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "grow", "magic"])
def test_damaged_states_are_refused_and_removed(tmp_path: Path, damage: str) -> None:
    kv = KvStateStore(tmp_path / "kv")
    saved = kv.save(LAYOUT, TOKENS, _payload(70_000))
    data = bytearray(saved.path.read_bytes())
    if damage == "flip":
        data[-1000] ^= 0x01
    elif damage == "truncate":
        del data[-10:]
    elif damage == "grow":
        data += b"x"
    else:
        data[0:4] = b"JUNK"
    saved.path.write_bytes(bytes(data))
    with pytest.raises(KvStateError, match=saved.key[:12]):
        kv.read(saved)
    assert kv.states() == [] and not saved.path.exists()


def test_a_listing_that_lies_about_its_tokens_is_ignored(tmp_path: Path) -> None:
    kv = KvStateStore(tmp_path / "kv")
    saved = kv.save(LAYOUT, TOKENS, _payload(1000))
    listing = saved.path.with_suffix(".json")
    listing.write_text(listing.read_text().replace("[100, 101,", "[100, 999,"))
    assert kv.states() == []
    assert kv.find(LAYOUT, TOKENS) is None


def test_the_cap_evicts_the_least_recently_used(tmp_path: Path) -> None:
    kv = KvStateStore(tmp_path / "kv", max_bytes=30_000)
    a = kv.save(LAYOUT, [1, *TOKENS], _payload(10_000, 1))
    b = kv.save(LAYOUT, [2, *TOKENS], _payload(10_000, 2))
    old = time.time() - 100
    os.utime(b.path.with_suffix(".json"), (old, old))  # b used long ago, a just now
    kv.read(a)
    c = kv.save(LAYOUT, [3, *TOKENS], _payload(10_000, 3))
    keys = {s.key for s in kv.states()}
    assert keys == {a.key, c.key}
    assert kv.usage_bytes() <= 30_000  # payloads and their headers, all counted
    assert kv.clear() == 2 and kv.states() == []
