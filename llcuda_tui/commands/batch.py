"""`llcuda batch`: generate for every prompt of a JSON-lines file, on one process or MPI ranks.

Input lines: {"id": ..., "prompt": "..."} or {"id": ..., "messages": [...]}, optionally with
max_tokens, temperature, seed, stop, ignore_eos. Output lines, in input order: {"id", "index",
"text", "record", "rank"} (or "error" for an item that failed). Run it again on the same output
to resume: finished ids are skipped. Across GPUs and nodes:
mpiexec -n 4 llcuda batch --mpi -m MODEL -i prompts.jsonl -o results.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llcuda_tui.commands import argtypes
from llcuda_tui.core.errors import LlcudaError, UserInputError

if TYPE_CHECKING:  # the parser imports this module: the engine and the pool load in run
    from llcuda_tui.core.config import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch", help="generate for a file of prompts (MPI ranks)", description=__doc__
    )
    p.add_argument("-m", "--model", required=True, help="GGUF path, store name or starter name")
    p.add_argument("-i", "--input", required=True, help="prompts, one JSON object a line")
    p.add_argument("-o", "--output", required=True, help="results (appended; resumed if present)")
    p.add_argument("--mpi", action="store_true", help="run as one rank of an mpiexec job")
    p.add_argument("--gpus-per-rank", type=int, default=1, help="GPUs each rank uses (1)")
    p.add_argument("--no-root-engine", action="store_true", help="rank 0 only schedules")
    p.add_argument("--parallel", type=int, default=4, help="prompts each rank runs at once (4)")
    p.add_argument("-n", "--max-tokens", type=int, help="default max_tokens (default: config)")
    p.add_argument("--temp", type=float, help="default temperature; 0 = greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--min-p", type=float)
    p.add_argument("--repeat-penalty", type=float)
    p.add_argument("--seed", type=int, help="default seed; -1 = random")
    p.add_argument("--ignore-eos", action="store_true", help="default: generate past end-of-text")
    p.add_argument("--ngl", type=int, help="GPU layers: -1 all, 0 none")
    p.add_argument("--ctx", type=int, help="context per prompt in tokens (default: config)")
    argtypes.add_ctx_beyond_training(p)
    p.add_argument("--batch", type=int, help="most tokens in one llama_decode")
    p.add_argument("--threads", type=int, help="CPU threads per rank")
    p.add_argument("--fa", choices=["auto", "on", "off"], help="flash attention")
    p.add_argument("--no-fsync", action="store_true", help="don't fsync each group of results")
    p.add_argument("--summary", help="also write the run's summary (JSON) to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    _check_numbers(args)
    from llcuda_tui.core.mpi.launch import launched_ranks

    n = launched_ranks()
    if n > 1 and not args.mpi:
        raise UserInputError(
            f"started by an MPI launcher with {n} ranks but without --mpi: every rank would "
            "run the whole batch (add --mpi)"
        )
    from llcuda_tui.core.mpi import ranks

    comm = ranks.world() if args.mpi else None
    try:
        # before anything starts CUDA: each rank's GPUs go into CUDA_VISIBLE_DEVICES
        placement = (
            ranks.place_agreed(comm, args.gpus_per_rank, not args.no_root_engine)
            if comm is not None
            else None
        )
        return _run(args, settings, comm, placement)
    except LlcudaError as exc:
        from llcuda_tui.core.mpi.batch import RunAborted

        if isinstance(exc, RunAborted) and comm is not None:
            # the other ranks are mid-run: end the whole job
            print(f"llcuda: error: {exc}", file=sys.stderr, flush=True)
            comm.Abort(exc.exit_code)
        code = ranks.quiet_exit_code(comm, exc)
        if code is None:
            raise
        return code
    except Exception as exc:
        if comm is None or comm.Get_size() == 1:
            raise
        # one rank leaving while the others work would make them (and MPI_Finalize) wait forever
        print(f"llcuda: error: rank {comm.Get_rank()}: internal error: {type(exc).__name__}: "
              f"{exc}", file=sys.stderr, flush=True)  # fmt: skip
        comm.Abort(1)
        raise


def _run(args: argparse.Namespace, settings: Settings, comm: Any, placement: Any) -> int:
    from llcuda_tui.commands.infer import sampling_from_args
    from llcuda_tui.core.engine import EngineConfig
    from llcuda_tui.core.mpi.batch import BatchJob, run_batch
    from llcuda_tui.core.store import lease_file, resolve_model

    model = resolve_model(args.model, settings.paths)
    engine = EngineConfig.from_settings(
        model.path, settings, n_gpu_layers=args.ngl, n_ctx=args.ctx, n_batch=args.batch,
        n_threads=args.threads, flash_attn=args.fa, model_sha256=model.sha256,
        ctx_beyond_training=args.ctx_beyond_training,
    )  # fmt: skip
    engine.validate()
    job = BatchJob(
        engine=engine,
        input_path=Path(args.input),
        output_path=Path(args.output),
        sampling=sampling_from_args(args, settings),
        max_tokens=args.max_tokens or settings.sampling.max_tokens,
        ignore_eos=args.ignore_eos,
        parallel=args.parallel,
        root_engine=not args.no_root_engine,
        fsync=not args.no_fsync,
    )
    rank0 = comm is None or comm.Get_rank() == 0
    progress = _Progress() if rank0 and not args.quiet else None
    with lease_file(model.path, settings.paths):  # every rank: rm refuses, gc skips it
        summary = run_batch(job, comm, placement, on_progress=progress)
    if not rank0:
        return 0
    if progress is not None:
        progress.end()
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    if summary.total and summary.skipped == summary.total:
        print(f"llcuda batch: all {summary.total} items are already in {args.output}")
        return 0
    ranks = len(summary.ranks)
    print(
        f"llcuda batch: {summary.written} written ({summary.skipped} already done, "
        f"{summary.errors} failed) to {args.output} by {ranks} rank{'s' if ranks != 1 else ''} "
        f"in {summary.wall_s:.1f} s, {summary.generated_tokens_per_s:.1f} generated tokens/s"
    )
    return 0


class _Progress:
    """A single refreshed line on stderr when it is a terminal; nothing otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = False

    def __call__(self, written: int, total: int) -> None:
        if self.tty:
            sys.stderr.write(f"\rllcuda batch: {written}/{total}")
            sys.stderr.flush()
            self.shown = True

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def _check_numbers(args: argparse.Namespace) -> None:
    from llcuda_tui.core.engine import max_threads
    from llcuda_tui.core.worker.batch import MAX_PARALLEL

    checks = [
        (1 <= args.parallel <= MAX_PARALLEL, f"--parallel must be in [1, {MAX_PARALLEL}]"),
        (args.gpus_per_rank >= 1, "--gpus-per-rank must be >= 1"),
        (args.max_tokens is None or args.max_tokens >= 1, "--max-tokens must be >= 1"),
        (args.ctx is None or args.ctx >= 0, "--ctx must be >= 0"),
        (args.batch is None or args.batch >= 1, "--batch must be >= 1"),
        (
            args.threads is None or 0 <= args.threads <= max_threads(),
            f"--threads must be in [1, {max_threads()}] (0 = default)",
        ),
        (args.mpi or not args.no_root_engine, "--no-root-engine needs --mpi"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserInputError(message)
