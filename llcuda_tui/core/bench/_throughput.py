"""Benchmarks: llama-bench-compatible throughput, latency/concurrency, energy, perplexity.

* :func:`run_bench` measures prompt processing (``ppN``: N random tokens decoded in n_batch
  chunks) and generation (``tgN``: N tokens decoded one at a time) exactly as llama-bench does,
  through :meth:`Engine.bench_prompt` / :meth:`Engine.bench_gen`, with a warm-up, and reports
  the mean and sample sd of the per-repetition tokens/s. Each row uses llama-bench's field
  names where they overlap, plus energy (NVML energy counter read at phase boundaries),
  validity (clocks, temperature, power, throttle reasons during each repetition), memory
  bandwidth efficiency and, when asked, perplexity.
* :mod:`bench_latency`: TTFT/ITL/TPOT/E2E through the real generation path;
  :mod:`bench_telemetry`: energy and validity during repetitions; :mod:`bench_compare`:
  ratios between two stored runs.

Run functions block; progress goes to ``on_progress`` and ``cancel`` stops them between
repetitions. With a :class:`BenchStore` the run is saved in one transaction.

One module on purpose (about 600 lines): a llama-bench run from spec to stored rows, whose
steps (instances, tests, rows with their telemetry, bandwidth and perplexity columns) hand
each other the same spec and row dictionaries; the other benchmarks already live apart.
"""

from __future__ import annotations

import functools
import itertools
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from llcuda_tui import __version__
from llcuda_tui.core.bench._results import BenchStore, StoredRun
from llcuda_tui.core.bench._stats import coefficient_of_variation, mean, noise_flags, sample_sd
from llcuda_tui.core.bench._telemetry import (
    TELEMETRY_INTERVAL_S,
    EnergyWindow,
    Telemetry,
    engine_cuda_devices,
    nvml_indices,
)
from llcuda_tui.core.errors import LlcudaError, UserInputError
from llcuda_tui.core.gpu import GpuSample, GpuSampler


class BenchCancelled(LlcudaError):
    """The benchmark was stopped before it finished."""


@dataclass(frozen=True)
class ModelRef:
    """A model to benchmark: its file and, when known, its content hash."""

    path: Path
    name: str
    sha256: str | None = None


@dataclass(frozen=True)
class BenchSpec:
    """A throughput benchmark: every combination of the list-valued settings is one test
    instance (as in llama-bench); each runs a ppN test per n_prompt and a tgN per n_gen."""

    models: tuple[ModelRef, ...]
    n_prompt: tuple[int, ...] = (512,)
    n_gen: tuple[int, ...] = (128,)
    repetitions: int = 5
    n_gpu_layers: tuple[int, ...] = (-1,)
    n_batch: tuple[int, ...] = (2048,)
    n_ubatch: tuple[int, ...] = (512,)
    n_ctx: tuple[int, ...] = (0,)
    """0 = just what the test needs (n_prompt or n_gen), as llama-bench sizes its context."""
    flash_attn: tuple[str, ...] = ("auto",)
    type_k: tuple[str, ...] = ("f16",)
    type_v: tuple[str, ...] = ("f16",)
    n_threads: tuple[int, ...] = (0,)
    warmup: bool = True
    energy_min_window_s: float = 1.0
    """Energy needs a window longer than the counter's update period (20-100 ms): when a
    test's timed repetitions are shorter than this in total, extra untimed repetitions run
    until the energy window is this long."""
    telemetry: bool = True
    bandwidth: bool = True
    """Measure memory bandwidth once per GPU (kept in the store) for the efficiency gauge."""
    remeasure_bandwidth: bool = False
    perplexity: bool = False
    ppl_ctx: int = 512
    ppl_chunks: int = 4
    ppl_text: str | None = None
    """Text to score (None = the text shipped in llcuda_tui/data)."""
    ppl_text_name: str = "perplexity.txt"
    command: str | None = None

    def validate(self) -> None:
        if not self.models:
            raise UserInputError("no model given (-m MODEL)")
        if self.repetitions < 1:
            raise UserInputError("repetitions (-r) must be >= 1")
        if any(n < 0 for n in self.n_prompt + self.n_gen):
            raise UserInputError("-p and -n values must be >= 0")
        if not any(self.n_prompt) and not any(self.n_gen) and not self.perplexity:
            raise UserInputError("nothing to measure: every -p and -n is 0")
        if any(n < -1 for n in self.n_gpu_layers):
            raise UserInputError("-ngl values must be >= -1")
        if any(b < 1 for b in self.n_batch + self.n_ubatch):
            raise UserInputError("batch sizes must be >= 1")
        if any(c < 0 for c in self.n_ctx):
            raise UserInputError("--ctx values must be >= 0")
        from llcuda_tui.core.engine import max_threads

        if any(not 0 <= t <= max_threads() for t in self.n_threads):
            raise UserInputError(f"thread counts must be in [1, {max_threads()}] (0 = default)")
        for fa in self.flash_attn:
            if fa not in ("auto", "on", "off"):
                raise UserInputError(f"flash attention must be on, off or auto (got '{fa}')")
        if self.perplexity and (self.ppl_ctx < 8 or self.ppl_chunks < 1):
            raise UserInputError("--ppl-ctx must be >= 8 and --ppl-chunks >= 1")


@dataclass(frozen=True)
class BenchProgress:
    """Where a benchmark is: ``done`` of ``total`` steps, and a line saying what it does.

    A step that measured something carries the number too (``value`` in ``unit``: a
    repetition's tokens/s, a request's TTFT in ms), so a UI can plot it without parsing.
    """

    done: int
    total: int
    message: str
    value: float | None = None
    unit: str = ""


ProgressFn = Callable[[BenchProgress], None]


# --- environment ---------------------------------------------------------------------------------


@functools.cache
def build_commit() -> tuple[str | None, str | None]:
    """(llama.cpp commit, ggml version) of the loaded llama.cpp, from ggml itself."""
    import ctypes

    try:
        import llama_cpp
    except ImportError:
        return None, None
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    for name in ("libggml-base.so", "libggml.so", "libllama.so"):
        path = lib_dir / name
        if not path.exists():
            continue
        try:
            lib = ctypes.CDLL(str(path))
            lib.ggml_commit.restype = ctypes.c_char_p
            lib.ggml_version.restype = ctypes.c_char_p
            return lib.ggml_commit().decode(), lib.ggml_version().decode()
        except (OSError, AttributeError):
            continue
    return None, None


def cpu_info() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_env(sample: GpuSample | None) -> dict[str, Any]:
    """Build, host and GPU facts recorded with every run."""
    commit, ggml_version = build_commit()
    try:
        import llama_cpp

        lcp_version: str | None = llama_cpp.__version__
    except ImportError:
        lcp_version = None
    gpus = sample.gpus if sample is not None and sample.ok else ()
    return {
        "llcuda_tui": __version__,
        "build_commit": commit,
        "ggml_version": ggml_version,
        "llama_cpp_python": lcp_version,
        "cpu_info": cpu_info(),
        "gpu_info": ", ".join(g.name or "?" for g in gpus),
        "driver_version": sample.driver_version if sample is not None else None,
        "cuda_driver_version": sample.cuda_driver_version if sample is not None else None,
        "gpus": [{"index": g.index, "name": g.name, "uuid": g.uuid} for g in gpus],
        "nvml_state": sample.state if sample is not None else "off",
        "nvml_message": sample.message if sample is not None else "",
        "hostname": platform.node(),
        "python": platform.python_version(),
    }


# --- throughput -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Instance:
    """One engine configuration (a point of the sweep)."""

    model: ModelRef
    n_gpu_layers: int
    n_batch: int
    n_ubatch: int
    n_ctx: int
    flash_attn: str
    type_k: str
    type_v: str
    n_threads: int


def instances(spec: BenchSpec) -> list[_Instance]:
    """Every combination of the sweep, in llama-bench's order (model outermost)."""
    combos = itertools.product(
        spec.models,
        spec.n_gpu_layers,
        spec.n_batch,
        spec.n_ubatch,
        spec.n_ctx,
        spec.flash_attn,
        spec.type_k,
        spec.type_v,
        spec.n_threads,
    )
    return [_Instance(*c) for c in combos]


def spec_tests(spec: BenchSpec) -> list[tuple[str, int, int]]:
    """(name, n_prompt, n_gen) of each test an instance runs: ppN first, then tgN."""
    pp = [(f"pp{n}", n, 0) for n in dict.fromkeys(spec.n_prompt) if n > 0]
    tg = [(f"tg{n}", 0, n) for n in dict.fromkeys(spec.n_gen) if n > 0]
    return pp + tg


def _engine_config(inst: _Instance, spec: BenchSpec) -> Any:
    from llcuda_tui.core.engine import EngineConfig, FlashAttn, KvType

    needed = max([n for _, p, g in spec_tests(spec) for n in (p, g)] or [0])
    if spec.perplexity:
        needed = max(needed, spec.ppl_ctx)
    n_ctx = inst.n_ctx or max(needed, 16)
    if inst.n_ctx and inst.n_ctx < needed:
        raise UserInputError(f"--ctx {inst.n_ctx} is smaller than the longest test ({needed})")
    return EngineConfig(
        model_path=inst.model.path,
        n_gpu_layers=inst.n_gpu_layers,
        n_ctx=n_ctx,
        n_batch=inst.n_batch,
        n_ubatch=inst.n_ubatch,
        n_threads=inst.n_threads,
        flash_attn=cast(FlashAttn, inst.flash_attn),  # checked by EngineConfig.validate
        type_k=cast(KvType, inst.type_k),
        type_v=cast(KvType, inst.type_v),
        # as the engine generates: fully offloaded, the sampler runs in the GPU graph. Measured
        # on an H100 (bench/decode_variants.py): tg is 3-4 % lower with it off.
        backend_sampling="auto",
        model_sha256=inst.model.sha256,
    )


class ProgressCounter:
    def __init__(self, total: int, on_progress: ProgressFn | None) -> None:
        self.total = total
        self.done = 0
        self.on_progress = on_progress

    def step(
        self, message: str, advance: int = 1, value: float | None = None, unit: str = ""
    ) -> None:
        self.done += advance
        if self.on_progress is not None:
            done = min(self.done, self.total)
            self.on_progress(BenchProgress(done, self.total, message, value, unit))

    def say(self, message: str) -> None:
        self.step(message, advance=0)


def run_bench(
    spec: BenchSpec,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    *,
    store: BenchStore | None = None,
    nvml: Any = None,
) -> StoredRun:
    """Run a throughput benchmark; save it in ``store`` (if given) and return it."""
    spec.validate()
    cancel = cancel or threading.Event()
    tests = spec_tests(spec)
    insts = instances(spec) if tests else []  # perplexity only: no throughput instances
    per_test = spec.repetitions + (1 if spec.warmup else 0)
    ppl_steps = len(spec.models) if spec.perplexity else 0
    progress = ProgressCounter(len(insts) * (1 + len(tests) * per_test) + ppl_steps, on_progress)

    sampler = GpuSampler(TELEMETRY_INTERVAL_S, nvml=nvml, processes=False, pcie=False)
    sampler_on = spec.telemetry
    first = sampler.quick() if sampler_on else None
    run = StoredRun(
        mode="throughput",
        env=collect_env(first),
        spec=spec_dict(spec),
        command=spec.command,
    )
    try:
        for inst in insts:
            run.results.extend(
                _run_instance(
                    inst, spec, tests, sampler if sampler_on else None, store, progress, cancel
                )
            )
        if spec.perplexity:
            run.perplexity = _run_perplexities(spec, progress, cancel)
            _attach_perplexity(run.results, run.perplexity)
    except BenchCancelled:
        run.status = "cancelled"
    finally:
        sampler.close()
    if store is not None and (run.results or run.perplexity):
        store.save_run(run)
    if run.status == "cancelled":
        raise BenchCancelled(
            f"benchmark cancelled after {len(run.results)} result(s)"
            + (f" (saved as run {run.run_id})" if run.run_id else "")
        )
    return run


def _run_instance(
    inst: _Instance,
    spec: BenchSpec,
    tests: list[tuple[str, int, int]],
    sampler: GpuSampler | None,
    store: BenchStore | None,
    progress: ProgressCounter,
    cancel: threading.Event,
) -> list[dict[str, Any]]:
    from llcuda_tui.core.engine import Engine

    check_cancel(cancel)
    progress.say(f"loading {inst.model.name} (ngl {inst.n_gpu_layers}, b {inst.n_batch})")
    engine = Engine.load(_engine_config(inst, spec))
    try:
        progress.step(f"loaded {inst.model.name} on {engine.info.backend}")
        sample = sampler.quick() if sampler is not None else None
        indices = nvml_indices(engine_cuda_devices(engine.info.backend), sample) if sample else []
        telemetry = Telemetry(sampler, indices)
        gpu = gpu_fields(sample, indices)
        bandwidth = _bandwidth(spec, store, sample, indices, engine.info.backend, progress)
        rows = []
        telemetry.start()
        try:
            for name, n_prompt, n_gen in tests:
                row = _run_test(
                    engine, inst, spec, name, n_prompt, n_gen, telemetry, progress, cancel
                )
                row.update(gpu)
                row.update(_efficiency(row, bandwidth))
                rows.append(row)
        finally:
            telemetry.stop()
        return rows
    finally:
        engine.close()


def check_cancel(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise BenchCancelled("benchmark cancelled")


def _run_test(
    engine: Any,
    inst: _Instance,
    spec: BenchSpec,
    name: str,
    n_prompt: int,
    n_gen: int,
    telemetry: Telemetry,
    progress: ProgressCounter,
    cancel: threading.Event,
) -> dict[str, Any]:
    # llama.cpp caps a context's batch at its size: chunks never exceed what it accepts
    chunk = min(inst.n_batch, engine.info.n_batch)

    def once() -> float:
        if n_prompt:
            return float(engine.bench_prompt(n_prompt, chunk))
        return float(engine.bench_gen(n_gen))

    tokens = n_prompt + n_gen
    if spec.warmup:
        check_cancel(cancel)
        # llama-bench warms up with the full prompt, or with one generated token
        if n_prompt:
            engine.bench_prompt(n_prompt, chunk)
        else:
            engine.bench_gen(1)
        progress.step(f"{inst.model.name} {name}: warm-up")
    window = EnergyWindow()
    samples_ns: list[int] = []
    for rep in range(spec.repetitions):
        check_cancel(cancel)
        a = telemetry.mark()
        seconds = once()
        b = telemetry.mark()
        samples_ns.append(int(seconds * 1e9))
        window.add(a, b, tokens, b.t - a.t, telemetry.between(a, b))
        rate = tokens / seconds
        progress.step(
            f"{inst.model.name} {name}: {rep + 1}/{spec.repetitions} {rate:.1f} t/s",
            value=rate,
            unit="t/s",
        )
    # energy needs a long enough window: extra untimed repetitions for short tests (bounded
    # in wall time, in case the counter keeps resetting and the window never grows)
    deadline = time.monotonic() + 3 * spec.energy_min_window_s + 1
    while (
        telemetry.active
        and window.energy_ok
        and window.energy_seconds < spec.energy_min_window_s
        and time.monotonic() < deadline
    ):
        check_cancel(cancel)
        a = telemetry.mark()
        seconds = once()
        b = telemetry.mark()
        window.add(a, b, tokens, b.t - a.t, telemetry.between(a, b))
    return _row(engine, inst, spec, name, n_prompt, n_gen, samples_ns, window, telemetry.active)


def _row(
    engine: Any,
    inst: _Instance,
    spec: BenchSpec,
    name: str,
    n_prompt: int,
    n_gen: int,
    samples_ns: list[int],
    window: EnergyWindow,
    telemetry_active: bool,
) -> dict[str, Any]:
    info = engine.info
    tokens = n_prompt + n_gen
    samples_ts = [tokens * 1e9 / ns for ns in samples_ns]
    commit, _ = build_commit()
    row: dict[str, Any] = {
        # llama-bench's fields
        "build_commit": commit,
        "cpu_info": cpu_info(),
        "gpu_info": "",
        "backends": "CUDA" if engine_cuda_devices(info.backend) else "CPU",
        "model_filename": str(inst.model.path),
        "model_type": info.model_desc,
        "model_size": info.model_size_bytes,
        "model_n_params": info.n_params,
        "n_batch": inst.n_batch,
        "n_ubatch": inst.n_ubatch,
        "n_threads": info.n_threads,
        "type_k": info.type_k,
        "type_v": info.type_v,
        "n_gpu_layers": inst.n_gpu_layers,
        "flash_attn": bool(info.flash_attn),
        "use_mmap": True,
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "n_depth": 0,
        "test_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "avg_ns": int(mean(samples_ns) or 0),
        "stddev_ns": int(sample_sd(samples_ns) or 0),
        "avg_ts": mean(samples_ts),
        "stddev_ts": sample_sd(samples_ts),
        "samples_ns": samples_ns,
        "samples_ts": samples_ts,
        # ours
        "test": name,
        "phase": "prefill" if n_prompt else "decode",
        "model_name": inst.model.name,
        "model_sha256": inst.model.sha256,
        "repetitions": len(samples_ns),
        "warmup": spec.warmup,
        "n_ctx": info.n_ctx,
        "n_batch_effective": info.n_batch,
        "n_ubatch_effective": info.n_ubatch,
        "backend": info.backend,
        "n_layers_offloaded": info.n_layers_offloaded,
        "n_layers": info.n_layers,
        "flash_attn_setting": inst.flash_attn,
        "llama_cpp_python": info.llama_cpp_python,
        "load_time_s": info.load_time_s,
    }
    row.update(window.fields(telemetry_active))
    # repetitions that disagree: ``valid`` stays the GPU's (throttling, telemetry), the
    # tables show ``noisy`` next to its flags (report.result_flags)
    row.update(cv_ts=coefficient_of_variation(samples_ts), noisy=bool(noise_flags(samples_ts)))
    return row


def gpu_fields(sample: GpuSample | None, indices: list[int]) -> dict[str, Any]:
    gpus = [g for g in (sample.gpus if sample else ()) if g.index in indices]
    return {
        "gpu_info": ", ".join(g.name or "?" for g in gpus),
        "gpu_name": gpus[0].name if gpus else None,
        "gpu_uuid": gpus[0].uuid if gpus else None,
        "gpu_uuids": [g.uuid for g in gpus],
        "driver_version": sample.driver_version if sample else None,
        "cuda_driver_version": sample.cuda_driver_version if sample else None,
    }


def _bandwidth(
    spec: BenchSpec,
    store: BenchStore | None,
    sample: GpuSample | None,
    indices: list[int],
    backend: str,
    progress: ProgressCounter,
) -> dict[str, Any] | None:
    """Memory bandwidth of the (first) GPU the engine uses: stored, or measured once."""
    if not spec.bandwidth or sample is None or not indices:
        return None
    gpu = sample.gpu(indices[0])
    if gpu is None or not gpu.uuid:
        return None
    if store is not None and not spec.remeasure_bandwidth:
        known = store.bandwidth(gpu.uuid)
        if known is not None:
            return known
    from llcuda_tui.core.gpu import CudaUnavailable, measure_bandwidth

    devices = engine_cuda_devices(backend)
    progress.say(f"measuring memory bandwidth of {gpu.name} (once per GPU)")
    try:
        result = measure_bandwidth(devices[0] if devices else 0)
    except CudaUnavailable as exc:
        return {"bytes_per_s": None, "error": str(exc)}
    detail = result.to_dict()
    if store is not None:
        store.save_bandwidth(gpu.uuid, gpu.name, result.bytes_per_s, detail)
    return {"gpu_uuid": gpu.uuid, "gpu_name": gpu.name, **detail}


def _efficiency(row: dict[str, Any], bandwidth: dict[str, Any] | None) -> dict[str, Any]:
    """Decode t/s × model bytes ÷ measured bandwidth: the share of bandwidth decode uses."""
    bps = bandwidth.get("bytes_per_s") if bandwidth else None
    eff = None
    if bps and row["phase"] == "decode" and row.get("avg_ts"):
        eff = row["avg_ts"] * row["model_size"] / bps
    return {"memory_bandwidth_bytes_per_s": bps, "bandwidth_efficiency": eff}


# --- perplexity -------------------------------------------------------------------------------


def _run_perplexities(
    spec: BenchSpec, progress: ProgressCounter, cancel: threading.Event
) -> list[dict[str, Any]]:
    from llcuda_tui.core.bench._perplexity import compute_perplexity
    from llcuda_tui.core.engine import Engine, EngineConfig, FlashAttn, KvType

    out = []
    for model in spec.models:
        check_cancel(cancel)
        progress.say(f"perplexity of {model.name}")
        cfg = EngineConfig(
            model_path=model.path,
            n_gpu_layers=spec.n_gpu_layers[0],
            n_ctx=spec.ppl_ctx,
            n_batch=spec.ppl_ctx,
            n_ubatch=min(spec.n_ubatch[0], spec.ppl_ctx),
            n_threads=spec.n_threads[0],
            flash_attn=cast(FlashAttn, spec.flash_attn[0]),  # checked by EngineConfig.validate
            type_k=cast(KvType, spec.type_k[0]),
            type_v=cast(KvType, spec.type_v[0]),
            backend_sampling="off",
        )
        with Engine.load(cfg) as engine:
            result = compute_perplexity(
                engine,
                spec.ppl_text,
                n_ctx=spec.ppl_ctx,
                max_chunks=spec.ppl_chunks,
                text_name=spec.ppl_text_name,
                cancel=cancel,
            )
        progress.step(f"perplexity of {model.name}: {result.perplexity:.3f}")
        out.append(
            {"model_filename": str(model.path), "model_name": model.name, **result.to_dict()}
        )
    return out


def _attach_perplexity(rows: list[dict[str, Any]], ppl: list[dict[str, Any]]) -> None:
    by_model = {p["model_filename"]: p["perplexity"] for p in ppl}
    for row in rows:
        row["perplexity"] = by_model.get(row["model_filename"])


def spec_dict(spec: Any) -> dict[str, Any]:
    d = asdict(spec)
    d.pop("ppl_text", None)
    return _plain(d)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
