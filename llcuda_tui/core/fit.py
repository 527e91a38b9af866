"""Will a model fit? Weights + KV cache + compute buffer against free VRAM (NVML) or RAM
(here, or on an attached worker's GPU).

The arithmetic follows how llama.cpp (0.3.36's vendored build) places a model: with
``n_gpu_layers = k`` the output layer and the last ``k - 1`` repeating layers go to the GPU;
``token_embd`` stays in host memory; each offloaded layer's KV cache lives on the GPU; the
context is padded to 256 cells; sliding-window layers keep a smaller cache unless
``swa_full`` (llama.cpp's default). The compute buffer is an estimate of llama.cpp's
worst-case prompt graph. Measured on an H100 against llama.cpp's CUDA0 buffers (synthetic
425M, 1B and 8B Q4_K_M models; n_ctx 4k to 32k; flash attention on and off; f16 and q8_0 KV;
full and partial offload; 21 configurations): weights and KV cache within 0.1 %, compute
buffer within -7 %..+3 %, the device total within 3.5 %. The host-side compute buffer is a
rougher guess (within about 50 %; it is tens of MiB).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any

from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.gguf import GgufSummary

MIB = 1 << 20
CUDA_RESERVE = 512 * MIB
"""Device memory the CUDA context and allocator slack take outside llama.cpp's buffers."""
KV_PAD = 256


@dataclass(frozen=True)
class FitRequest:
    """How the model would be loaded."""

    n_ctx: int = 4096
    """0 = the model's training context."""
    n_gpu_layers: int = -1
    """-1 = all (and the output layer), 0 = CPU only."""
    type_k: str = "f16"
    type_v: str = "f16"
    n_ubatch: int = 512
    n_seq: int = 1
    """Sequences sharing the context (``n_ctx`` counts the cells of all of them)."""
    flash_attn: bool = True
    swa_full: bool = True
    kv_unified: bool = True
    """One KV stream for every sequence (llama.cpp's ``kv_unified``); False: a stream per
    sequence, each padded on its own (:func:`context_cells`)."""


@dataclass(frozen=True)
class MemoryNeeds:
    """Bytes llama.cpp would allocate, split by where they live."""

    n_ctx: int
    gpu_layers: int
    output_on_gpu: bool
    weights_gpu: int
    weights_host: int
    kv_gpu: int
    kv_host: int
    compute_gpu: int
    compute_host: int

    @property
    def gpu_total(self) -> int:
        return self.weights_gpu + self.kv_gpu + self.compute_gpu

    @property
    def host_total(self) -> int:
        return self.weights_host + self.kv_host + self.compute_host

    @property
    def total(self) -> int:
        return self.gpu_total + self.host_total


@dataclass(frozen=True)
class DeviceMemory:
    kind: str
    """'cuda' or 'ram'."""
    name: str
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class FitResult:
    verdict: str
    """'fits', 'partial' (only some layers fit on the GPU) or 'wont_fit'."""
    n_gpu_layers: int
    """The ``n_gpu_layers`` to load with (llama.cpp's count: the output layer is one)."""
    needs: MemoryNeeds
    device: DeviceMemory
    n_layer: int = 0

    def describe(self) -> str:
        """One line: the verdict and the numbers behind it."""
        free = _gib(self.device.free_bytes)
        n = self.needs
        if self.device.kind != "cuda":
            if self.verdict == "fits":
                return f"fits in RAM: needs {_gib(n.total)}, {free} available"
            return f"won't fit: needs {_gib(n.total)} of RAM, {free} available"
        on = f"on {self.device.name}"
        if self.verdict == "fits":
            return f"fits {on}: needs {_gib(n.gpu_total)} of VRAM, {free} free"
        if self.verdict == "partial":
            return (
                f"partial offload {on}: {n.gpu_layers} of {self.n_layer} layers "
                f"(--ngl {self.n_gpu_layers}), {_gib(n.gpu_total)} VRAM + "
                f"{_gib(n.host_total)} RAM; {free} free"
            )
        return f"won't fit {on}: not even the output layer fits in {free} free"

    def to_json(self) -> dict[str, Any]:
        needs = asdict(self.needs) | {
            "gpu_total": self.needs.gpu_total,
            "host_total": self.needs.host_total,
        }
        return {
            "verdict": self.verdict,
            "n_gpu_layers": self.n_gpu_layers,
            "description": self.describe(),
            "needs": needs,
            "device": asdict(self.device),
        }


def _gib(n: int) -> str:
    """Always GiB, two decimals: the unit these estimates are read in."""
    return fmt_size(n, 2, "GiB")


KV_BLOCKS: dict[str, tuple[int, int]] = {
    "f32": (1, 4), "f16": (1, 2), "bf16": (1, 2), "q8_0": (32, 34), "q5_1": (32, 24),
    "q5_0": (32, 22), "q4_1": (32, 20), "q4_0": (32, 18), "iq4_nl": (32, 18),
}  # fmt: skip
"""(elements per block, bytes per block) of each KV cache type (``KV_TYPES``), as the
``gguf`` package's ``GGML_QUANT_SIZES`` has them: the fit badges the TUI shows at start-up
need no ``import gguf`` (which imports numpy: 0.4 s of a 1.4 s start on a 2-core VM)."""


def kv_type_bytes(type_name: str, n_elements: int) -> int:
    """Bytes of ``n_elements`` values stored as ggml type ``type_name`` (f16, q8_0, ...)."""
    sizes = KV_BLOCKS.get(type_name.lower())
    if sizes is None:  # not a KV cache type: the gguf package knows every ggml type
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        sizes = GGML_QUANT_SIZES[GGMLQuantizationType[type_name.upper()]]
    block, size = sizes
    return (n_elements + block - 1) // block * size


def _pad(n: int) -> int:
    return -(-n // KV_PAD) * KV_PAD


def context_cells(n_ctx: int, n_seq: int = 1, unified: bool = True) -> int:
    """The KV cells llama.cpp allocates for a context of ``n_ctx`` tokens in all: padded to
    256; split into ``n_seq`` streams (``unified`` False), each stream's share is padded
    again, ``n_ctx_seq = GGML_PAD(n_ctx / n_seq_max, 256)`` (llama-context.cpp), so the
    total can be more (300 x 3 sequences: 1024 cells unified, 1536 split)."""
    cells = _pad(n_ctx)
    if unified or n_seq <= 1:
        return cells
    return _pad(cells // n_seq) * n_seq


def kv_cells(s: GgufSummary, req: FitRequest) -> int:
    n_ctx = req.n_ctx or s.context_length or 4096
    return context_cells(n_ctx, req.n_seq, req.kv_unified)


def attended_cells(s: GgufSummary, req: FitRequest) -> int:
    """The cells a token's attention spans: the whole cache, or with a stream per sequence
    its own stream (llama.cpp reserves the graph with the batch split over the streams)."""
    cells = kv_cells(s, req)
    return cells if req.kv_unified else cells // max(1, req.n_seq)


def kv_bytes_per_layer(s: GgufSummary, req: FitRequest) -> list[int]:
    """KV cache bytes of each layer at the request's context and cache types."""
    cells = kv_cells(s, req)
    swa_cells = cells
    if s.swa_layers and not req.swa_full:
        # llama-kv-cache-iswa.cpp: per stream, the window of each sequence it holds and a
        # ubatch, padded
        if req.kv_unified or req.n_seq <= 1:
            swa_cells = min(cells, _pad(s.sliding_window * req.n_seq + req.n_ubatch))
        else:
            per_stream = cells // req.n_seq
            swa_cells = min(per_stream, _pad(s.sliding_window + req.n_ubatch)) * req.n_seq
    out = []
    for il in range(s.n_layer):
        heads = s.n_head_kv_layers[il] if s.n_head_kv_layers else s.n_head_kv
        n = swa_cells if il in s.swa_layers else cells
        k = kv_type_bytes(req.type_k, s.head_dim_k * heads) * n
        v = kv_type_bytes(req.type_v, s.head_dim_v * heads) * n
        out.append(k + v)
    return out


def compute_bytes(s: GgufSummary, req: FitRequest) -> int:
    """Worst-case compute buffer of a prompt batch (``n_ubatch`` tokens, logits included).

    The larger of: the output (``n_vocab`` logits per token) and a layer's peak (the FFN's
    intermediates, or without flash attention the f32 KQ matrix over the whole cache), plus
    a few hidden-state tensors. Checked against llama.cpp's reserved buffers on CPU and CUDA.
    """
    f32 = 4
    tokens = req.n_ubatch
    hidden = tokens * max(s.n_embd, s.n_head * s.head_dim_k) * f32
    ffn = 3 * tokens * s.n_ff * f32
    if req.flash_attn:
        attn = 2 * tokens * s.n_head * s.head_dim_v * f32
    else:
        attn = attended_cells(s, req) * tokens * s.n_head * f32
    layer_peak = max(ffn, attn) + 4 * hidden
    logits = tokens * s.n_vocab * f32 + 2 * hidden
    return max(layer_peak, logits)


def host_inputs_bytes(s: GgufSummary, req: FitRequest) -> int:
    """Host compute buffer when the GPU does the work: embeddings of the batch, the KQ mask."""
    tokens = req.n_ubatch
    return 2 * tokens * s.n_embd * 4 + 3 * attended_cells(s, req) * tokens + 4 * MIB


def estimate(s: GgufSummary, req: FitRequest) -> MemoryNeeds:
    """Bytes on the GPU and in host memory for loading ``s`` as ``req`` says.

    llama.cpp counts the output layer as one of ``n_gpu_layers``: with ``k`` the output and
    the last ``k - 1`` repeating layers go to the GPU; ``token_embd`` always stays on the host.
    With any layer offloaded, the big matmuls of host layers run on the GPU too, so the GPU
    holds the whole compute buffer and the host only the batch's inputs.
    """
    n_layer = s.n_layer
    ngl = n_layer + 1 if req.n_gpu_layers < 0 else min(req.n_gpu_layers, n_layer + 1)
    first_gpu = n_layer + 1 - ngl
    on_gpu = [il >= first_gpu for il in range(n_layer)]
    output_on_gpu = ngl > 0
    layers = list(s.layer_bytes) or [0] * n_layer
    kv = kv_bytes_per_layer(s, req)
    weights_gpu = sum(b for b, g in zip(layers, on_gpu, strict=False) if g)
    weights_host = sum(layers) - weights_gpu + s.embd_bytes + s.other_bytes
    if output_on_gpu:
        weights_gpu += s.output_bytes
    elif not s.output_tied:
        weights_host += s.output_bytes
    kv_gpu = sum(b for b, g in zip(kv, on_gpu, strict=False) if g)
    compute = compute_bytes(s, req)
    return MemoryNeeds(
        n_ctx=kv_cells(s, req),
        gpu_layers=sum(on_gpu),
        output_on_gpu=output_on_gpu,
        weights_gpu=weights_gpu,
        weights_host=weights_host,
        kv_gpu=kv_gpu,
        kv_host=sum(kv) - kv_gpu,
        compute_gpu=compute if output_on_gpu else 0,
        compute_host=host_inputs_bytes(s, req) if output_on_gpu else compute,
    )


def fit(s: GgufSummary, req: FitRequest, device: DeviceMemory | None = None) -> FitResult:
    """Fits, partial offload of N layers, or won't fit, against ``device`` (detected if None)."""
    device = device or detect_device()
    if device.kind != "cuda" or req.n_gpu_layers == 0:
        needs = estimate(s, replace(req, n_gpu_layers=0))
        verdict = "fits" if needs.total <= device.free_bytes else "wont_fit"
        return FitResult(verdict, 0, needs, device, s.n_layer)
    budget = device.free_bytes - CUDA_RESERVE
    ngl = s.n_layer + 1 if req.n_gpu_layers < 0 else min(req.n_gpu_layers, s.n_layer + 1)
    needs = estimate(s, req)
    if needs.gpu_total <= budget:
        return FitResult("fits", ngl, needs, device, s.n_layer)
    for k in range(ngl - 1, 0, -1):
        partial = estimate(s, replace(req, n_gpu_layers=k))
        if partial.gpu_total <= budget:
            return FitResult("partial", k, partial, device, s.n_layer)
    return FitResult("wont_fit", 0, needs, device, s.n_layer)


@dataclass(frozen=True)
class MemoryLimits:
    """The most memory a load could ever get: the machine's total RAM and the total memory
    of the GPUs its layers go to (not what is free now); 0 = unknown, not checked."""

    ram_bytes: int
    gpu_bytes: int = 0
    gpu_name: str = "the GPU"


def beyond_total_memory(
    needs: MemoryNeeds, limits: MemoryLimits, *, weights_mapped: bool = True
) -> str | None:
    """Why a load that needs ``needs`` cannot fit even into an idle machine, as the middle of
    one line ("needs about ..., more than ..."), or None when it might fit.

    Deliberately against *total*, not free, memory: free memory changes from second to second
    (other processes, the page cache, another model unloading), and the estimate is an
    estimate (its host compute buffer within about 50 %), so a refusal against free memory
    would turn away loads that llama.cpp would have made; past the total, no moment would
    have room. Memory-mapped weights (``weights_mapped``, llama.cpp's default on the host)
    are not counted in RAM: they are file pages the kernel can drop and read again (slow,
    but it runs). The KV cache is not: llama.cpp clears it at creation, which touches every
    page; that is what made ``--ctx 99999999999`` climb through all RAM."""
    host = needs.kv_host + needs.compute_host + (0 if weights_mapped else needs.weights_host)
    if limits.gpu_bytes > 0 and needs.gpu_total > limits.gpu_bytes:
        return (
            f"needs about {_gib(needs.gpu_total)} of GPU memory ({needs.gpu_layers} layers: "
            f"KV cache {_gib(needs.kv_gpu)}, weights {_gib(needs.weights_gpu)}, compute "
            f"{_gib(needs.compute_gpu)}), more than the {_gib(limits.gpu_bytes)} of "
            f"{limits.gpu_name} in all"
        )
    if limits.ram_bytes > 0 and host > limits.ram_bytes:
        return (
            f"needs about {_gib(host)} of RAM (KV cache {_gib(needs.kv_host)}, compute "
            f"{_gib(needs.compute_host)}), more than the {_gib(limits.ram_bytes)} this "
            "machine has in all"
        )
    return None


CUDA_FLASH_ATTN_HEADS = (40, 64, 72, 80, 96, 112, 128, 256)
"""Head sizes (K = V) with a CUDA flash-attention kernel in llama.cpp (ggml-cuda/fattn.cu, as
built by llama-cpp-python 0.3.36)."""


def cuda_has_flash_attn(s: GgufSummary) -> bool:
    """Whether llama.cpp's CUDA backend has a flash-attention kernel for this model's heads;
    where it has none, its auto turns flash attention off (see ``engine.flash_attn_type``;
    the engine's ``flash_attn_for`` resolves a setting with it)."""
    k, v = s.head_dim_k, s.head_dim_v
    if k == v and k in CUDA_FLASH_ATTN_HEADS:
        return True
    gqa = s.n_head // s.n_head_kv if s.n_head_kv else 0
    return {(192, 128): gqa % 8 == 0, (320, 256): gqa % 32 == 0,
            (512, 512): gqa >= 2, (576, 512): gqa >= 2}.get((k, v), False) and gqa > 0  # fmt: skip


def detect_device() -> DeviceMemory:
    """Free memory of the first NVIDIA GPU (NVML), else of the host's RAM."""
    gpu = _nvml_device()
    return gpu if gpu is not None else ram_device()


def gpu_device(sample: Any, where: str = "") -> DeviceMemory | None:
    """Free memory of the first answering GPU of a :class:`~llcuda_tui.core.gpu.GpuSample`
    (e.g. a worker's), named ``"<where> GPU <i> <name>"``; None when it has no such GPU."""
    for g in getattr(sample, "gpus", ()):
        if g.status != "ok" or g.memory_total_bytes is None or g.memory_used_bytes is None:
            continue
        free = max(0, g.memory_total_bytes - g.memory_used_bytes)
        name = " ".join(x for x in (where, f"GPU {g.index}", g.name or "") if x)
        return DeviceMemory("cuda", name, free, g.memory_total_bytes)
    return None


def _nvml_device() -> DeviceMemory | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        index = _visible_index()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else str(name)
        return DeviceMemory("cuda", f"cuda:{index} {name}", int(info.free), int(info.total))
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def _visible_index() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0


def ram_device() -> DeviceMemory:
    """Available host memory (MemAvailable on Linux)."""
    free = total = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key == "MemAvailable":
                    free = int(value.split()[0]) * 1024
                elif key == "MemTotal":
                    total = int(value.split()[0]) * 1024
    except OSError:
        page = os.sysconf("SC_PAGE_SIZE")
        free = os.sysconf("SC_AVPHYS_PAGES") * page
        total = os.sysconf("SC_PHYS_PAGES") * page
    return DeviceMemory("ram", "RAM", free, total)


def worker_device(url: str, polled: Any) -> DeviceMemory | str:
    """The free memory of the first GPU in what a poll of worker ``url`` returned (a
    ``WorkerGpu``; the store's ``fit_badge`` fits against it), or one line saying why there
    is none (the worker is down, or has no GPU)."""
    if polled.gpu is None:
        return f"worker down: {polled.error}"
    sample = polled.gpu.sample
    device = gpu_device(sample, f"worker {url}")
    reason = sample.message or sample.state
    return device if device is not None else f"the worker has no GPU ({reason})"
