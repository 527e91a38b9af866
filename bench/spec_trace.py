"""Where a speculating generation's time goes: every ``llama_decode`` of one generation, timed.

Usage:
    python bench/spec_trace.py MODEL.gguf --draft DRAFT.gguf [-n 200] [-ngl -1] [-t 8] [-r 2]

A diagnostic for #18's fixed cost per generation (an always-rejected draft model cost ~60 ms
per 200-token reply on the H200, whatever it drafted). It loads the plain engine and the
draft engine, warms both, then runs ``-r`` interleaved rounds of the edit workload
(``bench/speculative.py``'s) with ``llama_decode`` wrapped: each call's context (target or
draft), batch size, and wall time including ``llama_synchronize`` (on a GPU llama_decode
returns before the graph has run). It prints, per mode, the generation's decode time from the
run record, and the decode calls grouped by context and batch size: how many, their total
and median time; the rest of the decode time is the host's (sampling, drafting, Python).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import llama_cpp  # noqa: E402

from llcuda_tui.core.bench._speculative import edit_request  # noqa: E402
from llcuda_tui.core.engine import Engine, EngineConfig, SpecSettings  # noqa: E402

_real_decode = llama_cpp.llama_decode
_sync = llama_cpp.llama_synchronize
CALLS: list[tuple[int, int, float, float]] = []
"""(context address, batch tokens, start, seconds) of every llama_decode while recording."""
RECORDING = False


def _ctx_key(ctx: object) -> int:
    value = getattr(ctx, "value", None)
    return int(value) if value else id(ctx)


def _timed_decode(ctx, batch):  # type: ignore[no-untyped-def]
    if not RECORDING:
        return _real_decode(ctx, batch)
    n = batch.n_tokens
    t0 = time.perf_counter()
    rc = _real_decode(ctx, batch)
    _sync(ctx)
    CALLS.append((_ctx_key(ctx), n, t0, time.perf_counter() - t0))
    return rc


llama_cpp.llama_decode = _timed_decode


def main(argv: list[str] | None = None) -> int:
    global RECORDING
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--draft", type=Path, required=True)
    p.add_argument("-n", "--n-gen", type=int, default=200)
    p.add_argument("-r", "--rounds", type=int, default=2)
    p.add_argument("-ngl", "--ngl", type=int, default=-1)
    p.add_argument("-t", "--threads", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--draft-max", type=int, default=16)
    args = p.parse_args(argv)
    config = EngineConfig(args.model, n_ctx=2048, n_gpu_layers=args.ngl, n_threads=args.threads)
    spec = SpecSettings(
        mode="draft", draft_model=args.draft, draft_max=args.draft_max,
        draft_n_gpu_layers=args.ngl,
    )  # fmt: skip
    with Engine.load(config) as plain, Engine.load(replace(config, speculative=spec)) as sp:
        engines = {"plain": plain, "draft": sp}
        reqs = {k: edit_request(e, args.n_gen) for k, e in engines.items()}
        for k, e in engines.items():
            e.generate(reqs[k])
        for rnd in range(args.rounds):
            for k, e in engines.items():
                CALLS.clear()
                RECORDING = True
                t0 = time.perf_counter()
                _text, rec = e.generate(reqs[k])
                wall = time.perf_counter() - t0
                RECORDING = False
                calls = list(CALLS)
                print(
                    f"\nround {rnd + 1} {k}: wall {wall * 1e3:.1f} ms, ttft {rec.ttft_s * 1e3:.1f}"
                    f" ms, prefill {rec.prefill_s * 1e3:.1f} ms, decode {rec.decode_s * 1e3:.1f}"
                    f" ms ({rec.decode_tokens_per_s:.1f} t/s), drafted {rec.drafted_tokens},"
                    f" accepted {rec.accepted_tokens}, prompt {rec.prompt_tokens}"
                    f" (cached {rec.prompt_tokens_cached})"
                )
                groups: dict[tuple[int, int], list[float]] = defaultdict(list)
                first_ctx = calls[0][0] if calls else 0
                for ctx, n, _t, dt in calls:
                    groups[(ctx, n)].append(dt)
                total = sum(dt for *_, dt in calls)
                print(f"  decode calls {len(calls)}, {total * 1e3:.1f} ms in llama_decode")
                for (ctx, n), dts in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
                    who = "ctx0" if ctx == first_ctx else f"ctx@{ctx & 0xFFFF:04x}"
                    print(
                        f"  {who:>10} n={n:<5} calls {len(dts):>4}  total {sum(dts) * 1e3:8.2f} ms"
                        f"  median {statistics.median(dts) * 1e3:7.3f} ms  max"
                        f" {max(dts) * 1e3:7.2f} ms"
                    )
                # the first 12 calls in order: where a per-generation cost would sit
                t_start = calls[0][2] if calls else 0.0
                seq = ", ".join(
                    f"{'T' if c == first_ctx else 'D'}{n}@{(t - t_start) * 1e3:.0f}:{dt * 1e3:.1f}"
                    for c, n, t, dt in calls[:12]
                )
                print(f"  first calls (ctx n @start ms: ms): {seq}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
