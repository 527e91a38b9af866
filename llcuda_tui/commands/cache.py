"""`llcuda cache ls|clear`: the conversations' saved KV states (``store.kv_states_max_size``).

They are derived data: the TUI and `llcuda serve` save a conversation's KV cells when its slot
is reused or the engine closes, and restore them when the conversation comes back, instead of
prefilling it again. Clearing them loses nothing but that time.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.fmt import fmt_ago, fmt_size

if TYPE_CHECKING:  # the parser imports this module: the engine loads in run
    from llcuda_tui.core.config import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache", help="conversations' saved KV states: list, clear", description=__doc__
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("ls", help="list the saved states, most recently used first")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=run_ls)
    clear = verbs.add_parser("clear", help="remove every saved state")
    clear.add_argument("--json", action="store_true", help="print JSON")
    clear.set_defaults(func=run_clear)


def run_ls(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.engine import KvStateStore

    kv = KvStateStore(settings.paths.kv_state_dir)
    states = kv.states()
    rows: list[dict[str, Any]] = [
        {
            "key": s.key,
            "tokens": s.n_tokens,
            "bytes": kv.disk_bytes(s),
            "created": s.created,
            "last_used": s.last_used,
        }
        for s in states
    ]
    if args.json:
        print(json.dumps({"dir": str(settings.paths.kv_state_dir), "states": rows}))
        return 0
    total = sum(r["bytes"] for r in rows)
    cap = settings.store.kv_states_max_size or "no cap"
    print(f"{len(rows)} saved state(s), {fmt_size(total)} (cap {cap}) in {kv.root}")
    now = time.time()
    for r in rows:
        print(
            f"  {r['key'][:12]}  {r['tokens']:>7} tokens  {fmt_size(r['bytes']):>10}  "
            f"used {fmt_ago(r['last_used'], now)}"
        )
    return 0


def run_clear(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.engine import KvStateStore

    kv = KvStateStore(settings.paths.kv_state_dir)
    freed = sum(kv.disk_bytes(s) for s in kv.states())
    removed = kv.clear()
    if args.json:
        print(json.dumps({"removed": removed, "freed_bytes": freed}))
    else:
        print(f"removed {removed} saved state(s), freed {fmt_size(freed)}")
    return 0
