"""`llcuda`: the headless command line. Bare `llcuda` opens the TUI.

Every failure the user can cause or fix is one line on stderr, ``llcuda: error: ...``, with
exit code 2 for bad input and 1 for runtime failures; never a traceback (set
``LLCUDA_DEBUG=1`` to see one for an unexpected error).

Start-up: the parser imports the command modules but none of the core they run (each command
imports what it needs when it runs), and ``--version`` does not import llama_cpp on a CPU
build; ``bench/startup.py`` measures both against ``python -c pass``.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from llcuda_tui import __version__
from llcuda_tui.core.errors import LlcudaError

if TYPE_CHECKING:
    from llcuda_tui.core.engine import BuildInfo


MACHINE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
"""OSErrors that are the machine's state (a full disk, a read-only filesystem), never a bug."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"llcuda: error: {message} (see '{self.prog} --help')\n")


COMMANDS: dict[str, str] = {
    "infer": "generate text from a prompt",
    "embed": "embed texts as vectors (JSON or a summary)",
    "models": "manage models",
    "cache": "conversations' saved KV states: list, clear",
    "gpu": "GPU telemetry (NVML): utilisation, memory, power, energy, clocks, throttling",
    "bench": "benchmark models: throughput (llama-bench compatible), latency, energy, perplexity",
    "experiment": "run and report experiments",
    "tui": "open the terminal UI (also: bare 'llcuda')",
    "serve": "serve a model over HTTP (OpenAI API)",
    "batch": "generate for a file of prompts (MPI ranks)",
}
"""Each command (``llcuda_tui.commands.<name>``, in ``--help`` order) and its one-line help,
which its module's ``add_parser`` also gives (tests/test_cli.py checks they agree): the
commands not run are listed from here, without importing their modules or building their
parsers."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``llcuda`` parser: every command's in full, or with ``argv`` only the command it
    names (the others are one-line entries that list it in ``--help``). Building all 40
    sub-parsers and importing their modules was a third of ``llcuda models ls``."""
    import importlib

    parser = _Parser(prog="llcuda", description="Terminal workbench for local GGUF LLMs.")
    parser.add_argument("--version", action="store_true", help="show versions and backend")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    named = _command_word(argv) if argv is not None else None
    for name, help in COMMANDS.items():
        if argv is not None and name != named:
            sub.add_parser(name, help=help, add_help=False)
            continue
        module = importlib.import_module(f"llcuda_tui.commands.{name}")
        if name == "models" and argv is not None:  # 27 actions: build the one named
            module.add_parser(sub, _command_word(argv[argv.index(name) + 1 :]))
        else:
            module.add_parser(sub)
    return parser


def _command_word(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option (the top level's
    options take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def version_text() -> str:
    """What ``llcuda --version`` prints: this package, llama-cpp-python and its backend."""
    from llcuda_tui.core.engine import build_info

    info = _cpu_build_info() or build_info()
    return f"llcuda-tui {__version__}\n{info.describe()}"


def _cpu_build_info() -> BuildInfo | None:
    """A CPU build's :class:`BuildInfo` from its files and the preloaded libllama, without
    ``import llama_cpp`` (numpy and ctypes bindings: most of the old 0.32 s ``--version``);
    None for any other build (a CUDA build lists its GPUs through llama_cpp, and starting
    CUDA to do so costs more than that import)."""
    from llcuda_tui._preload import llama_package_dir, llama_system_info
    from llcuda_tui.core.engine import BuildInfo

    package = llama_package_dir()
    if package is None or (package / "lib" / "libggml-cuda.so").exists():
        return None
    system_info = llama_system_info()
    if system_info is None or "CUDA" in system_info:
        return None
    try:  # llama_cpp.__version__, read rather than imported
        init = (package / "__init__.py").read_text(encoding="utf-8")
    except OSError:
        return None
    found = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", init, re.MULTILINE)
    if found is None:
        return None
    return BuildInfo(found.group(1), "CPU", None, system_info.strip())


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        if args.version:
            print(version_text())
            return 0
        from llcuda_tui.core.config import Settings

        func = getattr(args, "func", None)
        if func is None:
            from llcuda_tui.commands.tui import open_tui

            return open_tui(Settings.load(), workers=[])
        return int(func(args, Settings.load()))
    except LlcudaError as exc:
        print(f"llcuda: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("llcuda: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (llcuda ... | head): not an error worth a message
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if os.environ.get("LLCUDA_DEBUG"):
            raise
        if isinstance(exc, OSError) and exc.errno in MACHINE_ERRNOS:
            # the machine refused a write no code path words: say what and where, not "internal"
            where = f": {exc.filename}" if exc.filename else ""
            print(f"llcuda: error: {exc.strerror}{where}", file=sys.stderr)
            return 1
        print(f"llcuda: error: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
