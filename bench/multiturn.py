"""A multi-turn chat with a growing history: our worker against llama-server, same requests.

Usage (GPU machine, after the device set-up and `bash .device/models.sh 8b`):
    python bench/multiturn.py /root/models/8b-q4km.gguf [--turns 12] [--reply 64] [--words 120]
CPU, no anchor (the starter model; the cache-hit counts are what matter there):
    python bench/multiturn.py smollm2-135m-instruct --no-llama-server --turns 8 --reply 16
Through the TUI's engine process instead of the worker (or both, one after the other):
    python bench/multiturn.py MODEL --engine process|both

Each turn sends the whole conversation so far (system, every user turn, every reply as the
server returned it) plus a new user turn of about ``--words`` words, streams a greedy reply of
exactly ``--reply`` tokens (ignore-eos), and records the time to the first content delta at the
client. Both servers run one slot (`llcuda serve --parallel 1`, `llama-server -np 1`), one after
the other, alone on the GPU. Prints TTFT per turn, the cached prompt tokens our worker reports
(`usage.prompt_tokens_details.cached_tokens`), and the engine issue's ratios:
  our TTFT at the last turn / our first turn                      (target <= 1.2)
  mean TTFT of our last four turns / llama-server's               (target <= 1.0)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.worker_vs_llama_server import Proc, _free_port, _wait_healthy

TEXT = (
    "the engine keeps every cell of the conversation it has already seen and decodes only "
    "what is new so a long chat answers as quickly at its end as at its start while the "
    "history grows turn after turn with questions about models memory speed and files"
)


def user_turn(i: int, words: int) -> str:
    words_of = TEXT.split(" ")
    body = " ".join(words_of[(i * 7 + k) % len(words_of)] for k in range(words))
    return f"Turn {i}: {body}. What follows?"


def chat(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    import httpx

    messages: list[dict[str, str]] = [{"role": "system", "content": "You are terse."}]
    turns = []
    with httpx.Client(base_url=url, timeout=600) as client:
        for i in range(args.turns):
            messages.append({"role": "user", "content": user_turn(i, args.words)})
            body = {
                "model": "m",
                "messages": messages,
                "max_tokens": args.reply,
                "temperature": 0,
                "top_k": 1,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            text, ttft, usage = [], None, {}
            t0 = time.perf_counter()
            with client.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    sys.exit(f"turn {i + 1}: HTTP {r.status_code}: {r.read().decode()[:500]}")
                for line in r.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    for choice in event.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            if ttft is None:
                                ttft = time.perf_counter() - t0
                            text.append(piece)
                    usage = event.get("usage") or usage
            reply = "".join(text)
            messages.append({"role": "assistant", "content": reply})
            details = usage.get("prompt_tokens_details") or {}
            turns.append(
                {
                    "turn": i + 1,
                    "ttft_ms": (ttft or 0.0) * 1000,
                    "prompt_tokens": usage.get("prompt_tokens"),
                    "cached_tokens": details.get("cached_tokens"),
                }
            )
            # one line per turn as it happens: a run cut short still shows how the prompt grew
            print(f"  {url} turn {i + 1}: {turns[-1]}", file=sys.stderr, flush=True)
    return turns


def through_process(model: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The same chat through the TUI's engine process (``ProcessEngine``, as the Chat screen
    loads it): chat messages in, chunks back over its pipe; TTFT is taken in this process when
    the first chunk with text arrives, as the TUI's reader sees it."""
    from llcuda_tui.core.engine import EngineConfig, GenerationRequest, SamplingParams
    from llcuda_tui.core.engine._process import ProcessEngine

    cfg = EngineConfig(Path(model), n_ctx=args.ctx, n_batch=2048)
    if args.ngl is not None:
        cfg = EngineConfig(Path(model), n_ctx=args.ctx, n_batch=2048, n_gpu_layers=args.ngl)
    greedy = SamplingParams(temperature=0.0, top_k=1)
    messages: list[dict[str, str]] = [{"role": "system", "content": "You are terse."}]
    turns = []
    with ProcessEngine.load(cfg) as engine:
        for i in range(args.turns):
            messages.append({"role": "user", "content": user_turn(i, args.words)})
            request = GenerationRequest(
                messages=list(messages), max_tokens=args.reply, sampling=greedy, ignore_eos=True
            )
            text, ttft, record = [], None, None
            t0 = time.perf_counter()
            for chunk in engine.stream(request):
                if chunk.text:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    text.append(chunk.text)
                record = chunk.record or record
            messages.append({"role": "assistant", "content": "".join(text)})
            assert record is not None
            turns.append(
                {
                    "turn": i + 1,
                    "ttft_ms": (ttft or 0.0) * 1000,
                    "prompt_tokens": record.prompt_tokens,
                    "cached_tokens": record.prompt_tokens_cached,
                }
            )
            print(f"  engine process turn {i + 1}: {turns[-1]}", file=sys.stderr, flush=True)
    return turns


def ours(model: str, args: argparse.Namespace, home: Path) -> list[dict[str, Any]]:
    cmd = [
        sys.executable, "-m", "llcuda_tui", "serve", "-m", model, "--port", "0",
        "--parallel", "1", "--ctx", str(args.ctx), *args.worker_arg,
    ]  # fmt: skip
    if args.ngl is not None:
        cmd += ["--ngl", str(args.ngl)]
    env = {**os.environ, "LLCUDA_HOME": str(home)}
    proc = Proc(cmd, home / "worker.log", env, pipe=True)
    try:
        url = proc.wait_line(" ready on ", 600).split(" ready on ")[1].split()[0]
        return chat(url, args)
    finally:
        proc.stop()


def llama_server(model: str, args: argparse.Namespace, home: Path) -> list[dict[str, Any]]:
    import shutil

    exe = shutil.which("llama-server")
    if exe is None:
        sys.exit("llama-server not on PATH (source /root/env.sh on the GPU machine)")
    port = _free_port()
    ngl = "99" if args.ngl is None or args.ngl < 0 else str(args.ngl)
    cmd = [
        exe, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-np", "1",
        "-c", str(args.ctx), "-ngl", ngl, "-fa", "auto",
    ]  # fmt: skip
    proc = Proc(cmd, home / "llama-server.log")
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc)
        return chat(url, args)
    finally:
        proc.stop()


def report(side: str, a: list[dict[str, Any]], anchor_turns: list[dict[str, Any]] | None) -> None:
    """One side's table and the engine issue's two ratios."""
    name = "ours (worker)" if side == "ours" else "ours (TUI engine process)"
    print(f"\n{name}")
    print(f"{'turn':>4} {'prompt':>7} {'cached':>7} {'ours ms':>8} {'llama-server ms':>16}")
    for i, t in enumerate(a):
        anchor = (anchor_turns or [{}] * len(a))[i].get("ttft_ms")
        anchor_s = f"{anchor:16.1f}" if anchor is not None else f"{'-':>16}"
        print(
            f"{t['turn']:>4} {t['prompt_tokens'] or 0:>7} {t['cached_tokens'] or 0:>7} "
            f"{t['ttft_ms']:8.1f} {anchor_s}"
        )
    last_over_first = a[-1]["ttft_ms"] / a[0]["ttft_ms"] if a[0]["ttft_ms"] else float("nan")
    print(f"{name}: last turn / first turn TTFT = {last_over_first:.2f} (target <= 1.2)")
    if anchor_turns:
        ours4 = statistics.mean(t["ttft_ms"] for t in a[-4:])
        theirs4 = statistics.mean(t["ttft_ms"] for t in anchor_turns[-4:])
        print(
            f"mean TTFT of the last four turns: {name} {ours4:.1f} ms, llama-server "
            f"{theirs4:.1f} ms, ratio {ours4 / theirs4:.2f} (target <= 1.0)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--turns", type=int, default=12)
    ap.add_argument("--reply", type=int, default=64, help="tokens per reply")
    ap.add_argument("--words", type=int, default=120, help="words per user turn")
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--ngl", type=int)
    ap.add_argument("--no-llama-server", action="store_true")
    ap.add_argument(
        "--engine",
        choices=["worker", "process", "both"],
        default="worker",
        help="ours through `llcuda serve`, through the TUI's engine process, or both",
    )
    ap.add_argument("--worker-arg", action="append", default=[])
    ap.add_argument("--json", help="write the turns here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="llcuda-multiturn-") as tmp:
        home = Path(tmp)
        results: dict[str, list[dict[str, Any]]] = {}
        if args.engine in ("worker", "both"):
            results["ours"] = ours(args.model, args, home)
        if args.engine in ("process", "both"):
            results["engine_process"] = through_process(args.model, args)
        if not args.no_llama_server:
            results["llama_server"] = llama_server(args.model, args, home)
    for side in ("ours", "engine_process"):
        if side in results:
            report(side, results[side], results.get("llama_server"))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
