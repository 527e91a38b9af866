"""GPU telemetry through NVML (``nvidia-ml-py``, imported lazily as ``pynvml``).

:class:`GpuSampler` takes a :class:`GpuSample` (one :class:`GpuReading` per GPU) on demand with
:meth:`GpuSampler.sample`, or on its own thread every ``interval_s`` with
:meth:`GpuSampler.start`, and keeps a ring buffer of readings per GPU. Nothing here raises
because a GPU is missing: no driver, no NVML or a lost GPU become a sample whose ``state`` and
``message`` say so; a value NVML does not support on a device (MIG, fanless boards) is ``None``
("n/a"). PCIe throughput costs ~20 ms per GPU and direction, so sample off the UI thread.

One module on purpose (about 600 lines): the readings are what :class:`GpuSampler` fills
field by field from NVML, and each field's NVML call, its "n/a" case and its record field
read best together; the sampler is most of the module.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from llcuda_tui.core.gpu import DEFAULT_INTERVAL_S

MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 60.0
DEFAULT_HISTORY = 600

# NVML return codes (part of NVML's ABI; kept here so a replayed trace needs no pynvml)
ERR_UNINITIALIZED = 1
ERR_INVALID_ARGUMENT = 2
ERR_NOT_SUPPORTED = 3
ERR_NO_PERMISSION = 4
ERR_NOT_FOUND = 6
ERR_DRIVER_NOT_LOADED = 9
ERR_LIBRARY_NOT_FOUND = 12
ERR_FUNCTION_NOT_FOUND = 13
ERR_GPU_IS_LOST = 15
ERR_RESET_REQUIRED = 16
ERR_NO_DATA = 21
ERR_NOT_READY = 27
ERR_GPU_NOT_FOUND = 28
ERR_UNKNOWN = 999

NVML_ERROR_TEXT = {
    ERR_UNINITIALIZED: "Uninitialized",
    ERR_INVALID_ARGUMENT: "Invalid Argument",
    ERR_NOT_SUPPORTED: "Not Supported",
    ERR_NO_PERMISSION: "Insufficient Permissions",
    ERR_NOT_FOUND: "Not Found",
    ERR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    ERR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    ERR_FUNCTION_NOT_FOUND: "Function Not Found",
    ERR_GPU_IS_LOST: "GPU is lost",
    ERR_RESET_REQUIRED: "GPU requires restart",
    ERR_NO_DATA: "No data",
    ERR_NOT_READY: "Not ready",
    ERR_GPU_NOT_FOUND: "GPU not found",
    ERR_UNKNOWN: "Unknown Error",
}
_DEVICE_GONE = {ERR_GPU_IS_LOST, ERR_RESET_REQUIRED, ERR_GPU_NOT_FOUND, ERR_UNINITIALIZED}
_NO_GPU = {ERR_DRIVER_NOT_LOADED, ERR_LIBRARY_NOT_FOUND, ERR_GPU_NOT_FOUND}

_TEMPERATURE_GPU = 0
_CLOCK_SM = 1
_CLOCK_MEM = 2
_PCIE_TX_BYTES = 0
_PCIE_RX_BYTES = 1

CLOCK_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
POWER_CAP_REASONS = frozenset({"sw_power_cap", "hw_power_brake_slowdown"})
THERMAL_REASONS = frozenset({"sw_thermal_slowdown", "hw_thermal_slowdown", "hw_slowdown"})


def decode_clock_event_reasons(mask: int) -> tuple[str, ...]:
    """Names of the bits set in an NVML clock event (throttle) reason mask."""
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"unknown_0x{unknown:x}")
    return tuple(names)


@dataclass(frozen=True)
class GpuProcess:
    """A process holding memory on a GPU."""

    pid: int
    name: str | None
    used_memory_bytes: int | None
    kind: str
    """'compute' or 'graphics'."""
    is_self: bool
    """This process (or one of the PIDs registered as ours, e.g. an engine worker)."""


@dataclass(frozen=True)
class MigDevice:
    """One MIG instance of a GPU in MIG mode."""

    index: int
    uuid: str | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one moment; ``None`` means NVML does not report the value here (n/a)."""

    index: int
    status: str = "ok"
    """'ok', 'lost' when the GPU stopped answering (fell off the bus, reset), or 'error' when
    NVML itself failed and gave no reading (bench telemetry marks such a gap)."""
    error: str | None = None
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    mig_enabled: bool | None = None
    utilization_gpu_pct: int | None = None
    utilization_memory_pct: int | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    energy_mj: int | None = None
    """Energy used since the driver was loaded, millijoules (updates every 20-100 ms)."""
    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    fan_pct: int | None = None
    performance_state: int | None = None
    pcie_tx_kb_per_s: int | None = None
    pcie_rx_kb_per_s: int | None = None
    clock_event_mask: int | None = None
    clock_event_reasons: tuple[str, ...] | None = None
    """Why clocks are held down (throttle reasons), decoded from ``clock_event_mask``."""
    processes: tuple[GpuProcess, ...] | None = None
    mig_devices: tuple[MigDevice, ...] = ()

    @property
    def power_capped(self) -> bool:
        return bool(self.clock_event_reasons and POWER_CAP_REASONS & set(self.clock_event_reasons))

    @property
    def thermal_slowdown(self) -> bool:
        return bool(self.clock_event_reasons and THERMAL_REASONS & set(self.clock_event_reasons))

    @property
    def self_memory_bytes(self) -> int | None:
        """GPU memory held by this process (and its registered PIDs); None if unknown."""
        if self.processes is None:
            return None
        mine = [p.used_memory_bytes for p in self.processes if p.is_self]
        return sum(m or 0 for m in mine)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["power_capped"] = self.power_capped
        d["thermal_slowdown"] = self.thermal_slowdown
        d["self_memory_bytes"] = self.self_memory_bytes
        return d


@dataclass(frozen=True)
class GpuSample:
    """Every GPU at one moment, or why there are none."""

    time_s: float
    """Monotonic clock (``time.monotonic``) when the sample was taken."""
    wall_time: float
    state: str
    """'ok', 'unavailable' (no driver, NVML or GPU) or 'error' (NVML failed)."""
    message: str = ""
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    nvml_version: str | None = None
    gpus: tuple[GpuReading, ...] = ()

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def gpu(self, index: int) -> GpuReading | None:
        return next((g for g in self.gpus if g.index == index), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "message": self.message,
            "time": self.wall_time,
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "nvml_version": self.nvml_version,
            "gpu_count": len(self.gpus),
            "gpus": [g.to_dict() for g in self.gpus],
        }


class _DeviceGone(Exception):
    pass


@dataclass
class _System:
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    nvml_version: str | None = None


@dataclass
class _Static:
    name: str | None
    uuid: str | None
    pci_bus_id: str | None
    sm_clock_max_mhz: int | None
    memory_total_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class GpuSampler:
    """Samples every GPU through NVML; thread-safe; never raises for a missing GPU.

    ``nvml`` is the ``pynvml`` module (imported on first use) or an object with the same
    functions (a recorded-trace replay in tests). ``own_pids`` are PIDs whose GPU memory is
    ours besides this process (engine workers).
    """

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        history: int = DEFAULT_HISTORY,
        *,
        nvml: Any = None,
        own_pids: Iterable[int] = (),
        processes: bool = True,
        pcie: bool = True,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = check_interval(interval_s)
        self._nvml = nvml
        self._own_pids = {os.getpid(), *own_pids}
        self.processes = processes
        self.pcie = pcie
        self._retry_s = retry_s
        self._clock = clock
        self._history_len = max(1, history)
        self._history: dict[int, deque[GpuReading]] = {}
        self._samples: deque[GpuSample] = deque(maxlen=self._history_len)
        self._lock = threading.RLock()
        self._initialized = False
        self._init_failure: GpuSample | None = None
        self._last_init_try = float("-inf")
        self._system = _System()
        self._static: dict[int, _Static] = {}
        self._proc_names: dict[int, str | None] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.callback_error: BaseException | None = None

    # --- public API -------------------------------------------------------------------------
    def add_own_pid(self, pid: int) -> None:
        """Count ``pid``'s GPU memory as ours (an engine worker process)."""
        self._own_pids.add(pid)

    def sample(self, *, processes: bool | None = None, pcie: bool | None = None) -> GpuSample:
        """Read every GPU now (blocking; with PCIe ~20 ms per GPU) and add it to the history."""
        with self._lock:
            s = self._safe_take(
                self.processes if processes is None else processes,
                self.pcie if pcie is None else pcie,
            )
            self._samples.append(s)
            for g in s.gpus:
                self._history.setdefault(g.index, deque(maxlen=self._history_len)).append(g)
            return s

    def quick(self, indices: Iterable[int] | None = None) -> GpuSample:
        """A sample without processes and PCIe (~1 ms), not added to the history."""
        with self._lock:
            return self._safe_take(False, False, indices)

    @property
    def latest(self) -> GpuSample | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def samples(self) -> list[GpuSample]:
        with self._lock:
            return list(self._samples)

    def history(self, index: int) -> list[GpuReading]:
        """Readings of GPU ``index``, oldest first (at most ``history`` of them)."""
        with self._lock:
            return list(self._history.get(index, ()))

    def start(self, on_sample: Callable[[GpuSample], None] | None = None) -> None:
        """Sample every ``interval_s`` on a daemon thread, calling ``on_sample`` each time."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(on_sample,), name="llcuda-gpu-sampler", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def close(self) -> None:
        """Stop the thread and release NVML."""
        self.stop()
        with self._lock:
            if self._initialized:
                with contextlib.suppress(Exception):  # shutting down: nothing to report
                    self._nvml.nvmlShutdown()
                self._initialized = False

    def __enter__(self) -> GpuSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------
    def _loop(self, on_sample: Callable[[GpuSample], None] | None) -> None:
        next_t = self._clock()
        while True:
            s = self.sample()
            if on_sample is not None:
                try:
                    on_sample(s)
                except Exception as exc:  # a bad consumer must not kill sampling
                    self.callback_error = exc
            next_t += self.interval_s
            now = self._clock()
            if next_t < now:  # fell behind (slow NVML): skip missed ticks, don't burst
                next_t = now
            if self._stop.wait(next_t - now):
                return

    def _empty(self, state: str, message: str) -> GpuSample:
        return GpuSample(self._clock(), time.time(), state, message)

    def _ensure_init(self) -> GpuSample | None:
        if self._initialized:
            return None
        now = self._clock()
        if self._init_failure is not None and now - self._last_init_try < self._retry_s:
            return replace(self._init_failure, time_s=now, wall_time=time.time())
        self._last_init_try = now
        failure = self._init()
        self._init_failure = failure
        return failure

    def _init(self) -> GpuSample | None:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:
                return self._empty(
                    "unavailable", "no NVIDIA GPU found (NVML binding nvidia-ml-py not installed)"
                )
            self._nvml = pynvml
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in _NO_GPU:
                return self._empty("unavailable", f"no NVIDIA GPU found (NVML: {exc})")
            return self._empty("error", f"NVML error: {exc}")
        except OSError as exc:
            return self._empty("unavailable", f"no NVIDIA GPU found (NVML: {exc})")
        self._initialized = True
        self._system = _System(
            driver_version=_text(self._sys("nvmlSystemGetDriverVersion")),
            cuda_driver_version=_cuda_version(self._sys("nvmlSystemGetCudaDriverVersion_v2")),
            nvml_version=_text(self._sys("nvmlSystemGetNVMLVersion")),
        )
        return None

    def _sys(self, fn: str, *args: Any) -> Any:
        try:
            return getattr(self._nvml, fn)(*args)
        except (self._nvml.NVMLError, AttributeError):
            return None

    def _safe_take(
        self, processes: bool, pcie: bool, indices: Iterable[int] | None = None
    ) -> GpuSample:
        try:
            return self._take(processes, pcie, indices)
        except Exception as exc:  # a binding surprise must not take the app down
            return self._empty("error", f"NVML error: {type(exc).__name__}: {exc}")

    def _take(self, processes: bool, pcie: bool, indices: Iterable[int] | None = None) -> GpuSample:
        failure = self._ensure_init()
        if failure is not None:
            return failure
        nvml = self._nvml
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            return self._empty("error", f"NVML error: {exc}")
        if count == 0:
            return self._empty("unavailable", "no NVIDIA GPU found (the driver lists none)")
        wanted = range(count) if indices is None else [i for i in indices if 0 <= i < count]
        gpus = tuple(self._read_device(i, processes, pcie) for i in wanted)
        lost = [g for g in gpus if g.status != "ok"]
        message = "; ".join(f"GPU {g.index}: {g.error}" for g in lost)
        return GpuSample(
            self._clock(),
            time.time(),
            "ok",
            message,
            self._system.driver_version,
            self._system.cuda_driver_version,
            self._system.nvml_version,
            gpus,
        )

    def _read_device(self, index: int, processes: bool, pcie: bool) -> GpuReading:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            return self._read_handle(index, handle, processes, pcie)
        except (_DeviceGone, nvml.NVMLError) as exc:
            self._static.pop(index, None)
            cached = self._history.get(index)
            last = cached[-1] if cached else None
            return GpuReading(
                index,
                status="lost",
                error=f"GPU lost: {exc}",
                name=last.name if last else None,
                uuid=last.uuid if last else None,
                pci_bus_id=last.pci_bus_id if last else None,
            )

    def _call(self, fn: str, *args: Any) -> Any:
        """``nvml.fn(*args)``; None when unsupported here; _DeviceGone when the GPU is gone."""
        nvml = self._nvml
        func = getattr(nvml, fn, None)
        if func is None:
            return None
        try:
            return func(*args)
        except nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in _DEVICE_GONE:
                raise _DeviceGone(str(exc)) from None
            # not supported here (MIG, no fan, no permission) or any other per-value
            # failure: n/a for this value, keep sampling the rest
            return None

    def _static_info(self, index: int, handle: Any) -> _Static:
        st = self._static.get(index)
        if st is None:
            pci = self._call("nvmlDeviceGetPciInfo", handle)
            st = _Static(
                name=_text(self._call("nvmlDeviceGetName", handle)),
                uuid=_text(self._call("nvmlDeviceGetUUID", handle)),
                pci_bus_id=_text(getattr(pci, "busId", None)) if pci is not None else None,
                sm_clock_max_mhz=_int(self._call("nvmlDeviceGetMaxClockInfo", handle, _CLOCK_SM)),
            )
            self._static[index] = st
        return st

    def _read_handle(self, index: int, handle: Any, processes: bool, pcie: bool) -> GpuReading:
        st = self._static_info(index, handle)
        mem = self._call("nvmlDeviceGetMemoryInfo", handle)
        util = self._call("nvmlDeviceGetUtilizationRates", handle)
        mig = self._call("nvmlDeviceGetMigMode", handle)
        mig_enabled = bool(mig[0]) if mig is not None else None
        mask = self._call("nvmlDeviceGetCurrentClocksEventReasons", handle)
        if mask is None:
            mask = self._call("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        power_mw = self._call("nvmlDeviceGetPowerUsage", handle)
        limit_mw = self._call("nvmlDeviceGetEnforcedPowerLimit", handle)
        return GpuReading(
            index=index,
            name=st.name,
            uuid=st.uuid,
            pci_bus_id=st.pci_bus_id,
            mig_enabled=mig_enabled,
            utilization_gpu_pct=_int(getattr(util, "gpu", None)),
            utilization_memory_pct=_int(getattr(util, "memory", None)),
            memory_used_bytes=_int(getattr(mem, "used", None)),
            memory_total_bytes=_int(getattr(mem, "total", None)),
            temperature_c=_int(self._call("nvmlDeviceGetTemperature", handle, _TEMPERATURE_GPU)),
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
            energy_mj=_int(self._call("nvmlDeviceGetTotalEnergyConsumption", handle)),
            sm_clock_mhz=_int(self._call("nvmlDeviceGetClockInfo", handle, _CLOCK_SM)),
            memory_clock_mhz=_int(self._call("nvmlDeviceGetClockInfo", handle, _CLOCK_MEM)),
            sm_clock_max_mhz=st.sm_clock_max_mhz,
            fan_pct=_int(self._call("nvmlDeviceGetFanSpeed", handle)),
            performance_state=_int(self._call("nvmlDeviceGetPerformanceState", handle)),
            pcie_tx_kb_per_s=(
                _int(self._call("nvmlDeviceGetPcieThroughput", handle, _PCIE_TX_BYTES))
                if pcie
                else None
            ),
            pcie_rx_kb_per_s=(
                _int(self._call("nvmlDeviceGetPcieThroughput", handle, _PCIE_RX_BYTES))
                if pcie
                else None
            ),
            clock_event_mask=_int(mask),
            clock_event_reasons=decode_clock_event_reasons(int(mask)) if mask is not None else None,
            processes=self._processes(handle) if processes else None,
            mig_devices=self._mig_devices(handle) if mig_enabled else (),
        )

    def _processes(self, handle: Any) -> tuple[GpuProcess, ...] | None:
        compute = self._call("nvmlDeviceGetComputeRunningProcesses", handle)
        graphics = self._call("nvmlDeviceGetGraphicsRunningProcesses", handle)
        if compute is None and graphics is None:
            return None
        found: dict[int, GpuProcess] = {}
        for kind, procs in (("compute", compute or ()), ("graphics", graphics or ())):
            for p in procs:
                pid = int(p.pid)
                if pid in found:
                    continue
                found[pid] = GpuProcess(
                    pid=pid,
                    name=self._process_name(pid),
                    used_memory_bytes=_int(getattr(p, "usedGpuMemory", None)),
                    kind=kind,
                    is_self=pid in self._own_pids,
                )
        return tuple(found.values())

    def _process_name(self, pid: int) -> str | None:
        if pid not in self._proc_names:
            name = _text(self._call("nvmlSystemGetProcessName", pid))
            if not name:
                try:
                    with open(f"/proc/{pid}/comm", encoding="utf-8") as fh:
                        name = fh.read().strip() or None
                except OSError:
                    name = None
            self._proc_names[pid] = name
        return self._proc_names[pid]

    def _mig_devices(self, handle: Any) -> tuple[MigDevice, ...]:
        count = _int(self._call("nvmlDeviceGetMaxMigDeviceCount", handle)) or 0
        devices = []
        for j in range(count):
            mig = self._call("nvmlDeviceGetMigDeviceHandleByIndex", handle, j)
            if mig is None:
                continue
            mem = self._call("nvmlDeviceGetMemoryInfo", mig)
            devices.append(
                MigDevice(
                    index=j,
                    uuid=_text(self._call("nvmlDeviceGetUUID", mig)),
                    memory_used_bytes=_int(getattr(mem, "used", None)),
                    memory_total_bytes=_int(getattr(mem, "total", None)),
                )
            )
        return tuple(devices)


def check_interval(interval_s: float) -> float:
    """``interval_s`` if it is a sampling interval we support, else UserInputError."""
    from llcuda_tui.core.errors import UserInputError

    if not (MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S):
        raise UserInputError(
            f"sampling interval must be between {MIN_INTERVAL_S} and {MAX_INTERVAL_S} s "
            f"(got {interval_s:g})"
        )
    return float(interval_s)


def snapshot(nvml: Any = None, own_pids: Iterable[int] = ()) -> GpuSample:
    """One full sample of every GPU, NVML released afterwards."""
    with GpuSampler(nvml=nvml, own_pids=own_pids) as sampler:
        return sampler.sample()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _cuda_version(value: Any) -> str | None:
    v = _int(value)
    if v is None:
        return None
    return f"{v // 1000}.{(v % 1000) // 10}"
