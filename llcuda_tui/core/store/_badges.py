"""Fit badges: whether a model in a list fits at the engine's settings, in a few characters
(the estimate itself is core/fit.py's)."""

from __future__ import annotations

from dataclasses import dataclass

from llcuda_tui.core.engine import flash_attn_for
from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.fit import DeviceMemory, FitRequest, detect_device, fit
from llcuda_tui.core.store._choices import ModelChoice


@dataclass(frozen=True)
class FitBadge:
    """Whether a model fits, as a list shows it."""

    verdict: str
    """'fits', 'partial', 'wont_fit' or 'unknown'."""
    short: str
    """A few characters for a list: 'fits', 'ngl 12', "won't fit", '?'."""
    detail: str


def fit_badge(
    choice: ModelChoice,
    n_ctx: int,
    n_gpu_layers: int,
    device: DeviceMemory | None = None,
    type_k: str = "f16",
    flash_attn: str = "auto",
) -> FitBadge:
    """Will ``choice`` fit at ``n_gpu_layers`` / ``n_ctx`` on ``device`` (detected if None)?
    ``flash_attn`` is the engine setting (auto, on, off), resolved as the engine would."""
    if choice.summary is None:
        return FitBadge("unknown", "?", "no GGUF summary: fit unknown")
    try:
        device = device or detect_device()
        flash = flash_attn_for(choice.summary, flash_attn, device.kind, type_k)
        req = FitRequest(
            n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, type_k=type_k, type_v=type_k, flash_attn=flash
        )
        result = fit(choice.summary, req, device)
    except (LlcudaError, KeyError, ValueError) as exc:
        return FitBadge("unknown", "?", f"fit unknown: {exc}")
    short = {"fits": "fits", "wont_fit": "won't fit"}.get(
        result.verdict, f"ngl {result.n_gpu_layers}"
    )
    return FitBadge(result.verdict, short, result.describe())
