"""The batch engine's Python time per decode step, outside ``llama_decode`` (#15 item 4).

Usage (CPU is enough: a tiny model makes ``llama_decode`` cheap, so Python shows):
    python bench/batch_overhead.py [MODEL] [--npl 4,8,16,32] [--ntg 64] [--threads 1]
        [--backend-sampling on] [--ngl -1] [--profile OUT.prof]

Without MODEL a tiny random llama (tests/gguf_factory.py, n_embd 64, 2 layers) is written to a
temporary folder. It runs ``bench/batched_decode.py``'s decode-only batches (N random prompts,
greedy, ``ignore_eos``) on ``BatchEngine`` with ``llama_cpp.llama_decode`` wrapped: the engine
thread's wall time from the end of one decode to the start of the next is the Python work of
one step (sampling calls, token hand-out, detokenising, stop checks, callbacks, building the
next batch). Only steps between two decode-only steps of N tokens count. On a GPU (``--ngl
-1``) the wrapper also calls ``llama_synchronize``: llama_decode returns before the graph has
run, and the wait belongs to the decode, not to the first sampling call. Prints the median
per step and per sequence, wall clock and the engine thread's CPU time. ``--profile`` also
runs cProfile inside the engine thread (its numbers are inflated by the profiler; use them
for where, the timing for how much).
"""

from __future__ import annotations

import argparse
import cProfile
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import llama_cpp

from bench.batched_decode import one_batch
from llcuda_tui.core.engine import EngineConfig
from llcuda_tui.core.worker.batch import BatchEngine

_real_decode = llama_cpp.llama_decode
_sync = llama_cpp.llama_synchronize


class DecodeClock:
    """Wraps llama_decode: per call its start and end (wall clock and the engine thread's CPU
    time) and batch size. The CPU time is what a loaded machine cannot inflate: a thread that
    waits for a core is not charged (a shared 2-core box made wall-clock gaps vary 2x)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, float, float, int]] = []

    def __call__(self, ctx, batch):  # type: ignore[no-untyped-def]
        n = batch.n_tokens
        c0, t0 = time.thread_time(), time.perf_counter()
        rc = _real_decode(ctx, batch)
        _sync(ctx)  # on a GPU llama_decode returns before the graph ran: its wait is decode time
        self.calls.append((t0, time.perf_counter(), c0, time.thread_time(), n))
        return rc

    def gaps(self, npl: int) -> tuple[list[float], list[float], list[float]]:
        """Between decode-only steps of ``npl`` tokens: wall seconds, the engine thread's CPU
        seconds, and the decodes' wall seconds."""
        walls, cpus, decodes = [], [], []
        for a, b in zip(self.calls, self.calls[1:], strict=False):
            if a[4] == npl and b[4] == npl:
                walls.append(b[0] - a[1])
                cpus.append(b[2] - a[3])
                decodes.append(b[1] - b[0])
        return walls, cpus, decodes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", nargs="?")
    ap.add_argument("--npl", default="4,8,16,32")
    ap.add_argument("--npp", type=int, default=32)
    ap.add_argument("--ntg", type=int, default=64)
    ap.add_argument("-r", "--reps", type=int, default=3)
    ap.add_argument("--ngl", type=int, default=0, help="GPU layers (-1: all)")
    ap.add_argument("--threads", type=int, default=0, help="n_threads (0: the engine's choice)")
    ap.add_argument(
        "--backend-sampling",
        default="auto",
        choices=["auto", "on", "off"],
        help="samplers in the graph ('on' runs them there on the CPU too: the GPU's path)",
    )
    ap.add_argument("--profile", help="write the engine thread's cProfile stats here")
    args = ap.parse_args()
    npls = [int(x) for x in args.npl.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tests.gguf_factory import write_tiny_llama

            model = str(write_tiny_llama(Path(tmp) / "tiny.gguf", n_embd=64, n_layer=2))
        clock = DecodeClock()
        llama_cpp.llama_decode = clock
        profiler = cProfile.Profile() if args.profile else None
        cfg = EngineConfig(
            Path(model),
            n_gpu_layers=args.ngl,
            n_ctx=args.npp + args.ntg + 16,
            n_batch=2048,
            n_ubatch=512,
            n_threads=args.threads,
            backend_sampling=args.backend_sampling,
        )
        rows = []
        if profiler is not None:  # enabled inside the engine thread, for its whole life
            main_of = BatchEngine._main

            def profiled_main(self: BatchEngine) -> None:
                profiler.enable()
                try:
                    main_of(self)
                finally:
                    profiler.disable()

            BatchEngine._main = profiled_main  # type: ignore[method-assign]
        with BatchEngine.load(cfg, parallel=max(npls)) as engine:
            vocab = engine.info.n_vocab
            one_batch(engine, max(npls), args.npp, 8, vocab, seed=0)  # warm-up
            for n in npls:
                clock.calls.clear()
                walls, cpus, decodes = [], [], []
                for r in range(args.reps):
                    one_batch(engine, n, args.npp, args.ntg, vocab, seed=1000 * r + n)
                    w, c, d = clock.gaps(n)
                    walls += w
                    cpus += c
                    decodes += d
                    clock.calls.clear()
                wall, cpu = statistics.median(walls), statistics.median(cpus)
                dec = statistics.median(decodes)
                rows.append((n, wall, cpu, dec))
                print(
                    f"npl={n:<3} steps {len(walls):4d}  python/step wall {wall * 1e6:7.1f} us, "
                    f"cpu {cpu * 1e6:7.1f} us ({cpu * 1e6 / n:5.2f} us/seq)  "
                    f"llama_decode {dec * 1e6:8.1f} us",
                    flush=True,
                )
        llama_cpp.llama_decode = _real_decode
        if profiler is not None:
            profiler.dump_stats(args.profile)
            print(f"profile: {args.profile} (python -m pstats {args.profile})")
    print("\nmedians per decode-only step, outside llama_decode:")
    print(f"{'npl':>4} {'wall us':>9} {'wall us/seq':>12} {'cpu us':>9} {'cpu us/seq':>11}")
    for n, wall, cpu, _ in rows:
        w, c = wall * 1e6, cpu * 1e6
        print(f"{n:>4} {w:>9.1f} {w / n:>12.2f} {c:>9.1f} {c / n:>11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
