"""Progress of a transfer that a UI polls: bytes done of total, a smoothed speed, the ETA."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from llcuda_tui.core.fmt import fmt_duration, fmt_size


@dataclass
class TransferProgress:
    """Bytes done of total, with a smoothed speed and the time left."""

    done: int = 0
    total: int = 0
    status: str = ""
    speed_bytes_per_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    _last: tuple[float, int] | None = None

    def update(self, done: int, total: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._last is not None:
            t, n = self._last
            if done < n:  # restarted (resume re-hash, or a fresh start)
                self._last = (now, done)
            elif now - t >= 0.5:
                rate = (done - n) / (now - t)
                s = self.speed_bytes_per_s
                self.speed_bytes_per_s = rate if s == 0 else 0.7 * s + 0.3 * rate
                self._last = (now, done)
        else:
            self._last = (now, done)
        self.done, self.total = done, total

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def eta_s(self) -> float | None:
        if self.speed_bytes_per_s <= 0 or not self.total:
            return None
        return max(0.0, (self.total - self.done) / self.speed_bytes_per_s)

    def describe(self) -> str:
        return (
            f"{fmt_size(self.done)} of {fmt_size(self.total)} ({self.fraction:.0%}), "
            f"{fmt_size(self.speed_bytes_per_s)}/s, ETA {fmt_duration(self.eta_s)}"
        )
