"""Record what NVML answers, and replay it without a GPU (for tests of the sampler).

:class:`RecordingNvml` wraps ``pynvml``: every ``nvml*`` call is passed through and its answer
(value or NVML error code) stored under a key such as ``nvmlDeviceGetClockInfo|gpu0|1``. A call
to ``nvmlDeviceGetCount`` starts a new tick (the sampler makes one per sample).
:class:`ReplayNvml` answers the same calls from the file: the answer recorded in the current
tick, else the latest earlier one (values the sampler caches are asked once), else
"function not found" (which the sampler shows as n/a).

Trace file (JSON)::

    {"format": 1, "meta": {...}, "init_error": null | CODE,
     "setup": {KEY: ANSWER}, "ticks": [{"t": SECONDS, "calls": {KEY: ANSWER}}, ...]}

An ANSWER is JSON (objects for NVML structs) or ``{"__nvml_error__": CODE}``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from llcuda_tui.core.gpu._nvml import ERR_FUNCTION_NOT_FOUND, NVML_ERROR_TEXT

TRACE_FORMAT = 1
_ERROR_KEY = "__nvml_error__"


class _Handle:
    """A device handle as the recorder sees it: the real one plus a stable name."""

    def __init__(self, key: str, real: Any) -> None:
        self.key = key
        self.real = real


def _arg_key(arg: Any) -> str:
    return arg.key if isinstance(arg, _Handle) else str(arg)


def call_key(fn: str, args: tuple[Any, ...]) -> str:
    return "|".join([fn, *(_arg_key(a) for a in args)])


def to_jsonable(value: Any) -> Any:
    """An NVML answer (ctypes struct, friendly object, list, bytes) as plain JSON data."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    fields = getattr(value, "_fields_", None)
    if fields is not None:
        return {name: to_jsonable(getattr(value, name)) for name, *_ in fields}
    if hasattr(value, "__dict__"):
        return {k: to_jsonable(v) for k, v in vars(value).items() if not k.startswith("_")}
    if hasattr(value, "value"):  # ctypes scalar
        return to_jsonable(value.value)
    return str(value)


def from_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return SimpleNamespace(**{k: from_jsonable(v) for k, v in value.items()})
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value


class RecordingNvml:
    """``pynvml`` with every answer written down; pass it to ``GpuSampler(nvml=...)``."""

    def __init__(self, real: Any, meta: dict[str, Any] | None = None) -> None:
        self._real = real
        self.NVMLError = real.NVMLError
        self._t0 = time.monotonic()
        self.trace: dict[str, Any] = {
            "format": TRACE_FORMAT,
            "meta": {"recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(meta or {})},
            "init_error": None,
            "setup": {},
            "ticks": [],
        }
        self._calls: dict[str, Any] = self.trace["setup"]

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if not (name.startswith("nvml") and callable(attr)):
            return attr

        def wrapper(*args: Any) -> Any:
            return self._record(name, attr, args)

        return wrapper

    def _record(self, name: str, func: Any, args: tuple[Any, ...]) -> Any:
        if name == "nvmlDeviceGetCount":
            calls: dict[str, Any] = {}
            self.trace["ticks"].append({"t": round(time.monotonic() - self._t0, 4), "calls": calls})
            self._calls = calls
        key = call_key(name, args)
        real_args = tuple(a.real if isinstance(a, _Handle) else a for a in args)
        try:
            result = func(*real_args)
        except self._real.NVMLError as exc:
            if name in ("nvmlInit", "nvmlInitWithFlags"):
                self.trace["init_error"] = exc.value
            self._calls[key] = {_ERROR_KEY: exc.value}
            raise
        if name in ("nvmlInit", "nvmlInitWithFlags", "nvmlShutdown"):
            return result
        if name in ("nvmlDeviceGetHandleByIndex", "nvmlDeviceGetMigDeviceHandleByIndex"):
            parent = f"{args[0].key}/mig" if isinstance(args[0], _Handle) else "gpu"
            handle = _Handle(f"{parent}{args[-1]}", result)
            self._calls[key] = handle.key
            return handle
        self._calls[key] = to_jsonable(result)
        return result

    def save(self, path: Path) -> None:
        """Write the trace atomically."""
        write_json_atomic(path, self.trace)


class _ReplayError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(NVML_ERROR_TEXT.get(value, f"NVML error {value}"))
        self.value = value


class ReplayNvml:
    """Answers NVML calls from a recorded trace; ticks advance on ``nvmlDeviceGetCount``."""

    NVMLError = _ReplayError

    def __init__(self, trace: dict[str, Any]) -> None:
        if trace.get("format") != TRACE_FORMAT:
            raise ValueError(f"unsupported NVML trace format {trace.get('format')!r}")
        self.trace = trace
        self.tick = -1
        self.calls: list[str] = []

    @classmethod
    def load(cls, path: Path) -> ReplayNvml:
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    @property
    def n_ticks(self) -> int:
        return len(self.trace["ticks"])

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.trace.get("init_error") is not None:
            raise _ReplayError(int(self.trace["init_error"]))

    def nvmlShutdown(self) -> None:
        self.calls.append("nvmlShutdown")

    def nvmlDeviceGetCount(self) -> int:
        self.tick = min(self.tick + 1, self.n_ticks - 1)
        return int(self._answer("nvmlDeviceGetCount", ()))

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("nvml"):
            raise AttributeError(name)

        def replay(*args: Any) -> Any:
            return self._answer(name, args)

        return replay

    def _answer(self, name: str, args: tuple[Any, ...]) -> Any:
        key = "|".join([name, *(str(a) for a in args)])
        self.calls.append(key)
        ticks = self.trace["ticks"]
        for i in range(self.tick, -1, -1):
            if key in ticks[i]["calls"]:
                return self._decode(ticks[i]["calls"][key])
        if key in self.trace["setup"]:
            return self._decode(self.trace["setup"][key])
        raise _ReplayError(ERR_FUNCTION_NOT_FOUND)

    @staticmethod
    def _decode(answer: Any) -> Any:
        if isinstance(answer, dict) and _ERROR_KEY in answer:
            raise _ReplayError(int(answer[_ERROR_KEY]))
        return from_jsonable(answer)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
