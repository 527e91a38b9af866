"""What llama.cpp itself does with the configuration `bench/router_swap.py` refuses (#21): load
the model with every layer on the GPU and ask for a context of ``--seqs`` x ``--ctx`` tokens
(f16 KV cache), with no fit check in front. Prints whether the context was created.

Usage (GPU machine):
    python3 bench/llama_oom.py /root/models/8b-q4km.gguf [--ctx 131072] [--seqs 10]
"""

from __future__ import annotations

import argparse
import time

import llama_cpp as L


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--ctx", type=int, default=131072)
    ap.add_argument("--seqs", type=int, default=10)
    args = ap.parse_args()
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    mp.n_gpu_layers = 99
    t = time.perf_counter()
    model = L.llama_model_load_from_file(args.model.encode(), mp)
    print("model loaded", bool(model), f"{time.perf_counter() - t:.1f} s", flush=True)
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_seq_max, cp.n_batch = args.ctx * args.seqs, args.seqs, 512
    t = time.perf_counter()
    ctx = L.llama_init_from_model(model, cp)
    made = "created" if ctx else "FAILED (NULL)"
    took = time.perf_counter() - t
    print(f"context for {args.seqs} x {args.ctx} tokens: {made} {took:.1f} s")
    return 0 if ctx else 1


if __name__ == "__main__":
    raise SystemExit(main())
