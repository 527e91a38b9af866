"""What streaming into the TUI costs: decode t/s headless vs. through the running app.

Same model, same run, same greedy request (so the same tokens): rounds alternate between
the headless engine (``Engine.generate`` in this process: no per-token wake-ups, the speed
``llcuda bench`` reports) and the Chat screen driven by a Pilot session (type the prompt,
press Enter, wait for the reply; the app's own drain timer and Markdown rendering run as they
do for a user). The app chats through the engine as it does for a user: an engine process
(``ProcessEngine``); ``--app-engine thread`` measures an in-process engine instead. Decode t/s
comes from each generation's RunRecord. Prints both medians and the cost in percent.

    .venv/bin/python bench/tui_streaming.py                       # smollm2-135m, CPU
    .venv/bin/python bench/tui_streaming.py -m gemma-3-270m --ngl -1 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_PERCENT = 2.0
PROMPTS = {
    "prose": "Write a long, detailed story about a lighthouse keeper and a storm.",
    "markdown": (
        "Explain Python list comprehensions with a Markdown heading, a bulleted list, "
        "a table and three code blocks."
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", default="smollm2-135m-instruct")
    p.add_argument("-n", "--tokens", type=int, default=384, help="max tokens per reply")
    p.add_argument("--rounds", type=int, default=5, help="generations per path and prompt")
    p.add_argument("--ngl", type=int, default=0, help="GPU layers (default 0: CPU)")
    p.add_argument("--ctx", type=int, default=2048)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = default)")
    p.add_argument("--prompts", default="prose,markdown", help="which prompts: prose,markdown")
    p.add_argument(
        "--app-engine",
        choices=("process", "thread"),
        default="process",
        help="the app's engine: a child process (what the app loads) or the headless engine "
        "itself, in this process",
    )
    p.add_argument(
        "--no-gpu-sampler",
        action="store_true",
        help="don't run the app's 1 s NVML sampler (to see what it costs)",
    )
    return p.parse_args(argv)


def request_for(prompt: str, tokens: int) -> Any:
    from llcuda_tui.core.engine import GenerationRequest, SamplingParams

    return GenerationRequest(
        messages=[{"role": "user", "content": prompt}],
        max_tokens=tokens,
        sampling=SamplingParams(temperature=0.0),
    )


async def tui_round(pilot: Any, app: Any, prompt: str) -> tuple[Any, float]:
    """One generation through the Chat screen: its RunRecord, and the UI thread's CPU share
    (of one core) while the reply streamed."""
    screen = app.screen
    session = screen.session  # the chat's state (core's ChatSession)
    screen.action_new_conversation()
    await pilot.pause()
    conv = screen.new_conversation()
    session.conversation = app.conversations.update(conv.id, settings=app.bench_settings)
    screen.prompt.value = prompt  # the multi-line message box (a PromptArea)
    previous = session.last_record
    cpu0, wall0 = time.thread_time(), time.perf_counter()  # this thread runs the app
    # the Pilot's press() may return only once the reply is over (it waits for the app to go
    # idle), so the round ends on a new run record, not on seeing the reply start
    await pilot.press("enter")
    deadline = time.monotonic() + 600
    while session.last_record is previous or session.phase.value != "idle":
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)  # plain sleeps: the Pilot's own waits would add UI work
    ui_share = (time.thread_time() - cpu0) / max(1e-9, time.perf_counter() - wall0)
    await pilot.pause(0.2)
    return session.last_record, ui_share


async def run_tui_rounds(
    app: Any, jobs: list[tuple[str, str]], headless: Any, app_headless: Any
) -> dict:
    """Per round: headless, the app's engine without the app (when it is another engine), TUI,
    the app's engine without the app again, headless again. The TUI run is compared with the
    mean of the two headless runs around it (those two, A/A, show how much the machine drifts
    by itself) and with the mean of the two runs of its own engine without the app around it
    (which leaves out any difference between two loaded engines: a second engine instance ran
    1.5 % slower than the first one loaded on an H100, even in the same process)."""
    results: dict[str, dict[str, list[Any]]] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
        for name, prompt in jobs:
            r = results.setdefault(
                name,
                {"headless": [], "tui": [], "control": [], "ui": [], "bare": [], "bare after": []},
            )
            r["headless"].append(headless(prompt))
            cpu = CpuMeter(getattr(app.engine, "pid", None))
            if app_headless is not None:
                r["bare"].append(app_headless(prompt))
                r.setdefault("cpu bare", []).append(cpu.cores())
            record, ui_share = await tui_round(pilot, app, prompt)
            r.setdefault("cpu tui", []).append(cpu.cores())
            r["tui"].append(record)
            r["ui"].append(ui_share)
            if app_headless is not None:
                r["bare after"].append(app_headless(prompt))
            r["control"].append(headless(prompt))
    return results


class CpuMeter:
    """CPU used (in cores) by this process and by the engine process since the last read."""

    def __init__(self, child: int | None) -> None:
        self.child = child
        self.last = self.read()

    def read(self) -> tuple[float, float, float]:
        own = os.times()
        child = 0.0
        if self.child is not None:
            fields = Path(f"/proc/{self.child}/stat").read_text().rsplit(")", 1)[1].split()
            child = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return time.perf_counter(), own.user + own.system, child

    def cores(self) -> tuple[float, float]:
        now = self.read()
        wall = max(1e-9, now[0] - self.last[0])
        used = ((now[1] - self.last[1]) / wall, (now[2] - self.last[2]) / wall)
        self.last = self.read()
        return used


def gap_summary(records: list[Any]) -> str:
    """Median over runs of the p50 / p99 / max time between tokens, and of the time spent in
    gaps over twice the p50 (stalls), as a share of decode time."""
    p50s, p99s, maxes, stalls = [], [], [], []
    for rec in records:
        times = rec.token_times_s
        gaps = sorted(b - a for a, b in itertools.pairwise(times))
        if not gaps:
            continue
        p50 = gaps[len(gaps) // 2]
        p50s.append(p50)
        p99s.append(gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))])
        maxes.append(gaps[-1])
        stalls.append(sum(g - p50 for g in gaps if g > 2 * p50) / sum(gaps))
    if not p50s:
        return "none"
    ms = statistics.median
    return (
        f"p50 {ms(p50s) * 1e3:.3f} ms, p99 {ms(p99s) * 1e3:.3f} ms, max {ms(maxes) * 1e3:.2f} ms, "
        f"stalls {ms(stalls) * 100:.2f} %"
    )


def second_half_rate(record: Any) -> float:
    """Tokens per second over the second half of a reply's tokens: what decode runs at once the
    GPU has left its idle clocks (a reply of a fast model can end before that)."""
    times = record.token_times_s
    half = len(times) // 2
    return (len(times) - 1 - half) / max(1e-9, times[-1] - times[half])


def median_ci(values: list[float], resamples: int = 4000) -> tuple[float, float]:
    """A 95 % bootstrap interval for the median of ``values`` (seeded: the same data gives
    the same interval)."""
    import random

    rng = random.Random(0)
    medians = sorted(
        statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples)
    )
    return medians[int(resamples * 0.025)], medians[int(resamples * 0.975) - 1]


def report(results: dict[str, dict[str, list[Any]]]) -> float:
    """Print the table and whether the cost is under the goal; the worst TUI cost in percent.

    Each round gives one cost; the median's 95 % bootstrap interval over the rounds decides:
    under the goal only when the whole interval is."""
    print(
        "| prompt | tokens | headless t/s | TUI t/s | TUI cost | 95 % interval | A/A (headless "
        "vs headless) | UI thread CPU while streaming |"
    )
    print("|---|---|---|---|---|---|---|---|")
    worst = 0.0
    intervals: list[tuple[float, float]] = []
    same_engine: list[tuple[float, float]] = []
    for name, r in results.items():
        h, c = (
            [x.decode_tokens_per_s for x in r["headless"]],
            [x.decode_tokens_per_s for x in r["control"]],
        )
        t = [x.decode_tokens_per_s for x in r["tui"]]
        costs = [(1 - b / ((a + z) / 2)) * 100 for a, b, z in zip(h, t, c, strict=True)]
        cost, interval = statistics.median(costs), median_ci(costs)
        intervals.append(interval)
        control = statistics.median((1 - z / a) * 100 for a, z in zip(h, c, strict=True))
        tokens = statistics.median(x.generated_tokens for x in r["tui"])
        ui = statistics.median(r["ui"]) * 100
        worst = max(worst, cost)
        base, tui = statistics.median(h + c), statistics.median(t)
        print(
            f"| {name} | {tokens:.0f} | {base:.1f} | {tui:.1f} | {cost:+.2f} % "
            f"| {interval[0]:+.2f} .. {interval[1]:+.2f} % | {control:+.2f} % "
            f"| {ui:.1f} % of a core |"
        )
        rounds = ", ".join(f"{a:.1f}/{b:.1f}/{z:.1f}" for a, b, z in zip(h, t, c, strict=True))
        print(f"#   {name} rounds (headless/TUI/headless): {rounds}")
        if r["bare"]:
            bare = [x.decode_tokens_per_s for x in r["bare"]]
            after = [x.decode_tokens_per_s for x in r["bare after"]]
            own = statistics.median(
                (1 - b / ((a + z) / 2)) * 100 for a, b, z in zip(h, bare, c, strict=True)
            )
            same = [(1 - b / ((a + z) / 2)) * 100 for a, b, z in zip(bare, t, after, strict=True)]
            lo, hi = median_ci(same)
            same_engine.append((lo, hi))
            print(
                f"#   {name}: the app's engine without the app {statistics.median(bare):.1f} t/s "
                f"({own:+.2f} % vs headless); TUI vs that same engine alone (before and after): "
                f"{statistics.median(same):+.2f} % [{lo:+.2f}, {hi:+.2f}]"
            )
        for path in ("bare", "tui"):
            if r.get(f"cpu {path}"):
                here = statistics.median(c[0] for c in r[f"cpu {path}"])
                there = statistics.median(c[1] for c in r[f"cpu {path}"])
                print(f"#   {name} {path}: CPU cores busy: this process {here:.2f}, engine "
                      f"process {there:.2f}")  # fmt: skip
        for path in ("headless", "bare", "tui"):
            if r[path]:
                print(f"#   {name} {path} token gaps: {gap_summary(r[path])}")
        late = [(second_half_rate(a), second_half_rate(b), second_half_rate(z))
                for a, b, z in zip(r["headless"], r["tui"], r["control"], strict=True)]  # fmt: skip
        late_costs = [(1 - b / ((a + z) / 2)) * 100 for a, b, z in late]
        lo, hi = median_ci(late_costs)
        print(f"#   {name} second half of each reply only (GPU clocks ramped up): TUI cost "
              f"{statistics.median(late_costs):+.2f} % [{lo:+.2f}, {hi:+.2f}]")  # fmt: skip
    print(f"worst cost: {worst:+.2f} % (goal < {GOAL_PERCENT:g} %); {verdict(intervals)}")
    if same_engine:
        print(f"against the app's own engine driven headless: {verdict(same_engine)}")
    return worst


def verdict(intervals: list[tuple[float, float]]) -> str:
    if all(hi < GOAL_PERCENT for _, hi in intervals):
        return "met: every interval lies under the goal"
    if any(lo >= GOAL_PERCENT for lo, _ in intervals):
        return "not met: an interval lies at or over the goal"
    return "unresolved: an interval spans the goal (more rounds, or a quieter machine)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = tempfile.mkdtemp(prefix="llcuda-bench-")
    os.environ.setdefault("LLCUDA_HOME", home)
    from llcuda_tui.app import LlcudaApp
    from llcuda_tui.core.config import Settings
    from llcuda_tui.core.conversations import ChatSettings
    from llcuda_tui.core.engine import Engine, EngineConfig, ProcessEngine
    from llcuda_tui.core.store import ModelChoice, file_sha256, resolve_model

    settings = Settings.load()
    model = resolve_model(args.model, settings.paths)
    sha = model.sha256 or file_sha256(model.path)
    config = EngineConfig.from_settings(
        model.path,
        settings,
        n_gpu_layers=args.ngl,
        n_ctx=args.ctx,
        n_threads=args.threads or None,
        model_sha256=sha,
    )
    engine = Engine.load(config)
    choice = ModelChoice(model.name, model.path, sha, "?", model.path.stat().st_size, "file")
    prompts = [p.strip() for p in args.prompts.split(",") if p.strip()]

    def headless(prompt: str) -> Any:
        _, record = engine.generate(request_for(prompt, args.tokens))
        return record

    app_engine = ProcessEngine.load(config) if args.app_engine == "process" else engine
    for p in prompts:  # warm-up (page cache, piece cache, allocator), both engines
        headless(PROMPTS[p])
        if app_engine is not engine:
            app_engine.generate(request_for(PROMPTS[p], args.tokens))
    app = LlcudaApp(
        settings,
        engine=app_engine,
        engine_choice=choice,
        autoload=False,
        adopt_starters=False,  # no first-run import hashing beside the measurement
        gpu_live=not args.no_gpu_sampler,
    )
    app.bench_settings = ChatSettings(temperature=0.0, max_tokens=args.tokens)  # type: ignore[attr-defined]
    jobs = [(p, PROMPTS[p]) for _ in range(args.rounds) for p in prompts]
    try:
        bare = None
        if app_engine is not engine:

            def bare(prompt: str) -> Any:
                return app_engine.generate(request_for(prompt, args.tokens))[1]

        results = asyncio.run(run_tui_rounds(app, jobs, headless, bare))
    finally:
        app_engine.close()
        engine.close()

    print(
        f"# TUI streaming cost: {model.name}, {engine.info.backend}, ngl {args.ngl}, "
        f"app engine: {args.app_engine}, GPU sampler {'off' if args.no_gpu_sampler else 'on'}, "
        f"{engine.info.n_threads} engine threads, {args.rounds} rounds x {args.tokens} tokens"
    )
    print(
        f"# {platform.node()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    if any(x is None for r in results.values() for x in r["tui"]):
        print("a TUI round produced no record", file=sys.stderr)
        return 1
    report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
