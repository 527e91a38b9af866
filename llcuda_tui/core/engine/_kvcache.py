"""One sequence's KV cells, kept between generations: the llama.cpp half of the prefix cache.

Both decode loops (the :class:`~.Engine`'s single sequence and the ``BatchEngine``'s slots)
keep a :class:`SeqCells` per sequence id. Before a generation, :meth:`SeqCells.reuse` keeps the
cells of the prompt's longest common prefix with what the sequence holds and drops the rest
(``llama_memory_seq_rm(mem, seq, n_keep, -1)``); the loop then decodes only
``prompt[n_keep:]``. While the loop decodes it appends what it feeds, so the bookkeeping always
matches the cells.

Where the model's memory cannot drop a tail (recurrent and hybrid models: ``seq_rm`` of a
partial range fails) or a sliding-window cache has already dropped positions the new tokens
would attend to, the sequence is cleared and the prompt prefilled whole; the reason goes into
the run record (``prompt_cache_note``).

Saved states (:mod:`._kvstore`) come in through :meth:`SeqCells.restore`: the state's cells are
loaded into the sequence (``llama_state_seq_set_data_ext``) and then trimmed like any cache hit.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llcuda_tui.core.engine._kvstore import (
    MIN_SAVED_TOKENS,
    KvStateError,
    KvStateStore,
    layout_fingerprint,
)
from llcuda_tui.core.engine._prefix import SlotCache, common_prefix, reusable_prefix, touch
from llcuda_tui.core.errors import LlcudaError

NO_TAIL_DROP = "this model's memory cannot drop a tail (recurrent or hybrid): full prefill"
SWA_DROPPED = "the sliding-window cache no longer holds the shared prefix: full prefill"


@dataclass
class Reuse:
    """What a generation may keep of a sequence's cells."""

    n_keep: int
    """Prompt tokens already in the cells: decode from here."""
    note: str = ""
    """Why less was kept than the tokens had in common (empty when nothing was lost)."""


class SeqCells:
    """The cells of one sequence id and the tokens they hold (position i holds tokens[i])."""

    def __init__(self, ctx: Any, seq_id: int, n_swa: int) -> None:
        import llama_cpp as L

        self._L = L
        self.ctx = ctx
        self.mem = L.llama_get_memory(ctx)
        self.seq_id = seq_id
        self.n_swa = n_swa
        self.cache = SlotCache()

    @property
    def tokens(self) -> list[int]:
        """The held tokens; the decode loops append to this list as they feed tokens."""
        return self.cache.tokens

    def reuse(self, prompt: Sequence[int]) -> Reuse:
        """Keep the cells of the prompt's longest common prefix, drop the rest."""
        n_common = common_prefix(self.cache.tokens, prompt) if self.cache.tokens else 0
        n_keep = reusable_prefix(n_common, len(prompt))
        note = ""
        L, mem, seq = self._L, self.mem, self.seq_id
        if n_keep > 0 and self.n_swa > 0:
            # positions before n_keep - n_swa may be gone; the new tokens need them from there
            pos_min = int(L.llama_memory_seq_pos_min(mem, seq))
            if pos_min > max(0, n_keep - self.n_swa):
                n_keep, note = 0, SWA_DROPPED
        if n_keep > 0 and not L.llama_memory_seq_rm(mem, seq, n_keep, -1):
            n_keep, note = 0, NO_TAIL_DROP
        if n_keep == 0:
            L.llama_memory_seq_rm(mem, seq, -1, -1)
        self.cache.keep(n_keep)
        touch(self.cache)
        return Reuse(n_keep, note)

    def forget(self) -> None:
        """Drop every cell (after a failed decode, or when something else used the memory)."""
        self._L.llama_memory_seq_rm(self.mem, self.seq_id, -1, -1)
        self.cache.clear()

    def forgot(self) -> None:
        """The memory was cleared behind our back (llama_memory_clear): forget the tokens."""
        self.cache.clear()

    # --- saved states ----------------------------------------------------------------------

    def snapshot(self) -> ctypes.Array[ctypes.c_uint8] | None:
        """The sequence's state as bytes (host memory), or None when it holds nothing."""
        L = self._L
        if not self.cache.tokens:
            return None
        size = int(L.llama_state_seq_get_size_ext(self.ctx, self.seq_id, 0))
        if size <= 0:
            return None
        buf = (ctypes.c_uint8 * size)()
        got = int(L.llama_state_seq_get_data_ext(self.ctx, buf, size, self.seq_id, 0))
        return buf if got == size else None

    def wipe(self) -> None:
        """Clear the whole memory, data too (``llama_memory_clear(mem, true)``), for a context
        this sequence has to itself. After a state that failed its check had been copied in:
        dropping its cells is not enough, since a bad byte can be an f16 NaN or Inf, and
        freed cells stay in the attention window, where an additive mask turns NaN into NaN
        (the starter model's greedy text changed after a flipped byte until it was cleared)."""
        self._L.llama_memory_clear(self.mem, True)
        self.cache.clear()

    def restore(self, tokens: Sequence[int], payload: ctypes.Array[ctypes.c_uint8]) -> bool:
        """Load a saved state holding ``tokens`` into this sequence; False (and the sequence
        empty) when llama.cpp refuses it."""
        L = self._L
        L.llama_memory_seq_rm(self.mem, self.seq_id, -1, -1)
        self.cache.clear()
        read = int(L.llama_state_seq_set_data_ext(self.ctx, payload, len(payload), self.seq_id, 0))
        if read != len(payload) or int(L.llama_memory_seq_pos_max(self.mem, self.seq_id)) != (
            len(tokens) - 1
        ):
            L.llama_memory_seq_rm(self.mem, self.seq_id, -1, -1)
            return False
        self.cache.tokens.extend(tokens)
        return True


def n_swa_of(model: Any) -> int:
    """The model's sliding-window size (0: none)."""
    import llama_cpp as L

    return int(L.llama_model_n_swa(model))


class StatePersistence:
    """Saves sequences' states to a :class:`~._kvstore.KvStateStore` and restores the best
    one for a prompt. Snapshots are taken on the engine thread (they read the KV cache); the
    hashing and writing happen on one background thread, so a reply never waits for a disk."""

    def __init__(self, store: KvStateStore, layout: str, overlap: bool = False) -> None:
        import queue
        import threading

        self.store = store
        self.layout = layout
        self.overlap = overlap
        """Hash a state while llama.cpp copies it in (and wipe the memory if the hash fails):
        only for a context with one sequence, since the wipe clears them all."""
        self._writes: queue.SimpleQueue[tuple[tuple[int, ...], Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_loop, name="llcuda-kv-save", daemon=True)
        self._thread.start()
        self.saved = 0
        self.restored = 0
        self.refused = 0
        self.last_error = ""
        self.last_restore_ms: dict[str, float] = {}
        """The last restore's parts: opening the file, llama.cpp copying it in, and the wait
        for the hash after that (it runs during the copy)."""

    def save(self, cells: SeqCells) -> None:
        """Queue the sequence's state for writing (worth it only for long sequences)."""
        if len(cells.tokens) < MIN_SAVED_TOKENS:
            return
        payload = cells.snapshot()
        if payload is not None:
            self._writes.put((tuple(cells.tokens), payload))

    def restore_best(self, cells: SeqCells, prompt: Sequence[int], n_keep: int) -> int:
        """Restore the saved state sharing the longest prefix with ``prompt`` when it beats
        the ``n_keep`` tokens the sequence already has; the new number of tokens to keep."""
        hit = self.store.find(self.layout, prompt)
        if hit is None or reusable_prefix(hit[1], len(prompt)) <= n_keep:
            return n_keep
        state = hit[0]
        t0 = time.perf_counter()
        try:
            payload = self.store.open(state)
            verified = self.store.verify(state, payload)
            if not self.overlap:  # other sequences share the memory: check before copying in
                self.store.check(state, verified.result())
        except KvStateError as exc:
            self.refused += 1
            self.last_error = str(exc)
            return self._fallback(cells, prompt)
        # with overlap, llama.cpp copies the state in while other threads hash it; the cells
        # are used only once the hash says they hold the saved bytes, else the memory is
        # wiped (SeqCells.wipe) and the prompt prefilled
        t1 = time.perf_counter()
        loaded = cells.restore(state.tokens, payload)
        t2 = time.perf_counter()
        if self.overlap:
            try:
                self.store.check(state, verified.result())
            except KvStateError as exc:
                cells.wipe()
                self.refused += 1
                self.last_error = str(exc)
                return self._fallback(cells, prompt)
        t3 = time.perf_counter()
        self.last_restore_ms = {
            "open": (t1 - t0) * 1e3, "copy_in": (t2 - t1) * 1e3, "verify_wait": (t3 - t2) * 1e3,
        }  # fmt: skip
        if not loaded:
            self.refused += 1
            self.last_error = f"llama.cpp refused saved state {state.key[:12]}"
            self.store.remove(state)
            return self._fallback(cells, prompt)
        self.restored += 1
        return cells.reuse(prompt).n_keep

    def _fallback(self, cells: SeqCells, prompt: Sequence[int]) -> int:
        # the sequence may be empty now: whatever it still holds is reused, the rest prefilled
        return cells.reuse(prompt).n_keep

    def flush(self, timeout_s: float = 120.0) -> None:
        """Wait for queued writes (at close) and stop the writer."""
        self._writes.put(None)
        self._thread.join(timeout_s)

    def _write_loop(self) -> None:
        while True:
            item = self._writes.get()
            if item is None:
                return
            tokens, payload = item
            try:
                self.store.save(self.layout, tokens, memoryview(payload).cast("B"))
                self.saved += 1
            except (OSError, LlcudaError) as exc:  # a full disk must not stop the engine
                self.last_error = f"could not save a KV state: {exc}"


def keep_prefix(cells: SeqCells, saver: StatePersistence | None, prompt: Sequence[int]) -> Reuse:
    """Prepare ``cells`` for ``prompt`` (both decode loops call this before a generation):
    save what they hold first when most of it is about to be dropped (another conversation
    takes the slot), keep the common prefix, and restore a saved state when one shares more."""
    if saver is not None:
        held = len(cells.tokens)
        n_common = common_prefix(cells.tokens, prompt) if held else 0
        if n_common < held // 2:
            saver.save(cells)
    reuse = cells.reuse(prompt)
    if saver is not None and len(prompt) - reuse.n_keep >= MIN_SAVED_TOKENS:
        reuse.n_keep = saver.restore_best(cells, prompt, reuse.n_keep)
    return reuse


def persistence_for(
    kv_state_dir: Path | None,
    max_bytes: int | None,
    model_sha256: str | None,
    *,
    overlap: bool = False,
    **layout: object,
) -> StatePersistence | None:
    """The state persistence of an engine, or None when it has no directory or no model
    sha256 (a state is keyed by the model's bytes: a path alone could change under it).
    ``overlap``: see :attr:`StatePersistence.overlap` (a one-sequence context only)."""
    if kv_state_dir is None or not model_sha256:
        return None
    fingerprint = layout_fingerprint(model=model_sha256, **layout)
    return StatePersistence(KvStateStore(kv_state_dir, max_bytes), fingerprint, overlap)
