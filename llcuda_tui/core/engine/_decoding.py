"""What the two llama.cpp decode loops share (the :class:`~.Engine`'s, one sequence, and the
``BatchEngine``'s, many at once), so both end a generation exactly alike: stop strings across
token boundaries, the run record, and llama_decode's error codes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from llcuda_tui.core.engine._types import Chunk, RunRecord, TokenLogprob
from llcuda_tui.core.errors import EngineError


class StopMatcher:
    """Finds stop strings across token boundaries, holding back only a possible prefix.

    Work per token is bounded by the longest stop string, so the cost stays flat however
    long the reply grows.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Text safe to emit now, and whether a stop string was hit (text is cut before it)."""
        if not self.stops:
            return text, False
        buf = self.hold + text
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.hold = ""
            return buf[:cut], True
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:k]):
                    keep = max(keep, k)
                    break
        self.hold = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        out, self.hold = self.hold, ""
        return out


def logprobs_at(
    ctx: Any, idx: int, n_vocab: int, token: int, k: int, piece_of: Callable[[int], bytes]
) -> TokenLogprob:
    """``token``'s log probability at logits row ``idx`` of ``ctx`` and the ``k`` most likely
    tokens there: a log-softmax of the raw logits (before any sampler: llama-server's default,
    ``post_sampling_probs`` off), with numpy: exponentials in float32, summed in float64.
    Measured on a 151,936-token row (2 busy cores): 1.2 ms, 1.4 ms with the top 20 (float64
    exponentials alone took 5 ms), so it runs only for requests that ask
    (``GenerationRequest.logprobs``). The row must be on the CPU (no backend sampler on that
    sequence)."""
    import llama_cpp as L
    import numpy as np

    row = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, idx), shape=(n_vocab,))
    peak = row.max()
    scratch = np.subtract(row, peak)
    np.exp(scratch, out=scratch)  # each in (0, 1]: no overflow in float32
    lse = float(peak) + math.log(float(scratch.sum(dtype=np.float64)))
    top: tuple[TokenLogprob, ...] = ()
    if k > 0:
        k = min(k, n_vocab)
        cutoff = np.partition(row, n_vocab - k)[n_vocab - k]
        ids = np.flatnonzero(row >= cutoff)  # every tie at the cutoff, in id order
        best = ids[np.lexsort((ids, -row[ids]))][:k]  # most likely first, lower id on ties
        top = tuple(TokenLogprob(int(t), piece_of(int(t)), float(row[t]) - lse) for t in best)
    return TokenLogprob(token, piece_of(token), float(row[token]) - lse, top)


class LogprobTrail:
    """Generated tokens' :class:`TokenLogprob` handed out with the first chunk carrying their
    text: text a :class:`StopMatcher` holds back holds its tokens back too, and a token whose
    text a stop string cut off entirely is never handed out. A token that produced no text
    (part of a UTF-8 character) goes with the next text."""

    def __init__(self) -> None:
        self._held: deque[tuple[int, TokenLogprob]] = deque()
        self._fed = 0
        """Characters the tokens produced so far."""
        self._out = 0
        """Characters emitted so far."""

    def add(self, entry: TokenLogprob, n_chars: int) -> None:
        self._held.append((self._fed, entry))
        self._fed += n_chars

    def take(self, n_emitted: int) -> tuple[TokenLogprob, ...]:
        """The tokens whose text starts within the ``n_emitted`` characters just emitted."""
        self._out += n_emitted
        held, out = self._held, []
        while held and held[0][0] < self._out:
            out.append(held.popleft()[1])
        return tuple(out)

    def rest(self) -> tuple[TokenLogprob, ...]:
        """Every token still held (the generation ended without a stop string)."""
        out = tuple(e for _, e in self._held)
        self._held.clear()
        return out


def finish_run(
    emit: Callable[[Chunk], None],
    tail: str,
    stop_reason: str,
    t0: float,
    t_prefill: float,
    t_first: float | None,
    times: list[float],
    base: dict[str, Any],
    logprobs: tuple[TokenLogprob, ...] = (),
) -> RunRecord:
    """Build the generation's record from its clock readings, emit the last chunk (``tail``,
    the ``logprobs`` of the tokens it carries, and the record), and return the record.
    ``base`` holds the record's other fields."""
    t_end = time.perf_counter()
    n_gen = len(times)
    prefill_s = (t_first - t_prefill) if t_first is not None else t_end - t_prefill
    decode_s = (t0 + times[-1]) - (t0 + times[0]) if n_gen > 1 else 0.0
    record = RunRecord(
        generated_tokens=n_gen,
        ttft_s=times[0] if times else (t_end - t0),
        prefill_s=prefill_s,
        decode_s=decode_s,
        # over the tokens decoded: a cached prefix took no time and must not inflate the rate
        prefill_tokens_per_s=(
            base.get("prompt_tokens_evaluated", base["prompt_tokens"]) / prefill_s
            if prefill_s > 0
            else 0.0
        ),
        decode_tokens_per_s=(n_gen - 1) / decode_s if decode_s > 0 else 0.0,
        total_s=t_end - t0,
        stop_reason=stop_reason,
        token_times_s=times,
        **base,
    )
    emit(Chunk(tail, record, logprobs=logprobs))
    return record


def decode_error(rc: int) -> EngineError:
    """The error for a non-zero return code of ``llama_decode``."""
    if rc == 1:
        return EngineError("llama_decode: no KV cache slot (context full)")
    if rc == 2:
        return EngineError("llama_decode was aborted")
    return EngineError(f"llama_decode failed with code {rc}")


def check_decode(rc: int) -> None:
    """Raise :func:`decode_error` unless ``rc`` is 0 (called per token: one comparison)."""
    if rc == 0:
        return
    raise decode_error(rc)
