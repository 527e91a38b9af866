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
5 % of plain). ``--llama-server`` then runs llama-server (from PATH) on the same workload with
the same draft settings (``-md DRAFT --spec-type draft-simple --spec-draft-n-max N
--spec-draft-n-min 1 --spec-draft-p-min 0``; ngram is ``--spec-type ngram-simple``, its
nearest to our prompt lookup; plain is neither), one server per mode, alone on the machine:
the same chat turn (its text sized with llama-server's own /tokenize), greedy, ``ignore_eos``,
no prompt cache; decode t/s and the drafted / accepted counts come from its ``timings``.
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
from llcuda_tui.core.bench._speculative import edit_prompt  # noqa: E402
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
    p.add_argument("--llama-server", action="store_true", help="the side-by-side (see above)")
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
    rows = [{**asdict(r), "acceptance_rate": r.acceptance_rate} for r in results]
    server_rows = llama_server_side(args) if args.llama_server else []
    if args.json:
        args.json.write_text(json.dumps({"ours": rows, "llama_server": server_rows}, indent=2))
    return 0 if all(r.same_text for r in results) else 1


def llama_server_side(args: argparse.Namespace) -> list[dict[str, object]]:
    """The same workload on llama-server, plain and with each ``--draft`` (see the docstring)."""
    import shutil
    import statistics
    import tempfile

    import httpx

    from bench.worker_vs_llama_server import Proc, _free_port, _wait_healthy

    exe = shutil.which("llama-server")
    if exe is None:
        raise SystemExit("llama-server is not on PATH")
    ngl = "99" if args.ngl < 0 else str(args.ngl)
    out: list[dict[str, object]] = []
    plain_tps = 0.0
    print("\nllama-server, same workload and draft settings")
    modes: list[Path | str | None] = [None, *args.draft]
    if not args.no_ngram:
        modes.insert(1, "ngram")
    for draft in modes:
        port = _free_port()
        cmd = [
            exe, "-m", str(args.model), "--host", "127.0.0.1", "--port", str(port), "-np", "1",
            "-c", "2048", "-ngl", ngl, "-fa", "auto", "-t", str(args.threads),
        ]  # fmt: skip
        if draft == "ngram":
            cmd += ["--spec-type", "ngram-simple", "--spec-draft-n-max", str(args.draft_max)]
        elif isinstance(draft, Path):
            cmd += ["-md", str(draft), "-ngld", ngl, "--spec-type", "draft-simple"]
            cmd += ["--spec-draft-n-max", str(args.draft_max), "--spec-draft-n-min", "1"]
            cmd += ["--spec-draft-p-min", "0"]
        with tempfile.TemporaryDirectory() as tmp:
            proc = Proc(cmd, Path(tmp) / "llama-server.log")
            try:
                url = f"http://127.0.0.1:{port}"
                _wait_healthy(url, proc)
                with httpx.Client(base_url=url, timeout=600) as client:

                    def count(text: str) -> int:
                        r = client.post("/tokenize", json={"content": text})
                        return len(r.json()["tokens"])

                    body = {
                        "messages": [{"role": "user", "content": edit_prompt(count)}],
                        "max_tokens": args.n_gen, "temperature": 0, "top_k": 1,
                        "ignore_eos": True, "cache_prompt": False,
                    }  # fmt: skip
                    client.post("/v1/chat/completions", json={**body, "max_tokens": 16})
                    tps, drafted, accepted = [], 0, 0
                    for _ in range(args.repetitions):
                        t = client.post("/v1/chat/completions", json=body).json()["timings"]
                        tps.append(float(t["predicted_per_second"]))
                        drafted += int(t.get("draft_n", 0))
                        accepted += int(t.get("draft_n_accepted", 0))
            finally:
                proc.stop()
        med = statistics.median(tps)
        plain_tps = plain_tps or med
        mode = draft.name if isinstance(draft, Path) else (draft or "plain")
        rate = accepted / drafted if drafted else 0.0
        out.append({"mode": mode, "decode_tps": med, "acceptance_rate": rate, "tps": tps})
        print(
            f"{mode:<20} {med:>10.1f} t/s ({min(tps):.1f}-{max(tps):.1f}) "
            f"{100 * rate:>5.0f}% accepted  {med / plain_tps:.2f}x plain",
            flush=True,
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
