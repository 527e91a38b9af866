"""Latency and concurrency benchmarks: real prompts through the real generation path.

Metrics as vLLM's ``bench serve`` defines them: TTFT (request start to first token), TPOT
(per request, (E2E - TTFT) / (output tokens - 1)), ITL (every gap between successive tokens,
pooled over requests) and E2E latency, with mean, p50, p95, p99; plus request and token
throughput. ``run_requests`` drives any objects with ``stream(request)`` (local engines, or a
worker's client: :func:`run_latency_on_worker`), one concurrent stream each.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from llcuda_tui.core.bench._results import BenchStore, StoredRun
from llcuda_tui.core.bench._stats import summarize
from llcuda_tui.core.bench._telemetry import (
    TELEMETRY_INTERVAL_S,
    EnergyWindow,
    Telemetry,
    engine_cuda_devices,
    nvml_indices,
)
from llcuda_tui.core.bench._throughput import (
    BenchProgress,
    ModelRef,
    ProgressCounter,
    ProgressFn,
    check_cancel,
    collect_env,
    gpu_fields,
    spec_dict,
)
from llcuda_tui.core.errors import LlcudaError, UserInputError
from llcuda_tui.core.gpu import GpuSampler


@dataclass(frozen=True)
class LatencySpec:
    """A latency (or, with ``concurrency`` > 1, concurrency) benchmark on real prompts."""

    model: ModelRef
    prompts: tuple[str, ...]
    iters: int = 10
    warmup: int = 1
    max_tokens: int = 128
    concurrency: int = 1
    n_gpu_layers: int = -1
    n_ctx: int = 4096
    n_batch: int = 512
    n_ubatch: int = 512
    flash_attn: str = "auto"
    type_k: str = "f16"
    type_v: str = "f16"
    n_threads: int = 0
    ignore_eos: bool = True
    command: str | None = None

    def validate(self) -> None:
        if not self.prompts or not all(p.strip() for p in self.prompts):
            raise UserInputError("latency mode needs non-empty prompts")
        if self.iters < 1 or self.warmup < 0:
            raise UserInputError("--iters must be >= 1 and --warmup >= 0")
        if self.max_tokens < 1:
            raise UserInputError("-n (tokens to generate) must be >= 1 in latency mode")
        if not 1 <= self.concurrency <= 64:
            raise UserInputError("--concurrency must be between 1 and 64")


# --- latency and concurrency ---------------------------------------------------------------


@dataclass
class RequestTiming:
    """One request as the client saw it (seconds since the run started)."""

    start_s: float
    token_arrivals_s: list[float]
    end_s: float
    prompt_tokens: int
    output_tokens: int
    engine_ttft_s: float
    engine_decode_tokens_per_s: float

    @property
    def ttft_s(self) -> float:
        return (self.token_arrivals_s[0] if self.token_arrivals_s else self.end_s) - self.start_s

    @property
    def e2e_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def itls_s(self) -> list[float]:
        t = self.token_arrivals_s
        return [b - a for a, b in itertools.pairwise(t)]

    @property
    def tpot_s(self) -> float | None:
        """(E2E - TTFT) / (output tokens - 1); None for a one-token reply."""
        if self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


def latency_metrics(timings: Sequence[RequestTiming], duration_s: float) -> dict[str, Any]:
    """vLLM ``bench serve``'s metrics: TTFT, TPOT (per request), ITL (every gap between
    tokens of every request), E2E latency, in ms; request and token throughput."""
    ms = 1000.0
    tpots = [t.tpot_s * ms for t in timings if t.tpot_s is not None]
    total_out = sum(t.output_tokens for t in timings)
    total_in = sum(t.prompt_tokens for t in timings)
    return {
        "completed": len(timings),
        "duration_s": duration_s,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput_per_s": len(timings) / duration_s if duration_s > 0 else None,
        "output_throughput_tokens_per_s": total_out / duration_s if duration_s > 0 else None,
        "total_token_throughput_per_s": (total_in + total_out) / duration_s
        if duration_s > 0
        else None,
        "ttft_ms": summarize([t.ttft_s * ms for t in timings]).to_dict(),
        "tpot_ms": summarize(tpots).to_dict(),
        "itl_ms": summarize([x * ms for t in timings for x in t.itls_s]).to_dict(),
        "e2e_ms": summarize([t.e2e_s * ms for t in timings]).to_dict(),
        "engine_ttft_ms": summarize([t.engine_ttft_s * ms for t in timings]).to_dict(),
        "engine_decode_tokens_per_s": summarize(
            [t.engine_decode_tokens_per_s for t in timings if t.engine_decode_tokens_per_s]
        ).to_dict(),
        # the raw values, for distributions (an experiment report plots their CDFs)
        "ttft_ms_samples": [t.ttft_s * ms for t in timings],
        "e2e_ms_samples": [t.e2e_s * ms for t in timings],
        "itl_ms_samples": [x * ms for t in timings for x in t.itls_s],
    }


def _timed_request(engine: Any, request: Any, t0: float) -> RequestTiming:
    perf = time.perf_counter
    start = perf() - t0
    arrivals: list[float] = []
    record = None
    for chunk in engine.stream(request):
        now = perf() - t0
        if chunk.record is not None:
            record = chunk.record
            break
        arrivals.append(now)
    end = perf() - t0
    if record is None:
        raise LlcudaError("the engine ended a stream without a run record")
    # one chunk per generated token, then the record: E2E ends when the reply is complete
    arrivals = arrivals[: record.generated_tokens]
    return RequestTiming(
        start_s=start,
        token_arrivals_s=arrivals,
        end_s=end,
        prompt_tokens=record.prompt_tokens,
        output_tokens=record.generated_tokens,
        engine_ttft_s=record.ttft_s,
        engine_decode_tokens_per_s=record.decode_tokens_per_s,
    )


def run_requests(
    engines: Sequence[Any],
    requests: Sequence[Any],
    cancel: threading.Event | None = None,
    on_done: Callable[[int, RequestTiming], None] | None = None,
) -> tuple[list[RequestTiming], float]:
    """Send ``requests`` over ``len(engines)`` concurrent streams (one per engine: anything
    with ``stream(request)``, e.g. a local Engine or a worker client); returns the timings in
    completion order and the wall time from the first start to the last end."""
    cancel = cancel or threading.Event()
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(requests)):
        todo.put(i)
    timings: list[RequestTiming] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    t0 = time.perf_counter()

    def worker(engine: Any) -> None:
        while not cancel.is_set() and not errors:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                timing = _timed_request(engine, requests[i], t0)
            except BaseException as exc:  # handed to the caller below
                with lock:
                    errors.append(exc)
                return
            with lock:
                timings.append(timing)
                n = len(timings)
            if on_done is not None:
                on_done(n, timing)

    threads = [
        threading.Thread(target=worker, args=(e,), name=f"llcuda-bench-{k}", daemon=True)
        for k, e in enumerate(engines)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    if not timings:
        return [], 0.0
    first = min(t.start_s for t in timings)
    last = max(t.end_s for t in timings)
    return timings, last - first


def default_prompts(n: int = 8, words: int = 60) -> tuple[str, ...]:
    """Real prompts: passages of the shipped text, each asking for a continuation."""
    from llcuda_tui.core.bench._perplexity import shipped_text

    paras = [p.strip() for p in shipped_text().split("\n\n") if len(p.split()) > 20]
    out = []
    for p in itertools.islice(itertools.cycle(paras), n):
        out.append(" ".join(p.split()[:words]))
    return tuple(out)


def run_latency(
    spec: LatencySpec,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    *,
    store: BenchStore | None = None,
    nvml: Any = None,
    engines: Sequence[Any] | None = None,
) -> StoredRun:
    """Latency/concurrency benchmark. Loads ``spec.concurrency`` local engines unless
    ``engines`` (anything with ``stream``) are given."""
    spec.validate()
    cancel = cancel or threading.Event()
    from llcuda_tui.core.engine import Engine, GenerationRequest, SamplingParams

    loads = 0 if engines is not None else spec.concurrency
    progress = ProgressCounter(loads + spec.iters, on_progress)
    owned: list[Any] = []
    sampler = GpuSampler(TELEMETRY_INTERVAL_S, nvml=nvml, processes=False, pcie=False)
    try:
        if engines is None:
            cfg = _latency_config(spec)
            for k in range(spec.concurrency):
                check_cancel(cancel)
                progress.step(f"loading {spec.model.name} ({k + 1}/{spec.concurrency})")
                owned.append(Engine.load(cfg))
            engines = owned
        sample = sampler.quick()
        backend = getattr(getattr(engines[0], "info", None), "backend", "")
        # a worker's GPUs are not this machine's: no local power or energy for remote runs
        remote = getattr(engines[0], "url", None) is not None
        indices = [] if remote else nvml_indices(engine_cuda_devices(backend), sample)
        telemetry = Telemetry(sampler, indices)

        def request(i: int) -> Any:
            return GenerationRequest(
                prompt=spec.prompts[i % len(spec.prompts)],
                max_tokens=spec.max_tokens,
                sampling=SamplingParams(temperature=0.0),
                ignore_eos=spec.ignore_eos,
            )

        warm = [request(i) for i in range(spec.warmup * len(engines))]
        if warm:
            progress.say(f"warm-up: {len(warm)} request(s)")
            run_requests(engines, warm, cancel)
        check_cancel(cancel)
        reqs = [request(i) for i in range(spec.iters)]
        a = telemetry.mark()
        telemetry.start()
        try:
            timings, duration = run_requests(
                engines,
                reqs,
                cancel,
                on_done=lambda n, t: progress.step(
                    f"request {n}/{spec.iters}: ttft {t.ttft_s * 1000:.1f} ms, "
                    f"{t.output_tokens} tokens",
                    value=t.ttft_s * 1000,
                    unit="ms TTFT",
                ),
            )
        finally:
            telemetry.stop()
        b = telemetry.mark()
        check_cancel(cancel)
        metrics = latency_metrics(timings, duration)
        window = EnergyWindow()
        out_tokens = metrics["total_output_tokens"]
        window.add(a, b, out_tokens, b.t - a.t, telemetry.between(a, b))
        energy = window.fields(telemetry.active)
        info = getattr(engines[0], "info", None)
        latency = {
            "model_filename": str(spec.model.path),
            "model_name": spec.model.name,
            "model_size": getattr(info, "model_size_bytes", None),
            "backend": backend,
            "worker_url": getattr(engines[0], "url", None),
            "concurrency": len(engines),
            "iters": spec.iters,
            "warmup": spec.warmup,
            "max_tokens": spec.max_tokens,
            **metrics,
            **{f"window_{k}": v for k, v in energy.items()},
            **gpu_fields(sample if sample.ok else None, indices),
        }
        run = StoredRun(
            mode="concurrency" if len(engines) > 1 else "latency",
            env=collect_env(sample),
            spec=spec_dict(replace(spec, prompts=tuple(p[:80] for p in spec.prompts))),
            latency=latency,
            command=spec.command,
        )
    finally:
        for e in owned:
            e.close()
        sampler.close()
    if store is not None:
        store.save_run(run)
    return run


def run_latency_on_worker(
    spec: LatencySpec,
    url: str,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    *,
    store: BenchStore | None = None,
    api_key: str | None = None,
    verify: bool | str = True,
) -> StoredRun:
    """:func:`run_latency` against the worker at ``url`` (``llcuda serve`` or any
    OpenAI-compatible server): ``spec.concurrency`` concurrent streams over one client, on
    the model the worker serves (``spec.model`` is replaced by it; load settings in ``spec``
    do not apply)."""
    from llcuda_tui.core.worker import RemoteEngine

    spec.validate()
    if on_progress is not None:
        on_progress(BenchProgress(0, spec.iters, f"connecting to worker {url}"))
    with RemoteEngine.connect(url, api_key, wait_loaded_s=5.0, verify=verify) as engine:
        model = ModelRef(Path(engine.info.model_path), f"{engine.remote.model} @ {engine.url}")
        remote_spec = replace(spec, model=model)
        engines = [engine] * spec.concurrency
        return run_latency(remote_spec, on_progress, cancel, store=store, engines=engines)


def _latency_config(spec: LatencySpec) -> Any:
    from llcuda_tui.core.engine import EngineConfig, FlashAttn, KvType

    return EngineConfig(
        model_path=spec.model.path,
        n_gpu_layers=spec.n_gpu_layers,
        n_ctx=spec.n_ctx,
        n_batch=spec.n_batch,
        n_ubatch=spec.n_ubatch,
        n_threads=spec.n_threads,
        flash_attn=cast(FlashAttn, spec.flash_attn),  # checked by EngineConfig.validate
        type_k=cast(KvType, spec.type_k),
        type_v=cast(KvType, spec.type_v),
        model_sha256=spec.model.sha256,
    )
