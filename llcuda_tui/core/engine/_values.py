"""The engine's and sampling's knobs with their defaults (:class:`EngineValues`,
:class:`SamplingValues`) and the names they take: what the config (``config.Settings``) is
made of. Apart from the engine's other types so that reading the settings loads only these
(``llcuda models ls`` does not need ``EngineConfig``, ``RunRecord``, ... nor ``random``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from llcuda_tui.core.engine._threads import max_threads
from llcuda_tui.core.errors import UserInputError

FlashAttn = Literal["auto", "on", "off"]
"""Flash attention: ``auto`` lets llama.cpp decide on a GPU (see ``flash_attn_type``)."""
BackendSampling = Literal["auto", "on", "off"]
"""Sampling in the GPU graph: ``auto`` when the whole model is offloaded."""
KvType = Literal["f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"]
"""A KV cache element type llama.cpp accepts."""

AUTO_ON_OFF: tuple[FlashAttn, ...] = get_args(FlashAttn)
KV_TYPES: tuple[KvType, ...] = get_args(KvType)
GGML_TYPES: dict[KvType, int] = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7,
                                 "q8_0": 8, "iq4_nl": 20, "bf16": 30}  # fmt: skip
"""``ggml_type`` of each KV type."""
MAX_CTX = 1 << 24
"""The largest context any load may ask for (16 Mi tokens, far beyond any model's training
context); the real check is against the model's own, when it loads."""


@dataclass(frozen=True, kw_only=True)
class EngineValues:
    """The knobs of loading a model and their defaults, in one place for both layers that carry
    them: the config's ``[engine]`` defaults (``config.EngineDefaults``) and one load
    (:class:`EngineConfig`)."""

    n_gpu_layers: int = -1
    """Layers offloaded to the GPU: -1 = all, 0 = none (CPU only), N = the first N."""
    n_ctx: int = 4096
    """Context length in tokens; 0 = the model's training context."""
    n_batch: int = 512
    """Largest prompt chunk submitted to one llama_decode call."""
    n_ubatch: int = 512
    """Physical batch size inside llama.cpp (at most n_batch)."""
    n_threads: int = 0
    """CPU threads for generation; 0 = physical cores (at most 8)."""
    flash_attn: FlashAttn = "auto"
    """auto = on a GPU, llama.cpp's auto (on where the GPU has a kernel for the model's head
    size); on the CPU, off unless the V cache is quantized (which needs it)."""
    type_k: KvType = "f16"
    """KV cache type for K (one of :data:`KV_TYPES`)."""
    type_v: KvType = "f16"
    """KV cache type for V (one of :data:`KV_TYPES`)."""
    ctx_beyond_training: bool = False
    """Allow a context longer than the model was trained on, stretched with YaRN RoPE
    scaling by training / asked (unless the model's GGUF scales RoPE itself:
    ``_limits.rope_scaling_for``); off, :meth:`EngineConfig.check_ctx` refuses one."""

    def engine_values(self) -> dict[str, Any]:
        """Just these knobs (not what a subclass adds), by name."""
        return {f.name: getattr(self, f.name) for f in fields(EngineValues)}

    def validate(self) -> None:
        """Raise UserInputError naming the first knob that is out of range."""
        problems = [
            (self.n_gpu_layers < -1, "n_gpu_layers must be >= -1"),
            (self.n_ctx < 0, "n_ctx must be >= 0"),
            # llama.cpp keeps n_ctx in a uint32: 2^32 wrapped to 0 and larger ones allocate
            # until memory runs out; the model's own limit is checked when it loads
            (self.n_ctx > MAX_CTX, f"n_ctx must be at most {MAX_CTX}"),
            (self.n_batch < 1 or self.n_ubatch < 1, "n_batch and n_ubatch must be >= 1"),
            (
                not 0 <= self.n_threads <= max_threads(),
                f"n_threads must be in [1, {max_threads()}] (0 = default)",
            ),
            (self.flash_attn not in AUTO_ON_OFF, "flash_attn must be auto, on or off"),
        ]
        for bad, message in problems:
            if bad:
                raise UserInputError(message)
        for key, name in (("type_k", self.type_k), ("type_v", self.type_v)):
            if name not in KV_TYPES:
                raise UserInputError(f"{key} must be one of {', '.join(KV_TYPES)} (not {name!r})")


@dataclass(frozen=True)
class SamplingValues:
    """The sampling knobs and their defaults, in one place for every layer that carries them:
    a request (:class:`SamplingParams`), the config's defaults and a conversation's settings."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int = -1
    """-1: a fresh random seed for each generation."""

    def sampling_values(self) -> dict[str, Any]:
        """Just these knobs (not what a subclass adds), by name."""
        return {f.name: getattr(self, f.name) for f in fields(SamplingValues)}
