"""The serving pool: ``mpiexec -n N llcuda serve --mpi ...``; this is rank 0's side.

Rank 0 runs the worker's HTTP front (:mod:`llcuda_tui.core.worker.server`, same API) over a
:class:`PoolEngine`, an engine (:class:`~llcuda_tui.core.engine.EngineBase`) with the
:class:`BatchEngine` extras the server uses (``stats``, ``tokenize``, ``on_step``). Every rank
(rank 0 too unless ``root_engine`` is off) runs a :class:`BatchEngine` on its own GPU(s). Rank 0
sends each request to the live rank with the fewest requests in flight per slot; that rank
streams text back (:mod:`.pool_rank` holds the other ranks' loop and the messages). All of rank
0's MPI traffic after loading runs on one thread. A rank not heard from for ``dead_after_s`` is
reported and dropped: its requests fail, the rest of the pool goes on. Open MPI keeps the other
ranks alive only when started with ``--with-ft ulfm``; otherwise ``mpiexec`` ends the job.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.engine import (
    Chunk,
    Engine,
    EngineBase,
    EngineConfig,
    GenerationHandle,
    GenerationRequest,
    LoadInfo,
    OnChunk,
    OnError,
    RunRecord,
    TokensFromEngine,
)
from llcuda_tui.core.errors import ContextLengthError, EngineError, LlcudaError, UserInputError
from llcuda_tui.core.mpi.devices import Placement
from llcuda_tui.core.mpi.pool_rank import POLL_MAX_S, POLL_MIN_S, TAG_EVT, TAG_REQ
from llcuda_tui.core.mpi.ranks import agree

if TYPE_CHECKING:
    from llcuda_tui.core.gpu import GpuReading, GpuSample
    from llcuda_tui.core.worker.batch import BatchEngine, BatchStats

GPU_HISTORY = 300
"""Readings kept per remote GPU (5 minutes at one a second)."""


@dataclass(frozen=True)
class PoolOptions:
    """How the pool runs (besides the worker's own settings)."""

    gpus_per_rank: int = 1
    root_engine: bool = True
    """Whether rank 0 runs an engine too (off: it serves HTTP and schedules only)."""
    heartbeat_s: float = 0.5
    dead_after_s: float = 10.0
    """A rank silent for this long is reported dead and its requests fail."""


@dataclass
class Member:
    """One rank's engine, as rank 0 sees it."""

    rank: int
    host: str
    gpus: list[str]
    pid: int
    slots: int
    info: LoadInfo | None = None
    local_rank: int = 0
    in_flight: int = 0
    assigned: int = 0
    """Requests sent to it so far."""
    alive: bool = True
    error: str | None = None
    last_heard: float = field(default_factory=time.monotonic)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "host": self.host, "local_rank": self.local_rank,
            "gpus": self.gpus, "pid": self.pid,
            "alive": self.alive, "error": self.error, "slots": self.slots,
            "in_flight": self.in_flight, "assigned": self.assigned, "stats": self.stats,
        }  # fmt: skip


# --- rank 0 ----------------------------------------------------------------------------------


@dataclass
class _Pending:
    """A generation running on another rank (its handle's cancel tells that rank)."""

    handle: GenerationHandle
    on_chunk: OnChunk
    on_error: OnError | None
    member: Member


class PoolEngine(TokensFromEngine, EngineBase):
    """Rank 0's view of the pool, with the BatchEngine interface the worker's server uses."""

    def __init__(
        self,
        comm: Any,
        members: list[Member],
        local: BatchEngine | None,
        tokenizer: Engine,
        options: PoolOptions,
        owns_tokenizer: bool = True,
    ) -> None:
        self.comm = comm
        self.members = members
        self.local = local
        """Rank 0's own BatchEngine, or None."""
        self._tok = tokenizer
        self._owns_tok = owns_tokenizer
        """False when the tokenizer is rank 0's BatchEngine's own (that engine closes it)."""
        self.options = options
        first = next(m for m in members if m.info is not None)
        self.info: LoadInfo = first.info  # type: ignore[assignment]
        self.config: EngineConfig | None = local.config if local is not None else None
        self.parallel = sum(m.slots for m in members)
        self._by_rank = {m.rank: m for m in members}
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()  # a local future may be done when its callback is added
        self._outbox: queue.SimpleQueue[tuple[int, dict[str, Any]]] = queue.SimpleQueue()
        self._closed = False
        self.host = next((m.host for m in members if m.rank == 0), None) or _hostname()
        self._gpu_wanted = False
        self.node_gpus: dict[str, GpuSample] = {}
        """Other nodes' latest GpuSample, by host (sent by each node's first rank)."""
        self.node_gpu_history: dict[tuple[str, int], deque[GpuReading]] = {}
        self._any_source = True
        """Wildcard receives; off once a rank failed (ULFM then fails them)."""
        self._on_step: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._loop, name="llcuda-mpi-pool", daemon=True)
        self._thread.start()

    # --- the engine, and the BatchEngine extras ----------------------------------------------

    @property
    def on_step(self) -> Callable[[], None] | None:
        """Called after each batch of chunks is delivered (the server wakes its readers then):
        by rank 0's engine after its steps, by the MPI thread after each message."""
        return self._on_step

    @on_step.setter
    def on_step(self, fn: Callable[[], None] | None) -> None:
        self._on_step = fn
        if self.local is not None:
            self.local.on_step = fn

    def submit(
        self, request: GenerationRequest, on_chunk: OnChunk, on_error: OnError | None = None
    ) -> GenerationHandle:
        """Send ``request`` to the least-loaded live rank; a bad request raises at once."""
        if self._closed:
            raise EngineError("the pool is closed")
        if request.logprobs is not None:  # the ranks stream text back, not token logprobs
            raise UserInputError("an MPI pool does not serve logprobs (run one worker for them)")
        n = len(self.prompt_tokens(request))
        if n == 0:
            raise UserInputError("the prompt is empty")
        if n >= self.info.n_ctx:
            raise ContextLengthError(
                f"the prompt has {n} tokens but a sequence holds {self.info.n_ctx}: "
                "shorten it or start the pool with a larger --ctx"
            )
        with self._lock:
            member = self._pick()
            member.in_flight += 1
            member.assigned += 1
            if member.rank == 0 and self.local is not None:
                return self._submit_local(member, request, on_chunk, on_error)
            rid = next(self._ids)
            # cancel() tells the rank that runs it
            handle = GenerationHandle(request, lambda: self._send(member.rank, "cancel", rid=rid))
            self._pending[rid] = _Pending(handle, on_chunk, on_error, member)
        self._send(member.rank, "gen", rid=rid, request=request)
        return handle

    def _pick(self) -> Member:
        live = [m for m in self.members if m.alive]
        if not live:
            raise EngineError("no rank of the pool is alive")
        return min(live, key=lambda m: (m.in_flight / m.slots, m.assigned))

    def _submit_local(
        self,
        member: Member,
        request: GenerationRequest,
        on_chunk: OnChunk,
        on_error: OnError | None,
    ) -> GenerationHandle:
        assert self.local is not None
        try:
            handle = self.local.submit(request, on_chunk, on_error)
        except BaseException:
            member.in_flight -= 1
            raise

        def done(_future: Any) -> None:
            with self._lock:
                member.in_flight -= 1

        handle.future.add_done_callback(done)
        return handle

    def cancel(self) -> None:
        """Stop every generation on every rank."""
        if self.local is not None:
            self.local.cancel()
        with self._lock:
            pending = list(self._pending.values())
        for p in pending:
            p.handle.cancel()

    def stats(self) -> BatchStats:
        """The pool's BatchStats: every live rank's, summed."""
        from llcuda_tui.core.worker.batch import BatchStats

        rows = [m.stats for m in self.members if m.alive and m.rank != 0 and m.stats]
        if self.local is not None:
            rows.append(asdict(self.local.stats()))
        keys = [f for f in BatchStats.__dataclass_fields__]
        return BatchStats(**{k: sum(int(r.get(k, 0)) for r in rows) for k in keys})

    def ranks(self) -> list[dict[str, Any]]:
        """Each rank's state (for /llcuda/v1/info and /metrics)."""
        with self._lock:
            if self.local is not None:
                self._by_rank[0].stats = asdict(self.local.stats())
            return [m.to_dict() for m in self.members]

    def gpu_leaders(self) -> list[Member]:
        """One live rank per node other than rank 0's: the node's lowest rank."""
        leaders: dict[str, Member] = {}
        for m in sorted(self.members, key=lambda m: m.rank):
            if m.alive and m.host != self.host and m.host not in leaders:
                leaders[m.host] = m
        return list(leaders.values())

    def request_gpu(self) -> None:
        """Ask every other node to sample its GPUs (from now on, about once a second)."""
        if self._gpu_wanted:
            return
        self._gpu_wanted = True
        for m in self.gpu_leaders():
            self._send(m.rank, "gpu")

    def close(self) -> None:
        """Cancel everything, stop every rank's loop, free rank 0's engines. Idempotent."""
        if self._closed:
            return
        self.cancel()
        self._closed = True
        self._thread.join(timeout=30)
        if self.local is not None:
            self.local.close()
        if self._owns_tok:
            self._tok.close()

    # --- the MPI thread --------------------------------------------------------------------

    def _send(self, rank: int, op: str, **fields: Any) -> None:
        self._outbox.put((rank, {"op": op, **fields}))

    def _loop(self) -> None:
        sends: list[Any] = []
        wait = POLL_MIN_S
        try:
            while not self._closed:
                busy = self._flush_outbox(sends)
                busy = self._receive() or busy
                self._check_alive()
                if busy:
                    self._stepped()
                sends[:] = _unfinished(sends)
                wait = POLL_MIN_S if busy or self._pending else min(POLL_MAX_S, wait * 2)
                time.sleep(wait)
            self._flush_outbox(sends)
            for m in self._remote_live():
                sends.append(self.comm.isend({"op": "stop"}, dest=m.rank, tag=TAG_REQ))
            _wait_all(sends, timeout_s=10.0)
        except Exception as exc:  # the pool cannot go on without its MPI thread
            print(f"llcuda serve: error: the pool's MPI thread failed: {exc}", file=sys.stderr)
            self._fail_all(EngineError(f"the pool's MPI thread failed: {exc}"))

    def _remote_live(self) -> list[Member]:
        return [m for m in self.members if m.rank != 0 and m.alive]

    def _receive(self) -> bool:
        """Deliver every waiting message; False when there was none."""
        from mpi4py import MPI

        got = False
        if self._any_source:
            status = MPI.Status()
            try:
                while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=TAG_EVT, status=status):
                    self._on_message(self.comm.recv(source=status.Get_source(), tag=TAG_EVT))
                    got = True
                return got
            except MPI.Exception:  # ULFM: once a rank failed, wildcard receives fail
                self._any_source = False
        for m in self._remote_live():
            try:
                while self.comm.Iprobe(source=m.rank, tag=TAG_EVT):
                    self._on_message(self.comm.recv(source=m.rank, tag=TAG_EVT))
                    got = True
            except MPI.Exception as exc:
                self._mark_dead(m, f"rank {m.rank} on {m.host} failed ({_mpi_error(exc)})")
        return got

    def _stepped(self) -> None:
        fn = self._on_step
        if fn is not None:
            with contextlib.suppress(Exception):  # a consumer's problem must not stop the pool
                fn()

    def _flush_outbox(self, sends: list[Any]) -> bool:
        busy = False
        while True:
            try:
                rank, msg = self._outbox.get_nowait()
            except queue.Empty:
                return busy
            busy = True
            member = self._by_rank.get(rank)
            if member is None or not member.alive:
                continue
            try:
                sends.append(self.comm.isend(msg, dest=rank, tag=TAG_REQ))
            except Exception as exc:  # ULFM reports a failed rank here
                self._mark_dead(member, f"rank {rank} on {member.host} failed ({_mpi_error(exc)})")

    def _on_message(self, msg: dict[str, Any]) -> None:
        member = self._by_rank.get(msg["rank"])
        if member is None or not member.alive:
            return
        member.last_heard = time.monotonic()
        member.stats = msg["stats"]
        sample = msg.get("gpu")
        if sample is not None:
            self.node_gpus[member.host] = sample
            for reading in sample.gpus:
                key = (member.host, reading.index)
                self.node_gpu_history.setdefault(key, deque(maxlen=GPU_HISTORY)).append(reading)
        for rid, text in msg["texts"].items():
            p = self._pending.get(rid)
            if p is not None:
                p.on_chunk(Chunk(text))
        for rid, kind, payload in msg["finals"]:
            with self._lock:
                p = self._pending.pop(rid, None)
                if p is not None:
                    member.in_flight -= 1
            if p is None:
                continue
            if kind == "done":
                text, record = payload
                _finish(p, text, record)
            else:
                message, user_error = payload
                kind_error = UserInputError if user_error else EngineError
                _fail(p, kind_error(message))

    def _check_alive(self) -> None:
        now = time.monotonic()
        for m in self.members:
            if m.rank == 0 or not m.alive or now - m.last_heard < self.options.dead_after_s:
                continue
            self._mark_dead(m, f"rank {m.rank} on {m.host} stopped answering")

    def _mark_dead(self, member: Member, reason: str) -> None:
        with self._lock:
            member.alive, member.error = False, reason
            lost = [(rid, p) for rid, p in self._pending.items() if p.member is member]
            for rid, _p in lost:
                del self._pending[rid]
            member.in_flight = 0
        live = sum(m.alive for m in self.members)
        print(
            f"llcuda serve: {reason}; {len(lost)} request(s) failed, "
            f"the pool goes on with {live} rank(s)",
            file=sys.stderr,
            flush=True,
        )
        for _rid, p in lost:
            _fail(p, EngineError(f"{reason} (the request was running there)"))
        self._stepped()

    def _fail_all(self, exc: LlcudaError) -> None:
        with self._lock:
            lost = list(self._pending.values())
            self._pending.clear()
        for p in lost:
            _fail(p, exc)
        self._stepped()


def _finish(p: _Pending, text: str, record: RunRecord) -> None:
    try:
        p.on_chunk(Chunk(text, record))
    except BaseException as exc:  # the receiver went away
        if not p.handle.future.done():
            p.handle.future.set_exception(exc)
        return
    if not p.handle.future.done():
        p.handle.future.set_result(record)


def _fail(p: _Pending, exc: LlcudaError) -> None:
    if p.on_error is not None:
        with contextlib.suppress(Exception):  # nothing left to tell
            p.on_error(exc)
    if not p.handle.future.done():
        p.handle.future.set_exception(exc)


def _unfinished(requests: list[Any]) -> list[Any]:
    """The send requests still in progress (one that errs, to a failed rank, is dropped)."""
    out = []
    for r in requests:
        try:
            if not r.Test():
                out.append(r)
        except Exception:  # the rank is gone; its heartbeat check reports it
            continue
    return out


def _wait_all(requests: list[Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(requests)
    while pending and time.monotonic() < deadline:
        pending = _unfinished(pending)
        time.sleep(0.001)


def _hostname() -> str:
    return socket.gethostname()


def _mpi_error(exc: BaseException) -> str:
    get = getattr(exc, "Get_error_string", None)
    return str(get()) if callable(get) else str(exc)


# --- starting the pool -----------------------------------------------------------------------


def load_members(
    comm: Any, placement: Placement, config: EngineConfig, parallel: int, options: PoolOptions
) -> tuple[BatchEngine | None, list[Member]]:
    """Every rank (collectively): load its engine, then agree; rank 0 gets every member."""
    import os

    from llcuda_tui.core.worker.batch import BatchEngine

    engine, error = None, None
    if comm.Get_rank() != 0 or options.root_engine:
        try:
            engine = BatchEngine.load(config, parallel)
        except LlcudaError as exc:
            error = exc
    row = Member(placement.world_rank, placement.host, list(placement.gpus), os.getpid(),
                 parallel, engine.info if engine is not None else None,
                 placement.local_rank)  # fmt: skip
    rows = comm.gather(row, root=0)
    try:
        agree(comm, error, "load the model")
    except LlcudaError:
        if engine is not None:
            engine.close()
        raise
    members = [m for m in rows or [] if m.info is not None]
    now = time.monotonic()
    for m in members:  # each rank stamped its own clock (another node's, maybe): restart here
        m.last_heard = now
    return engine, members


def start_pool(
    comm: Any, placement: Placement, config: EngineConfig, parallel: int, options: PoolOptions
) -> PoolEngine:
    """Rank 0's side of :func:`load_members`, plus the tokenizer and the MPI thread."""
    local, members = load_members(comm, placement, config, parallel, options)
    tok_config = replace(
        config, n_gpu_layers=0, n_ctx=256, n_batch=32, n_ubatch=32, backend_sampling="off"
    )
    try:
        # rank 0's BatchEngine's own tokenizer when it has one (the pool must not close it)
        tokenizer = local._tok if local is not None else Engine.load(tok_config)
    except LlcudaError:
        _stop_ranks(comm, members)
        raise
    return PoolEngine(comm, members, local, tokenizer, options, owns_tokenizer=local is None)


def _stop_ranks(comm: Any, members: list[Member]) -> None:
    sends = [comm.isend({"op": "stop"}, dest=m.rank, tag=TAG_REQ) for m in members if m.rank != 0]
    _wait_all(sends, timeout_s=10.0)
