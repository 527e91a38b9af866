"""What a streaming reply costs the TUI's UI thread, without a model or a GPU.

A stand-in engine paces tokens at a fixed rate (default 250 tok/s, words of a fixed prose or
Markdown reply) into the Chat screen of a running app in a Pilot session; the bench reads the
UI thread's CPU time (``time.thread_time``) while the reply streams, and prints it as a share
of one core, per reply and in total. CPU time, not wall time, so a loaded machine changes it
little (on this project's 2-core VM, where ``tui_streaming.py`` cannot resolve 2 %).

Two windows: "reply" (from the reply's start until the chat is idle again: the turns' mounts,
the streaming, the Markdown render at the end) and "decode" (from the first token to the last,
read by the engine's thread from the UI thread's CPU clock): the second is the UI work that
runs beside the engine's decoding, what can slow it on a machine without a core to spare.
Run it with another checkout first on the path to compare two versions of the streaming path:

    .venv/bin/python bench/tui_ui_cost.py --rounds 5
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/tui_ui_cost.py --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROSE = (
    "The keeper climbed the stairs as the storm rolled in from the west, counting each "
    "step out of habit, and at the top he trimmed the wick and wiped the salt from the glass. "
)
MARKDOWN = (
    "## Comprehensions\n\nA list comprehension builds a list in one expression:\n\n"
    "- `[x * 2 for x in xs]` doubles each item\n- `[x for x in xs if x]` keeps the truthy ones\n\n"
    "| form | result |\n|---|---|\n| list | `[...]` |\n| set | `{...}` |\n\n"
    "```python\ndef evens(xs):\n    return [x for x in xs if x % 2 == 0]\n```\n\n"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=250.0, help="tokens per second")
    p.add_argument("-n", "--tokens", type=int, default=750, help="tokens per reply")
    p.add_argument("--rounds", type=int, default=3, help="replies per prompt kind")
    p.add_argument(
        "--ttft-ms", type=float, default=0.0, help="time to the first token (a prefill), ms"
    )
    p.add_argument("--size", default="120x40", help="terminal size, COLSxROWS")
    p.add_argument(
        "--same-chat",
        action="store_true",
        help="every reply in one conversation (the transcript grows), not a new one each",
    )
    return p.parse_args(argv)


def tokens_of(text: str, n: int) -> list[str]:
    """``n`` tokens of about 4 characters, cycling through ``text``."""
    pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
    return [pieces[i % len(pieces)] for i in range(n)]


class PacedEngine:
    """What the Chat screen uses of an engine; its replies come at ``rate`` tokens a second."""

    def __init__(self, rate: float, tokens: int, ttft_s: float = 0.0) -> None:
        from tests.snapshots.test_snapshots import StandInEngine

        self.info = StandInEngine.info
        self.rate, self.n, self.ttft_s = rate, tokens, max(ttft_s, 1 / rate)
        self.text = PROSE
        self.decode_ui_shares: list[float] = []
        """Per reply: the UI thread's CPU from its first token to its last, a share of a core."""

    def count_tokens(self, request: Any) -> int:
        return sum(4 + len(m["content"]) // 4 for m in request.messages)

    def submit(self, request: Any, on_chunk: Any, on_error: Any) -> Any:
        from llcuda_tui.core.engine import Chunk, GenerationHandle, RunRecord

        handle = GenerationHandle(request)
        tokens = tokens_of(self.text, self.n)
        ui_clock = time.pthread_getcpuclockid(threading.main_thread().ident or 0)

        def run() -> None:
            t0 = time.perf_counter() + self.ttft_s - 1 / self.rate  # the first token at ttft
            times: list[float] = []
            ui0 = 0.0
            for i, tok in enumerate(tokens):
                if handle.cancel_event.is_set():
                    break
                delay = t0 + (i + 1) / self.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                times.append(time.perf_counter() - t0)
                if i == 0:
                    ui0 = time.clock_gettime(ui_clock)
                on_chunk(Chunk(tok))
            total = time.perf_counter() - t0
            if len(times) > 1:  # the UI thread's CPU from the first token to the last
                ui = time.clock_gettime(ui_clock) - ui0
                self.decode_ui_shares.append(ui / (total - times[0]))
            record = RunRecord(
                prompt_tokens=10, generated_tokens=len(times), ttft_s=times[0], prefill_s=0.0,
                decode_s=total - times[0],
                prefill_tokens_per_s=0.0,
                decode_tokens_per_s=(len(times) - 1) / max(1e-9, total - times[0]),
                total_s=total, stop_reason="length", prompt_tokens_evaluated=10,
                model_sha256=None, backend="CPU", n_gpu_layers=0, n_ctx=4096,
            )  # fmt: skip
            on_chunk(Chunk("", record=record))

        threading.Thread(target=run, daemon=True).start()
        return handle

    def cancel(self) -> None:
        return None

    def close(self) -> None:
        return None


async def rounds(args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per prompt kind: the UI thread's share of a core over each reply, and over its decoding."""
    from llcuda_tui.app import LlcudaApp
    from llcuda_tui.core.config import Paths, Settings
    from llcuda_tui.core.store import ModelChoice

    os.environ["LLCUDA_HOME"] = tempfile.mkdtemp(prefix="llcuda-ui-cost-")
    settings = Settings.load(Paths.from_env()).with_overrides(
        {"sampling": {"max_tokens": args.tokens}}
    )
    engine = PacedEngine(args.rate, args.tokens, args.ttft_ms / 1e3)
    choice = ModelChoice("stand-in", Path("stand-in.gguf"), None, "Q4_1", 1, "store")
    app = LlcudaApp(
        settings, engine=engine, engine_choice=choice, autoload=False, adopt_starters=False,
        gpu_live=False,
    )  # fmt: skip
    cols, rows = (int(v) for v in args.size.split("x"))
    shares: dict[str, list[float]] = {"prose": [], "markdown": []}
    decode: dict[str, list[float]] = {"prose": [], "markdown": []}
    async with app.run_test(size=(cols, rows)) as pilot:
        await pilot.pause(0.5)
        screen = app.screen
        for _ in range(args.rounds):
            for kind, text in (("prose", PROSE), ("markdown", MARKDOWN)):
                engine.text = text
                session = screen.session
                if not args.same_chat:
                    screen.action_new_conversation()
                    await pilot.pause()
                screen.prompt.value = f"write {kind}"
                previous = session.last_record
                await pilot.press("enter")
                while session.reply is None and session.last_record is previous:
                    await asyncio.sleep(0.01)
                cpu0, wall0 = time.thread_time(), time.perf_counter()
                while session.last_record is previous or session.phase.value != "idle":
                    await asyncio.sleep(0.25)  # plain sleeps: Pilot's waits add UI work
                shares[kind].append((time.thread_time() - cpu0) / (time.perf_counter() - wall0))
                decode[kind].append(engine.decode_ui_shares[-1])
                await pilot.pause(0.3)
    return shares, decode


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shares, decode = asyncio.run(rounds(args))
    import llcuda_tui

    where = Path(llcuda_tui.__file__).parents[1]
    chat = "one conversation" if args.same_chat else "a new conversation a reply"
    print(
        f"checkout {where}, {args.rate:g} tok/s, {args.tokens} tokens, ttft {args.ttft_ms:g} ms, "
        f"{args.size}, {chat}"
    )
    for window, table in (("reply", shares), ("decode", decode)):
        for kind, values in table.items():
            runs = " ".join(f"{v * 100:.1f}" for v in values)
            print(
                f"{kind:9} {window:6} UI thread {statistics.median(values) * 100:5.1f} % of a "
                f"core ({runs})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
