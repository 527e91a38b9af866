"""Run an experiment cell by cell, resumably: cells done are skipped, a cell that was in
flight when the process died runs again, and each finished cell is stored with its run in
one transaction (:class:`ExperimentStore`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llcuda_tui.core.bench import (
    BenchCancelled,
    BenchProgress,
    BenchSpec,
    LatencySpec,
    ModelRef,
    StoredRun,
    default_prompts,
    run_bench,
    run_latency,
)
from llcuda_tui.core.config import Settings
from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.experiment._quantize import quantize
from llcuda_tui.core.experiment._spec import (
    Cell,
    ExperimentSpec,
    expand_cells,
    setting,
    varying_axes,
)
from llcuda_tui.core.experiment._store import DONE, ExperimentStore
from llcuda_tui.core.gpu import GpuSampler

TRACE_INTERVAL_S = 0.25
"""GPU power/clock sampling during a cell, for the report's per-cell time series."""


@dataclass(frozen=True)
class ExperimentProgress:
    """Where a run is: ``done`` of ``total`` cells, the cell running and the ETA."""

    experiment_id: int
    done: int
    total: int
    cell: str
    message: str
    eta_s: float | None = None
    finished_cell: bool = False
    valid: bool | None = None
    """For a finished cell: no throttling, clock or power cap seen during it."""


ExperimentProgressFn = Callable[[ExperimentProgress], None]


def prepare_models(
    spec: ExperimentSpec,
    settings: Settings,
    on_line: Callable[[str], None] | None = None,
) -> list[str]:
    """The store names the experiment runs on, making the quantizations it asks for first."""
    from llcuda_tui.core.store import Store

    store = Store.from_settings(settings)
    names = [store.entry(n).name for n in spec.models]
    if spec.source is not None:
        results = quantize(
            store,
            spec.source,
            spec.quantize,
            allow_requantize=spec.allow_requantize,
            on_warning=on_line,
        )
        for r in results:
            if on_line is not None:
                made = "made" if r.created else "already in the store"
                on_line(f"quantized {r.entry.name} ({made})")
        names += [r.entry.name for r in results]
    return list(dict.fromkeys(names))


def start_or_resume(
    store: ExperimentStore, spec: ExperimentSpec, models: list[str], file: Path | None
) -> tuple[int, bool]:
    """(experiment id, resumed): the unfinished experiment of this spec, or a new one."""
    spec_d = spec.to_dict() | {"resolved_models": models}
    found = store.find_unfinished(spec.name, spec_d)
    if found is not None:
        return found, True
    cells = expand_cells(spec, models)
    exp_id = store.create_experiment(
        spec.name,
        str(file) if file else None,
        spec_d,
        models,
        [(c.key, c.model, c.settings) for c in cells],
    )
    return exp_id, False


def run_experiment(
    store: ExperimentStore,
    exp_id: int,
    spec: ExperimentSpec,
    settings: Settings,
    on_progress: ExperimentProgressFn | None = None,
    cancel: threading.Event | None = None,
    *,
    nvml: Any = None,
) -> int:
    """Run every cell of experiment ``exp_id`` that is not done; the number of cells run."""
    from llcuda_tui.core.store import Store

    cancel = cancel or threading.Event()
    model_store = Store.from_settings(settings)
    stored = store.get_experiment(exp_id)
    axes = varying_axes(spec)
    total = len(stored.cells)
    done = stored.done
    durations = [c.seconds for c in stored.cells if c.status == DONE and c.seconds]
    store.set_status(exp_id, "running")
    ran = 0

    def say(cell: str, message: str, finished: bool = False, valid: bool | None = None) -> None:
        if on_progress is None:
            return
        left = total - done
        eta = sum(durations) / len(durations) * left if durations and left else None
        on_progress(ExperimentProgress(exp_id, done, total, cell, message, eta, finished, valid))

    try:
        for sc in stored.cells:
            if sc.status == DONE:
                continue
            if cancel.is_set():
                raise BenchCancelled("experiment cancelled")
            cell = Cell(sc.model, sc.settings)
            label = cell.label(axes)
            entry = model_store.entry(sc.model)
            ref = ModelRef(entry.path, entry.name, entry.sha256)
            store.start_cell(exp_id, sc.seq)
            say(label, f"cell {done + 1}/{total}: {label}")
            started = time.monotonic()
            sampler = GpuSampler(TRACE_INTERVAL_S, nvml=nvml, processes=False, pcie=False)
            try:
                sampler.start()

                def inner(p: BenchProgress, label: str = label, n: int = done + 1) -> None:
                    say(label, f"cell {n}/{total}: {label}: {p.message}")

                run = _run_cell(spec, cell, ref, inner, cancel, nvml)
            except BenchCancelled:
                raise
            except LlcudaError as exc:
                store.fail_cell(exp_id, sc.seq, str(exc))
                say(label, f"cell {done + 1}/{total} failed: {exc}")
                continue
            finally:
                sampler.stop()
                trace = _trace(sampler, started)
                sampler.close()
            seconds = time.monotonic() - started
            store.finish_cell(exp_id, sc.seq, run, seconds, trace)
            durations.append(seconds)
            done += 1
            ran += 1
            valid = all(r.get("valid", True) for r in run.results)
            flags = sorted({f for r in run.results for f in r.get("validity_flags") or []})
            note = f" (flags: {', '.join(flags)})" if flags else ""
            say(label, f"cell {done}/{total} done: {label} in {seconds:.1f} s{note}", True, valid)
    except BenchCancelled:
        store.set_status(exp_id, "cancelled")
        raise
    final = store.get_experiment(exp_id)
    store.set_status(exp_id, "complete" if final.done == total else "incomplete")
    return ran


def _run_cell(
    spec: ExperimentSpec,
    cell: Cell,
    ref: ModelRef,
    on_progress: Callable[[BenchProgress], None],
    cancel: threading.Event,
    nvml: Any,
) -> StoredRun:
    """One cell: the throughput tests (and perplexity), then latency; one stored run."""
    ngl = setting(cell, "n_gpu_layers")
    n_ctx = setting(cell, "n_ctx")
    common = {
        "n_gpu_layers": ngl,
        "n_batch": setting(cell, "n_batch"),
        "n_ubatch": setting(cell, "n_ubatch"),
        "flash_attn": setting(cell, "flash_attn"),
        "type_k": setting(cell, "type_k"),
        "type_v": setting(cell, "type_v"),
        "n_threads": setting(cell, "threads"),
    }
    run: StoredRun | None = None
    if any(spec.pp) or any(spec.tg) or spec.perplexity is not None:
        bench = BenchSpec(
            models=(ref,),
            n_prompt=spec.pp or (0,),
            n_gen=spec.tg or (0,),
            repetitions=spec.repetitions,
            n_ctx=(n_ctx,),
            warmup=spec.warmup_runs > 0,
            telemetry=spec.energy,
            bandwidth=False,
            perplexity=spec.perplexity is not None,
            ppl_ctx=spec.perplexity.ctx if spec.perplexity else 512,
            ppl_chunks=spec.perplexity.chunks if spec.perplexity else 4,
            command=f"llcuda experiment run ({spec.name}: {cell.key})",
            n_gpu_layers=(ngl,),
            n_batch=(common["n_batch"],),
            n_ubatch=(common["n_ubatch"],),
            flash_attn=(common["flash_attn"],),
            type_k=(common["type_k"],),
            type_v=(common["type_v"],),
            n_threads=(common["n_threads"],),
        )
        run = run_bench(bench, on_progress, cancel, nvml=nvml)
    if spec.latency is not None:
        lat = LatencySpec(
            model=ref,
            prompts=default_prompts(spec.latency.requests),
            iters=spec.latency.requests,
            warmup=spec.warmup_runs,
            max_tokens=spec.latency.max_tokens,
            concurrency=setting(cell, "concurrency"),
            n_ctx=n_ctx or 4096,
            **common,
        )
        lat_run = run_latency(lat, on_progress, cancel, nvml=nvml)
        if run is None:
            run = lat_run
        else:
            run.latency = lat_run.latency
    assert run is not None  # the spec guarantees a test
    run.mode = "experiment"
    run.spec = {"cell": cell.key, "settings": cell.settings, **run.spec}
    return run


def _trace(sampler: GpuSampler, started: float) -> list[dict[str, Any]]:
    """GPU power, SM clock and temperature over the cell (seconds from its start)."""
    out = []
    for s in sampler.samples():
        for g in s.gpus:
            if g.status != "ok":
                continue
            out.append(
                {
                    "t_s": round(s.time_s - started, 3),
                    "gpu": g.index,
                    "power_w": g.power_w,
                    "sm_clock_mhz": g.sm_clock_mhz,
                    "temperature_c": g.temperature_c,
                    "throttled": bool(g.power_capped or g.thermal_slowdown),
                }
            )
    return out
