"""What a context is checked against before llama.cpp allocates it, and how one beyond the
model's training context is stretched (both engines, the single-sequence and the batch one).

Memory: the fit estimate (``core/fit.py``) of the KV cache, the compute buffer and the
weights, split between the host and the GPUs as llama.cpp would place them, against the
machine's *total* RAM and the GPUs' *total* memory (``fit.beyond_total_memory`` says why
total). RoPE: a context beyond the training context (only with ``ctx_beyond_training``) gets
YaRN scaling by training / asked, unless the model's GGUF sets a RoPE scaling of its own.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.errors import LlcudaError, UserInputError
from llcuda_tui.core.fit import (
    FitRequest,
    MemoryLimits,
    beyond_total_memory,
    context_cells,
    estimate,
    ram_device,
)
from llcuda_tui.core.gguf import GgufSummary, read_summary, split_info

if TYPE_CHECKING:
    from llcuda_tui.core.engine._backend import Device
    from llcuda_tui.core.engine._types import EngineConfig

UNIFIED_MEMORY_ENV = "GGML_CUDA_ENABLE_UNIFIED_MEMORY"
"""Set, ggml's CUDA buffers may spill into host memory, so the GPU's limit is VRAM + RAM."""
LLAMA_ROPE_SCALING_TYPE_YARN = 2  # llama.h, enum llama_rope_scaling_type


@dataclass(frozen=True)
class RopeScaling:
    """YaRN over a context ``1 / freq_scale`` times the training context ``orig_ctx``."""

    freq_scale: float
    orig_ctx: int


def rope_scaling_for(
    cfg: EngineConfig, n_ctx_seq: int, n_ctx_train: int, model: Any
) -> RopeScaling | None:
    """The RoPE scaling to ask llama.cpp for: None (llama.cpp's default, the model's own) up
    to the training context, without ``ctx_beyond_training``, or when the model's GGUF scales
    RoPE itself (YaRN, LongRoPE or a scaling factor: stretching it again would fight that);
    past it, YaRN by ``n_ctx_train / n_ctx_seq``. YaRN rather than linear: it stretches only
    the low frequencies, so short-range positions read as the model was trained, and it is
    what llama.cpp's and transformers' long-context models use."""
    if not cfg.ctx_beyond_training or n_ctx_train <= 0 or n_ctx_seq <= n_ctx_train:
        return None
    if model_scales_rope(model):
        return None
    return RopeScaling(n_ctx_train / n_ctx_seq, n_ctx_train)


def apply_rope(cparams: Any, rope: RopeScaling | None) -> None:
    """Set ``rope`` in a ``llama_context_params`` (nothing for None)."""
    if rope is None:
        return
    cparams.rope_scaling_type = LLAMA_ROPE_SCALING_TYPE_YARN
    cparams.rope_freq_scale = rope.freq_scale
    cparams.yarn_orig_ctx = rope.orig_ctx


def model_scales_rope(model: Any) -> bool:
    """Whether the model's GGUF sets a RoPE scaling of its own (llama.cpp then applies it)."""
    arch = _meta(model, "general.architecture") or ""
    kind = (_meta(model, f"{arch}.rope.scaling.type") or "").lower()
    if kind in ("yarn", "longrope"):
        return True
    for key in (f"{arch}.rope.scaling.factor", f"{arch}.rope.scale_linear"):
        try:
            factor = float(_meta(model, key) or "0")
        except ValueError:
            continue
        if factor not in (0.0, 1.0):
            return True
    return False


def _meta(model: Any, key: str) -> str | None:
    import llama_cpp as L

    buf = ctypes.create_string_buffer(256)
    n = L.llama_model_meta_val_str(model, key.encode(), buf, 256)
    return buf.value.decode(errors="replace") if n >= 0 else None


def check_memory(
    cfg: EngineConfig,
    model: Any,
    *,
    n_ctx: int,
    n_seq: int,
    n_ubatch: int,
    n_gpu_layers: int,
    flash_attn: bool,
    gpus: Sequence[Device],
    kv_unified: bool = True,
) -> None:
    """Refuse, in one line, a context of ``n_ctx`` tokens (``n_seq`` sequences in all) that
    cannot fit even into an idle machine, before llama.cpp allocates it. ``n_gpu_layers`` is
    llama.cpp's count (0 when nothing went to a GPU); ``gpus`` the GPUs the layers go to;
    ``kv_unified`` False: a KV stream per sequence (``FitRequest.kv_unified``).

    Where the estimate cannot be made (metadata our reader does not know), nothing is
    refused: llama.cpp stays the judge, as before; so is a memory whose size is unknown (0).
    A generous bound from what llama.cpp already read (under a millisecond) settles nearly
    every load first; only a context within a
    factor of two of the limit pays for reading the GGUF's summary (0.2 s on a 49k-token
    vocabulary)."""
    limits = memory_limits(gpus)
    known = [b for b in (limits.ram_bytes, limits.gpu_bytes if gpus else 0) if b > 0]
    if not known:
        return
    bound = _upper_bound(model, context_cells(n_ctx, n_seq, kv_unified), n_ubatch)
    if bound is not None and 2 * bound <= min(known):
        return
    path = Path(cfg.model_path)  # a caller may have passed a str
    summary = _summary(path)
    if summary is None:
        return
    req = FitRequest(
        n_ctx=n_ctx, n_gpu_layers=n_gpu_layers if gpus else 0, type_k=cfg.type_k,
        type_v=cfg.type_v, n_ubatch=n_ubatch, n_seq=n_seq, flash_attn=flash_attn,
        kv_unified=kv_unified,
    )  # fmt: skip
    try:
        needs = estimate(summary, req)
    except (KeyError, ValueError, ArithmeticError, IndexError):
        return
    why = beyond_total_memory(needs, limits, weights_mapped=cfg.use_mmap)
    if why is not None:
        per = f" ({n_seq} sequences)" if n_seq > 1 else ""
        raise UserInputError(
            f"a context of {n_ctx} tokens{per} for {path.name} {why} (estimate); "
            "ask for a smaller context"
        )


def _upper_bound(model: Any, n_ctx: int, n_ubatch: int) -> int | None:
    """More bytes than the fit estimate can come to for any placement, KV type and flash
    attention setting (an f32 cache of ``n_head`` heads, every compute term added, the
    weights twice), from llama.cpp's loaded model; None when a number it needs is not plain."""
    import llama_cpp as L

    arch = _meta(model, "general.architecture") or ""
    try:
        n_ff = int(_meta(model, f"{arch}.feed_forward_length") or "0")
        dims = [int(_meta(model, f"{arch}.attention.{k}_length") or "0") for k in ("key", "value")]
    except ValueError:  # a per-layer array: leave it to the estimate
        return None
    n_layer = int(L.llama_model_n_layer(model))
    n_head = max(1, int(L.llama_model_n_head(model)))
    n_embd = int(L.llama_model_n_embd(model))
    n_vocab = int(L.llama_vocab_n_tokens(L.llama_model_get_vocab(model)))
    head_dim = max([n_embd // n_head, *dims])
    cells = -(-n_ctx // 256) * 256
    kv = cells * n_layer * 2 * n_head * head_dim * 4
    wide = max(n_embd, n_head * head_dim)
    per_token = cells * n_head + 3 * max(n_ff, 4 * n_embd) + n_vocab + 2 * n_head * head_dim
    compute = n_ubatch * 4 * (per_token + 8 * wide) + 3 * cells * n_ubatch + (4 << 20)
    # twice the weights: with a tied output, the estimate counts token_embd on the host and
    # its copy as the GPU's output layer
    return kv + compute + 2 * int(L.llama_model_size(model))


def memory_limits(gpus: Sequence[Device]) -> MemoryLimits:
    """Total RAM, and the total memory of ``gpus`` (all of them: llama.cpp splits the layers
    across every GPU it sees)."""
    ram = ram_device().total_bytes
    vram = sum(g.total_bytes for g in gpus)
    if os.environ.get(UNIFIED_MEMORY_ENV):
        vram += ram
    names = ", ".join(g.name for g in gpus) or "the GPU"
    return MemoryLimits(ram_bytes=ram, gpu_bytes=vram, gpu_name=names)


def _summary(path: Path) -> GgufSummary | None:
    """The model's summary (all of its shards when they lie beside it), or None."""
    shards = [path]
    info = split_info(path.name)
    if info is not None:
        prefix, _, count = info
        named = [
            path.with_name(f"{prefix}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)
        ]
        if all(p.is_file() for p in named):
            shards = named
    try:
        return read_summary(shards)
    except (LlcudaError, OSError, ValueError):
        return None
