"""Room in the store: the disk-space check before an import or a pull, the size cap
(``store.max_size``: least recently used models are evicted, never pinned or leased ones),
and removing a name (with its model when it was the last name)."""

from __future__ import annotations

import contextlib
import shutil

from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.store._base import StoreBase
from llcuda_tui.core.store._errors import StoreError, StoreFullError
from llcuda_tui.core.store._fs import pid_alive, unlink_quietly, writer_pid
from llcuda_tui.core.store._manifest import parse_iso_utc
from llcuda_tui.core.store._records import Report

SPACE_MARGIN = 64 << 20
"""Bytes kept free on the disk beyond what an import or a pull needs."""


def check_space(store: StoreBase, incoming: int, protect: str | None = None) -> None:
    """Refuse early when ``incoming`` bytes cannot fit on the disk or under the cap.

    ``protect``: a name whose model the new one replaces (it is not counted as evictable).
    """
    store.ensure()
    free = shutil.disk_usage(store.layout.tmp).free
    margin = space_margin(incoming)
    if incoming + margin > free:
        dead = dead_temp_bytes(store)
        hint = f"; llcuda models gc frees {fmt_size(dead, 2)} of dead imports' temps"
        raise StoreFullError(
            f"not enough disk space: need {fmt_size(incoming, 2)} + {fmt_size(margin, 2)} "
            f"kept free, {fmt_size(free, 2)} free in {store.layout.root}{hint if dead else ''}"
        )
    if store.max_size is None:
        return
    protected = {store.names()[protect]} if protect else set()
    over = live_size(store) + incoming - store.max_size
    if over > 0 and eviction_plan(store, over, protected)[1] < over:
        raise StoreFullError(
            f"store.max_size {fmt_size(store.max_size, 2)} cannot fit {fmt_size(incoming, 2)} "
            "more: the rest is pinned or in use (unpin or rm something, or raise the cap)"
        )


def space_margin(incoming: int) -> int:
    """Bytes kept free beyond an import of ``incoming`` bytes: a quarter of it (at least
    1 MiB), at most SPACE_MARGIN, so a small model fits on a nearly full disk."""
    return min(SPACE_MARGIN, max(1 << 20, incoming // 4))


def dead_temp_bytes(store: StoreBase) -> int:
    """Bytes of temps in ``tmp/`` whose writer process is gone (gc deletes them at once)."""
    total = 0
    for f in store.layout.tmp.iterdir():
        pid = writer_pid(f)
        if pid is not None and not pid_alive(pid):
            with contextlib.suppress(OSError):
                st = f.lstat()
                total += st.st_size if st.st_nlink <= 1 else 0  # a link frees nothing
    return total


def live_size(store: StoreBase) -> int:
    """Bytes of the blobs that named models use."""
    sizes = store.blob_sizes()
    return sum(sizes.get(sha, 0) for sha in store.live_blobs())


def eviction_plan(store: StoreBase, need: int, protect: set[str]) -> tuple[list[str], int]:
    """Least recently used unpinned, unused manifests whose removal frees ``need`` bytes;
    (their digests, the bytes they free)."""
    users = store.live_blobs()
    sizes = store.blob_sizes()
    order = []
    for digest in set(store.names().values()) - protect:
        state = store.state(digest)
        if state.pinned or store.users(digest):
            continue
        with contextlib.suppress(StoreError):
            last = state.last_used or parse_iso_utc(store.manifest(digest).created)
            order.append((last, digest))
    plan: list[str] = []
    freed = 0
    for _, digest in sorted(order):
        if freed >= need:
            break
        plan.append(digest)
        for sha in list(users):
            users[sha].discard(digest)
            if not users[sha]:
                freed += sizes.get(sha, 0)
                del users[sha]
    return plan, freed


def enforce_cap(
    store: StoreBase, protect: set[str] | None = None, dry_run: bool = False
) -> list[str]:
    """Evict least recently used models until the store is under ``max_size``; their names."""
    if store.max_size is None:
        return []
    over = live_size(store) - store.max_size
    if over <= 0:
        return []
    plan, _ = eviction_plan(store, over, protect or set())
    evicted = []
    names = store.names()
    for digest in plan:
        evicted += [n for n, d in names.items() if d == digest]
        if not dry_run:
            store.drop_model(digest, Report())
    return evicted


def remove(store: StoreBase, name: str, dry_run: bool = False, force: bool = False) -> Report:
    """Remove a name; when it was the model's last name, the model and its blobs go too."""
    stored = store.require(name)
    names = store.names()
    digest = names[stored]
    state, users = store.state(digest), store.users(digest)
    if state.pinned and not force:
        raise UserInputError(f"{stored} is pinned: unpin it first (or use --force)")
    if users and not force:
        raise UserInputError(
            f"{stored} is in use by process {users[0]} (--force removes the name only; "
            "gc frees the model once it is unloaded)"
        )
    report = Report(actions=[f"remove name {stored}"])
    others = [n for n, d in names.items() if d == digest and n != stored]
    if dry_run:
        if not others:
            report.freed_bytes = exclusive_bytes(store, digest)
        return report
    store.index.invalidate()
    unlink_quietly(store.layout.name_file(stored))
    if others:
        report.actions.append(f"model stays under {', '.join(others)}")
    elif users:
        # --force on a model in use: unname only; gc reclaims it once its last user is gone
        report.actions.append(f"model stays while process {users[0]} uses it (gc frees it after)")
    else:
        store.drop_model(digest, report)
    store.sync()
    return report


def exclusive_bytes(store: StoreBase, digest: str) -> int:
    """Bytes of the blobs only the model ``digest`` uses (what removing it frees)."""
    sizes = store.blob_sizes()
    return sum(sizes.get(s, 0) for s, users in store.live_blobs().items() if users == {digest})
