"""Batch mode: prompts from a JSON-lines file, spread over MPI ranks that pull work.

Rank 0 reads the input, hands items out and writes the output (in input order, see
:mod:`.jobs`); every rank (rank 0 too, unless ``root_engine`` is off) runs a
:class:`BatchEngine` with ``parallel`` slots and asks rank 0 for as many items as it has free
slots, so a fast rank takes more work than a slow one. Without a communicator the same loop
runs in one process.

Messages (pickled, point to point): a rank sends ``{"rank", "results", "want", "done",
"stats"}`` up (tag 11); rank 0 answers each ``want > 0`` with ``{"items": [...]}`` (tag 12), an
empty list meaning "no more work". Sends are non-blocking on both sides (two large messages
crossing would otherwise deadlock), and waiting polls with a short sleep: Open MPI's blocking
receive spins a core, which the engine thread needs.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.engine import EngineConfig, EngineProtocol, GenerationRequest, SamplingParams
from llcuda_tui.core.errors import LlcudaError, UserInputError
from llcuda_tui.core.mpi import jobs
from llcuda_tui.core.mpi.devices import Placement
from llcuda_tui.core.mpi.ranks import agree

if TYPE_CHECKING:
    from llcuda_tui.core.worker.batch import BatchEngine

TAG_UP = 11
TAG_DOWN = 12
POLL_MIN_S = 0.0005
POLL_MAX_S = 0.005


@dataclass(frozen=True)
class BatchJob:
    """What to run: the model, the files and the defaults for what an item does not say."""

    engine: EngineConfig
    input_path: Path
    output_path: Path
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int = 256
    ignore_eos: bool = False
    """Default for items that do not say (benchmarks: every item generates max_tokens)."""
    parallel: int = 4
    """Items each rank generates at once (slots of its batched engine)."""
    root_engine: bool = True
    """Whether rank 0 generates too (off: it only schedules and writes)."""
    fsync: bool = True


@dataclass
class RankStats:
    rank: int
    host: str = ""
    gpus: list[str] = field(default_factory=list)
    items: int = 0
    errors: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    load_time_s: float = 0.0


@dataclass
class BatchSummary:
    """What a run did (rank 0's view; other ranks get an empty summary)."""

    total: int = 0
    """Items in the input."""
    skipped: int = 0
    """Items already in the output file (resumed)."""
    written: int = 0
    errors: int = 0
    generated_tokens: int = 0
    wall_s: float = 0.0
    """From the first item handed out to the last line written."""
    ranks: list[RankStats] = field(default_factory=list)

    @property
    def generated_tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "generated_tokens_per_s": self.generated_tokens_per_s}


# --- one rank's engine ---------------------------------------------------------------------


class _Runner:
    """A rank's batched engine: submits items and collects finished results in a queue."""

    def __init__(self, engine: EngineProtocol, rank: int) -> None:
        self.engine = engine
        self.rank = rank
        self.results: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.in_flight = 0
        self.stats = RankStats(rank)

    def submit(self, index: int, item_id: Any, request: GenerationRequest) -> None:
        parts: list[str] = []
        self.in_flight += 1
        base = {"id": item_id, "index": index, "rank": self.rank}
        try:
            handle = self.engine.submit(request, lambda chunk: parts.append(chunk.text))
        except LlcudaError as exc:  # a bad item (prompt too long, ...): its result is the error
            self.results.put({**base, "error": str(exc)})
            return
        except Exception as exc:  # one item must never end the batch (docs/reliability.md)
            self.results.put({**base, "error": f"{type(exc).__name__}: {exc}"})
            return

        def done(future: Any) -> None:
            exc = future.exception()
            if exc is not None:
                self.results.put({**base, "error": str(exc)})
            else:
                record = future.result().to_dict()
                self.results.put({**base, "text": "".join(parts), "record": record})

        handle.future.add_done_callback(done)

    def drain(self, wait_s: float) -> list[dict[str, Any]]:
        """Finished results, waiting up to ``wait_s`` for the first."""
        out = []
        try:
            first = self.results.get(timeout=wait_s) if wait_s > 0 else self.results.get_nowait()
            out.append(first)
            while True:
                out.append(self.results.get_nowait())
        except queue.Empty:
            pass
        for r in out:
            self.in_flight -= 1
            if "error" in r:
                self.stats.errors += 1
            else:
                self.stats.items += 1
                self.stats.generated_tokens += r["record"]["generated_tokens"]
                self.stats.prompt_tokens += r["record"]["prompt_tokens"]
        return out


def work(channel: Any, runner: _Runner, slots: int) -> None:
    """One rank's loop: ask for as many items as there are free slots, send results back, stop
    once rank 0 says there is no more work and nothing is left running. A failure is sent to
    rank 0 (which stops the run with it) before it is raised."""
    try:
        _work(channel, runner, slots)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            channel.send({"rank": runner.rank, "fatal": f"{type(exc).__name__}: {exc}"})
            getattr(channel, "close", lambda: None)()
        raise


def _work(channel: Any, runner: _Runner, slots: int) -> None:
    asked = exhausted = False
    wait = POLL_MIN_S
    while True:
        results = runner.drain(wait)
        free = slots - runner.in_flight
        want = free if not (exhausted or asked) and free > 0 else 0
        finished = exhausted and runner.in_flight == 0 and not asked
        if results or want or finished:
            stats = runner.stats.__dict__ if finished else None
            channel.send({"rank": runner.rank, "results": results, "want": want,
                          "done": finished, "stats": stats})  # fmt: skip
            asked = asked or want > 0
            if finished:
                return
        reply = channel.poll()
        if reply is not None:
            asked = False
            exhausted = not reply["items"]
            for index, item_id, request in reply["items"]:
                runner.submit(index, item_id, request)
            wait = POLL_MIN_S
        else:
            wait = min(POLL_MAX_S, wait * 2)


# --- channels --------------------------------------------------------------------------------


class _LocalChannel:
    """Rank 0's own runner talking to rank 0's scheduler, through two queues."""

    def __init__(self) -> None:
        self.up: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.down: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def send(self, msg: dict[str, Any]) -> None:
        self.up.put(msg)

    def poll(self) -> dict[str, Any] | None:
        try:
            return self.down.get_nowait()
        except queue.Empty:
            return None


class _MpiChannel:
    """A rank > 0 talking to rank 0."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self._sends: list[Any] = []

    def send(self, msg: dict[str, Any]) -> None:
        self._sends = [r for r in self._sends if not r.Test()]
        self._sends.append(self.comm.isend(msg, dest=0, tag=TAG_UP))

    def poll(self) -> dict[str, Any] | None:
        if not self.comm.Iprobe(source=0, tag=TAG_DOWN):
            return None
        msg: dict[str, Any] = self.comm.recv(source=0, tag=TAG_DOWN)
        return msg

    def close(self) -> None:
        for r in self._sends:
            r.Wait()


class _RootPort:
    """Rank 0's side: messages from every rank (its own runner included) and replies."""

    def __init__(self, comm: Any | None, local: _LocalChannel | None) -> None:
        self.comm = comm
        self.local = local
        self._sends: list[Any] = []

    def recv(self) -> dict[str, Any] | None:
        if self.local is not None:
            try:
                return self.local.up.get_nowait()
            except queue.Empty:
                pass
        if self.comm is not None and self.comm.Iprobe(tag=TAG_UP):
            from mpi4py import MPI

            msg: dict[str, Any] = self.comm.recv(source=MPI.ANY_SOURCE, tag=TAG_UP)
            return msg
        return None

    def send(self, rank: int, msg: dict[str, Any]) -> None:
        if rank == 0 and self.local is not None:
            self.local.down.put(msg)
            return
        assert self.comm is not None
        self._sends = [r for r in self._sends if not r.Test()]
        self._sends.append(self.comm.isend(msg, dest=rank, tag=TAG_DOWN))

    def close(self) -> None:
        for r in self._sends:
            r.Wait()


# --- the run ---------------------------------------------------------------------------------


def schedule(
    port: _RootPort,
    todo: list[jobs.Item],
    writer: jobs.ResultWriter,
    n_ranks: int,
    summary: BatchSummary,
    on_progress: Callable[[int, int], None] | None = None,
) -> None:
    """Rank 0: hand out items on request, write results in order, until every rank is done."""
    by_rank = {r.rank: r for r in summary.ranks}
    next_item = finished = 0
    wait = POLL_MIN_S
    while finished < n_ranks:
        msg = port.recv()
        if msg is None:
            time.sleep(wait)
            wait = min(POLL_MAX_S, wait * 2)
            continue
        wait = POLL_MIN_S
        if "fatal" in msg:
            raise LlcudaError(f"rank {msg['rank']} failed: {msg['fatal']}")
        for result in msg["results"]:
            writer.add(result["index"], result)
            summary.errors += "error" in result
            if "record" in result:
                summary.generated_tokens += result["record"]["generated_tokens"]
        if msg["results"] and on_progress is not None:
            on_progress(writer.written, len(todo))
        if msg["want"]:
            batch = todo[next_item : next_item + msg["want"]]
            next_item += len(batch)
            port.send(msg["rank"], {"items": [(i.index, i.id, i.request) for i in batch]})
        if msg["done"]:
            finished += 1
            stats = by_rank.get(msg["rank"])
            if stats is not None and msg["stats"]:
                for key in ("items", "errors", "generated_tokens", "prompt_tokens"):
                    setattr(stats, key, msg["stats"][key])
    summary.written = writer.written


def run_batch(
    job: BatchJob,
    comm: Any | None = None,
    placement: Placement | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_loaded: Callable[[], None] | None = None,
) -> BatchSummary:
    """Run ``job`` on every rank of ``comm`` (an mpi4py communicator; None = this process).

    Every rank calls it; rank 0 returns the summary. A bad input or a failed load on any rank
    raises the same error on every rank (rank 0's message names the rank).
    """
    from llcuda_tui.core.mpi.devices import single_process

    place = placement or single_process()
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    if size == 1 and not job.root_engine:
        raise UserInputError("with one rank, rank 0 must run an engine")
    todo: list[jobs.Item] = []
    summary = BatchSummary()
    error: LlcudaError | None = None
    if rank == 0:
        try:
            todo, summary = _plan(job)
        except LlcudaError as exc:
            error = exc
        except OSError as exc:
            error = UserInputError(f"cannot use {job.output_path}: {exc.strerror or exc}")
    agree(comm, error, "read the input")  # a bad input stops every rank before loading
    n_todo = _bcast(comm, len(todo))
    if n_todo == 0:
        return summary
    runs_engine = rank != 0 or job.root_engine
    engine = None
    if runs_engine:
        try:
            engine = _load(job)
        except LlcudaError as exc:
            error = exc
    ranks = _gather(comm, _rank_stats(place, engine))
    try:
        agree(comm, error, "load the model")
    except LlcudaError:
        if engine is not None:
            engine.close()
        raise
    try:
        if rank == 0:
            summary.ranks = [r for r in ranks if r.rank != 0 or job.root_engine]
            if on_loaded is not None:
                on_loaded()
            try:
                _run_root(job, comm, engine, todo, summary, on_progress)
            except LlcudaError as exc:
                if comm is None or comm.Get_size() == 1:
                    raise
                raise RunAborted(str(exc), exc.exit_code) from None
        else:
            assert engine is not None
            channel = _MpiChannel(comm)
            work(channel, _Runner(engine, rank), job.parallel)
            channel.close()
    finally:
        if engine is not None:
            engine.close()
    return summary


def _plan(job: BatchJob) -> tuple[list[jobs.Item], BatchSummary]:
    inp, out = Path(job.input_path), Path(job.output_path)
    if out.exists() and inp.exists() and os.path.samefile(inp, out):
        # the input's ids would all count as done ("all N items are already in X")
        raise UserInputError(f"--input and --output are the same file ({out})")
    items = jobs.read_items(job.input_path, job.sampling, job.max_tokens, job.ignore_eos)
    done = jobs.completed_ids(job.output_path)
    todo = [i for i in items if jobs.id_key(i.id) not in done]
    return todo, BatchSummary(total=len(items), skipped=len(items) - len(todo))


def _load(job: BatchJob) -> BatchEngine:
    from llcuda_tui.core.worker.batch import BatchEngine

    return BatchEngine.load(job.engine, job.parallel)


def _rank_stats(place: Placement, engine: EngineProtocol | None) -> RankStats:
    stats = RankStats(place.world_rank, place.host, list(place.gpus))
    if engine is not None:
        stats.load_time_s = engine.info.load_time_s
    return stats


def _run_root(
    job: BatchJob,
    comm: Any | None,
    engine: EngineProtocol | None,
    todo: list[jobs.Item],
    summary: BatchSummary,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    local = _LocalChannel() if engine is not None else None
    port = _RootPort(comm if comm is not None and comm.Get_size() > 1 else None, local)
    writer = jobs.ResultWriter(job.output_path, [i.index for i in todo], fsync=job.fsync)
    for bad in (i for i in todo if i.error is not None):  # a bad line's result is its error
        writer.add(bad.index, {"id": bad.id, "index": bad.index, "error": bad.error, "rank": 0})
        summary.errors += 1
    todo = [i for i in todo if i.request is not None]
    thread = None
    if engine is not None and local is not None:
        runner = _Runner(engine, 0)
        thread = threading.Thread(
            target=work, args=(local, runner, job.parallel), name="llcuda-batch-rank0", daemon=True
        )
    n_ranks = (comm.Get_size() if comm is not None else 1) - (0 if engine is not None else 1)
    t0 = time.perf_counter()
    try:
        if thread is not None:
            thread.start()
        schedule(port, todo, writer, n_ranks, summary, on_progress)
    finally:
        summary.wall_s = time.perf_counter() - t0
        writer.close()
        port.close()
        if thread is not None:
            thread.join(timeout=60)


class RunAborted(LlcudaError):
    """Rank 0 failed mid-run while the other ranks still work: the job must be aborted
    (``MPI_Abort``), since a normal exit would wait for them forever."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- collectives (no-ops without MPI) ------------------------------------------------------


def _bcast(comm: Any | None, value: Any) -> Any:
    return value if comm is None else comm.bcast(value, root=0)


def _gather(comm: Any | None, stats: RankStats) -> list[RankStats]:
    if comm is None:
        return [stats]
    gathered = comm.gather(stats, root=0)
    return list(gathered) if gathered is not None else []
