"""Where does decode time go? One model, several engine variants, same run.

Usage: python bench/decode_variants.py MODEL.gguf [--tg 256] [--depth 3840]

Prints tokens/s for llama-bench's tg method (no sampling) and for the real generation path,
with the GPU backend sampler attached or not, at depth 0 and at --depth (KV filled first).
"""

from __future__ import annotations

import argparse
import ctypes
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest, SamplingParams


def tg_at_depth(eng: Engine, depth: int, n_gen: int) -> float:
    """llama-bench -d DEPTH -n N: fill the KV with DEPTH random tokens, then decode N."""
    import llama_cpp as L

    def run() -> float:
        L.llama_memory_clear(eng._mem, True)
        n_vocab = eng.info.n_vocab
        done = 0
        while done < depth:
            n = min(2048, depth - done)
            arr = (ctypes.c_int32 * n)(*[random.randrange(n_vocab) for _ in range(n)])
            L.llama_decode(eng.ctx_ptr, L.llama_batch_get_one(arr, n))
            done += n
        L.llama_synchronize(eng.ctx_ptr)
        one = (ctypes.c_int32 * 1)(1)
        batch = L.llama_batch_get_one(one, 1)
        t0 = time.perf_counter()
        for _ in range(n_gen):
            one[0] = random.randrange(n_vocab)
            L.llama_decode(eng.ctx_ptr, batch)
            L.llama_synchronize(eng.ctx_ptr)
        return n_gen / (time.perf_counter() - t0)

    return float(eng.run_on_engine(run))


def stream_tg(eng: Engine, n_gen: int) -> float:
    req = GenerationRequest(tokens=[1000], max_tokens=n_gen, ignore_eos=True,
                            sampling=SamplingParams(temperature=0.0))  # fmt: skip
    eng.generate(req)
    return eng.generate(req)[1].decode_tokens_per_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tg", type=int, default=256)
    ap.add_argument("--depth", type=int, default=3840)
    args = ap.parse_args()
    for backend_sampling in ("on", "off"):
        for n_ctx in (1024, 4352):
            cfg = EngineConfig(Path(args.model), n_ctx=n_ctx, n_batch=2048, flash_attn="on",
                               backend_sampling=backend_sampling)  # fmt: skip
            with Engine.load(cfg) as eng:
                eng.bench_gen(16)
                bench = args.tg / eng.bench_gen(args.tg)
                stream = stream_tg(eng, args.tg)
                deep = tg_at_depth(eng, args.depth, args.tg) if n_ctx > args.depth else 0.0
                print(f"backend_sampling={backend_sampling:3} n_ctx={n_ctx:5}: "
                      f"tg method {bench:7.1f}  stream {stream:7.1f}  "
                      f"tg method at depth {args.depth}: {deep:7.1f} t/s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
