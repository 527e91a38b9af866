"""`llcuda tui [--worker URL ...]` (and bare `llcuda`): open the Textual workbench."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from llcuda_tui.core.errors import UserInputError

if TYPE_CHECKING:
    from llcuda_tui.core.config import Settings
    from llcuda_tui.core.worker import WorkerAccess

NO_TERMINAL_HINT = (
    "llcuda: no terminal here, so the TUI was not opened "
    "(run 'llcuda' in a terminal, or see 'llcuda --help' for the command line)"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tui", help="open the terminal UI (also: bare 'llcuda')", description=__doc__
    )
    p.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="URL",
        help="a remote llcuda worker to use (repeatable), e.g. http://gpu-box:8765",
    )
    p.add_argument(
        "--api-key-file",
        metavar="F",
        help="the workers' API key, first line of F (as given to llcuda serve --api-key-file)",
    )
    p.add_argument(
        "--ca-cert",
        metavar="PEM",
        help="trust the workers' TLS certificates signed by this CA (or self-signed) file",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.worker import worker_access

    workers = [_checked(url) for url in args.worker]
    access = worker_access(args.api_key_file, args.ca_cert)
    if not _has_terminal():
        raise UserInputError("llcuda tui needs a terminal (stdin and stdout must be one)")
    return open_tui(settings, workers=workers, access=access)


def _checked(url: str) -> str:
    from llcuda_tui.core.worker import check_worker_url

    try:
        return check_worker_url(url)
    except ValueError as exc:
        raise UserInputError(str(exc)) from None


def open_tui(
    settings: Settings, workers: Sequence[str] = (), access: WorkerAccess | None = None
) -> int:
    """Run the app until the user quits; without a terminal print a hint and return 0."""
    if not _has_terminal():
        print(NO_TERMINAL_HINT, file=sys.stderr)
        return 0
    from llcuda_tui.app import LlcudaApp

    result = LlcudaApp(settings, workers=workers, worker_access=access).run()
    return int(result or 0)


def _has_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty() and sys.stdout.isatty()
