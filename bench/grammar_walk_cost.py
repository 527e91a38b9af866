"""What a rejected token costs the grammar: the prefix walk against the full pass (#17).

Usage:
    python bench/grammar_walk_cost.py MODEL.gguf [--ngl 0] [-n 128] [--threads N]
    python bench/grammar_walk_cost.py --write-filler OUT.gguf [--vocab 128256] [--embd 64]

Runs the 5-field schema's greedy reply (bench/grammar_speed.py's SCHEMA and prompt) with the
lazy check, and at every token whose own pick the grammar refuses times both ways of finding
the allowed tokens on the same grammar state: the walk over the vocabulary's prefix forest
(core/engine/_grammar_walk.py) and one grammar pass over the whole vocabulary (which the
sampler did before). Prints the medians and means in ms, and checks that both give the same
set. ``--write-filler`` writes the CPU stand-in for the GPU machine's synthetic 8B: random
weights, tiny layers, its byte + filler vocabulary (tests/gguf_factory.py, filler_vocab).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_filler(out: str, n_vocab: int, n_embd: int) -> None:
    from tests.gguf_factory import filler_vocab, write_tiny_llama

    write_tiny_llama(
        Path(out), n_embd=n_embd, n_ff=2 * n_embd, vocabulary=filler_vocab(n_vocab),
        name="synthetic-filler", seed=0,
    )  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--write-filler", metavar="OUT")
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--embd", type=int, default=64)
    ap.add_argument("--ngl", type=int, default=0)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.write_filler:
        write_filler(args.write_filler, args.vocab, args.embd)
        return 0
    if not args.model:
        ap.error("a model, or --write-filler OUT")

    import llama_cpp as L
    import numpy as np

    from bench.grammar_speed import MESSAGES, SCHEMA
    from llcuda_tui.core.engine import (
        Engine,
        EngineConfig,
        GenerationRequest,
        SamplingParams,
        build_sampler,
        json_schema_grammar,
    )
    from llcuda_tui.core.engine._grammar_walk import TOKEN_DATA

    params = SamplingParams(temperature=0.0, grammar=json_schema_grammar(SCHEMA))
    # the logits row is read on the host: no backend (GPU) sampler on the context
    cfg = EngineConfig(args.model, n_ctx=2048, n_gpu_layers=args.ngl, n_threads=args.threads,
                       backend_sampling="off")  # fmt: skip
    with Engine.load(cfg) as engine:
        req = GenerationRequest(messages=MESSAGES, max_tokens=args.n)

        def run() -> dict[str, float]:
            ctx, n_vocab = engine.ctx_ptr, engine.info.n_vocab
            vocab = L.llama_model_get_vocab(engine.model_ptr)
            t = time.perf_counter()
            sampler = build_sampler(params, n_vocab, vocab)
            forest_s = time.perf_counter() - t
            walk = sampler.walk
            assert walk is not None
            cur = np.zeros(n_vocab, dtype=TOKEN_DATA)
            arr = L.llama_token_data_array(
                cur.ctypes.data_as(L.llama_token_data_p), n_vocab, -1, False
            )
            L.llama_memory_clear(L.llama_get_memory(ctx), True)
            prompt = engine.prompt_tokens(req)
            buf = (ctypes.c_int32 * len(prompt))(*prompt)
            assert L.llama_decode(ctx, L.llama_batch_get_one(buf, len(prompt))) == 0
            one = (ctypes.c_int32 * 1)()
            walk_ms: list[float] = []
            full_ms: list[float] = []
            checked: list[int] = []
            tokens = 0
            for _ in range(args.n):
                row = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), (n_vocab,))
                own = int(row.argmax())
                if not sampler.allows(own):
                    before = walk.checked
                    t = time.perf_counter()
                    got = walk.rest(walk.first())
                    walk_ms.append(1e3 * (time.perf_counter() - t))
                    checked.append(walk.checked - before)
                    t = time.perf_counter()
                    cur["id"], cur["logit"], cur["p"] = np.arange(n_vocab), 0.0, 0.0
                    arr.size, arr.selected, arr.sorted = n_vocab, -1, False
                    L.llama_sampler_apply(sampler.grammar, ctypes.byref(arr))
                    full_ms.append(1e3 * (time.perf_counter() - t))
                    assert got.tolist() == np.flatnonzero(cur["logit"] != -np.inf).tolist()
                token = sampler.sample(ctx, -1)
                tokens += 1
                if L.llama_vocab_is_eog(vocab, token):
                    break
                one[0] = token
                assert L.llama_decode(ctx, L.llama_batch_get_one(one, 1)) == 0
            sampler.close()
            return {
                "tokens": tokens,
                "rejected": len(walk_ms),
                "forest_build_s": forest_s,
                "walk_ms_median": statistics.median(walk_ms) if walk_ms else 0.0,
                "walk_ms_mean": statistics.mean(walk_ms) if walk_ms else 0.0,
                "walk_candidates_median": statistics.median(checked) if checked else 0,
                "full_pass_ms_median": statistics.median(full_ms) if full_ms else 0.0,
                "full_pass_ms_mean": statistics.mean(full_ms) if full_ms else 0.0,
            }

        out = engine.run_on_engine(run)
    print(json.dumps({"model": args.model, "n_vocab": engine.info.n_vocab, **out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
