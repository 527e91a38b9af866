"""Start-up time: `llcuda --version`, `llcuda models ls` and the TUI, against their anchors.

One run, interleaved repetitions (each round runs every case once, in a rotating order, so
drift and load hit all alike), medians:

* ``python -c pass``: the interpreter's own start (the venv's python); anchor of the CLI cases.
* ``llcuda --version`` and ``llcuda models ls`` (the installed entry point, on a temporary
  ``LLCUDA_HOME`` holding the starter models): process start to exit.
* a minimal Textual app (one screen: header, a line of text, footer) and the llcuda TUI
  (bare ``llcuda``: parser, app, first screen): process start until the first screen is
  mounted and painted. Both run headless through the same driver (``--drive``), which wraps
  ``App.run`` to pass ``headless=True`` and an auto-pilot that records the time once the first
  screen is up and exits; the product has no hook for this.

Goals (issue #14): ``--version`` and ``models ls`` at most 4x ``python -c pass``, the TUI at
most 1.5x the minimal app.

    .venv/bin/python bench/startup.py                 # 15 rounds
    .venv/bin/python bench/startup.py --rounds 31
    .venv/bin/python -X importtime -m llcuda_tui --version 2>&1 | sort -t'|' -k2 -n | tail
"""

from __future__ import annotations

# the driver runs inside the measured process: this module's own imports stay small there
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CLI_GOAL = 4.0
TUI_GOAL = 1.5
TERMINAL_SIZE = (120, 40)


# --- the driver: runs in the measured child process ---------------------------------------


def drive(which: str, result_file: str) -> int:
    """Run one app headless until its first screen is painted; write the wall clock and this
    process's CPU seconds (all threads) then."""
    from textual.app import App

    original_run = App.run

    async def exit_when_ready(pilot: Any) -> None:
        app = pilot.app
        # the app's first screen (a mode or a pushed screen), mounted, then one idle pass so
        # its first frame is composed and painted
        while app.screen.id == "_default" or not app.screen.is_mounted:
            await pilot.pause(0.002)
        await pilot.pause()
        Path(result_file).write_text(f"{time.time():.6f} {time.process_time():.6f}\n")
        app.exit()

    def run(self: App[Any], *args: Any, **kwargs: Any) -> Any:
        return original_run(self, headless=True, size=TERMINAL_SIZE, auto_pilot=exit_when_ready)

    App.run = run  # type: ignore[method-assign]
    if which == "minimal":
        _minimal_app().run()
        return 0
    from llcuda_tui import cli
    from llcuda_tui.commands import tui

    tui._has_terminal = lambda: True  # type: ignore[attr-defined]  # headless: no terminal
    return cli.main([])


def _minimal_app() -> Any:
    from textual.app import App, ComposeResult
    from textual.screen import Screen
    from textual.widgets import Footer, Header, Static

    class Hello(Screen[None]):
        def compose(self) -> ComposeResult:
            yield Header()
            yield Static("hello")
            yield Footer()

    class Minimal(App[None]):
        def on_mount(self) -> None:
            self.push_screen(Hello())

    return Minimal()


# --- the measuring parent -----------------------------------------------------------------

Sample = tuple[float, float]
"""(wall seconds, CPU seconds) of one start."""


def _spawn(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, bytes]:
    """Run ``cmd``; its wall seconds (start to exit), CPU seconds, exit status and stderr."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_utime + usage.ru_stime, proc.returncode, err


def _exit_time(cmd: list[str], env: dict[str, str]) -> Sample:
    elapsed, cpu, code, err = _spawn(cmd, env)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {code}: {err.decode()}")
    return elapsed, cpu


def _ready_time(which: str, env: dict[str, str], scratch: Path) -> Sample:
    result = scratch / f"ready-{which}"
    result.unlink(missing_ok=True)
    t0 = time.time()
    _, _, code, err = _spawn([sys.executable, __file__, "--drive", which, str(result)], env)
    if code != 0 or not result.exists():
        raise SystemExit(f"{which} app: exit {code}: {err.decode()}")
    wall, cpu = (float(x) for x in result.read_text().split())
    return wall - t0, cpu


def _prepare_home(home: Path, env: dict[str, str]) -> None:
    """The starter models in ``home`` (once, untimed): `models ls` and the TUI list them."""
    import subprocess

    proc = subprocess.run(
        [str(VENV_BIN / "llcuda"), "models", "starter"], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"llcuda models starter: {proc.stderr.strip()}")
    listed = subprocess.run(
        [str(VENV_BIN / "llcuda"), "models", "ls"], env=env, capture_output=True, text=True
    )
    print(f"# LLCUDA_HOME with {len(listed.stdout.strip().splitlines())} lines of `models ls`")


def measure(rounds: int) -> dict[str, list[Sample]]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="llcuda-startup-") as tmp:
        scratch = Path(tmp)
        env = {**os.environ, "LLCUDA_HOME": str(scratch / "home")}
        env.pop("LLCUDA_LLAMA_LOG", None)
        # an installed package has its .pyc files (the warm-up run writes them here): with
        # PYTHONDONTWRITEBYTECODE set, every start would compile the sources instead
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        _prepare_home(scratch / "home", env)
        llcuda = str(VENV_BIN / "llcuda")
        cases = {
            "python -c pass": lambda: _exit_time([sys.executable, "-c", "pass"], env),
            "llcuda --version": lambda: _exit_time([llcuda, "--version"], env),
            "llcuda models ls": lambda: _exit_time([llcuda, "models", "ls"], env),
            "minimal Textual app ready": lambda: _ready_time("minimal", env, scratch),
            "llcuda TUI ready": lambda: _ready_time("llcuda", env, scratch),
        }
        for run in cases.values():  # warm the page cache and the .pyc files
            run()
        times: dict[str, list[Sample]] = {name: [] for name in cases}
        order = list(cases)
        for _ in range(rounds):
            for name in order:
                times[name].append(cases[name]())
            order = order[1:] + order[:1]
        return times


def report(times: dict[str, list[Sample]], rounds: int) -> bool:
    """Print medians and ratios; True when the wall-clock goals are met."""
    import platform
    import statistics

    wall = {name: statistics.median(t for t, _ in samples) for name, samples in times.items()}
    cpu = {name: statistics.median(c for _, c in samples) for name, samples in times.items()}
    anchors = {
        "llcuda --version": ("python -c pass", CLI_GOAL),
        "llcuda models ls": ("python -c pass", CLI_GOAL),
        "llcuda TUI ready": ("minimal Textual app ready", TUI_GOAL),
    }
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs (load {load:.1f} at the end), {rounds} interleaved rounds; "
        "medians: wall s (min-max), CPU s (all threads, to exit or to ready)"
    )
    ok = True
    for name, samples in times.items():
        walls = [t for t, _ in samples]
        line = (
            f"{name:26} {wall[name]:6.3f} ({min(walls):.3f}-{max(walls):.3f})  cpu {cpu[name]:.3f}"
        )
        if name in anchors:
            anchor, goal = anchors[name]
            ratio, cpu_ratio = wall[name] / wall[anchor], cpu[name] / cpu[anchor]
            met = ratio <= goal
            ok &= met
            line += (
                f"  {ratio:4.2f}x (cpu {cpu_ratio:4.2f}x) {anchor.split(' ')[0]}"
                f" (goal <= {goal}x: {'met' if met else 'MISSED'})"
            )
        print(line)
    return ok


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)
    ok = report(measure(args.rounds), args.rounds)
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--drive"]:  # the measured child: APP RESULT_FILE
        raise SystemExit(drive(sys.argv[2], sys.argv[3]))
    raise SystemExit(main())
