"""The serving pool's ranks other than 0: :func:`serve_rank` generates what rank 0 sends and
streams the text back (rank 0's side is :mod:`.pool`).

Messages (pickled): rank 0 -> rank (tag :data:`TAG_REQ`) ``{"op": "gen"|"cancel"|"gpu"|"stop",
...}``; rank -> rank 0 (tag :data:`TAG_EVT`) ``{"rank", "texts": {rid: text}, "finals": [(rid,
kind, payload)], "stats"}`` (plus ``"gpu"``, a GpuSample, on a node's first rank once asked),
text of one poll cycle coalesced per request, at least every ``heartbeat_s``.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.engine import Chunk, GenerationHandle, GenerationRequest
from llcuda_tui.core.errors import LlcudaError, UserInputError

if TYPE_CHECKING:
    from llcuda_tui.core.gpu import GpuSample, GpuSampler
    from llcuda_tui.core.worker.batch import BatchEngine

TAG_REQ = 21
TAG_EVT = 22
POLL_MIN_S = 0.0005
POLL_MAX_S = 0.005

RankEvent = tuple[int, str, Any]
"""``(rid, "done", (tail text, RunRecord))`` or ``(rid, "error", (message, is user error))``;
``(rid, "text", text)`` on the rank's own queue."""


def serve_rank(
    comm: Any,
    engine: BatchEngine,
    heartbeat_s: float,
    signalled: threading.Event | None = None,
    patience_s: float = 20.0,
) -> None:
    """A rank's loop: generate what rank 0 sends, stream text back, until told to stop (or,
    once ``signalled``, ``patience_s`` later: rank 0 may be gone)."""
    signalled_at: float | None = None
    gpu = _NodeGpu()
    out: queue.SimpleQueue[RankEvent] = queue.SimpleQueue()
    handles: dict[int, GenerationHandle] = {}
    sends: list[Any] = []
    last_sent = 0.0
    wait = POLL_MIN_S
    rank = comm.Get_rank()
    while True:
        busy = False
        while comm.Iprobe(source=0, tag=TAG_REQ):
            msg = comm.recv(source=0, tag=TAG_REQ)
            busy = True
            if msg["op"] == "stop":
                engine.cancel()
                gpu.close()
                for r in sends:
                    r.Wait()
                return
            if msg["op"] == "gpu":
                gpu.start()
            if msg["op"] == "gen":
                _start(engine, msg["rid"], msg["request"], out, handles)
            elif msg["op"] == "cancel" and msg["rid"] in handles:
                handles[msg["rid"]].cancel()
        texts, finals = _drain(out)
        for rid, _kind, _payload in finals:
            handles.pop(rid, None)
        now = time.monotonic()
        sample = gpu.fresh()
        if texts or finals or sample is not None or now - last_sent >= heartbeat_s:
            stats = asdict(engine.stats())
            msg = {"rank": rank, "texts": texts, "finals": finals, "stats": stats}
            if sample is not None:
                msg["gpu"] = sample
            sends = [r for r in sends if not r.Test()]
            sends.append(comm.isend(msg, dest=0, tag=TAG_EVT))
            last_sent, busy = now, busy or bool(texts or finals)
        if signalled is not None and signalled.is_set():
            signalled_at = signalled_at or now
            if now - signalled_at > patience_s:
                engine.cancel()
                gpu.close()
                return
        wait = POLL_MIN_S if busy or handles else min(POLL_MAX_S, wait * 2)
        time.sleep(wait)


class _NodeGpu:
    """NVML sampling on a node leader, started when rank 0 first serves /llcuda/v1/gpu; each
    new sample goes to rank 0 with the next message."""

    def __init__(self) -> None:
        self._sampler: GpuSampler | None = None
        self._sent: GpuSample | None = None

    def start(self) -> None:
        if self._sampler is None:
            from llcuda_tui.core.gpu import GpuSampler

            self._sampler = GpuSampler(interval_s=1.0, history=1, pcie=False)
            self._sampler.start()

    def fresh(self) -> GpuSample | None:
        """The latest sample if not sent yet, else None."""
        latest = self._sampler.latest if self._sampler is not None else None
        if latest is None or latest is self._sent:
            return None
        self._sent = latest
        return latest

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None


def _start(
    engine: BatchEngine,
    rid: int,
    request: GenerationRequest,
    out: queue.SimpleQueue[RankEvent],
    handles: dict[int, GenerationHandle],
) -> None:
    def on_chunk(chunk: Chunk) -> None:
        if chunk.record is None:
            out.put((rid, "text", chunk.text))
        else:
            out.put((rid, "done", (chunk.text, chunk.record)))

    def on_error(exc: BaseException) -> None:
        out.put((rid, "error", (str(exc), isinstance(exc, UserInputError))))

    try:
        handles[rid] = engine.submit(request, on_chunk, on_error)
    except LlcudaError as exc:
        on_error(exc)


def _drain(out: queue.SimpleQueue[RankEvent]) -> tuple[dict[int, str], list[RankEvent]]:
    texts: dict[int, str] = {}
    finals: list[RankEvent] = []
    while True:
        try:
            rid, kind, payload = out.get_nowait()
        except queue.Empty:
            return texts, finals
        if kind == "text":
            texts[rid] = texts.get(rid, "") + payload
        else:
            finals.append((rid, kind, payload))
