"""The engine in a child process: what the TUI chats through.

Why: in one process the engine thread must retake the GIL after every GPU step, and while a
reply streams the UI thread holds it for whole repaints, so each token can wait a little (a
fixed cost per token; bench/tui_streaming.py measures it). A child process has a GIL of its
own, so no repaint can hold up a token there (the CPU cores are still shared). And a crash in
llama.cpp (an abort, a CUDA error) ends the child, not the app: the reply in flight fails
with the child's last words and the model can be loaded again.

:class:`ProcessEngine` is an :class:`~llcuda_tui.core.engine.EngineProtocol` like the
in-process :class:`~llcuda_tui.core.engine.Engine` (``info``, ``submit``, ``stream``,
``generate``, ``count_tokens``, ``cancel``, ``close``).
The child runs an ordinary ``Engine``. Chunks cross in batches: the child sends the first
token of a reply at once, then at most one frame every :data:`FLUSH_INTERVAL_S` (one pickle
and one ``write`` on the engine thread, no wake-up of any other thread there). Prefill
progress (a request's ``prefill_progress``) crosses at once: one frame per prompt chunk.

Wire: two pipes (not stdin/stdout, which a library may print to), frames of a 4-byte length
and a pickle; both ends are this package. The child exits when its command pipe closes, so a
parent that dies, however it dies, leaves no engine holding GPU memory behind.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import itertools
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from llcuda_tui.core.engine._protocol import EngineBase, OnChunk, OnError
from llcuda_tui.core.engine._types import (
    Chunk,
    EngineConfig,
    GenerationHandle,
    GenerationRequest,
    LoadInfo,
)
from llcuda_tui.core.errors import EngineError, LlcudaError, one_line
from llcuda_tui.core.gguf import check_gguf_file

if TYPE_CHECKING:
    from llcuda_tui.core.engine._local import Engine

FLUSH_INTERVAL_S = 0.025
"""Chunks wait at most this long in the child: well under the UI's 100 ms drain."""
CLOSE_TIMEOUT_S = 10.0
_HEADER = struct.Struct("!I")


def write_frame(fd: int, obj: Any, lock: threading.Lock) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    with lock:
        while view:
            view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytes | None:
    parts, left = [], n
    while left:
        part = os.read(fd, left)
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def read_frame(fd: int) -> Any:
    """The next object, or None at end of file."""
    head = _read_exact(fd, _HEADER.size)
    if head is None:
        return None
    body = _read_exact(fd, _HEADER.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling as itself, else an EngineError with its text."""
    try:
        back = pickle.loads(pickle.dumps(exc))
        if type(back) is type(exc) and str(back) == str(exc):
            return exc.with_traceback(None)
    except Exception:  # any exception type may fail to pickle or to come back
        pass
    return EngineError(one_line(exc))


def spawn_child(module: str, what: str) -> tuple[subprocess.Popen[bytes], int, int, IO[bytes]]:
    """Start ``python -m module --cmd-fd R --evt-fd W``: the process, the fd to send commands
    on, the fd to read events from, and the unlinked temporary file its stdout/stderr go to."""
    cmd_r, cmd_w = os.pipe()
    evt_r, evt_w = os.pipe()
    log = tempfile.TemporaryFile(prefix=f"llcuda-{what}-")  # noqa: SIM115 - the caller closes it
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--cmd-fd", str(cmd_r), "--evt-fd", str(evt_w)],
            pass_fds=(cmd_r, evt_w), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,  # the terminal's signals go to the app, not here
        )  # fmt: skip
    except OSError as exc:
        for fd in (cmd_r, cmd_w, evt_r, evt_w):
            os.close(fd)
        log.close()
        raise EngineError(f"cannot start the {what} process: {one_line(exc)}") from None
    os.close(cmd_r)
    os.close(evt_w)
    return proc, cmd_w, evt_r, log


def last_words(log: IO[bytes]) -> str:
    """``": <the last line the child wrote>"``, or "" when it wrote nothing."""
    try:
        log.seek(0)
        lines = log.read()[-4096:].decode(errors="replace").strip().splitlines()
    except (OSError, ValueError):
        return ""
    return f": {one_line(Exception(lines[-1]))}" if lines else ""


# --- the parent's side ------------------------------------------------------------------------


class ProcessEngine(EngineBase):
    """A model loaded in a child process. Create with :meth:`load`; free with :meth:`close`."""

    def __init__(self, config: EngineConfig, proc: subprocess.Popen[bytes], cmd_fd: int,
                 evt_fd: int, log: IO[bytes]) -> None:  # fmt: skip
        self.config = config
        self.info: LoadInfo
        self._proc, self._cmd_fd, self._evt_fd, self._log = proc, cmd_fd, evt_fd, log
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._calls: dict[int, tuple[Any, Callable[[float], None] | None]] = {}
        self._gens: dict[int, tuple[GenerationHandle, OnChunk, OnError | None]] = {}
        self._current: GenerationHandle | None = None
        self._stopped: EngineError | None = None
        self._closed = False
        self.frames_received = 0
        """Chunk frames so far (each carries one or more tokens' chunks)."""
        self.callback_error: Exception | None = None
        """The last exception raised by an ``on_chunk`` / ``on_error`` / progress callback."""
        self._reader = threading.Thread(target=self._read_events, name="llcuda-engine-pipe",
                                        daemon=True)  # fmt: skip

    @property
    def pid(self) -> int:
        """The child's process id (its GPU memory is ours)."""
        return self._proc.pid

    @classmethod
    def load(
        cls, config: EngineConfig, on_progress: Callable[[float], None] | None = None
    ) -> ProcessEngine:
        """Start a child process and load ``config.model_path`` there (blocks until loaded);
        raise what the load raised (ModelLoadError, ...) if it can't."""
        config.validate()
        check_gguf_file(config.model_path)  # the common bad-file errors, before any spawn
        engine = cls(config, *spawn_child("llcuda_tui.core.engine._process", "engine"))
        engine._reader.start()
        try:
            engine.info = engine._call("load", config, on_progress)
        except BaseException:
            engine.close()
            raise
        return engine

    # --- requests -----------------------------------------------------------------------------

    def _send(self, message: tuple[str, int, Any]) -> None:
        if self._stopped is not None:
            raise EngineError(str(self._stopped))
        if self._closed:
            raise EngineError("the engine is closed")
        try:
            write_frame(self._cmd_fd, message, self._send_lock)
        except OSError:
            raise self._died() from None

    def _send_quietly(self, message: tuple[str, int, Any]) -> None:
        # a child that is gone has ended (or will fail) whatever it ran already
        with contextlib.suppress(LlcudaError):
            self._send(message)

    def _call(
        self, op: str, payload: Any, on_progress: Callable[[float], None] | None = None
    ) -> Any:
        rid = next(self._ids)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._calls[rid] = (future, on_progress)
        try:
            self._send((op, rid, payload))
        except BaseException:
            self._calls.pop(rid, None)
            raise
        return future.result()

    def count_tokens(self, request: GenerationRequest) -> int:
        return int(self._call("count", request))

    def submit(
        self, request: GenerationRequest, on_chunk: OnChunk, on_error: OnError | None = None
    ) -> GenerationHandle:
        """Queue a generation; ``on_chunk`` is called on this side's pipe-reader thread, for
        each token, in bursts (see :data:`FLUSH_INTERVAL_S`)."""
        rid = next(self._ids)
        # cancel() sends the cancel over to the child
        handle = GenerationHandle(request, lambda: self._send_quietly(("cancel", rid, None)))
        self._gens[rid] = (handle, on_chunk, on_error)
        self._current = handle
        try:
            self._send(("submit", rid, request))
        except BaseException:
            self._gens.pop(rid, None)
            raise
        return handle

    def cancel(self) -> None:
        """Stop the running generation (if any) within one token."""
        current = self._current
        if current is not None and not current.done():
            current.cancel()

    def close(self) -> None:
        """Free the model (the child exits). Idempotent."""
        if self._closed:
            return
        self.cancel()
        self._send_quietly(("close", 0, None))
        self._closed = True
        try:
            self._proc.wait(CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(CLOSE_TIMEOUT_S)
        os.close(self._cmd_fd)
        self._log.close()

    # --- events -------------------------------------------------------------------------------

    def _read_events(self) -> None:
        try:
            while (event := read_frame(self._evt_fd)) is not None:
                try:
                    self._dispatch(*event)
                except Exception as exc:  # a caller's callback failed: keep serving the rest
                    self.callback_error = exc
        except (OSError, EOFError, pickle.UnpicklingError):
            pass
        finally:
            os.close(self._evt_fd)
            self._fail_all(self._died())

    def _dispatch(self, kind: str, rid: int, payload: Any) -> None:
        if kind == "chunks":
            self.frames_received += 1
            gen = self._gens.get(rid)
            if gen is None:
                return
            handle, on_chunk, _ = gen
            for chunk in payload:
                try:
                    on_chunk(chunk)
                except Exception as exc:  # the caller's bug: the generation still ends
                    self.callback_error = exc
                if chunk.record is not None:
                    del self._gens[rid]
                    handle.future.set_result(chunk.record)
        elif kind == "gen_error":
            failed = self._gens.pop(rid, None)
            if failed is not None:
                failed[0].future.set_exception(payload)
                if failed[2] is not None:
                    failed[2](payload)
        elif kind == "progress":
            call = self._calls.get(rid)
            if call is not None and call[1] is not None:
                call[1](payload)
        elif kind in ("result", "error"):
            call = self._calls.pop(rid, None)
            if call is not None and kind == "result":
                call[0].set_result(payload)
            elif call is not None:
                call[0].set_exception(payload)

    def _died(self) -> EngineError:
        """Why the child is no longer there (the first time: its exit code and last words)."""
        if self._stopped is not None:
            return self._stopped
        try:
            code = self._proc.wait(2.0)
        except subprocess.TimeoutExpired:
            code = None
        last = last_words(self._log)
        if self._closed:
            self._stopped = EngineError("the engine process was closed")
        else:
            self._stopped = EngineError(
                f"the engine process stopped (exit code {code}){last}; load the model again"
            )
        return self._stopped

    def _fail_all(self, error: EngineError) -> None:
        for future, _ in list(self._calls.values()):
            if not future.done():
                future.set_exception(error)
        self._calls.clear()
        for handle, _, on_error in list(self._gens.values()):
            if not handle.future.done():
                handle.future.set_exception(error)
                if on_error is not None:
                    on_error(error)
        self._gens.clear()


# --- the child's side -------------------------------------------------------------------------


class _Child:
    """Runs commands from the parent against one Engine."""

    def __init__(self, cmd_fd: int, evt_fd: int) -> None:
        self.cmd_fd, self.evt_fd = cmd_fd, evt_fd
        self.lock = threading.Lock()
        self.engine: Engine | None = None
        self.handles: dict[int, GenerationHandle] = {}

    def send(self, kind: str, rid: int, payload: Any) -> None:
        write_frame(self.evt_fd, (kind, rid, payload), self.lock)

    def run(self) -> None:
        try:
            while (command := read_frame(self.cmd_fd)) is not None:
                op, rid, payload = command
                if op == "close":
                    break
                self.handle(op, rid, payload)
        finally:
            if self.engine is not None:
                self.engine.close()

    def handle(self, op: str, rid: int, payload: Any) -> None:
        if op == "cancel":
            handle = self.handles.get(rid)
            if handle is not None:
                handle.cancel()
            return
        try:
            if op == "load":
                self.send("result", rid, self.load(rid, payload))
            elif op == "count":
                self.send("result", rid, self.loaded().count_tokens(payload))
            elif op == "submit":
                self.submit(rid, payload)
            else:
                raise EngineError(f"unknown engine command {op!r}")
        except Exception as exc:  # every failure goes back to the caller
            self.send("gen_error" if op == "submit" else "error", rid, portable(exc))

    def loaded(self) -> Engine:
        if self.engine is None:
            raise EngineError("no model is loaded in this engine process")
        return self.engine

    def load(self, rid: int, config: EngineConfig) -> LoadInfo:
        from llcuda_tui.core.engine._local import Engine

        if self.engine is not None:
            raise EngineError("a model is already loaded in this engine process")
        shown = [-1]

        def progress(fraction: float) -> None:
            percent = int(fraction * 100)
            if percent != shown[0]:  # llama.cpp calls this per tensor
                shown[0] = percent
                self.send("progress", rid, fraction)

        self.engine = Engine.load(config, on_progress=progress)
        return self.engine.info

    def submit(self, rid: int, request: GenerationRequest) -> None:
        batch: list[Chunk] = []
        due = [0.0]  # the first token goes out at once
        clock = time.perf_counter

        def on_chunk(chunk: Chunk) -> None:  # on the engine thread, per token
            batch.append(chunk)
            if chunk.prefill is not None:  # one per prompt chunk: at once, the first token too
                self.send("chunks", rid, batch[:])
                batch.clear()
                return
            if chunk.record is None and clock() < due[0]:
                return
            self.send("chunks", rid, batch[:])
            batch.clear()
            due[0] = clock() + FLUSH_INTERVAL_S

        def on_error(exc: BaseException) -> None:
            if batch:
                self.send("chunks", rid, batch[:])
                batch.clear()
            self.send("gen_error", rid, portable(exc))

        engine = self.loaded()
        self.handles = {k: h for k, h in self.handles.items() if not h.done()}
        self.handles[rid] = engine.submit(request, on_chunk, on_error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="llcuda engine process (started by the TUI)")
    parser.add_argument("--cmd-fd", type=int, required=True)
    parser.add_argument("--evt-fd", type=int, required=True)
    args = parser.parse_args(argv)
    _Child(args.cmd_fd, args.evt_fd).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
