"""Saved KV states of conversations, content-addressed on disk, verified before use.

When a slot is about to be reused or its engine closes, the scheduler saves that sequence's
state (``llama_state_seq_get_data_ext``) here, keyed by sha256 of (the layout fingerprint:
model sha256 and every setting that changes the KV layout, and the token ids). A later request
whose prompt shares a long prefix with a saved state restores it instead of prefilling: a
conversation reopened in the TUI, or a long history resent to a restarted worker, starts almost
at once (llama-server's cold prefill of 7k tokens took 779 ms on an H200, its manual restore
213 ms).

A state is trusted only after every byte checks out: each file carries the sha256 of each
16 MiB chunk of its payload, and the chunks are hashed in parallel threads (hashlib releases
the GIL), so an 875 MiB state verifies in tens of milliseconds on a many-core machine instead of
half a second on one core. A corrupt, truncated or foreign file is refused (and removed), and
the caller falls back to a prefill: never to wrong output.

Layout (under the store's ``kv/``): ``<key>.kv`` (magic, header length, JSON header, payload)
and ``<key>.json`` (the same header, for listing without opening the payload). Written as temp
file, fsync, rename; the payload first, the listing last, so a listed state is always whole.
The size cap evicts least recently used states (a restore counts as a use).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import hashlib
import json
import mmap
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llcuda_tui.core.errors import LlcudaError

MAGIC = b"LLKVSTATE1\n"
_HEADER_LEN = struct.Struct("!Q")
CHUNK_BYTES = 16 << 20
MIN_SAVED_TOKENS = 32
"""States shorter than this are not worth a file: their prefill takes milliseconds."""
_HASH_THREADS = min(16, os.cpu_count() or 1)


class KvStateError(LlcudaError):
    """A saved state that cannot be used (corrupt, truncated, foreign): prefill instead."""


@dataclass(frozen=True)
class SavedState:
    key: str
    layout: str
    """The layout fingerprint: only an engine with the same one may restore this state."""
    tokens: tuple[int, ...]
    payload_bytes: int
    chunk_sha256: tuple[str, ...]
    created: float
    last_used: float
    path: Path

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def layout_fingerprint(**settings: object) -> str:
    """sha256 of the settings that decide whether a saved state fits a context (model sha256,
    n_ctx, KV types, flash attention, offload): pass them all by name."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def state_key(layout: str, tokens: Sequence[int]) -> str:
    h = hashlib.sha256(layout.encode())
    h.update(struct.pack(f"<{len(tokens)}i", *tokens))
    return h.hexdigest()


def _chunk_digests(buf: memoryview) -> tuple[str, ...]:
    spans = [buf[i : i + CHUNK_BYTES] for i in range(0, len(buf), CHUNK_BYTES)]
    if len(spans) <= 1:
        return tuple(hashlib.sha256(s).hexdigest() for s in spans)
    with concurrent.futures.ThreadPoolExecutor(_HASH_THREADS) as pool:
        return tuple(pool.map(lambda s: hashlib.sha256(s).hexdigest(), spans))


class KvStateStore:
    """The saved states of one home (``<store>/kv``), with an optional size cap in bytes."""

    def __init__(self, root: Path, max_bytes: int | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes

    # --- listing --------------------------------------------------------------------------

    def states(self) -> list[SavedState]:
        """Every listed state, most recently used first (unreadable listings are skipped)."""
        out = []
        for listing in self.root.glob("*.json") if self.root.is_dir() else []:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                out.append(self._read_listing(listing))
        return sorted(out, key=lambda s: s.last_used, reverse=True)

    def usage_bytes(self) -> int:
        total = 0
        for p in self.root.iterdir() if self.root.is_dir() else []:
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def find(self, layout: str, prompt: Sequence[int]) -> tuple[SavedState, int] | None:
        """The saved state sharing the longest prefix with ``prompt`` (at least
        MIN_SAVED_TOKENS), with that prefix's length; None when nothing fits."""
        from llcuda_tui.core.engine._prefix import common_prefix

        best: tuple[SavedState, int] | None = None
        for state in self.states():
            if state.layout != layout:
                continue
            n = common_prefix(state.tokens, prompt)
            if n >= MIN_SAVED_TOKENS and (best is None or n > best[1]):
                best = (state, n)
        return best

    # --- writing --------------------------------------------------------------------------

    def save(self, layout: str, tokens: Sequence[int], payload: memoryview) -> SavedState:
        """Write a state (payload first, listing last); an identical one is only touched."""
        key = state_key(layout, tokens)
        self.root.mkdir(parents=True, exist_ok=True)
        existing = self.root / f"{key}.json"
        if existing.exists() and (self.root / f"{key}.kv").exists():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                state = self._read_listing(existing)
                if state.payload_bytes == len(payload):
                    self.touch(state)
                    return state
        now = time.time()
        header = {
            "key": key,
            "layout": layout,
            "tokens": list(tokens),
            "payload_bytes": len(payload),
            "chunk_bytes": CHUNK_BYTES,
            "chunk_sha256": list(_chunk_digests(payload)),
            "created": now,
        }
        head = json.dumps(header).encode()
        _write_atomic(self.root / f"{key}.kv", [MAGIC, _HEADER_LEN.pack(len(head)), head, payload])
        _write_atomic(existing, [head])
        state = self._read_listing(existing)
        self.evict()
        return state

    def touch(self, state: SavedState) -> None:
        with contextlib.suppress(OSError):
            os.utime(state.path.with_suffix(".json"))

    def remove(self, state: SavedState) -> None:
        for suffix in (".json", ".kv"):  # the listing first: never a listed state without data
            with contextlib.suppress(FileNotFoundError):
                state.path.with_suffix(suffix).unlink()

    def disk_bytes(self, state: SavedState) -> int:
        """Bytes ``state`` takes on disk (payload and listing)."""
        return _disk_bytes(state)

    def clear(self) -> int:
        """Remove every state; the number removed."""
        states = self.states()
        for state in states:
            self.remove(state)
        for stray in self.root.glob("*.tmp*") if self.root.is_dir() else []:
            with contextlib.suppress(OSError):
                stray.unlink()
        return len(states)

    def evict(self, keep: int = 0) -> list[SavedState]:
        """Remove least recently used states until the cap holds (``keep`` more bytes free)."""
        if self.max_bytes is None:
            return []
        removed = []
        states = self.states()
        sizes = {s.key: _disk_bytes(s) for s in states}
        total = sum(sizes.values())
        while states and total + keep > self.max_bytes:
            oldest = states.pop()
            self.remove(oldest)
            total -= sizes[oldest.key]
            removed.append(oldest)
        return removed

    # --- reading --------------------------------------------------------------------------

    def read(self, state: SavedState) -> ctypes.Array[ctypes.c_uint8]:
        """The verified payload, in a buffer llama.cpp can read from. Raises KvStateError
        (and removes the state) when the file is not exactly what its listing promises."""
        buf = self.open(state)
        self.check(state, self.verify(state, buf).result())
        return buf

    def verify(
        self, state: SavedState, buf: ctypes.Array[ctypes.c_uint8]
    ) -> concurrent.futures.Future[bool]:
        """Whether ``buf`` (from :meth:`open`) holds exactly the bytes the state was saved
        with, computed on other threads: a restore hands the buffer to llama.cpp at once and
        only uses the sequence after this says yes (the 7k-token state of the 8B took 61 ms to
        hash on an H200 host, about as long as llama.cpp takes to copy it in)."""
        view = memoryview(buf).cast("B")
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="llcuda-kv-verify")
        future = pool.submit(lambda: _chunk_digests(view) == state.chunk_sha256)
        pool.shutdown(wait=False)
        return future

    def check(self, state: SavedState, verified: bool) -> None:
        """After :meth:`verify`: KvStateError (and the state removed) when the bytes changed;
        otherwise the state counts as used (LRU)."""
        if not verified:
            self.remove(state)
            raise KvStateError(f"saved state {state.key[:12]} refused: its bytes changed")
        self.touch(state)

    def open(self, state: SavedState) -> ctypes.Array[ctypes.c_uint8]:
        """The payload of ``state``, mapped, NOT yet verified (see :meth:`verify`), after the
        checks that need no hashing (magic, header, size). Raises KvStateError (and removes
        the state) when one fails."""
        try:
            with open(state.path, "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    raise KvStateError("not a saved KV state")
                (n_head,) = _HEADER_LEN.unpack(f.read(_HEADER_LEN.size))
                if n_head > 64 << 20:
                    raise KvStateError("its header is implausibly large")
                head = json.loads(f.read(n_head))
                if head.get("key") != state.key or head.get("payload_bytes") != state.payload_bytes:
                    raise KvStateError("its header does not match its listing")
                offset = f.tell()
                got = os.fstat(f.fileno()).st_size - offset
                if got != state.payload_bytes:
                    raise KvStateError(f"truncated: {got} of {state.payload_bytes} bytes")
                # mapped, not read: no zero-filled buffer and no second copy of a state that
                # can be a GiB. Copy-on-write only because ctypes wants a writable buffer;
                # states are replaced by rename, never rewritten in place, so the mapped
                # inode keeps the bytes that are verified below
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
                buf = (ctypes.c_uint8 * state.payload_bytes).from_buffer(mapped, offset)
        except (OSError, ValueError, struct.error) as exc:
            self.remove(state)
            raise KvStateError(f"unreadable saved state {state.key[:12]}: {exc}") from None
        except KvStateError as exc:
            self.remove(state)
            raise KvStateError(f"saved state {state.key[:12]} refused: {exc}") from None
        return buf

    def _read_listing(self, listing: Path) -> SavedState:
        head = json.loads(listing.read_text(encoding="utf-8"))
        key = str(head["key"])
        tokens = tuple(int(t) for t in head["tokens"])
        if state_key(str(head["layout"]), tokens) != key or listing.stem != key:
            raise ValueError("listing does not match its key")
        return SavedState(
            key=key,
            layout=str(head["layout"]),
            tokens=tokens,
            payload_bytes=int(head["payload_bytes"]),
            chunk_sha256=tuple(str(d) for d in head["chunk_sha256"]),
            created=float(head["created"]),
            last_used=listing.stat().st_mtime,
            path=listing.with_suffix(".kv"),
        )


def _disk_bytes(state: SavedState) -> int:
    """What a state takes on disk: its payload file and its listing."""
    total = 0
    for suffix in (".kv", ".json"):
        with contextlib.suppress(OSError):
            total += state.path.with_suffix(suffix).stat().st_size
    return total


def _write_atomic(path: Path, parts: Sequence[bytes | memoryview]) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
