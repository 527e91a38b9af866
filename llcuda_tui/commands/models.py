"""`llcuda models ...`: the starter models (the model store adds its commands here)."""

from __future__ import annotations

import argparse
import json

from llcuda_tui.core.config import Settings
from llcuda_tui.core.starter import STARTERS, starter_path


def add_parser(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="manage models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    p = msub.add_parser("starter", help="make the starter models available by name (no network)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_starter)


def run_starter(args: argparse.Namespace, settings: Settings) -> int:
    rows = []
    for name, model in STARTERS.items():
        path = starter_path(name, settings.paths)
        rows.append({"name": name, "path": str(path), "description": model.description})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:24} {r['path']}")
    return 0
