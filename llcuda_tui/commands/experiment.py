"""`llcuda experiment`: run a sweep described in a TOML file, resumably, and report it.

  llcuda experiment run FILE [--new]        the cells not done yet (resumes after a kill)
  llcuda experiment ls | show ID | rm ID
  llcuda experiment report ID --output report.html|report.md|report.pdf

See examples/experiment-cpu.toml for the file's keys.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from llcuda_tui.core.fmt import fmt_duration

if TYPE_CHECKING:
    from llcuda_tui.core.config import Settings
    from llcuda_tui.core.experiment import ExperimentProgress, ExperimentStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser(
        "experiment",
        help="run and report experiments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    esub = exp.add_subparsers(dest="experiment_command", metavar="ACTION", required=True)

    p = esub.add_parser("run", help="run (or resume) the experiment in FILE")
    p.add_argument("file", type=Path, help="the experiment file (TOML)")
    p.add_argument("--new", action="store_true", help="start afresh instead of resuming")
    p.set_defaults(func=run_run)

    p = esub.add_parser("ls", help="list experiments")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_ls)

    p = esub.add_parser("show", help="an experiment's cells and their results")
    p.add_argument("id", help="experiment id, 'last' or -K")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_show)

    p = esub.add_parser("rm", help="remove an experiment and its results")
    p.add_argument("id", help="experiment id, 'last' or -K")
    p.set_defaults(func=run_rm)

    p = esub.add_parser("report", help="tables and plots as HTML, Markdown (+PNG) or PDF")
    p.add_argument("id", help="experiment id, 'last' or -K")
    p.add_argument("--output", "-o", type=Path, required=True, help="report.html|.md|.pdf")
    p.set_defaults(func=run_report)


def _open(settings: Settings) -> ExperimentStore:
    from llcuda_tui.core.experiment import ExperimentStore

    return ExperimentStore.open(settings.paths)


def run_run(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.commands.bench import _cancel_on_ctrl_c
    from llcuda_tui.core.experiment import (
        load_experiment,
        prepare_models,
        run_experiment,
        start_or_resume,
    )

    spec = load_experiment(args.file)
    models = prepare_models(spec, settings, on_line=lambda line: print(line, file=sys.stderr))
    store = _open(settings)
    try:
        if args.new:
            from llcuda_tui.core.experiment import expand_cells

            cells = expand_cells(spec, models)
            exp_id = store.create_experiment(
                spec.name,
                str(args.file),
                spec.to_dict() | {"resolved_models": models, "fresh": True},
                models,
                [(c.key, c.model, c.settings) for c in cells],
            )
            resumed = False
        else:
            exp_id, resumed = start_or_resume(store, spec, models, args.file)
        exp = store.get_experiment(exp_id)
        verb = "resuming" if resumed else "starting"
        print(
            f"{verb} experiment {exp_id} '{spec.name}': {exp.done}/{len(exp.cells)} cells done",
            flush=True,
        )
        with _cancel_on_ctrl_c() as cancel:
            run_experiment(store, exp_id, spec, settings, _Progress(), cancel)
        exp = store.get_experiment(exp_id)
        print(f"experiment {exp_id}: {exp.done}/{len(exp.cells)} cells done ({exp.status})")
        failed = [c for c in exp.cells if c.status == "failed"]
        for c in failed:
            print(f"  failed: {c.key}: {c.error}", file=sys.stderr)
        return 1 if failed else 0
    finally:
        store.close()


class _Progress:
    """A line per finished cell on stdout (flushed: a supervisor may read it), the current
    step redrawn on stderr when it is a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, p: ExperimentProgress) -> None:
        eta = f", ETA {fmt_duration(p.eta_s)}" if p.eta_s is not None else ""
        if p.finished_cell:
            if self.tty:
                print("\r\033[K", end="", file=sys.stderr)
            valid = "" if p.valid in (None, True) else " [INVALID: throttled or capped]"
            print(f"[{p.done}/{p.total}] {p.message}{valid}{eta}", flush=True)
        elif self.tty:
            print(f"\r\033[K{p.message[:150]}{eta}", end="", file=sys.stderr, flush=True)


def run_ls(args: argparse.Namespace, settings: Settings) -> int:
    store = _open(settings)
    try:
        exps = store.list_experiments()
    finally:
        store.close()
    if args.json:
        print(json.dumps([e.to_dict() for e in exps], indent=2))
        return 0
    if not exps:
        print("no experiments (llcuda experiment run FILE)")
    for e in exps:
        print(
            f"{e.experiment_id:>4}  {e.created_at[:19]}  {e.status:10}  "
            f"{e.done}/{len(e.cells)} cells  {e.name}"
        )
    return 0


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.experiment import cell_table

    store = _open(settings)
    try:
        exp = store.get_experiment(args.id)
        table = cell_table(store, exp)
    finally:
        store.close()
    if args.json:
        print(json.dumps(exp.to_dict() | {"table": table}, indent=2, default=str))
        return 0
    print(f"experiment {exp.experiment_id} '{exp.name}' ({exp.status}), file {exp.file}")
    from llcuda_tui.core.bench import md_table

    headers = list(table[0]) if table else []
    print(md_table(headers, [[row[h] for h in headers] for row in table]) if table else "no cells")
    return 0


def run_rm(args: argparse.Namespace, settings: Settings) -> int:
    store = _open(settings)
    try:
        exp_id = store.remove_experiment(args.id)
    finally:
        store.close()
    print(f"removed experiment {exp_id}")
    return 0


def run_report(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.experiment import write_report

    store = _open(settings)
    try:
        written = write_report(store, args.id, args.output)
    finally:
        store.close()
    for path in written:
        print(path)
    return 0
