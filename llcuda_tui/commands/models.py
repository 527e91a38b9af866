"""`llcuda models ...`: the model store (pull, import, list, verify, clean up) and starters."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llcuda_tui.commands import argtypes
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.fmt import fmt_ago, fmt_size

if TYPE_CHECKING:  # the parser imports this module: the store loads in the commands
    from llcuda_tui.core.config import Settings
    from llcuda_tui.core.store import ModelEntry, Report, Store

Handler = Callable[[argparse.Namespace, "Settings"], int]


def add_parser(sub: argparse._SubParsersAction, action: str | None = None) -> None:
    """``llcuda models ACTION``; with ``action``, only that action's parser is built in full
    (the others are one-line entries that list them in ``--help``): the 27 actions' parsers
    were a fifth of ``llcuda models ls``."""
    models = sub.add_parser("models", help="manage models", description=__doc__)
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    msub: Any = actions if action is None else _OnlyNamed(actions, action)

    def cmd(name: str, func: Handler, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = msub.add_parser(name, help=help, description=help)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)
        return p

    p = cmd("files", run_files, "list a Hugging Face repo's GGUF models (quant, size, sha256)")
    p.add_argument("repo", help="owner/name")
    p.add_argument("--revision", help="branch, tag or commit (default: main)")

    p = cmd("pull", run_pull, "download a model from Hugging Face (resumes, verifies sha256)")
    p.add_argument("repo", help="owner/name")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--file", help="GGUF path in the repo (any shard of a split model)")
    which.add_argument("--quant", help="quant type, e.g. Q4_K_M")
    p.add_argument("--revision", help="branch, tag or commit (default: main)")
    p.add_argument("--name", help="also name the model this (a short alias)")

    p = cmd("import", run_import, "add a local GGUF (hardlinked; copied across filesystems)")
    p.add_argument("path", type=Path, help="the GGUF file (or any shard of a split model)")
    p.add_argument("--name", help="name in the store (default: the file name)")

    p = cmd("adopt", run_adopt, "bring GGUFs from the Hugging Face cache in by hardlink")
    p.add_argument(
        "--hf-cache",
        nargs="?",
        const="",
        required=True,
        metavar="DIR",
        help="the HF cache (default: HF_HUB_CACHE or ~/.cache/huggingface/hub)",
    )
    p.add_argument("--dry-run", action="store_true", help="only say what would be adopted")

    p = cmd("show", run_show, "a model's metadata and whether it fits this machine")
    p.add_argument("name")
    p.add_argument(
        "--ctx", type=argtypes.count, help="context length for the fit estimate (default: config)"
    )
    p.add_argument("--ngl", type=int, help="GPU layers for the fit estimate (default: config)")
    p.add_argument("--kv-type", help="KV cache type for the fit estimate (default: config)")

    cmd("ls", run_ls, "list stored models")

    p = cmd("quantize", run_quantize, "make quantized store entries from a stored model")
    p.add_argument("name", help="the stored model (F16/BF16/F32)")
    p.add_argument("--type", required=True, help="quant type(s), e.g. Q4_K_M or Q4_K_M,Q8_0")
    p.add_argument("--imatrix", type=Path, help="importance matrix file (not supported yet)")
    p.add_argument(
        "--allow-requantize", action="store_true", help="quantize an already quantized model"
    )
    p.add_argument("--threads", type=int, default=0, help="threads (default: all cores)")

    p = cmd("rm", run_rm, "remove a name (and the model with its last name)")
    p.add_argument("name")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.add_argument("--force", action="store_true", help="remove even when pinned or in use")

    for action, func in (("pin", run_pin), ("unpin", run_unpin)):
        p = cmd(action, func, f"{action} a model (pinned models are never evicted)")
        p.add_argument("name")

    p = cmd("gc", run_gc, "delete unreferenced blobs and stale partial downloads; apply the cap")
    p.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    p.add_argument(
        "--grace",
        type=argtypes.seconds,
        default=3600.0,
        metavar="SECONDS",
        help="keep unreferenced files younger than this (default 3600)",
    )
    p.add_argument("--partials", action="store_true", help="also delete resumable downloads")

    cmd("du", run_du, "disk use of the store")

    p = cmd("verify", run_verify, "re-hash stored files (all, or one model's)")
    p.add_argument("name", nargs="?")

    p = cmd("repair", run_repair, "re-fetch missing or quarantined files, re-create views")
    p.add_argument("--dry-run", action="store_true", help="only say what would be done")

    cmd("reindex", run_reindex, "rebuild the SQLite index from the store's files")
    cmd("starter", run_starter, "make the starter models store entries (no network)")

    from llcuda_tui.commands import models_remote  # push, remote ls|show|rm|gc, pull --from

    models_remote.add_parsers(msub, cmd, models_remote.Output(ProgressBar, _report))


class _OnlyNamed:
    """A sub-parsers action that builds the parser of one name in full; for any other name it
    adds a one-line entry and hands back :data:`_IGNORED`, which takes the arguments the code
    adds and drops them."""

    def __init__(self, actions: argparse._SubParsersAction, name: str) -> None:
        self._actions, self._name = actions, name

    @property
    def choices(self) -> Any:
        return self._actions.choices

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name == self._name:
            return self._actions.add_parser(name, **kwargs)
        self._actions.add_parser(name, help=kwargs.get("help"), add_help=False)
        return _IGNORED


class _Ignored:
    """Answers every call (``add_argument``, ``set_defaults``, ``add_subparsers``...) with
    itself and keeps nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self


_IGNORED = _Ignored()


# --- output helpers --------------------------------------------------------------------------


class ProgressBar:
    """Progress on stderr: a redrawn bar on a terminal, a line per quarter otherwise."""

    def __init__(self, label: str = "", unit: str | None = None) -> None:
        self.label = label
        self.unit = unit
        """Counted things ('tensors'); None: bytes."""
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last_draw = 0.0
        self.last_quarter = -1
        self.last_done = 0
        self.last_total = 0

    def __call__(self, done: int, total: int) -> None:
        if done < self.last_done or total != self.last_total:
            self.started, self.last_quarter = time.monotonic(), -1
        self.last_done, self.last_total = done, total
        now = time.monotonic()
        frac = done / total if total else 1.0
        if self.tty:
            if now - self.last_draw < 0.1 and done < total:
                return
            self.last_draw = now
            rate = done / max(now - self.started, 1e-6)
            bar = "#" * int(frac * 30)
            amount = (
                f"{done}/{total} {self.unit}"
                if self.unit
                else f"{fmt_size(done, 2)} {fmt_size(rate, 2)}/s"
            )
            sys.stderr.write(f"\r{self.label[:32]:32} [{bar:30}] {frac:4.0%} {amount} ")
            if done >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()
            return
        quarter = int(frac * 4)
        if quarter > self.last_quarter:
            self.last_quarter = quarter
            of = f"{total} {self.unit}" if self.unit else fmt_size(total, 2)
            print(f"{self.label}: {frac:.0%} of {of}", file=sys.stderr)

    def relabel(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.last_quarter = -1


def _status(message: str) -> None:
    print(f"llcuda: {message}", file=sys.stderr)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _store(settings: Settings) -> Store:
    from llcuda_tui.core.store import Store

    return Store.from_settings(settings)


def _report(report: Report, as_json: bool, dry_run: bool = False) -> int:
    if as_json:
        _print_json(report.to_json() | {"dry_run": dry_run})
    else:
        prefix = "would " if dry_run else ""
        for action in report.actions:
            print(f"{prefix}{action}")
        for problem in report.problems:
            print(f"problem: {problem}")
        if report.freed_bytes:
            print(f"{'would free' if dry_run else 'freed'} {fmt_size(report.freed_bytes, 2)}")
    return 0 if report.ok else 1


def _entry_line(e: ModelEntry) -> str:
    return (
        f"{e.name:44} {e.manifest.quant or '-':8} {fmt_size(e.manifest.size, 2):>11} "
        f"{fmt_ago(e.state.last_used):>12} {'pinned' if e.state.pinned else '':6} {e.sha256[:12]}"
    )


# --- commands --------------------------------------------------------------------------------


def run_files(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.store import list_repo

    listing = list_repo(args.repo, args.revision)
    commit = listing.commit
    rows = [
        {
            "quant": m.quant,
            "size": m.size,
            "complete": m.complete,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in m.files],
        }
        for m in listing.models
    ]
    if args.json:
        _print_json({"repo": args.repo, "commit": commit, "models": rows,
                     "rejected": list(listing.rejected)})  # fmt: skip
        return 0
    print(f"{args.repo} @ {commit[:12]}")
    for m in listing.models:
        shards = f" ({len(m.files)} shards)" if len(m.files) > 1 else ""
        missing = "  INCOMPLETE" if not m.complete else ""
        sha = (m.first.sha256 or "-")[:12]
        print(f"  {m.quant:10} {fmt_size(m.size, 2):>11}  {sha}  {m.first.path}{shards}{missing}")
    for path in listing.rejected:
        print(f"  rejected (unsafe name): {path}")
    return 0


def run_pull(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    bar = ProgressBar(args.repo)

    def status(message: str) -> None:
        if message.startswith("downloading "):
            bar.relabel(message.split(" ")[1].rpartition("/")[2])
        _status(message)

    result = store.pull(
        args.repo, file=args.file, quant=args.quant, revision=args.revision, name=args.name,
        on_progress=bar, on_status=status,
    )  # fmt: skip
    e = result.entry
    if args.json:
        _print_json(e.to_json() | {"downloaded_bytes": result.downloaded_bytes,
                                   "up_to_date": result.up_to_date,
                                   "evicted": list(result.evicted)})  # fmt: skip
        return 0
    how = (
        "already in the store"
        if result.up_to_date
        else f"{fmt_size(result.downloaded_bytes, 2)} downloaded"
    )
    print(f"{e.name}  {e.manifest.quant}  {fmt_size(e.manifest.size, 2)}  ({how})")
    for name in result.evicted:
        print(f"evicted {name} (store.max_size)")
    return 0


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    evicted: list[str] = []
    entry = store.import_path(
        args.path, name=args.name, on_progress=ProgressBar(args.path.name),
        on_evict=evicted.append,
    )  # fmt: skip
    if args.json:
        _print_json(entry.to_json() | {"evicted": evicted})
    else:
        for name in evicted:
            print(f"evicted {name} (store.max_size)", file=sys.stderr)
        print(
            f"{entry.name}  {entry.manifest.quant}  {fmt_size(entry.manifest.size, 2)}  "
            f"{entry.sha256[:12]}"
        )
    return 0


def run_quantize(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.experiment import parse_types, quantize

    bars: dict[str, ProgressBar] = {}

    def progress(qtype: str, done: int, total: int) -> None:
        bar = bars.setdefault(qtype, ProgressBar(f"quantize {qtype}", unit="tensors"))
        bar(done, total)

    results = quantize(
        _store(settings),
        args.name,
        parse_types(args.type),
        allow_requantize=args.allow_requantize,
        imatrix=args.imatrix,
        threads=args.threads,
        on_progress=progress,
        on_warning=lambda line: print(line, file=sys.stderr),
    )
    if args.json:
        _print_json([r.entry.to_json() | {"created": r.created} for r in results])
        return 0
    for r in results:
        e = r.entry
        made = "" if r.created else "  (already there)"
        print(
            f"{e.name}  {e.manifest.quant}  {fmt_size(e.manifest.size, 2)}  {e.sha256[:12]}{made}"
        )
    return 0


def run_adopt(args: argparse.Namespace, settings: Settings) -> int:
    cache = Path(args.hf_cache).expanduser() if args.hf_cache else None
    results = _store(settings).adopt_hf_cache(
        cache, dry_run=args.dry_run, on_progress=ProgressBar("hashing")
    )
    if args.json:
        _print_json(results)
    else:
        for r in results:
            print(f"{r['name']:50} {fmt_size(r['size'], 2):>11}  {r['status']}")
        if not results:
            print("no GGUF files in the Hugging Face cache")
    return 0


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.config import KV_TYPES
    from llcuda_tui.core.fit import FitRequest, fit
    from llcuda_tui.core.store import describe_model, detail_text

    entry = _store(settings).entry(args.name)
    summary = entry.manifest.summary
    e = settings.engine
    if args.kv_type is not None and args.kv_type not in KV_TYPES:
        raise UserInputError(f"--kv-type {args.kv_type!r}: one of {', '.join(KV_TYPES)}")
    request = FitRequest(
        n_ctx=args.ctx if args.ctx is not None else e.n_ctx,
        n_gpu_layers=args.ngl if args.ngl is not None else e.n_gpu_layers,
        type_k=args.kv_type or e.type_k,
        type_v=args.kv_type or e.type_v,
        n_ubatch=e.n_ubatch,
        flash_attn=e.flash_attn != "off",
    )
    result = fit(summary, request) if summary else None
    if args.json:
        _print_json(entry.to_json() | {"fit": result.to_json() if result else None})
        return 0
    # the Models screen's table (one function), then what only the command line shows
    rows = [*describe_model(entry), ("path", str(entry.path))]
    if result is not None:
        rows.append(("fit", f"{result.describe()} (n_ctx {request.n_ctx}, KV {request.type_k})"))
    print(detail_text(rows))
    return 0


def run_ls(args: argparse.Namespace, settings: Settings) -> int:
    entries = _store(settings).entries()
    if args.json:
        _print_json([e.to_json() for e in entries])
        return 0
    if not entries:
        print("the store is empty (llcuda models pull REPO, import PATH, or starter)")
        return 0
    print(f"{'NAME':44} {'QUANT':8} {'SIZE':>11} {'LAST USED':>12} {'':6} SHA256")
    for e in entries:
        print(_entry_line(e))
    return 0


def run_rm(args: argparse.Namespace, settings: Settings) -> int:
    report = _store(settings).remove(args.name, dry_run=args.dry_run, force=args.force)
    return _report(report, args.json, args.dry_run)


def run_pin(args: argparse.Namespace, settings: Settings) -> int:
    return _set_pin(args, settings, True)


def run_unpin(args: argparse.Namespace, settings: Settings) -> int:
    return _set_pin(args, settings, False)


def _set_pin(args: argparse.Namespace, settings: Settings, pinned: bool) -> int:
    entry = _store(settings).set_pinned(args.name, pinned)
    if args.json:
        _print_json(entry.to_json())
    else:
        print(f"{entry.name} {'pinned' if pinned else 'unpinned'}")
    return 0


def run_gc(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    report = store.gc(grace_s=args.grace, dry_run=args.dry_run, partials=args.partials)
    for name in store.enforce_cap(dry_run=args.dry_run) if store.exists() else []:
        report.actions.append(f"evict {name} (store.max_size)")
    return _report(report, args.json, args.dry_run)


def run_du(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.engine import KvStateStore

    usage = _store(settings).du()
    kv = KvStateStore(settings.paths.kv_state_dir)
    usage["kv_state_bytes"] = sum(kv.disk_bytes(s) for s in kv.states())
    if args.json:
        _print_json(usage)
        return 0
    for m in usage["models"]:
        shared = f" ({fmt_size(m['shared_bytes'], 2)} shared)" if m["shared_bytes"] else ""
        print(f"{fmt_size(m['bytes'], 2):>11}  {', '.join(m['names'])}{shared}")
    cap = fmt_size(usage["max_size"], 2) if usage.get("max_size") else "none"
    print(f"{fmt_size(usage['live_bytes'], 2):>11}  total in models (cap: {cap})")
    for key, label in (("unreferenced_bytes", "unreferenced (llcuda models gc)"),
                       ("partial_bytes", "partial downloads and temp files"),
                       ("quarantine_bytes", "quarantined"),
                       ("kv_state_bytes", "saved KV states (llcuda cache)")):  # fmt: skip
        if usage.get(key):
            print(f"{fmt_size(usage[key], 2):>11}  {label}")
    if "free_bytes" in usage:
        print(f"{fmt_size(usage['free_bytes'], 2):>11}  free on the disk")
    return 0


def run_verify(args: argparse.Namespace, settings: Settings) -> int:
    bar = ProgressBar("verify")
    report = _store(settings).verify(
        args.name, on_progress=bar, on_file=lambda name, _size: bar.relabel(name)
    )
    if args.json:
        _print_json(report.to_json())
    else:
        for problem in report.problems:
            print(f"problem: {problem}")
        state = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        print(f"verified {report.checked_files} file(s): {state}")
    return 0 if report.ok else 1


def run_repair(args: argparse.Namespace, settings: Settings) -> int:
    report = _store(settings).repair(
        dry_run=args.dry_run, on_progress=ProgressBar("repair"), on_status=_status
    )
    if not report.actions and not report.problems and not args.json:
        print("nothing to repair")
        return 0
    return _report(report, args.json, args.dry_run)


def run_reindex(args: argparse.Namespace, settings: Settings) -> int:
    counts = _store(settings).reindex()
    if args.json:
        _print_json(counts)
    else:
        print(
            f"indexed {counts['names']} names, {counts['manifests']} manifests, "
            f"{counts['blobs']} blobs"
        )
    return 0


def run_starter(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.store import STARTERS

    entries = _store(settings).import_starters(on_progress=ProgressBar("starter"))
    rows = [
        {
            "name": e.name,
            "path": str(e.path),
            "sha256": e.sha256,
            "description": STARTERS[e.name].description,
        }
        for e in entries
    ]
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            print(f"{r['name']:24} {r['path']}")
    return 0
