"""What the installed llama.cpp was built with, which devices it sees, and its log.

llama.cpp logs to stderr by default; :func:`capture_llama_log` routes its log into a ring
buffer instead (errors from a failed load are then shown as one clear line) and forwards it
to stderr only when ``LLCUDA_LLAMA_LOG=1``.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

GGML_DEVICE_TYPES = {0: "CPU", 1: "GPU", 2: "IGPU", 3: "ACCEL", 4: "META"}


@dataclass(frozen=True)
class Device:
    name: str
    """ggml's device name, e.g. ``CUDA0`` or ``CPU``."""
    description: str
    """e.g. ``NVIDIA H100 80GB HBM3``."""
    kind: str
    """CPU, GPU, IGPU, ACCEL."""
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class BuildInfo:
    llama_cpp_python: str | None
    backend: str
    """``CUDA`` when the installed llama.cpp has the CUDA backend, else ``CPU``."""
    cuda_archs: str | None
    system_info: str
    devices: list[Device] = field(default_factory=list)
    setup: dict[str, str] = field(default_factory=dict)
    """What scripts/setup.sh recorded (.venv/llcuda-build.json), if anything."""

    @property
    def gpus(self) -> list[Device]:
        return [d for d in self.devices if d.kind in ("GPU", "IGPU")]

    def describe(self) -> str:
        if self.llama_cpp_python is None:
            return "llama-cpp-python: not installed (run scripts/setup.sh)"
        lines = [f"llama-cpp-python {self.llama_cpp_python}, built for {self.backend}"]
        if self.cuda_archs:
            lines[0] += f" (CUDA archs {self.cuda_archs})"
        if self.backend == "CUDA" and not self.gpus:
            lines.append("no CUDA device visible: models run on the CPU")
        for d in self.gpus:
            lines.append(f"{d.name}: {d.description}, {d.total_bytes / 2**30:.1f} GiB")
        return "\n".join(lines)


def _lib_dir() -> Path:
    import llama_cpp

    return Path(llama_cpp.__file__).parent / "lib"


def list_devices() -> list[Device]:
    """Devices registered with ggml (CUDA GPUs, the CPU), via ggml's own device API."""
    ggml = _ggml()
    if ggml is None:
        return []
    out = []
    size_t = ctypes.c_size_t
    for i in range(ggml.ggml_backend_dev_count()):
        dev = ggml.ggml_backend_dev_get(i)
        free, total = size_t(0), size_t(0)
        ggml.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append(
            Device(
                name=(ggml.ggml_backend_dev_name(dev) or b"").decode(errors="replace"),
                description=(ggml.ggml_backend_dev_description(dev) or b"").decode(
                    errors="replace"
                ),
                kind=GGML_DEVICE_TYPES.get(ggml.ggml_backend_dev_type(dev), "?"),
                free_bytes=free.value,
                total_bytes=total.value,
            )
        )
    return out


_ggml_lib: ctypes.CDLL | None = None


def _ggml() -> ctypes.CDLL | None:
    """libggml as loaded by llama_cpp (same handle: dlopen returns the loaded library)."""
    global _ggml_lib
    if _ggml_lib is not None:
        return _ggml_lib
    import llama_cpp  # noqa: F401 - loads libllama and, through it, libggml

    path = _lib_dir() / "libggml.so"
    if not path.exists():
        return None
    lib = ctypes.CDLL(str(path))
    vp = ctypes.c_void_p
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_get.restype = vp
    for fn in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, fn).argtypes = [vp]
        getattr(lib, fn).restype = ctypes.c_char_p
    lib.ggml_backend_dev_type.argtypes = [vp]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    size_p = ctypes.POINTER(ctypes.c_size_t)
    lib.ggml_backend_dev_memory.argtypes = [vp, size_p, size_p]
    lib.ggml_backend_dev_memory.restype = None
    _ggml_lib = lib
    return lib


def build_info() -> BuildInfo:
    setup = _setup_record()
    try:
        import llama_cpp
    except ImportError:
        return BuildInfo(None, "none", None, "", setup=setup)
    capture_llama_log()
    system_info = llama_cpp.llama_print_system_info().decode(errors="replace")
    has_cuda = (_lib_dir() / "libggml-cuda.so").exists() or "CUDA" in system_info
    m = re.search(r"CUDA\s*:\s*ARCHS\s*=\s*([0-9,]+)", system_info)
    return BuildInfo(
        llama_cpp_python=llama_cpp.__version__,
        backend="CUDA" if has_cuda else "CPU",
        cuda_archs=m.group(1) if m else None,
        system_info=system_info.strip(),
        devices=list_devices(),
        setup=setup,
    )


def _setup_record() -> dict[str, str]:
    f = Path(sys.prefix) / "llcuda-build.json"
    try:
        return {k: str(v) for k, v in json.loads(f.read_text()).items()}
    except (OSError, ValueError):
        return {}


# --- llama.cpp log -----------------------------------------------------------------------------

LOG_LEVELS = {0: "NONE", 1: "DEBUG", 2: "INFO", 3: "WARN", 4: "ERROR", 5: "CONT"}


class LlamaLog:
    """Ring buffer of llama.cpp's log lines (thread-safe; llama.cpp may log from any thread)."""

    def __init__(self, maxlen: int = 2000) -> None:
        self.lines: deque[tuple[str, str]] = deque(maxlen=maxlen)
        self.total = 0
        self._partial = ""
        self._lock = threading.Lock()
        self.forward = os.environ.get("LLCUDA_LLAMA_LOG", "") not in ("", "0")

    def write(self, level: int, text: str) -> None:
        if self.forward:
            sys.stderr.write(text)
        with self._lock:
            *complete, self._partial = (self._partial + text).split("\n")
            name = LOG_LEVELS.get(level, "?")
            for line in complete:
                self.lines.append((name, line))
            self.total += len(complete)

    def mark(self) -> int:
        """A position; :meth:`since` returns the lines logged after it."""
        with self._lock:
            return self.total

    def since(self, mark: int) -> list[tuple[str, str]]:
        with self._lock:
            lines = list(self.lines)
            first = self.total - len(lines)
        return lines[max(0, mark - first) :]

    def first_error(self, after: int = 0) -> str | None:
        """The first error logged after ``after``: the cause, before the follow-on errors."""
        for level, line in self.since(after):
            if level == "ERROR" and line.strip():
                return line.strip()
        return None


LLAMA_LOG = LlamaLog()
_callback_ref: object | None = None


def capture_llama_log() -> LlamaLog:
    """Route llama.cpp's (and ggml's) log into :data:`LLAMA_LOG`. Idempotent."""
    global _callback_ref
    if _callback_ref is not None:
        return LLAMA_LOG
    import llama_cpp

    @llama_cpp.llama_log_callback
    def _on_log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        LLAMA_LOG.write(level, text.decode("utf-8", errors="replace"))

    _callback_ref = _on_log  # keep it alive as long as llama.cpp may call it
    llama_cpp.llama_log_set(_on_log, ctypes.c_void_p(0))
    return LLAMA_LOG
