"""Our engine against llama.cpp's own llama-bench, same model, same run.

Usage (on the GPU machine, after `bash .device/build.sh && source /root/env.sh`):
    python bench/engine_vs_native.py MODEL.gguf [MODEL2.gguf ...] [--tg 256] [--pp 512] [-r 5]
        [--flat 4096] [--json OUT.json]

For each model it runs, in one process tree and one after the other:
  * llama-bench -p PP -n TG -r R -ngl 99 -fa 1 -o json           (the anchor)
  * our engine, llama-bench's own method (Engine.bench_prompt / bench_gen)
  * our engine's real generation path: Engine.stream() with greedy sampling, ignore-eos,
    TG tokens (decode t/s), and a PP-token prompt (prefill t/s)
  * optionally (--flat N): one N-token generation; the mean inter-token time of the last 256
    tokens over the first 256, next to llama-bench's tg at depth N-256 over depth 0, so the
    growth that llama.cpp's attention itself shows is visible beside ours.
and prints ratios ours / llama-bench. Exit code 0; the numbers are the result.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest  # noqa: E402
from llcuda_tui.core.sampling import SamplingParams  # noqa: E402


def llama_bench(model: str, pp: int, tg: int, reps: int, depth: int = 0) -> dict[str, float]:
    exe = shutil.which("llama-bench")
    if exe is None:
        sys.exit("llama-bench not on PATH (source /root/env.sh on the GPU machine)")
    cmd = [exe, "-m", model, "-p", str(pp), "-n", str(tg), "-r", str(reps), "-ngl", "99",
           "-fa", "1", "-o", "json"]  # fmt: skip
    if depth:
        cmd += ["-d", str(depth)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res: dict[str, float] = {}
    for row in json.loads(out):
        key = "pp" if row["n_prompt"] > 0 else "tg"
        res[key] = row["avg_ts"]
        res[key + "_sd"] = row["stddev_ts"]
    return res


def ours(model: str, pp: int, tg: int, reps: int, flat: int) -> dict[str, float]:
    cfg = EngineConfig(Path(model), n_gpu_layers=-1, n_ctx=max(4096, flat + 64, pp + tg + 64),
                       n_batch=2048, n_ubatch=512, flash_attn="on")  # fmt: skip
    res: dict[str, float] = {}
    with Engine.load(cfg) as eng:
        res["backend_sampling"] = float(eng.info.backend_sampling)
        eng.bench_prompt(pp)  # warm-up, as llama-bench does
        eng.bench_gen(8)
        pps = [pp / eng.bench_prompt(pp) for _ in range(reps)]
        tgs = [tg / eng.bench_gen(tg) for _ in range(reps)]
        res["bench_pp"], res["bench_tg"] = statistics.mean(pps), statistics.mean(tgs)
        greedy = SamplingParams(temperature=0.0)
        rnd = random.Random(0)
        dec, pre = [], []
        for _ in range(reps + 1):  # first one is warm-up
            prompt = [rnd.randrange(1000, eng.info.n_vocab) for _ in range(pp)]
            _, r = eng.generate(GenerationRequest(tokens=prompt, max_tokens=1, sampling=greedy))
            pre.append(r.prefill_tokens_per_s)
            req = GenerationRequest(tokens=prompt[:16], max_tokens=tg, sampling=greedy,
                                    ignore_eos=True)  # fmt: skip
            _, r = eng.generate(req)
            dec.append(r.decode_tokens_per_s)
        res["stream_pp"], res["stream_tg"] = statistics.mean(pre[1:]), statistics.mean(dec[1:])
        res["stream_tg_sd"] = statistics.stdev(dec[1:]) if reps > 1 else 0.0
        if flat:
            req = GenerationRequest(tokens=[rnd.randrange(1000, eng.info.n_vocab)], max_tokens=flat,
                                    sampling=greedy, ignore_eos=True)  # fmt: skip
            _, r = eng.generate(req)
            t = r.token_times_s
            first = (t[256] - t[0]) / 256
            last = (t[-1] - t[-257]) / 256
            res["flat_first_ms"], res["flat_last_ms"] = first * 1e3, last * 1e3
            res["flat_ratio"] = last / first
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=256)
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("--flat", type=int, default=0, help="also measure per-token cost over N")
    ap.add_argument("--json", help="write all numbers here")
    args = ap.parse_args()
    results = {}
    for model in args.models:
        native = llama_bench(model, args.pp, args.tg, args.reps)
        mine = ours(model, args.pp, args.tg, args.reps, args.flat)
        row = {"llama_bench": native, "ours": mine}
        row["ratio_decode"] = mine["stream_tg"] / native["tg"]
        row["ratio_prefill"] = mine["stream_pp"] / native["pp"]
        row["ratio_bench_tg"] = mine["bench_tg"] / native["tg"]
        row["ratio_bench_pp"] = mine["bench_pp"] / native["pp"]
        if args.flat:
            deep = llama_bench(model, 0, 256, max(2, args.reps // 2), depth=args.flat - 256)
            row["llama_bench_tg_at_depth"] = deep["tg"]
            row["llama_bench_depth_slowdown"] = native["tg"] / deep["tg"]
        results[Path(model).name] = row
        n = Path(model).name
        print(f"{n}: llama-bench pp{args.pp} {native['pp']:.1f} ± {native['pp_sd']:.1f} t/s, "
              f"tg{args.tg} {native['tg']:.1f} ± {native['tg_sd']:.1f} t/s")  # fmt: skip
        print(f"  ours stream: prefill {mine['stream_pp']:.1f} t/s ({row['ratio_prefill']:.3f}x), "
              f"decode {mine['stream_tg']:.1f} ± {mine['stream_tg_sd']:.1f} t/s "
              f"({row['ratio_decode']:.3f}x), backend sampling {bool(mine['backend_sampling'])}")
        print(f"  ours llama-bench method: pp {mine['bench_pp']:.1f} ({row['ratio_bench_pp']:.3f}x), "
              f"tg {mine['bench_tg']:.1f} ({row['ratio_bench_tg']:.3f}x)")
        if args.flat:
            print(f"  per-token cost, tokens 1-256 vs {args.flat - 255}-{args.flat}: "
                  f"{mine['flat_first_ms']:.3f} -> {mine['flat_last_ms']:.3f} ms "
                  f"({mine['flat_ratio']:.3f}x); llama-bench tg at depth {args.flat - 256}: "
                  f"{row['llama_bench_tg_at_depth']:.1f} t/s "
                  f"({row['llama_bench_depth_slowdown']:.3f}x slower than depth 0)")
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
