"""Where a large vocabulary's decode time goes: raw llama.cpp loops, one model, same run.

Usage (GPU machine, after the device set-up):
    python3 bench/decode_host_cost.py /root/models/small262k-q4km.gguf [-n 256] [-r 3] [--rounds 3]

Our generation path decodes the 262k-vocabulary model at ~0.89x llama-bench tg256, and
llama-bench's own method run from Python at 0.93-0.96x (docs/benchmarks.md). This separates
the parts with no engine code in between: the same model, contexts sized as llama-bench sizes
its own (n_ctx = n_gen + 512, flash attention off as auto resolves it for head size 160), and
one-token steps from an empty cache, timed llama-bench's way (tokens over the loop's time,
the median of ``-r`` repetitions), in interleaved rounds next to llama-bench itself:

  raw            llama_decode + llama_synchronize, logits of the token on (llama-bench tg)
  no_logits      the same with no output row (what the lm_head and its copy cost)
  host_argmax    raw, then numpy argmax over llama_get_logits_ith (greedy on the host)
  backend        a greedy backend sampler attached; llama_get_sampled_token_ith per step
  backend_sync   the same context, llama_synchronize only (bench_gen with a sampler attached)

Prints t/s per variant and the ratio to llama-bench's tg in the same round.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def llama_bench(model: str, n_gen: int, reps: int) -> float:
    exe = shutil.which("llama-bench")
    if exe is None:
        sys.exit("llama-bench not on PATH (source /root/env.sh on the GPU machine)")
    out = subprocess.run(
        [exe, "-m", model, "-p", "0", "-n", str(n_gen), "-r", str(reps), "-ngl", "99",
         "-fa", "0", "-o", "json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(json.loads(out)[0]["avg_ts"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("-n", type=int, default=256)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args(argv)

    import llama_cpp as L
    import numpy as np

    L.llama_backend_init()
    mp = L.llama_model_default_params()
    mp.n_gpu_layers = 99
    model = L.llama_model_load_from_file(args.model.encode(), mp)
    if not model:
        sys.exit(f"cannot load {args.model}")
    vocab = L.llama_model_get_vocab(model)
    n_vocab = int(L.llama_vocab_n_tokens(vocab))

    def make_ctx(sampler: Any = None) -> Any:
        cp = L.llama_context_default_params()
        cp.n_ctx = args.n + 512
        cp.n_batch = 2048
        cp.n_ubatch = 512
        cp.n_seq_max = 1
        cp.n_threads = cp.n_threads_batch = args.threads
        cp.flash_attn_type = 0
        cp.no_perf = True
        if sampler is not None:
            cfg = (L.llama_sampler_seq_config * 1)()
            cfg[0].seq_id = 0
            cfg[0].sampler = ctypes.cast(sampler, ctypes.c_void_p)
            cp.samplers = cfg
            cp.n_samplers = 1
            make_ctx.keep = cfg  # type: ignore[attr-defined]
        ctx = L.llama_init_from_model(model, cp)
        if not ctx:
            sys.exit("cannot create a context")
        return ctx

    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
    ctx_raw, ctx_be = make_ctx(), make_ctx(chain)

    one = (ctypes.c_int32 * 1)(1)
    with_logits = L.llama_batch_get_one(one, 1)
    quiet = L.llama_batch_init(1, 0, 1)
    quiet.n_tokens = 1
    quiet.n_seq_id[0] = 1
    quiet.seq_id[0][0] = 0
    quiet.logits[0] = 0

    def loop(ctx: Any, step: Callable[[int], None]) -> float:
        best: list[float] = []
        for _ in range(args.r):
            L.llama_memory_clear(L.llama_get_memory(ctx), True)
            for i in range(16):  # warm-up, as llama-bench's
                step(i)
            L.llama_memory_clear(L.llama_get_memory(ctx), True)
            t0 = time.perf_counter()
            for i in range(args.n):
                step(i)
            L.llama_synchronize(ctx)
            best.append(args.n / (time.perf_counter() - t0))
        return statistics.median(best)

    def raw(i: int) -> None:
        one[0] = random.randrange(n_vocab)
        L.llama_decode(ctx_raw, with_logits)
        L.llama_synchronize(ctx_raw)

    def no_logits(i: int) -> None:
        quiet.token[0] = random.randrange(n_vocab)
        quiet.pos[0] = i
        L.llama_decode(ctx_raw, quiet)
        L.llama_synchronize(ctx_raw)

    def host_argmax(i: int) -> None:
        L.llama_decode(ctx_raw, with_logits)
        row = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx_raw, -1), shape=(n_vocab,))
        one[0] = int(row.argmax())

    def backend(i: int) -> None:
        L.llama_decode(ctx_be, with_logits)
        one[0] = int(L.llama_get_sampled_token_ith(ctx_be, -1))

    def backend_sync(i: int) -> None:
        one[0] = random.randrange(n_vocab)
        L.llama_decode(ctx_be, with_logits)
        L.llama_synchronize(ctx_be)

    variants: dict[str, tuple[Any, Callable[[int], None]]] = {
        "raw": (ctx_raw, raw),
        "no_logits": (ctx_raw, no_logits),
        "host_argmax": (ctx_raw, host_argmax),
        "backend": (ctx_be, backend),
        "backend_sync": (ctx_be, backend_sync),
    }
    ratios: dict[str, list[float]] = {k: [] for k in variants}
    tps: dict[str, list[float]] = {k: [] for k in [*variants, "llama-bench"]}
    for rnd in range(args.rounds):
        anchor = llama_bench(args.model, args.n, args.r)
        tps["llama-bench"].append(anchor)
        for name, (ctx, step) in variants.items():
            t = loop(ctx, step)
            tps[name].append(t)
            ratios[name].append(t / anchor)
        print(f"round {rnd + 1}: llama-bench {anchor:.1f} t/s; "
              + ", ".join(f"{k} {tps[k][-1]:.1f}" for k in variants), flush=True)  # fmt: skip
    print(f"\n{args.model}: n_vocab {n_vocab}, -n {args.n}, -r {args.r}, {args.rounds} rounds")
    print(f"{'variant':<14} {'t/s (median)':>12} {'vs llama-bench':>15} {'per-round':>24}")
    print(f"{'llama-bench':<14} {statistics.median(tps['llama-bench']):>12.1f}")
    for name in variants:
        per = " / ".join(f"{r:.3f}" for r in ratios[name])
        print(f"{name:<14} {statistics.median(tps[name]):>12.1f} "
              f"{statistics.median(ratios[name]):>14.3f}x {per:>24}")  # fmt: skip
    us = {k: 1e6 / statistics.median(v) for k, v in tps.items()}
    print("µs per token: " + ", ".join(f"{k} {v:.0f}" for k, v in us.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
