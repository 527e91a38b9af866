"""`llcuda`: the headless command line. Bare `llcuda` opens the TUI (help until it lands).

Every failure the user can cause or fix is one line on stderr, ``llcuda: error: ...``, with
exit code 2 for bad input and 1 for runtime failures; never a traceback (set
``LLCUDA_DEBUG=1`` to see one for an unexpected error).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from llcuda_tui import __version__
from llcuda_tui.core.config import Settings
from llcuda_tui.core.errors import LlcudaError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"llcuda: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from llcuda_tui.commands import infer, models

    parser = _Parser(prog="llcuda", description="Terminal workbench for local GGUF LLMs.")
    parser.add_argument("--version", action="store_true", help="show versions and backend")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in (infer, models, *_optional_commands()):
        module.add_parser(sub)
    return parser


def _optional_commands() -> list:
    """Command groups that land with later issues; absent modules are skipped."""
    import importlib

    found = []
    for name in ("gpu", "bench", "tui", "serve", "batch"):
        try:
            found.append(importlib.import_module(f"llcuda_tui.commands.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"llcuda_tui.commands.{name}":
                raise
    return found


def version_text() -> str:
    from llcuda_tui.core.engine import build_info

    info = build_info()
    return f"llcuda-tui {__version__}\n{info.describe()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.version:
            print(version_text())
            return 0
        func = getattr(args, "func", None)
        if func is None:
            return _no_command(parser)
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
        print(f"llcuda: error: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _no_command(parser: argparse.ArgumentParser) -> int:
    try:
        from llcuda_tui.commands.tui import open_tui
    except ModuleNotFoundError:
        parser.print_help()
        return 0
    return open_tui(Settings.load(), workers=[])
