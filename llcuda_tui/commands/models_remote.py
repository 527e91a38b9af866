"""`llcuda models push` and `llcuda models remote ls|show|rm|gc`: the team store, an S3 bucket
(``[store.remote]`` in config.toml); `llcuda models pull --from hub|remote` asks it first.

Registered by commands/models.py (``add_parsers(msub, cmd, Output(...))``, which hands over
its progress bar and report printer, so this module never imports it); the store loads in the
commands, not at parse time.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.fmt import fmt_size

if TYPE_CHECKING:
    from llcuda_tui.core.config import Settings
    from llcuda_tui.core.store import PullResult, RemoteEntry, RemoteStore, Report, Store

Handler = Callable[[argparse.Namespace, "Settings"], int]
Cmd = Callable[..., argparse.ArgumentParser]


@dataclass(frozen=True)
class Output:
    """How the ``models`` group shows things: its progress bar and its report printer."""

    progress_bar: Callable[[str], Any]
    """``progress_bar(label)``: an ``on_progress(done, total)`` with ``relabel(label)``."""
    report: Callable[[Report, bool, bool], int]
    """``report(report, as_json, dry_run)``: prints it; the exit code."""


def add_parsers(msub: argparse._SubParsersAction, cmd: Cmd, out: Output) -> None:
    """``push`` and ``remote ...`` under ``llcuda models``, and ``--from`` on its ``pull``."""
    p = cmd(
        "push",
        partial(run_push, out),
        "upload a model to the team store (resumable; skips what is there)",
    )
    p.add_argument("name", help="a name in the local store")
    p.add_argument(
        "--force", action="store_true", help="upload every blob again (repairs a damaged copy)"
    )

    remote = msub.add_parser(
        "remote", help="the team store (S3): ls, show, rm, gc", description=__doc__
    )
    rsub = remote.add_subparsers(dest="remote_command", metavar="ACTION", required=True)

    def rcmd(name: str, func: Handler, help: str) -> argparse.ArgumentParser:
        rp = rsub.add_parser(name, help=help, description=help)
        rp.add_argument("--json", action="store_true", help="print JSON")
        rp.set_defaults(func=func)
        return rp

    rcmd("ls", run_remote_ls, "list the team store's models (and whether they are here)")
    rcmd("show", run_remote_show, "a team-store model's manifest").add_argument("name")
    p = rcmd(
        "rm", partial(run_remote_rm, out), "remove a name (and its model, unless another uses it)"
    )
    p.add_argument("name")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p = rcmd("gc", partial(run_remote_gc, out), "delete unreferenced objects, abort stale uploads")
    p.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    p.add_argument(
        "--grace",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="keep unreferenced objects younger than this, and uploads active since (default 3600)",
    )

    pull = msub.choices["pull"]
    pull.add_argument(
        "--from",
        dest="pull_from",
        choices=("auto", "hub", "remote"),
        default="auto",
        help="auto (default): the team store when it has the model, else the Hub; "
        "remote: REPO is a team-store name",
    )
    pull.set_defaults(func=partial(pull_command, out, pull.get_default("func")))


def _status(message: str) -> None:
    print(f"llcuda: {message}", file=sys.stderr)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _remote(settings: Settings) -> RemoteStore:
    from llcuda_tui.core.store import RemoteStore

    return RemoteStore.from_settings(settings)


def _store(settings: Settings) -> Store:
    from llcuda_tui.core.store import Store

    return Store.from_settings(settings)


def _progress(out: Output, label: str) -> tuple[Any, Callable[[str], None]]:
    """A progress bar and an ``on_status`` that relabels it for each file."""
    bar = out.progress_bar(label)

    def status(message: str) -> None:
        if message.startswith(("uploading ", "downloading ")):
            bar.relabel(message.split(" ")[1])
        _status(message)

    return bar, status


# --- pull from the team store ----------------------------------------------------------------


def pull_command(
    out: Output, hub_pull: Handler, args: argparse.Namespace, settings: Settings
) -> int:
    """``models pull``: the team store first (when configured and it has the model), else the
    Hub. A team store that is down or refuses the credentials costs one line, not the pull."""
    from llcuda_tui.core.errors import UserInputError
    from llcuda_tui.core.store import RemoteConfig, RemoteStore, RemoteUnavailableError

    source = getattr(args, "pull_from", "auto")
    hub_only = bool(args.file or args.revision)  # what only the Hub knows
    if source == "hub" or (source == "auto" and hub_only):
        return hub_pull(args, settings)
    config = RemoteConfig.from_settings(settings)
    if source == "auto" and not config.configured:
        return hub_pull(args, settings)
    if source == "remote" and hub_only:
        raise UserInputError("--file and --revision are for the Hub (--from hub)")
    remote = RemoteStore(config)
    wanted = f"{args.repo}:{args.quant}" if args.quant else args.repo
    if source == "remote":
        return _pull_remote(out, remote, remote.require(wanted).name, args, settings)
    try:
        entry = remote.lookup(wanted)
    except RemoteUnavailableError as exc:
        _status(f"{exc}; pulling from the Hub")
        return hub_pull(args, settings)
    if entry is None:
        return hub_pull(args, settings)
    return _pull_remote(out, remote, entry.name, args, settings)


def _pull_remote(
    out: Output, remote: RemoteStore, name: str, args: argparse.Namespace, settings: Settings
) -> int:
    store = _store(settings)
    bar, status = _progress(out, name)
    result = remote.pull(store, name, on_progress=bar, on_status=status)
    e = result.entry
    if args.name and store.lookup(args.name) != args.name:
        store.publish(e.manifest, [args.name])
    if args.json:
        _print_json(_pulled_json(result) | {"from": remote.where})
        return 0
    how = (
        "already in the store"
        if result.up_to_date
        else f"{fmt_size(result.downloaded_bytes, 2)} downloaded from the team store"
    )
    print(f"{e.name}  {e.manifest.quant}  {fmt_size(e.manifest.size, 2)}  ({how})")
    for evicted in result.evicted:
        print(f"evicted {evicted} (store.max_size)")
    return 0


def _pulled_json(result: PullResult) -> dict[str, Any]:
    return result.entry.to_json() | {
        "downloaded_bytes": result.downloaded_bytes,
        "up_to_date": result.up_to_date,
        "evicted": list(result.evicted),
    }


# --- push and remote ... ---------------------------------------------------------------------


def run_push(out: Output, args: argparse.Namespace, settings: Settings) -> int:
    store, remote = _store(settings), _remote(settings)
    bar, status = _progress(out, args.name)
    result = remote.push(store, args.name, force=args.force, on_progress=bar, on_status=status)
    if args.json:
        _print_json(result.to_json() | {"to": remote.where})
        return 0
    e = result.entry
    if result.up_to_date:
        how = "already in the team store"
    else:
        how = f"{fmt_size(result.uploaded_bytes, 2)} uploaded"
        if result.resumed_bytes:
            how += f", {fmt_size(result.resumed_bytes, 2)} resumed"
        if result.skipped_files:
            how += f", {result.skipped_files} file(s) already there"
    print(f"{e.name}  {e.quant}  {fmt_size(e.size, 2)}  ({how}) -> {remote.where}")
    return 0


def _here(entry: RemoteEntry, local: dict[str, str]) -> str:
    """'yes' when the local store has the name at the same model, 'other' at another one."""
    digest = local.get(entry.name)
    if digest is None:
        return ""
    return "yes" if digest == entry.digest else "other"


def run_remote_ls(args: argparse.Namespace, settings: Settings) -> int:
    remote = _remote(settings)
    entries = remote.entries()
    local = _store(settings).names()
    if args.json:
        _print_json([e.to_json() | {"here": _here(e, local) or None} for e in entries])
        return 0
    if not entries:
        print(f"the team store {remote.where} is empty (llcuda models push NAME)")
        return 0
    print(f"{'NAME':44} {'QUANT':8} {'SIZE':>11} {'PUSHED':20} {'HERE':5} SHA256")
    for e in entries:
        print(
            f"{e.name:44} {e.quant or '-':8} {fmt_size(e.size, 2):>11} {e.pushed:20} "
            f"{_here(e, local):5} {e.sha256[:12]}"
        )
    return 0


def run_remote_show(args: argparse.Namespace, settings: Settings) -> int:
    remote = _remote(settings)
    entry = remote.show(args.name)
    if args.json:
        _print_json(entry.to_json())
        return 0
    assert entry.manifest is not None
    m = entry.manifest
    rows = [
        ("name", entry.name), ("manifest", entry.digest), ("quant", m.quant or "-"),
        ("size", fmt_size(m.size, 2)), ("source", m.source.describe()),
        ("created", m.created), ("pushed", entry.pushed), ("team store", remote.where),
    ]  # fmt: skip
    rows += [("file", f"{f.path}  {fmt_size(f.size, 2)}  {f.sha256}") for f in m.files]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:{width}}  {value}")
    return 0


def run_remote_rm(out: Output, args: argparse.Namespace, settings: Settings) -> int:
    report = _remote(settings).remove(args.name, dry_run=args.dry_run)
    return out.report(report, args.json, args.dry_run)


def run_remote_gc(out: Output, args: argparse.Namespace, settings: Settings) -> int:
    report = _remote(settings).gc(grace_s=args.grace, dry_run=args.dry_run)
    return out.report(report, args.json, args.dry_run)
