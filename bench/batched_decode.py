"""Batched decode of the worker's engine against ``llama-batched-bench``, like for like (#15).

Usage (GPU machine, after the device set-up and `bash .device/models.sh 8b`):
    python bench/batched_decode.py /root/models/8b-q4km.gguf [--npp 32] [--ntg 128]
        [--npl 4,8,16,32] [-r 2] [--fa on] [--json OUT.json]
CPU smoke test (no anchor):
    python bench/batched_decode.py <smollm2.gguf> --ngl 0 --npl 2,4 --ntg 16 --no-anchor

``llama-batched-bench -npp P -ntg T -npl N`` prefills N prompts of P tokens, then times T
decode steps of N tokens each: S_TG = N * T / T_TG. This script does the same to the batch
engine the worker decodes with (``BatchEngine``, loaded once with ``parallel`` = the largest
N): N requests of P random prompt tokens each (different per sequence, so no prefix is
shared; ``cache_prompt`` off), greedy, ``ignore_eos``, T tokens. Every token's arrival time is
taken on the engine thread; the decode phase starts when the last sequence has its first
token (all prompts fit one step, so they all get it in the same step) and ends when the first
sequence has its last; S_TG = the tokens that arrived in that window / its length. So it
counts what the worker's decode loop costs per step (batch building, sampling, detokenising,
callbacks) and not the prefill or the HTTP layer. Then llama-batched-bench runs on the same
model with the same flags, in the same run (the engine is closed first: each is alone on the
GPU), and the ratio per N prints.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llcuda_tui.core.engine import Chunk, EngineConfig, GenerationRequest, SamplingParams
from llcuda_tui.core.worker.batch import BatchEngine

GREEDY = SamplingParams(temperature=0.0, top_k=1)


def one_batch(engine: BatchEngine, npl: int, npp: int, ntg: int, vocab: int, seed: int) -> dict:
    """N concurrent generations; S_TG over the decode phase, as llama-batched-bench counts it."""
    rng = random.Random(seed)
    arrivals: list[list[float]] = [[] for _ in range(npl)]
    finished = [0]
    done = threading.Event()  # set on the engine thread: it must never block there

    def on_chunk_for(i: int):
        def on_chunk(chunk: Chunk) -> None:
            if chunk.prefill is None:
                arrivals[i].append(time.perf_counter())
            if chunk.record is not None:
                finished[0] += 1
                if finished[0] == npl:
                    done.set()

        return on_chunk

    # ids well inside the vocabulary and clear of the special tokens at its start
    requests = [
        GenerationRequest(
            tokens=[rng.randrange(300, vocab - 1) for _ in range(npp)],
            max_tokens=ntg,
            sampling=GREEDY,
            ignore_eos=True,
            cache_prompt=False,
        )
        for _ in range(npl)
    ]
    t_submit = time.perf_counter()
    handles = [engine.submit(r, on_chunk_for(i)) for i, r in enumerate(requests)]
    done.wait()
    for h in handles:
        h.result()
    t0 = max(a[0] for a in arrivals)
    t_end = max(a[-1] for a in arrivals)
    # the window in which every sequence decodes: from the last first token to the first
    # sequence's last token (a sequence that began earlier also ends earlier)
    t1 = min(a[-1] for a in arrivals)
    inside = sum(sum(1 for t in a if t0 < t <= t1) for a in arrivals)
    return {
        "s_tg": inside / (t1 - t0),
        "tokens": sum(len(a) for a in arrivals),
        "first_token_spread_ms": (t0 - min(a[0] for a in arrivals)) * 1000,
        "aggregate_tps": sum(len(a) for a in arrivals) / (t_end - t_submit),
    }


def ours(args: argparse.Namespace, npls: list[int]) -> dict[int, list[float]]:
    cfg = EngineConfig(
        Path(args.model),
        n_gpu_layers=args.ngl,
        n_ctx=args.npp + args.ntg + 16,
        n_batch=2048,
        n_ubatch=512,
        flash_attn=args.fa,
    )
    out: dict[int, list[float]] = {n: [] for n in npls}
    with BatchEngine.load(cfg, parallel=max(npls)) as engine:
        vocab = engine.info.n_vocab
        one_batch(engine, max(npls), args.npp, 16, vocab, seed=0)  # warm-up: graphs, clocks
        for r in range(args.reps):
            for n in npls:
                res = one_batch(engine, n, args.npp, args.ntg, vocab, seed=1000 * r + n)
                out[n].append(res["s_tg"])
                print(
                    f"  ours  npl={n:<3} round {r}: S_TG {res['s_tg']:8.1f} t/s  "
                    f"(aggregate incl. prefill {res['aggregate_tps']:.1f}, first-token spread "
                    f"{res['first_token_spread_ms']:.1f} ms)",
                    flush=True,
                )
    return out


_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|" + r"\s*([\d.]+)\s*\|" * 7)


def anchor(args: argparse.Namespace, npls: list[int]) -> dict[int, float]:
    exe = args.llama_batched_bench or shutil.which("llama-batched-bench")
    if exe is None:
        raise SystemExit("llama-batched-bench not found (--llama-batched-bench PATH)")
    cmd = [
        exe, "-m", args.model, "-c", str((args.npp + args.ntg + 16) * max(npls)),
        "-b", "2048", "-ub", "512", "-ngl", "99" if args.ngl != 0 else "0",
        "-fa", args.fa, "-npp", str(args.npp), "-ntg", str(args.ntg),
        "-npl", ",".join(map(str, npls)),
    ]  # fmt: skip
    print("  anchor:", " ".join(cmd), flush=True)
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    got: dict[int, float] = {}
    for line in text.splitlines():
        m = _ROW.match(line.strip())
        if m:  # | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |
            got[int(m.group(3))] = float(m.group(8))
    if set(got) != set(npls):
        raise SystemExit(f"could not read llama-batched-bench's table:\n{text}")
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--npp", type=int, default=32)
    ap.add_argument("--ntg", type=int, default=128)
    ap.add_argument("--npl", default="4,8,16,32")
    ap.add_argument("-r", "--reps", type=int, default=2)
    ap.add_argument("--ngl", type=int, default=-1)
    ap.add_argument("--fa", default="on", choices=["on", "off", "auto"])
    ap.add_argument("--no-anchor", action="store_true", help="skip llama-batched-bench")
    ap.add_argument("--llama-batched-bench", help="its path (default: on PATH)")
    ap.add_argument("--json")
    args = ap.parse_args()
    npls = [int(x) for x in args.npl.split(",")]
    mine = ours(args, npls)
    theirs = {} if args.no_anchor else anchor(args, npls)
    rows = []
    print(f"\n{'npl':>4} {'ours S_TG':>10} {'llama-batched-bench':>20} {'ratio':>7}")
    for n in npls:
        med = statistics.median(mine[n])
        ref = theirs.get(n)
        ratio = med / ref if ref else None
        rows.append({"npl": n, "ours": mine[n], "ours_median": med, "anchor": ref, "ratio": ratio})
        r = f"{ratio:7.3f}" if ratio else "      -"
        print(f"{n:>4} {med:>10.1f} {ref or 0:>20.1f} {r}")
    doc = {"model": args.model, "npp": args.npp, "ntg": args.ntg, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
