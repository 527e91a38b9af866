"""``llcuda serve --mpi``: every rank of an ``mpiexec`` job calls :func:`serve_pool`.

Rank 0 binds the port and runs the worker's HTTP front over a :class:`PoolEngine`; the other
ranks load their engines and serve rank 0 until it stops them. Failures every rank must see
(GPU placement, the port, loading) stop every rank and are reported once, by rank 0.
``/llcuda/v1/info`` gains ``"pool": [rank, ...]`` and ``/metrics`` per-rank gauges
(``llcuda_pool_rank_*``), both gathered over MPI.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from llcuda_tui.core.errors import LlcudaError, UserInputError
from llcuda_tui.core.mpi import ranks
from llcuda_tui.core.mpi.pool import PoolEngine, PoolOptions, load_members, start_pool
from llcuda_tui.core.mpi.pool_rank import serve_rank


def options_from_args(args: argparse.Namespace) -> PoolOptions:
    """The pool's options from ``llcuda serve``'s ``--mpi``, ``--gpus-per-rank``,
    ``--no-root-engine`` and ``--rank-timeout`` (commands/serve.py defines them, so its parser
    loads no pool); a UserInputError for values that cannot work."""
    if args.gpus_per_rank < 1:
        raise UserInputError("--gpus-per-rank must be >= 1")
    if args.rank_timeout < 1:
        raise UserInputError("--rank-timeout must be >= 1 (seconds)")
    if args.no_root_engine and not args.mpi:
        raise UserInputError("--no-root-engine needs --mpi")
    return PoolOptions(
        gpus_per_rank=args.gpus_per_rank,
        root_engine=not args.no_root_engine,
        dead_after_s=args.rank_timeout,
    )


def serve_pool(
    config: Any,
    listen: Any,
    on_ready: Callable[[str], None] | None = None,
    options: PoolOptions | None = None,
) -> int:
    """Run this rank's part of the pool; returns the exit code (rank 0 raises what it reports,
    the other ranks return its exit code quietly)."""
    opts = options or PoolOptions()
    comm = ranks.world()
    if comm.Get_size() == 1 and not opts.root_engine:
        raise UserInputError("--no-root-engine needs 2 ranks or more (mpiexec -n 2 ...)")
    try:
        placement = ranks.place_agreed(comm, opts.gpus_per_rank, opts.root_engine)
        if comm.Get_rank() == 0:
            return _serve_root(comm, placement, config, listen, on_ready, opts)
        return _serve_other(comm, placement, config, opts)
    except LlcudaError as exc:
        code = ranks.quiet_exit_code(comm, exc)
        if code is None:
            raise
        return code
    except Exception as exc:
        if comm.Get_size() == 1:
            raise
        # the other ranks may be waiting for this one (and MPI_Finalize with them): end the job
        print(f"llcuda serve: error: rank {comm.Get_rank()}: internal error: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)  # fmt: skip
        comm.Abort(1)
        raise


def _serve_other(comm: Any, placement: Any, config: Any, opts: PoolOptions) -> int:
    ranks.agree(comm, None, "listen")
    engine, _ = load_members(comm, placement, config.engine, config.parallel, opts)
    assert engine is not None  # every rank but 0 runs an engine
    signalled = _ignore_stop_signals()  # rank 0 drains and then stops every rank
    try:
        serve_rank(comm, engine, opts.heartbeat_s, signalled, config.shutdown_grace_s + 10)
    except Exception as exc:
        # leave at once: MPI_Finalize would wait for the other ranks forever. Rank 0 reports
        # this rank gone; with ULFM (mpiexec --with-ft ulfm) the pool goes on without it.
        rank = comm.Get_rank()
        print(f"llcuda serve: error: rank {rank} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)  # fmt: skip
        os._exit(1)
    engine.close()
    return 0


def _ignore_stop_signals() -> threading.Event:
    """mpiexec forwards Ctrl-C/SIGTERM to every rank: the other ranks wait for rank 0's stop."""
    seen = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: seen.set())
    return seen


class PoolCollector:
    """Per-rank gauges for /metrics, read from the pool at scrape time."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def describe(self) -> Iterator[Any]:
        yield from self._families({})

    def collect(self) -> Iterator[Any]:
        engine = self.state.engine
        rows = engine.ranks() if isinstance(engine, PoolEngine) else []
        yield from self._families({r["rank"]: r for r in rows})

    @staticmethod
    def _families(rows: dict[int, dict[str, Any]]) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        specs = [
            ("llcuda_pool_rank_up", "1 while the rank answers", lambda r: float(r["alive"])),
            ("llcuda_pool_rank_in_flight", "Requests running on the rank",
             lambda r: r["in_flight"]),
            ("llcuda_pool_rank_assigned", "Requests sent to the rank so far",
             lambda r: r["assigned"]),
            ("llcuda_pool_rank_active_sequences", "Sequences holding a slot",
             lambda r: r["stats"].get("active", 0)),
            ("llcuda_pool_rank_generated_tokens", "Tokens generated by the rank",
             lambda r: r["stats"].get("generated_tokens", 0)),
            ("llcuda_pool_rank_kv_cells_used", "KV cache cells in use",
             lambda r: r["stats"].get("kv_cells_used", 0)),
        ]  # fmt: skip
        for name, doc, value in specs:
            family = GaugeMetricFamily(name, doc, labels=["rank", "host"])
            for rank, row in sorted(rows.items()):
                family.add_metric([str(rank), row["host"]], float(value(row)))
            yield family


class PoolGpu:
    """The GpuSampler interface over every node of the pool: rank 0's node's GPUs (sampled
    here) keep their indices; other nodes' follow, node by node in rank order, from the
    samples their first rank sends over MPI (``/llcuda/v1/info``'s ``pool`` maps ranks to
    hosts and device ids)."""

    def __init__(self, local: Any, pool: PoolEngine) -> None:
        self._local = local
        self._pool = pool
        self.interval_s = local.interval_s

    @property
    def latest(self) -> Any:
        snap = self._local.latest
        return self._merge(snap) if snap is not None else None

    def sample(self) -> Any:
        return self._merge(self._local.sample())

    def history(self, index: int) -> list[Any]:
        where = self._where(self._local.latest or self._local.sample()).get(index)
        if where is None:
            return list(self._local.history(index))
        host, remote_index = where
        return [
            replace(r, index=index)
            for r in self._pool.node_gpu_history.get((host, remote_index), ())
        ]

    def _where(self, snap: Any) -> dict[int, tuple[str, int]]:
        """Global index -> (host, that node's index), for other nodes' GPUs."""
        out: dict[int, tuple[str, int]] = {}
        next_index = len(snap.gpus)
        for m in self._pool.gpu_leaders():
            remote = self._pool.node_gpus.get(m.host)
            for r in remote.gpus if remote is not None else ():
                out[next_index] = (m.host, r.index)
                next_index += 1
        return out

    def _merge(self, snap: Any) -> Any:
        gpus = list(snap.gpus)
        for m in self._pool.gpu_leaders():
            remote = self._pool.node_gpus.get(m.host)
            for r in remote.gpus if remote is not None else ():
                gpus.append(replace(r, index=len(gpus)))
        return replace(snap, gpus=tuple(gpus))


def _pool_state_class() -> type:
    from llcuda_tui.core.worker import WorkerState

    class PoolState(WorkerState):
        """The worker's state with the pool's ranks in ``info()`` and ``/metrics``."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.metrics.registry.register(PoolCollector(self))

        def gpu_sampler(self) -> Any:
            local = super().gpu_sampler()
            engine = self.engine
            if not isinstance(engine, PoolEngine):
                return local
            engine.request_gpu()
            return PoolGpu(local, engine)

        def info(self) -> dict[str, Any]:
            out: dict[str, Any] = super().info()
            engine = self.engine
            out["pool"] = engine.ranks() if isinstance(engine, PoolEngine) else []
            return out

    return PoolState


def _serve_root(
    comm: Any,
    placement: Any,
    config: Any,
    listen: Any,
    on_ready: Callable[[str], None] | None,
    opts: PoolOptions,
) -> int:
    from llcuda_tui.core.worker import UvicornServer, base_url, bind, create_app, run_until_stopped

    holder: dict[str, Any] = {}

    def loader() -> PoolEngine:
        return start_pool(comm, placement, config.engine, config.parallel, opts)

    def on_load_error(exc: BaseException) -> None:
        holder["uv"].server.should_exit = True

    sock, error = None, None
    try:
        sock = bind(listen, config)
        state = _pool_state_class()(config, loader=loader, on_load_error=on_load_error)
        uv = holder["uv"] = UvicornServer(create_app(state), state, listen, main_thread=True)
        uv.check_tls()
    except LlcudaError as exc:
        error = exc
        if sock is not None:
            sock.close()
    ranks.agree(comm, error, f"listen on {listen.host}:{listen.port}")
    assert sock is not None
    try:
        run_until_stopped(uv, sock, state, base_url(listen, sock), on_ready)
    finally:
        _close_when_loaded(state)
    if state.error is not None:
        raise state.error
    return 0


def _close_when_loaded(state: Any, timeout_s: float = 600.0) -> None:
    """Uvicorn may stop while the pool still loads (every rank is in a collective then): wait
    for the load to end, so the other ranks get their stop message."""
    deadline = time.monotonic() + timeout_s
    while not state.loaded.wait(0.1) and time.monotonic() < deadline:
        pass
    state.close()
