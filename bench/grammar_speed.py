"""Grammar-constrained greedy decoding against unconstrained, same model, same prompt (#17).

Usage (the acceptance point is on the GPU machine's 8B, whole model offloaded):
    python bench/grammar_speed.py MODEL.gguf [--ngl -1] [--ctx 2048] [-n 128] [-r 3]
        [--threads N] [--json OUT.json]

The schema has 5 fields (string, integer, boolean, enum, array of strings). Each round runs
one unconstrained greedy reply with ``ignore_eos`` for ``-n`` tokens and one constrained reply
(it ends when the object closes), and compares decode tokens/s from the run records. Prints
both means and the ratio constrained / unconstrained, and how many of the constrained tokens
the grammar rejected (the model's own pick was not allowed), how many of those the prefix walk
settled (core/engine/_grammar_walk.py) and how many took the full pass over the whole
vocabulary (core/engine/_sampling.py, Sampler); exit code 0 when the ratio is >= 0.9.

A CPU stand-in for the GPU machine's synthetic 8B (random weights, its byte + filler
vocabulary of 128k tokens, tiny layers): ``python bench/grammar_walk_cost.py --write-filler
OUT.gguf``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "member": {"type": "boolean"},
        "colour": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 4},
    },
    "required": ["name", "age", "member", "colour", "tags"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "Describe a fictional club member as a JSON object."}]


def main() -> int:
    from llcuda_tui.core.engine import (
        Engine,
        EngineConfig,
        GenerationRequest,
        SamplingParams,
        json_schema_grammar,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--ngl", type=int, default=-1)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = default)")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    grammar = json_schema_grammar(SCHEMA)
    cfg = EngineConfig(args.model, n_ctx=args.ctx, n_gpu_layers=args.ngl, n_threads=args.threads)
    free: list[float] = []
    constrained: list[float] = []
    rejections = full_passes = walks = constrained_tokens = 0
    with Engine.load(cfg) as engine:
        for _ in range(args.r):
            _, rec = engine.generate(
                GenerationRequest(messages=MESSAGES, max_tokens=args.n, ignore_eos=True,
                                  sampling=SamplingParams(temperature=0.0))
            )  # fmt: skip
            free.append(rec.decode_tokens_per_s)
            text, rec = engine.generate(
                GenerationRequest(messages=MESSAGES, max_tokens=4 * args.n,
                                  sampling=SamplingParams(temperature=0.0, grammar=grammar))
            )  # fmt: skip
            if rec.stop_reason == "eos":
                json.loads(text)  # the point of the grammar
            constrained.append(rec.decode_tokens_per_s)
            rejections += rec.grammar_rejections
            full_passes += rec.grammar_full_passes
            walks += getattr(rec, "grammar_walks", 0)  # 0 before the walk (comparisons)
            constrained_tokens += rec.generated_tokens
        backend = engine.info.backend_sampling
    ratio = statistics.mean(constrained) / statistics.mean(free)
    out = {
        "model": args.model,
        "unconstrained_tok_s": statistics.mean(free),
        "constrained_tok_s": statistics.mean(constrained),
        "ratio": ratio,
        "constrained_tokens": constrained_tokens,
        "grammar_rejections": rejections,
        "grammar_full_passes": full_passes,
        "grammar_walks": walks,
        "rejected_share": rejections / constrained_tokens if constrained_tokens else 0.0,
        "backend_sampling": backend,
        "rounds": args.r,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0 if ratio >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
