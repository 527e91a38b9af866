"""What the Models screen says in its text lines: the detail pane for the row under the
cursor (a stored model with its fit here and on each attached worker, a team-store model,
an empty store) and the disk line. Plain text from core's records; the screen places it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.store import describe_model, detail_text

if TYPE_CHECKING:
    from llcuda_tui.core.config import EngineDefaults
    from llcuda_tui.core.store import FitBadge, ModelEntry, RemoteEntry
    from llcuda_tui.core.worker import WorkerModels

EMPTY_STORE = (
    "The store is empty.\n\n"
    "· type a Hugging Face repo below and pick a file to pull (h)\n"
    "· import a local GGUF file (i)\n"
    "· or run `llcuda models starter` to add the starter models"
)
ADOPTING = "Adding the starter models to the store (first run)…"


def team_detail(team: RemoteEntry) -> str:
    """A model that only the team store has."""
    rows = [
        ("name", team.name),
        ("where", "the team store only (t pulls it into this store)"),
        ("quant", team.quant or "?"),
        ("size", fmt_size(team.size)),
        ("sha256", team.sha256),
        ("pushed", team.pushed),
    ]
    return detail_text(rows)


def model_detail(
    entry: ModelEntry,
    badge: FitBadge | None,
    engine: EngineDefaults,
    now: float,
    worker_urls: Iterable[str],
    worker_fits: Mapping[str, dict[str, FitBadge] | str],
    worker_models: Mapping[str, WorkerModels],
) -> str:
    """A stored model: its metadata, its fit here with the engine's settings, and its fit
    on and state in each attached worker."""
    e = engine
    rows = describe_model(entry, now)
    rows.append(("fit", f"{badge.detail if badge else '?'} (ngl {e.n_gpu_layers}, ctx {e.n_ctx})"))
    for url in worker_urls:
        fits = worker_fits.get(url)
        if fits is None:
            text = "not asked yet (r asks the workers for their free VRAM)"
        elif isinstance(fits, str):
            text = f"unknown: {fits}"
        else:
            found = fits.get(entry.name)
            text = found.detail if found else "?"
        rows.append(("fit on worker", f"{url}: {text}"))
        held = worker_models.get(url)
        if held is not None:
            rows.append(("on worker", held.describe(entry.name)))
    return detail_text(rows)


def usage_text(u: dict[str, Any]) -> str:
    """The disk line: the store's size, its cap (c edits it), what else is on the disk."""
    cap = fmt_size(u["max_size"]) if u.get("max_size") else "no cap"
    parts = [
        f"{fmt_size(u.get('live_bytes', 0))} in {len(u.get('models', []))} model(s)",
        f"size cap (c): {cap}",
    ]
    if u.get("partial_bytes"):
        parts.append(f"{fmt_size(u['partial_bytes'])} partial downloads")
    if u.get("unreferenced_bytes"):
        parts.append(f"{fmt_size(u['unreferenced_bytes'])} unreferenced")
    if "free_bytes" in u:
        parts.append(f"{fmt_size(u['free_bytes'])} free")
    return "disk: " + " · ".join(parts)
