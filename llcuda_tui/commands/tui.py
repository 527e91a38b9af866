"""`llcuda tui [--worker URL ...]` (and bare `llcuda`): open the Textual workbench."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llcuda_tui.core.config import Settings
from llcuda_tui.core.errors import UserInputError

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
    workers = [_checked(url) for url in args.worker]
    access = worker_access(args.api_key_file, args.ca_cert)
    if not _has_terminal():
        raise UserInputError("llcuda tui needs a terminal (stdin and stdout must be one)")
    return open_tui(settings, workers=workers, access=access)


def worker_access(api_key_file: str | None, ca_cert: str | None) -> Any:
    """The ``WorkerAccess`` for ``--api-key-file`` / ``--ca-cert`` (one clear line if unusable)."""
    from llcuda_tui.commands.serve import read_api_key
    from llcuda_tui.core.worker.client import WorkerAccess

    api_key = read_api_key(api_key_file) if api_key_file else None
    if ca_cert is not None and not Path(ca_cert).is_file():
        raise UserInputError(f"--ca-cert {ca_cert}: no such file")
    return WorkerAccess(api_key, ca_cert if ca_cert is not None else True)


def _checked(url: str) -> str:
    try:
        return check_worker_url(url)
    except ValueError as exc:
        raise UserInputError(str(exc)) from None


def open_tui(settings: Settings, workers: Sequence[str] = (), access: Any = None) -> int:
    """Run the app until the user quits; without a terminal print a hint and return 0."""
    if not _has_terminal():
        print(NO_TERMINAL_HINT, file=sys.stderr)
        return 0
    from llcuda_tui.app import LlcudaApp

    result = LlcudaApp(settings, workers=workers, worker_access=access).run()
    return int(result or 0)


def _has_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty() and sys.stdout.isatty()


def check_worker_url(url: str) -> str:
    """``url`` if it names an http(s) worker (``http://host:port``), else ValueError."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"worker URL '{url}' must look like http://host:port")
    return url


def worker_support() -> str | None:
    """None when remote workers can be used here, else why not (one line)."""
    if importlib.util.find_spec("llcuda_tui.core.worker") is None:
        return "worker support not installed (llcuda_tui.core.worker.client is missing)"
    if importlib.util.find_spec("llcuda_tui.core.worker.client") is None:
        return "worker support not installed (llcuda_tui.core.worker.client is missing)"
    return None
