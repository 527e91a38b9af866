"""A few CUDA runtime calls through ctypes (no torch or cupy): device PCI ids and a
device-to-device copy that measures memory bandwidth.

The runtime is the ``libcudart`` already loaded by llama.cpp's CUDA backend when there is one
(same library, same primary context), else the first one found on the usual paths. Without a
loadable runtime or device every function here raises :class:`CudaUnavailable`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_MEMCPY_DEVICE_TO_DEVICE = 3
_SONAMES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")


class CudaUnavailable(Exception):
    """No CUDA runtime or device to use here (callers report n/a)."""


@dataclass(frozen=True)
class BandwidthResult:
    """Device memory bandwidth from timed device-to-device copies (read + write counted)."""

    bytes_per_s: float
    device: int
    buffer_bytes: int
    copies: int
    seconds: float
    method: str
    library: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_lib: ctypes.CDLL | None = None
_lib_path: str | None = None


def _loaded_cudart() -> str | None:
    """Path of a libcudart this process has already mapped (llama.cpp's), if any."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                path = line.rsplit(" ", 1)[-1].strip()
                if "/libcudart.so" in path:
                    return path
    except OSError:
        pass
    return None


def _candidates() -> list[str]:
    found = []
    loaded = _loaded_cudart()
    if loaded:
        found.append(loaded)
    name = ctypes.util.find_library("cudart")
    if name:
        found.append(name)
    roots = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"]
    for root in filter(None, roots):
        found += sorted(glob.glob(f"{root}/lib64/libcudart.so*"), reverse=True)
    for site in sys.path:
        found += sorted(glob.glob(f"{site}/nvidia/cuda_runtime/lib/libcudart.so*"), reverse=True)
    found += list(_SONAMES)
    return found


def cudart() -> ctypes.CDLL:
    """The CUDA runtime library, loaded once."""
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    for cand in _candidates():
        try:
            lib = ctypes.CDLL(cand)
        except OSError:
            continue
        _declare(lib)
        _lib, _lib_path = lib, cand
        return lib
    raise CudaUnavailable("no CUDA runtime (libcudart) could be loaded")


def _declare(lib: ctypes.CDLL) -> None:
    vp, sz, i = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
    lib.cudaGetErrorString.restype = ctypes.c_char_p
    lib.cudaGetErrorString.argtypes = [i]
    lib.cudaMalloc.argtypes = [ctypes.POINTER(vp), sz]
    lib.cudaFree.argtypes = [vp]
    lib.cudaMemset.argtypes = [vp, i, sz]
    lib.cudaMemcpyAsync.argtypes = [vp, vp, sz, i, vp]
    lib.cudaEventCreate.argtypes = [ctypes.POINTER(vp)]
    lib.cudaEventRecord.argtypes = [vp, vp]
    lib.cudaEventSynchronize.argtypes = [vp]
    lib.cudaEventDestroy.argtypes = [vp]
    lib.cudaEventElapsedTime.argtypes = [ctypes.POINTER(ctypes.c_float), vp, vp]
    lib.cudaMemGetInfo.argtypes = [ctypes.POINTER(sz), ctypes.POINTER(sz)]
    lib.cudaDeviceGetPCIBusId.argtypes = [ctypes.c_char_p, i, i]
    lib.cudaGetDeviceCount.argtypes = [ctypes.POINTER(i)]
    lib.cudaGetDevice.argtypes = [ctypes.POINTER(i)]
    lib.cudaSetDevice.argtypes = [i]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        msg = cudart().cudaGetErrorString(rc)
        text = msg.decode(errors="replace") if msg else f"error {rc}"
        raise CudaUnavailable(f"{what}: {text}")


def device_count() -> int:
    lib = cudart()
    n = ctypes.c_int(0)
    _check(lib.cudaGetDeviceCount(ctypes.byref(n)), "cudaGetDeviceCount")
    return n.value


def pci_bus_id(device: int) -> str:
    """``dddd:bb:dd.f`` of CUDA device ``device`` (CUDA's numbering, after CUDA_VISIBLE_DEVICES)."""
    buf = ctypes.create_string_buffer(32)
    _check(cudart().cudaDeviceGetPCIBusId(buf, 32, device), "cudaDeviceGetPCIBusId")
    return buf.value.decode()


def normalize_bus_id(bus_id: str) -> tuple[int, ...] | None:
    """PCI bus ids from NVML (``00000000:18:00.0``) and CUDA (``0000:18:00.0``) comparable."""
    try:
        dom, bus, rest = bus_id.strip().lower().split(":")
        dev, fn = rest.split(".")
        return (int(dom, 16), int(bus, 16), int(dev, 16), int(fn, 16))
    except ValueError:
        return None


class _Device:
    """Makes ``device`` current on this thread for a block, then restores the previous one."""

    def __init__(self, device: int) -> None:
        self.device = device
        self.previous = ctypes.c_int(-1)

    def __enter__(self) -> _Device:
        lib = cudart()
        _check(lib.cudaGetDevice(ctypes.byref(self.previous)), "cudaGetDevice")
        _check(lib.cudaSetDevice(self.device), f"cudaSetDevice({self.device})")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous.value >= 0:
            cudart().cudaSetDevice(self.previous.value)


def measure_bandwidth(
    device: int = 0, buffer_bytes: int = 256 * 2**20, copies: int = 20, trials: int = 3
) -> BandwidthResult:
    """Best of ``trials`` timings of ``copies`` device-to-device copies of ``buffer_bytes``.

    Bandwidth counts each copied byte twice (read and write), as CUDA's bandwidthTest does.
    The buffer shrinks to fit when the device is short of free memory.
    """
    lib = cudart()
    vp = ctypes.c_void_p
    with _Device(device):
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        _check(lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)), "cudaMemGetInfo")
        size = min(buffer_bytes, int(free.value * 0.4) // 2 // 2**20 * 2**20)
        if size < 16 * 2**20:
            raise CudaUnavailable(f"not enough free memory on CUDA device {device} to measure")
        src, dst = vp(), vp()
        start, stop = vp(), vp()
        try:
            _check(lib.cudaMalloc(ctypes.byref(src), size), "cudaMalloc")
            _check(lib.cudaMalloc(ctypes.byref(dst), size), "cudaMalloc")
            _check(lib.cudaMemset(src, 1, size), "cudaMemset")
            _check(lib.cudaEventCreate(ctypes.byref(start)), "cudaEventCreate")
            _check(lib.cudaEventCreate(ctypes.byref(stop)), "cudaEventCreate")
            best = float("inf")
            for trial in range(trials + 1):  # the first round warms up and is not counted
                _check(lib.cudaEventRecord(start, None), "cudaEventRecord")
                for _ in range(copies):
                    rc = lib.cudaMemcpyAsync(dst, src, size, _MEMCPY_DEVICE_TO_DEVICE, None)
                    _check(rc, "cudaMemcpyAsync")
                _check(lib.cudaEventRecord(stop, None), "cudaEventRecord")
                _check(lib.cudaEventSynchronize(stop), "cudaEventSynchronize")
                ms = ctypes.c_float(0)
                _check(lib.cudaEventElapsedTime(ctypes.byref(ms), start, stop), "elapsed")
                if trial > 0:
                    best = min(best, ms.value / 1000.0)
        finally:
            for ev in (start, stop):
                if ev.value:
                    lib.cudaEventDestroy(ev)
            for buf in (src, dst):
                if buf.value:
                    lib.cudaFree(buf)
    return BandwidthResult(
        bytes_per_s=2.0 * size * copies / best,
        device=device,
        buffer_bytes=size,
        copies=copies,
        seconds=best,
        method=f"cudaMemcpyAsync device-to-device, best of {trials}, cudaEvent timing",
        library=str(Path(_lib_path or "libcudart")),
    )
