"""`llcuda bench` against llama.cpp's own `llama-bench`: same model, same settings, one run.

Usage (on the GPU machine, after `bash .device/build.sh && source /root/env.sh`):
    python bench/bench_vs_llama_bench.py MODEL.gguf [-p 512] [-n 128] [-r 5] [-ngl 99]
        [-b 2048] [-ub 512] [-fa 1] [-t N] [--rounds 1] [--tolerance 0.05] [--json OUT.json]

Each round runs `llama-bench ... -o json`, then `llcuda bench ... -o json` (a subprocess of
this Python, so the same llama-cpp-python build), and prints, per test (ppN, tgN), both
means ± sd and the ratio ours / llama-bench. With --rounds > 1 the order alternates and the
ratio uses the mean over rounds. Exit code 0 when every ratio is within ±tolerance, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _threads() -> int:
    n = os.cpu_count() or 1
    return max(1, min(8, n // 2 if n >= 4 else n))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("-p", "--n-prompt", type=int, default=512)
    p.add_argument("-n", "--n-gen", type=int, default=128)
    p.add_argument("-r", "--repetitions", type=int, default=5)
    p.add_argument("-ngl", "--ngl", type=int, default=99)
    p.add_argument("-b", "--batch-size", type=int, default=2048)
    p.add_argument("-ub", "--ubatch-size", type=int, default=512)
    p.add_argument("-fa", "--flash-attn", choices=["0", "1"], default="1")
    p.add_argument("-t", "--threads", type=int, default=_threads())
    p.add_argument("--rounds", type=int, default=1, help="alternate the two tools this often")
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--llama-bench", default=shutil.which("llama-bench") or "llama-bench")
    p.add_argument("--json", type=Path, help="write both tools' raw results and the ratios here")
    return p.parse_args(argv)


def _key(row: dict) -> str:
    n_prompt, n_gen = int(row.get("n_prompt", 0)), int(row.get("n_gen", 0))
    return f"pp{n_prompt}" if n_prompt and not n_gen else f"tg{n_gen}" if n_gen else "?"


def run_llama_bench(args: argparse.Namespace) -> list[dict]:
    common = ["-m", str(args.model), "-p", str(args.n_prompt), "-n", str(args.n_gen),
              "-r", str(args.repetitions), "-ngl", str(args.ngl), "-b", str(args.batch_size),
              "-ub", str(args.ubatch_size), "-t", str(args.threads), "-o", "json"]  # fmt: skip
    for fa in (args.flash_attn, {"1": "on", "0": "off"}[args.flash_attn]):  # old, new syntax
        proc = subprocess.run([args.llama_bench, *common, "-fa", fa], capture_output=True,
                              text=True)  # fmt: skip
        if proc.returncode == 0:
            return json.loads(proc.stdout)
    sys.exit(f"llama-bench failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def run_llcuda(args: argparse.Namespace, home: Path) -> list[dict]:
    cmd = [sys.executable, "-m", "llcuda_tui", "bench", "-m", str(args.model),
           "-p", str(args.n_prompt), "-n", str(args.n_gen), "-r", str(args.repetitions),
           "-ngl", str(args.ngl), "-b", str(args.batch_size), "-ub", str(args.ubatch_size),
           "-fa", {"1": "on", "0": "off"}[args.flash_attn], "-t", str(args.threads),
           "-o", "json"]  # fmt: skip
    env = {**os.environ, "LLCUDA_HOME": os.environ.get("LLCUDA_HOME", str(home))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"llcuda bench failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def compare(rounds: list[dict[str, list[dict]]], tolerance: float) -> list[dict]:
    """Per test: both tools' mean t/s over rounds and the ratio ours / llama-bench."""
    out = []
    tests = [_key(r) for r in rounds[0]["llama_bench"]]
    for test in tests:
        ref = [r["avg_ts"] for rd in rounds for r in rd["llama_bench"] if _key(r) == test]
        ours = [r["avg_ts"] for rd in rounds for r in rd["llcuda"] if _key(r) == test]
        sd_ref = [r["stddev_ts"] for rd in rounds for r in rd["llama_bench"] if _key(r) == test]
        sd_ours = [r["stddev_ts"] for rd in rounds for r in rd["llcuda"] if _key(r) == test]
        if not ref or not ours:
            continue
        ratio = statistics.mean(ours) / statistics.mean(ref)
        out.append({
            "test": test,
            "llama_bench_ts": statistics.mean(ref),
            "llama_bench_sd": statistics.mean(sd_ref),
            "llcuda_ts": statistics.mean(ours),
            "llcuda_sd": statistics.mean(sd_ours),
            "ratio": ratio,
            "within_tolerance": abs(ratio - 1) <= tolerance,
        })  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.model.is_file():
        sys.exit(f"model not found: {args.model}")
    if shutil.which(args.llama_bench) is None and not Path(args.llama_bench).is_file():
        sys.exit("llama-bench not on PATH (source /root/env.sh on the GPU machine)")
    rounds = []
    with tempfile.TemporaryDirectory(prefix="llcuda-vs-") as home:
        for i in range(args.rounds):
            order = ("llama_bench", "llcuda") if i % 2 == 0 else ("llcuda", "llama_bench")
            rd: dict[str, list[dict]] = {}
            for tool in order:
                print(f"round {i + 1}/{args.rounds}: {tool} ...", file=sys.stderr, flush=True)
                rd[tool] = run_llama_bench(args) if tool == "llama_bench" else run_llcuda(
                    args, Path(home))  # fmt: skip
            rounds.append(rd)
    rows = compare(rounds, args.tolerance)
    ours0 = rounds[0]["llcuda"][0] if rounds[0]["llcuda"] else {}
    ref0 = rounds[0]["llama_bench"][0] if rounds[0]["llama_bench"] else {}
    print(f"model: {args.model} ({ref0.get('model_type')}), gpu: {ref0.get('gpu_info')}")
    print(f"llama-bench build {ref0.get('build_commit')}, llcuda build {ours0.get('build_commit')}"
          f", flags {ours0.get('validity_flags')}")  # fmt: skip
    print("| test | llama-bench t/s | llcuda t/s | ours / llama-bench |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        mark = "" if r["within_tolerance"] else f"  (outside ±{args.tolerance * 100:.0f} %)"
        ref = f"{r['llama_bench_ts']:.2f} ± {r['llama_bench_sd']:.2f}"
        ours = f"{r['llcuda_ts']:.2f} ± {r['llcuda_sd']:.2f}"
        print(f"| {r['test']} | {ref} | {ours} | {r['ratio']:.3f}{mark} |")
    energy = [
        (r["test"], r.get("j_per_token"), r.get("energy_samples")) for r in rounds[0]["llcuda"]
    ]
    for test, jpt, n in energy:
        if jpt is not None:
            print(f"llcuda {test}: {jpt:.4f} J/token over {n} repetition(s)")
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                   "rounds": rounds, "comparison": rows}, indent=1))  # fmt: skip
        tmp.replace(args.json)
    return 0 if rows and all(r["within_tolerance"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
