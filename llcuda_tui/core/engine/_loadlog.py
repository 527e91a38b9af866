"""What llama.cpp decides while loading and says only in its log: whether flash attention
is on, how many layers went to the GPU, and failure reasons tidied for one line."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from llcuda_tui.core.fit import cuda_has_flash_attn

if TYPE_CHECKING:
    from llcuda_tui.core.gguf import GgufSummary

FLASH_ATTN_AUTO, FLASH_ATTN_OFF, FLASH_ATTN_ON = -1, 0, 1  # llama_flash_attn_type


def flash_attn_type(setting: str, on_gpu: bool, type_v: str) -> int:
    """The ``flash_attn_type`` to ask llama.cpp for.

    ``auto`` with layers on a GPU is llama.cpp's own auto: flash attention where the device that
    runs a layer has a kernel for it, off where it has none. Forcing it on for a head size the
    CUDA kernels lack (160, say) moves attention to the CPU: a 425M model then decoded at 470
    t/s instead of 1150 on an H100. Without a GPU, auto stays off unless the V cache is
    quantized (which needs flash attention)."""
    if setting == "on":
        return FLASH_ATTN_ON
    if setting == "auto" and (on_gpu or type_v not in ("f32", "f16", "bf16")):
        return FLASH_ATTN_AUTO
    return FLASH_ATTN_OFF


def flash_attn_for(s: GgufSummary, setting: str, device_kind: str, type_v: str = "f16") -> bool:
    """Whether the engine would load ``s`` with flash attention, for ``flash_attn`` = setting
    on a ``device_kind`` ('cuda' or 'ram') device (what a fit estimate needs to know)."""
    asked = flash_attn_type(setting, device_kind == "cuda", type_v)
    if asked == FLASH_ATTN_AUTO:  # llama.cpp's CPU backend has kernels for every head size
        return device_kind != "cuda" or cuda_has_flash_attn(s)
    return asked != FLASH_ATTN_OFF


def flash_attn_resolved(requested: int, log: list[tuple[str, str]]) -> bool:
    """Whether the context got flash attention: llama.cpp resolves auto while creating the
    context and logs the outcome (there is no getter)."""
    if requested != FLASH_ATTN_AUTO:
        return requested == FLASH_ATTN_ON
    for _, line in log:
        if "Flash Attention not supported" in line:
            return False
        if "Flash Attention enabled" in line:
            return True
    return True  # auto starts enabled; llama.cpp turns it off only with the line above


_OFFLOAD_RE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")


def offloaded_layers(lines: list[tuple[str, str]], requested: int, n_layers: int) -> int:
    """Layers llama.cpp put on the GPU, from its load log (it reports layers + output)."""
    for _level, line in reversed(lines):
        m = _OFFLOAD_RE.search(line)
        if m:
            return min(int(m.group(1)), n_layers)
    return 0


_FREQ_SCALE_RE = re.compile(r"freq_scale\s*=\s*([0-9.eE+-]+)")


def rope_freq_scale(lines: list[tuple[str, str]]) -> float:
    """The RoPE frequency scale a context got, from llama.cpp's context log (1.0 if unsaid)."""
    for _level, line in lines:
        m = _FREQ_SCALE_RE.search(line)
        if m:
            try:
                return float(m.group(1))
            except ValueError:
                break
    return 1.0


def tidy(reason: str) -> str:
    """A llama.cpp failure reason as the end of one of our lines."""
    reason = re.sub(r"^\w+: ", "", reason.strip())
    return reason.rstrip(".")
