"""Speculative decoding on an edit workload: decode t/s with and without, in one run.

Usage:
    python bench/speculative.py MODEL.gguf [--draft DRAFT.gguf ...] [--no-ngram] [-n 400]
        [-r 3] [--draft-max 16] [-ngl 0] [-t N] [--json OUT.json]

The prompt holds a ~400-token text and asks, as a chat turn, for it back with small changes
(the edit workload of issue #18). Every mode's engine is loaded at once and warmed up; then
``-r`` rounds of greedy generations of ``-n`` tokens run interleaved (one of each mode per
round, so the shared machine's load touches them alike): ``plain`` (no speculation),
``ngram`` (prompt lookup) and one ``draft:<file>`` per ``--draft``. It prints decode t/s (the
median of the rounds and the range), the acceptance rate, the ratio over plain (the median of
the per-round ratios and the range), and whether the text equals plain's (greedy: it must).

GPU points (not run on the CPU VM): ``--draft TARGET.gguf`` (the target as its own draft)
shows the overhead ceiling; ``--draft RANDOM.gguf`` with a random-weight GGUF sharing the
target's vocabulary is the always-rejected draft (the adaptive length must keep it within
5 % of plain). A llama-server side-by-side is not part of this script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llcuda_tui.core.bench import compare_speculation  # noqa: E402
from llcuda_tui.core.engine import EngineConfig, SpecSettings  # noqa: E402

if TYPE_CHECKING:
    from llcuda_tui.core.bench import SpecModeResult


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--draft", type=Path, action="append", default=[], help="a draft model")
    p.add_argument("--no-ngram", action="store_true", help="skip the prompt-lookup mode")
    p.add_argument("-n", "--n-gen", type=int, default=400)
    p.add_argument("-r", "--repetitions", type=int, default=3)
    p.add_argument("--draft-max", type=int, default=16)
    p.add_argument("-ngl", "--ngl", type=int, default=0)
    p.add_argument("-t", "--threads", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    specs = [] if args.no_ngram else [SpecSettings(mode="ngram", draft_max=args.draft_max)]
    for d in args.draft:
        specs.append(
            SpecSettings(
                mode="draft", draft_model=d, draft_max=args.draft_max, draft_n_gpu_layers=args.ngl
            )
        )
    config = EngineConfig(args.model, n_ctx=2048, n_gpu_layers=args.ngl, n_threads=args.threads)
    print(
        f"model {args.model.name}, -n {args.n_gen}, -r {args.repetitions}, "
        f"draft_max {args.draft_max}, ngl {args.ngl}, threads {args.threads}"
    )
    print(
        f"{'mode':<20} {'decode t/s (range)':>20} {'accepted':>9} "
        f"{'vs plain (range)':>20} {'same text':>10}"
    )

    def show(r: SpecModeResult) -> None:
        lo, hi = r.decode_tokens_per_s_min, r.decode_tokens_per_s_max
        tps = f"{r.decode_tokens_per_s:.1f} ({lo:.1f}-{hi:.1f})"
        ratio = f"{r.ratio:.2f}x ({r.ratio_min:.2f}-{r.ratio_max:.2f})"
        print(
            f"{r.mode:<20} {tps:>20} {100 * r.acceptance_rate:>8.0f}% {ratio:>20} "
            f"{r.same_text!s:>10}",
            flush=True,
        )

    results = compare_speculation(config, specs, args.n_gen, args.repetitions, show)
    if args.json:
        rows = [{**asdict(r), "acceptance_rate": r.acceptance_rate} for r in results]
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(r.same_text for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
