"""This machine's CPU and memory and a few processes' memory and threads, from ``/proc``:
what the GPU screen shows when there is no GPU (the engine then runs on the CPU, and these are
the numbers that say how it is doing). Linux only; elsewhere every value is None."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessUsage:
    """One process: resident memory, threads, CPU use since the previous sample (100 % is
    one core busy)."""

    pid: int
    label: str
    rss_bytes: int | None
    threads: int | None
    cpu_percent: float | None
    alive: bool = True


@dataclass(frozen=True)
class HostSample:
    """CPU use of the whole machine since the previous sample (100 % is every core busy),
    its memory, and the processes asked about."""

    n_cpus: int
    cpu_percent: float | None
    mem_total_bytes: int | None
    mem_available_bytes: int | None
    processes: tuple[ProcessUsage, ...] = ()


class HostSampler:
    """``sample([(pid, label), ...])`` each poll; CPU percentages are over the time since the
    previous call (None at the first)."""

    def __init__(
        self, proc: Path = Path("/proc"), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.proc = proc
        self.clock = clock
        self._ticks_per_s = _clock_ticks()
        self._last_cpu: tuple[int, int] | None = None
        """(busy, total) jiffies of /proc/stat's cpu line at the previous sample."""
        self._last_proc: dict[int, tuple[float, int]] = {}
        """pid -> (clock, utime + stime jiffies) at the previous sample."""

    def sample(self, processes: Iterable[tuple[int, str]] = ()) -> HostSample:
        total, available = self._memory()
        return HostSample(
            n_cpus=os.cpu_count() or 1,
            cpu_percent=self._cpu_percent(),
            mem_total_bytes=total,
            mem_available_bytes=available,
            processes=tuple(self._process(pid, label) for pid, label in processes),
        )

    def _cpu_percent(self) -> float | None:
        try:
            line = (self.proc / "stat").read_text(encoding="ascii").split("\n", 1)[0]
        except OSError:
            return None
        values = [int(v) for v in line.split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        total = sum(values[:8])  # guest time is counted in user already
        last, self._last_cpu = self._last_cpu, (total - idle, total)
        if last is None or total <= last[1]:
            return None
        return 100.0 * (total - idle - last[0]) / (total - last[1])

    def _memory(self) -> tuple[int | None, int | None]:
        found: dict[str, int] = {}
        try:
            with open(self.proc / "meminfo", encoding="ascii") as fh:
                for line in fh:
                    key, _, rest = line.partition(":")
                    if key in ("MemTotal", "MemAvailable"):
                        found[key] = int(rest.split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            return None, None
        return found.get("MemTotal"), found.get("MemAvailable")

    def _process(self, pid: int, label: str) -> ProcessUsage:
        rss = threads = None
        try:
            status = (self.proc / str(pid) / "status").read_text(encoding="utf-8", errors="replace")
        except OSError:
            self._last_proc.pop(pid, None)
            return ProcessUsage(pid, label, None, None, None, alive=False)
        for line in status.splitlines():
            key, _, rest = line.partition(":")
            if key == "VmRSS":
                rss = int(rest.split()[0]) * 1024
            elif key == "Threads":
                threads = int(rest.strip())
        return ProcessUsage(pid, label, rss, threads, self._process_cpu(pid))

    def _process_cpu(self, pid: int) -> float | None:
        try:
            stat = (self.proc / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
            fields = stat.rsplit(")", 1)[1].split()  # the name in (...) may hold spaces
            jiffies = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            return None
        now = self.clock()
        last, self._last_proc[pid] = self._last_proc.get(pid), (now, jiffies)
        if last is None or now <= last[0]:
            return None
        return 100.0 * (jiffies - last[1]) / self._ticks_per_s / (now - last[0])


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100
