"""What the Models screen's listing thread gathers beside the store's own entries: fit
badges on this machine and against each attached worker's free VRAM, the models each
worker serves, and the team store's models that this store lacks. Blocking calls (HTTP to
the workers and the team store), run in the screen's thread workers only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.fit import DeviceMemory, worker_device
from llcuda_tui.core.store import FitBadge, ModelEntry, choice_from_entry, fit_badge
from llcuda_tui.messages import TeamListed

if TYPE_CHECKING:
    from llcuda_tui.core.config import EngineDefaults, Settings
    from llcuda_tui.core.worker import WorkerAccess, WorkerModels


def fit_badges(
    entries: list[ModelEntry], engine: EngineDefaults, device: DeviceMemory | None
) -> dict[str, FitBadge]:
    """{name: FitBadge} of ``entries`` on ``device`` (None: this machine's, detected)."""
    e = engine
    return {
        x.name: fit_badge(
            choice_from_entry(x), e.n_ctx, e.n_gpu_layers, device, e.type_k, e.flash_attn
        )
        for x in entries
    }


def fits_on_workers(
    entries: list[ModelEntry], urls: list[str], access: WorkerAccess, engine: EngineDefaults
) -> dict[str, dict[str, FitBadge] | str]:
    """Fit badges of ``entries`` against each worker's free VRAM now, or why there is no
    estimate (at most a few seconds per worker that does not answer)."""
    from llcuda_tui.core.worker import WorkerGpuPoller  # loaded only with workers attached

    fits: dict[str, dict[str, FitBadge] | str] = {}
    for url in urls:
        poller = WorkerGpuPoller(url, access.api_key, history=0, verify=access.verify)
        try:
            device = worker_device(url, poller.poll())
        finally:
            poller.close()
        fits[url] = device if isinstance(device, str) else fit_badges(entries, engine, device)
    return fits


def models_on_workers(access: WorkerAccess, urls: list[str]) -> dict[str, WorkerModels]:
    """What each worker serves now."""
    from llcuda_tui.core.worker import worker_models

    return {url: worker_models(access, url) for url in urls}


def team_listing(settings: Settings, local: set[str]) -> TeamListed | None:
    """The team store's models missing from ``local`` (None: no team store configured); a
    team store that cannot be read is a line on the screen, never a failed listing."""
    from llcuda_tui.core.store import RemoteConfig, RemoteStore

    config = RemoteConfig.from_settings(settings)
    if not config.configured:
        return None
    try:
        remote = RemoteStore(config)
        found = [e for e in remote.entries() if e.name not in local]
    except LlcudaError as exc:
        return TeamListed([], config.where, str(exc))
    return TeamListed(found, config.where)
