"""Fit badges: whether a model in a list fits at the engine's settings, in a few characters
(the estimate itself is core/fit.py's)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from llcuda_tui.core.engine import flash_attn_for
from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.fit import DeviceMemory, FitRequest, detect_device, estimate, fit
from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.gguf import GgufSummary
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
    draft: GgufSummary | None = None,
) -> FitBadge:
    """Will ``choice`` fit at ``n_gpu_layers`` / ``n_ctx`` on ``device`` (detected if None)?
    ``flash_attn`` is the engine setting (auto, on, off), resolved as the engine would.
    ``draft``: a speculative draft model loaded beside it, whose weights and KV cache come
    out of the same memory first."""
    if choice.summary is None:
        return FitBadge("unknown", "?", "no GGUF summary: fit unknown")
    try:
        device = device or detect_device()
        note = ""
        if draft is not None:
            device, note = _less_draft(draft, choice.summary, n_ctx, n_gpu_layers, device)
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
    return FitBadge(result.verdict, short, result.describe() + note)


def _less_draft(
    draft: GgufSummary, target: GgufSummary, n_ctx: int, n_gpu_layers: int, device: DeviceMemory
) -> tuple[DeviceMemory, str]:
    """``device`` with the draft model's memory taken out, and a note saying how much.

    The engine gives the draft a context of the target's size with llama.cpp's default
    cache (f16, flash attention auto), all on the GPU unless the target is on the CPU
    (``n_gpu_layers`` 0): the memory it takes is its weights, that cache and its compute
    buffer, as :func:`~llcuda_tui.core.fit.estimate` has them."""
    on_gpu = device.kind == "cuda" and n_gpu_layers != 0
    req = FitRequest(
        n_ctx=n_ctx or target.context_length or 4096,
        n_gpu_layers=-1 if on_gpu else 0,
        flash_attn=flash_attn_for(draft, "auto", device.kind),
    )
    needs = estimate(draft, req)
    taken = needs.gpu_total if on_gpu else needs.total
    where = "VRAM" if on_gpu else "RAM"
    left = replace(device, free_bytes=max(0, device.free_bytes - taken))
    return left, f" (after the draft model's {fmt_size(taken, 2, 'GiB')} of {where})"
