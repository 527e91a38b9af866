"""Our engine against llama.cpp's own llama-bench, same model, same run.

Usage (on the GPU machine, after `bash .device/build.sh && source /root/env.sh`):
    python bench/engine_vs_native.py MODEL.gguf [MODEL2.gguf ...] [--tg 256] [--pp 512] [-r 3]
        [--rounds 3] [--flat 4096] [--json OUT.json]

For each model, in interleaved rounds (our engine stays loaded while llama-bench runs):
  * llama-bench -p PP -n TG -r R -ngl 99 -fa FA -o json          (the anchor; --fa, default auto
    for both: llama.cpp turns flash attention on where the GPU has a kernel for the head size)
  * our engine, llama-bench's own method (Engine.bench_prompt / bench_gen)
  * our engine's real generation path: Engine.stream() with greedy sampling, ignore-eos,
    TG tokens (decode t/s), and a PP-token prompt (prefill t/s)
  * optionally (--flat N): one N-token generation; the mean inter-token time of the last 256
    tokens over the first 256, next to llama-bench's tg at depth N-256 over depth 0, so the
    growth that llama.cpp's attention itself shows is visible beside ours.
and prints the median of the per-round ratios ours / llama-bench.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest, SamplingParams


def llama_bench(
    model: str, pp: int, tg: int, reps: int, fa: str, depth: int = 0, threads: int = 0
) -> dict[str, float]:
    exe = shutil.which("llama-bench")
    if exe is None:
        sys.exit("llama-bench not on PATH (source /root/env.sh on the GPU machine)")
    cmd = [exe, "-m", model, "-p", str(pp), "-n", str(tg), "-r", str(reps), "-ngl", "99",
           "-fa", fa, "-o", "json"]  # fmt: skip
    if depth:
        cmd += ["-d", str(depth)]
    if threads:
        cmd += ["-t", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res: dict[str, float] = {}
    for row in json.loads(out):
        key = "pp" if row["n_prompt"] > 0 else "tg"
        res[key] = row["avg_ts"]
        res[key + "_sd"] = row["stddev_ts"]
    return res


def measure_ours(eng: Engine, pp: int, tg: int, reps: int, rnd: random.Random) -> dict[str, float]:
    """One round of our numbers: llama-bench's method, then the real generation path."""
    res: dict[str, float] = {}
    res["bench_pp"] = statistics.mean(pp / eng.bench_prompt(pp) for _ in range(reps))
    res["bench_tg"] = statistics.mean(tg / eng.bench_gen(tg) for _ in range(reps))
    greedy = SamplingParams(temperature=0.0)
    dec, pre = [], []
    for _ in range(reps):
        prompt = [rnd.randrange(1000, eng.info.n_vocab) for _ in range(pp)]
        _, r = eng.generate(GenerationRequest(tokens=prompt, max_tokens=1, sampling=greedy))
        pre.append(r.prefill_tokens_per_s)
        req = GenerationRequest(tokens=prompt[:16], max_tokens=tg, sampling=greedy,
                                ignore_eos=True)  # fmt: skip
        dec.append(eng.generate(req)[1].decode_tokens_per_s)
    res["stream_pp"], res["stream_tg"] = statistics.mean(pre), statistics.mean(dec)
    return res


def flatness(eng: Engine, n: int, rnd: random.Random) -> dict[str, float]:
    """Mean inter-token time of the last 256 tokens of an n-token generation over the first."""
    req = GenerationRequest(tokens=[rnd.randrange(1000, eng.info.n_vocab)], max_tokens=n,
                            sampling=SamplingParams(temperature=0.0), ignore_eos=True)  # fmt: skip
    t = eng.generate(req)[1].token_times_s
    first, last = (t[256] - t[0]) / 256, (t[-1] - t[-257]) / 256
    return {"flat_first_ms": first * 1e3, "flat_last_ms": last * 1e3, "flat_ratio": last / first}


def compare(model: str, args: argparse.Namespace) -> dict:
    """Interleaved rounds (llama-bench, then ours, with our engine kept loaded), so clock and
    thermal drift hit both; the result is the median of the per-round ratios."""
    # the context sized as llama-bench sizes its own (n_prompt + n_gen): same KV work per token
    cfg = EngineConfig(Path(model), n_gpu_layers=-1, n_ctx=args.pp + args.tg + 32, n_batch=2048,
                       n_ubatch=512, flash_attn=args.fa, n_threads=args.threads,
                       backend_sampling=args.backend_sampling)  # fmt: skip
    rnd = random.Random(0)
    rounds = []
    with Engine.load(cfg) as eng:
        eng.bench_prompt(args.pp)  # warm-up, as llama-bench does
        eng.bench_gen(16)
        for _ in range(args.rounds):
            native = llama_bench(model, args.pp, args.tg, args.reps, args.fa, threads=args.threads)
            mine = measure_ours(eng, args.pp, args.tg, args.reps, rnd)
            rounds.append({"llama_bench": native, "ours": mine})
        row: dict = {"rounds": rounds, "backend_sampling": eng.info.backend_sampling,
                     "flash_attn": eng.info.flash_attn}  # fmt: skip
    if args.flat:
        with Engine.load(replace(cfg, n_ctx=args.flat + 64)) as eng:
            row.update(flatness(eng, args.flat, rnd))
    for key, ours_key, native_key in [
        ("ratio_decode", "stream_tg", "tg"), ("ratio_prefill", "stream_pp", "pp"),
        ("ratio_bench_tg", "bench_tg", "tg"), ("ratio_bench_pp", "bench_pp", "pp"),
    ]:  # fmt: skip
        ratios = [r["ours"][ours_key] / r["llama_bench"][native_key] for r in rounds]
        row[key] = statistics.median(ratios)
        row[key + "_all"] = ratios
    for side, keys in (("llama_bench", ("pp", "tg")), ("ours", ("stream_pp", "stream_tg"))):
        for k in keys:
            row[f"{side}_{k}_median"] = statistics.median(r[side][k] for r in rounds)
    if args.flat:
        deep = llama_bench(model, 0, 256, 2, args.fa, depth=args.flat - 256, threads=args.threads)
        row["llama_bench_tg_at_depth"] = deep["tg"]
        row["llama_bench_depth_slowdown"] = row["llama_bench_tg_median"] / deep["tg"]
    return row


def report(name: str, row: dict, args: argparse.Namespace) -> None:
    print(f"{name}: {args.rounds} interleaved rounds of {args.reps} reps; medians")
    print(f"  llama-bench pp{args.pp} {row['llama_bench_pp_median']:.1f} t/s, "
          f"tg{args.tg} {row['llama_bench_tg_median']:.1f} t/s")  # fmt: skip
    print(
        f"  ours (generation path): prefill {row['ours_stream_pp_median']:.1f} t/s "
        f"= {row['ratio_prefill']:.3f}x, decode {row['ours_stream_tg_median']:.1f} t/s "
        f"= {row['ratio_decode']:.3f}x (backend sampling {row['backend_sampling']}, "
        f"flash attention {row['flash_attn']})"
    )
    print(
        f"  ours (llama-bench's method): pp {row['ratio_bench_pp']:.3f}x, "
        f"tg {row['ratio_bench_tg']:.3f}x"
    )
    print("  per-round decode ratios: " + ", ".join(f"{r:.3f}" for r in row["ratio_decode_all"]))
    if args.flat:
        print(
            f"  per-token cost, tokens 1-256 vs {args.flat - 255}-{args.flat}: "
            f"{row['flat_first_ms']:.3f} -> {row['flat_last_ms']:.3f} ms "
            f"({row['flat_ratio']:.3f}x); llama-bench tg at depth {args.flat - 256}: "
            f"{row['llama_bench_tg_at_depth']:.1f} t/s "
            f"({row['llama_bench_depth_slowdown']:.3f}x slower than depth 0)"
        )
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=256)
    ap.add_argument("-r", "--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--flat", type=int, default=0, help="also measure per-token cost over N")
    ap.add_argument("--fa", choices=("auto", "on", "off"), default="auto",
                    help="flash attention, for both sides")  # fmt: skip
    ap.add_argument("--backend-sampling", choices=("auto", "on", "off"), default="auto",
                    help="our sampler in the graph (llama-bench samples none)")  # fmt: skip
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for both sides (0: each its default; on the CPU give one "
        "count, so neither side's choice is what is measured)",
    )
    ap.add_argument("--json", help="write all numbers here")
    args = ap.parse_args()
    results = {}
    for model in args.models:
        row = compare(model, args)
        results[Path(model).name] = row
        report(Path(model).name, row, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
