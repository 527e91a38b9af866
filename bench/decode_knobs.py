"""Which llama.cpp setting explains a decode gap to llama-bench? Same model, same run.

Usage: python bench/decode_knobs.py MODEL.gguf [--tg 256]
Runs llama-bench tg (anchor) before and after, and llama-bench's tg method through our engine
with one model/context parameter changed at a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import llama_cpp as L

from llcuda_tui.core.engine import Engine, EngineConfig

_model_defaults = L.llama_model_default_params
_context_defaults = L.llama_context_default_params


def with_params(model_changes: dict, context_changes: dict) -> None:
    def mdefaults():  # type: ignore[no-untyped-def]
        p = _model_defaults()
        for k, v in model_changes.items():
            setattr(p, k, v)
        return p

    def cdefaults():  # type: ignore[no-untyped-def]
        p = _context_defaults()
        for k, v in context_changes.items():
            setattr(p, k, v)
        return p

    L.llama_model_default_params = mdefaults
    L.llama_context_default_params = cdefaults


def anchor(model: str, tg: int) -> float:
    exe = shutil.which("llama-bench") or sys.exit("llama-bench not on PATH")
    out = subprocess.run(
        [
            exe,
            "-m",
            model,
            "-p",
            "0",
            "-n",
            str(tg),
            "-r",
            "3",
            "-ngl",
            "99",
            "-fa",
            "1",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout)[0]["avg_ts"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tg", type=int, default=256)
    args = ap.parse_args()
    variants: list[tuple[str, dict, dict, dict]] = [
        ("engine defaults", {}, {}, {}),
        ("use_extra_bufts=False", {"use_extra_bufts": False}, {}, {}),
        ("backend_sampling off", {}, {}, {"backend_sampling": "off"}),
        ("n_threads=16", {}, {}, {"n_threads": 16}),
        ("n_threads=4", {}, {}, {"n_threads": 4}),
        ("n_ctx=256", {}, {}, {"n_ctx": 256}),
        ("n_ctx=4096", {}, {}, {"n_ctx": 4096}),
        ("n_ctx=16384", {}, {}, {"n_ctx": 16384}),
        ("n_ctx=4096 bs off", {}, {}, {"n_ctx": 4096, "backend_sampling": "off"}),
        ("n_batch=512", {}, {}, {"n_batch": 512}),
    ]
    base = anchor(args.model, args.tg)
    print(f"llama-bench tg{args.tg}: {base:.1f} t/s", flush=True)
    for name, mch, cch, ech in variants:
        with_params(mch, cch)
        kw = {"n_ctx": 1024, "n_batch": 2048, "flash_attn": "on", **ech}
        cfg = EngineConfig(Path(args.model), **kw)
        with Engine.load(cfg) as eng:
            eng.bench_gen(32)
            rates = [args.tg / eng.bench_gen(args.tg) for _ in range(3)]
        rate = statistics.mean(rates)
        print(f"{name:28} tg {rate:7.1f} t/s = {rate / base:.3f}x", flush=True)
    after = anchor(args.model, args.tg)
    print(f"llama-bench tg{args.tg} again: {after:.1f} t/s", flush=True)


if __name__ == "__main__":
    main()
