"""What the two llama.cpp decode loops share (the :class:`~.Engine`'s, one sequence, and the
``BatchEngine``'s, many at once), so both end a generation exactly alike: stop strings across
token boundaries, the run record, and llama_decode's error codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from llcuda_tui.core.engine._types import Chunk, RunRecord
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


def finish_run(
    emit: Callable[[Chunk], None],
    tail: str,
    stop_reason: str,
    t0: float,
    t_prefill: float,
    t_first: float | None,
    times: list[float],
    base: dict[str, Any],
) -> RunRecord:
    """Build the generation's record from its clock readings, emit the last chunk (``tail``
    and the record), and return the record. ``base`` holds the record's other fields."""
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
    emit(Chunk(tail, record))
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
