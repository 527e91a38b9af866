"""Is a second loaded engine as fast as the first? Decode t/s of three engines on one model.

A is the first in-process engine loaded, B a second in-process engine, P an engine process
(what the TUI chats through). Rounds run one greedy reply on each, in rotating order, so drift
and position hit all three alike; it prints B's and P's cost against A (median of the rounds,
95 % bootstrap interval). `bench/tui_streaming.py` compares the app's engine with a headless
engine loaded before it: this tells how much of that gap is the second engine, not the app.

    python3 bench/second_engine.py /root/models/small262k-q4km.gguf --rounds 20 -n 1536
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tui_streaming import PROMPTS, median_ci, request_for


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("-n", "--tokens", type=int, default=1536)
    p.add_argument("--ngl", type=int, default=-1)
    p.add_argument("--ctx", type=int, default=2048)
    args = p.parse_args(argv)

    from llcuda_tui.core.engine import Engine, EngineConfig, ProcessEngine

    cfg = EngineConfig(model_path=args.model, n_gpu_layers=args.ngl, n_ctx=args.ctx)
    engines = {"A": Engine.load(cfg), "P": ProcessEngine.load(cfg), "B": Engine.load(cfg)}
    try:
        request = request_for(PROMPTS["prose"], args.tokens)
        for engine in engines.values():  # warm-up
            engine.generate(request)
        rates: dict[str, list[float]] = {name: [] for name in engines}
        order = list(engines)
        for _ in range(args.rounds):
            for name in order:
                rates[name].append(engines[name].generate(request)[1].decode_tokens_per_s)
            order = order[1:] + order[:1]
    finally:
        for engine in engines.values():
            engine.close()
    print(f"# {args.model.name}, ngl {args.ngl}, {args.rounds} rounds x {args.tokens} tokens")
    for name in ("B", "P"):
        costs = [(1 - b / a) * 100 for a, b in zip(rates["A"], rates[name], strict=True)]
        lo, hi = median_ci(costs)
        print(
            f"{name} vs A: {statistics.median(costs):+.2f} % [{lo:+.2f}, {hi:+.2f}] "
            f"(A {statistics.median(rates['A']):.1f} t/s, {name} "
            f"{statistics.median(rates[name]):.1f} t/s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
