"""How many CPU threads llama.cpp gets when the user does not say."""

from __future__ import annotations

import os
from collections.abc import Callable


def default_threads() -> int:
    """Physical cores, capped at 8: decode is memory-bound and more threads only contend."""
    n = os.cpu_count() or 1
    return max(1, min(8, n // 2 if n >= 4 else n))


def max_threads() -> int:
    """The most threads a load may ask for: twice the logical CPUs. llama.cpp allocates per
    thread, so 100000 threads ended in SIGSEGV or std::bad_alloc (docs/reliability.md)."""
    return 2 * (os.cpu_count() or 1)


class ThreadTuner:
    """Picks the decode thread count of a CPU engine from how long its decode steps take.

    llama.cpp's CPU threads meet at a barrier after every operation, and they spin there
    (OpenMP's active wait). When other work takes a core (the TUI's own UI process, a build,
    another engine) one thread is descheduled and the others spin until it comes back: on the
    2-core VM with other jobs running, SmolLM2 decoded 2.5-3.2 t/s with 2 threads and 17-37 t/s
    with 1 (2026-12-03; 76 t/s with 2 on the quiet machine). No thread count suits both cases,
    and the load changes while an engine lives, so this one measures.

    From the ``first`` steps on (a collapsed decode is 10x slow: waiting long would cost
    seconds) it times ``window`` steps at the count in use and ``window`` at the other one
    (``full`` or ``low``; 4 each the first time), and keeps the other only when it is
    ``margin`` faster on average. The mean, not the median: under moderate contention two
    spinning threads decode most steps at their quiet speed and stall for 5-15x on one step in
    eight (two busy processes on the 2-core VM: 16 ms steps, stalls of 80-215 ms; 1 thread:
    24 ms, none), so their median hides what the stalls cost.

    A probe that finds nothing doubles the wait before the next, from twice ``retry`` steps
    (an early verdict on a noisy machine gets another chance soon) up to ``max_every``: on a
    quiet machine the slower probes cost under 1 % of the steps. After a switch the next probe
    comes ``every`` steps later. A probe whose first two steps are both 1.5x slower than the
    mean it is compared with stops there (on a quiet machine half the threads are 1.5-2x
    slower a step; a collapsed count checked again costs two slow steps, not eight). Applies
    to the decode and prompt threads together (contention slows
    both). ``set_threads(n)`` is ``llama_set_n_threads``.
    """

    def __init__(
        self,
        set_threads: Callable[[int], None],
        full: int,
        *,
        low: int | None = None,
        window: int = 8,
        first: int = 2,
        retry: int = 32,
        every: int = 256,
        max_every: int = 4096,
        margin: float = 1.25,
    ) -> None:
        self._set = set_threads
        self.full = full
        self.low = max(1, full // 2) if low is None else low
        self.current = full
        """The thread count in use now."""
        self.switches = 0
        """Probes that changed the count."""
        self._window, self._every, self._base_every = window, retry, every
        self._max_every, self._margin = max_every, margin
        self._until_probe = first
        self._phase = "run"  # run -> measure (the count in use) -> probe (the other) -> run
        self._times: list[float] = []
        self._measured = 0.0
        self._shape = 0
        self._base = full  # the count a probe started from
        self._probed = False
        self.probes = 0
        """Probes made (each tried the other count for a few steps)."""

    def _other(self) -> int:
        return self.low if self.current == self.full else self.full

    def step(self, seconds: float, shape: int = 0) -> None:
        """A decode step took ``seconds``. ``shape``: what makes steps comparable (the batched
        engine's number of sequences): a step of another shape ends a probe unjudged."""
        if shape != self._shape:
            self._shape = shape
            if self._phase != "run":
                if self.current != self._base:
                    self._use(self._base)
                self._phase, self._until_probe = "run", self._window
                return
        if self._phase == "run":
            self._until_probe -= 1
            if self._until_probe <= 0:
                self._phase, self._times, self._base = "measure", [], self.current
            return
        times = self._times
        times.append(seconds)
        slower = self._phase == "probe" and len(times) == 2 and min(times) > 1.5 * self._measured
        # the first probe decides on 4 steps: a collapsed count takes seconds a step
        window = self._window if self._probed else min(4, self._window)
        if len(times) < window and not slower:
            return
        mean = sum(times) / len(times)
        self._times = []
        if self._phase == "measure":
            self._measured = mean
            self._use(self._other())
            self._phase = "probe"
            self.probes += 1
            return
        self._probed = True
        if not slower and mean * self._margin < self._measured:  # clearly faster
            self.switches += 1
            self._every = self._base_every
        else:
            self._use(self._base)  # back to what it was
            self._every = min(self._max_every, self._every * 2)
        self._phase, self._until_probe = "run", self._every

    def _use(self, n: int) -> None:
        self.current = n
        self._set(n)
