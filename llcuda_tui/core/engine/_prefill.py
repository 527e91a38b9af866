"""How a prompt is cut into ``llama_decode`` calls: the chunk sizes of one prefill.

A cancel can only land between two ``llama_decode`` calls, so the chunk size bounds how long
Esc takes during a prefill. Measured on the 2-core VM (SmolLM2-135M, others loading the
machine): the CPU prefilled ~150 tokens/s, so one 512-token chunk (``n_batch``) took 3.4-4.1 s
and Esc during a 1,100-token prefill took 6.6 s to stop. Chunks of 32 to 512 tokens
prefilled at the same rate there (within the run-to-run noise), so on the CPU the chunks are
sized to take about ``prefill_chunk_s`` each from the measured speed: the first is
:data:`FIRST_CHUNK` tokens (cheap on any machine), each later one from the speed of the one
before, growing at most :data:`MAX_GROWTH`-fold (a lucky fast chunk must not make the next
one take seconds). On a GPU a chunk of ``n_batch`` takes milliseconds and is much faster
than several small ones: ``n_batch`` as before.

Every chunk but the prompt's last ends on a multiple of :data:`~._prefix.KEEP_ALIGN`, for the
reason kept prefixes do (the CPU's repacked matrix kernels round rows in blocks differently
from rows one by one): each row then falls in the block it has in an ``n_batch`` prefill, and
greedy output is token for token the same whatever the chunk sizes.

Pure arithmetic: no llama.cpp calls here, so the rules are tested without a model.
"""

from __future__ import annotations

from llcuda_tui.core.engine._prefix import KEEP_ALIGN

FIRST_CHUNK = KEEP_ALIGN
"""Tokens in the first timed chunk: 0.2 s at the 2-core VM's slowest measured speed."""
MAX_GROWTH = 2
"""A chunk is at most this many times the one before."""


class PrefillPlan:
    """The chunk sizes of one prefill (or, in the batch engine, of each step's prompt tokens).

    ``target_s`` None: every chunk is ``n_batch`` (the GPU, or a caller that asked for it).
    Otherwise call :meth:`took` after each chunk so the next is sized to take ``target_s``.
    """

    def __init__(self, n_batch: int, target_s: float | None) -> None:
        self.n_batch = n_batch
        # an n_batch below the alignment is the user's explicit choice: keep it as it is
        self.target_s = target_s if n_batch >= KEEP_ALIGN else None
        self._largest = n_batch - n_batch % KEEP_ALIGN
        self.size = FIRST_CHUNK if self.target_s is not None else n_batch
        """Tokens the next chunk may take."""

    def end(self, start: int, stop: int, room: int | None = None) -> int:
        """Where the chunk from position ``start`` ends: at most :attr:`size` (and ``room``)
        tokens, before ``stop`` (the prompt's end) on a multiple of KEEP_ALIGN. A chunk that
        cannot reach an aligned end within ``room`` takes what fits (the batch engine, when
        other sequences' tokens fill the batch) rather than nothing."""
        n = self.size if room is None else min(self.size, room)
        end = min(start + n, stop)
        if self.target_s is not None and end < stop and end - end % KEEP_ALIGN > start:
            end -= end % KEEP_ALIGN
        return end

    def took(self, n_tokens: int, seconds: float) -> None:
        """The last chunk decoded ``n_tokens`` prompt tokens in ``seconds``."""
        if self.target_s is None or n_tokens <= 0:
            return
        fits = int(self.target_s * n_tokens / seconds) if seconds > 0 else self._largest
        size = min(fits, MAX_GROWTH * max(self.size, n_tokens), self._largest)
        self.size = max(KEEP_ALIGN, size - size % KEEP_ALIGN)
