"""Benchmarks: throughput (llama-bench-compatible), latency, telemetry during runs, perplexity,
stored results, comparison, statistics, and a run as text (report).

Public names are imported from here; the modules behind them are private. Exports load
their module on first use (PEP 562), so importing the package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llcuda_tui.core._lazy import lazy_exports

if TYPE_CHECKING:
    from ._compare import (
        compare_runs as compare_runs,
    )
    from ._compare import (
        metric_label as metric_label,
    )
    from ._compare import (
        why_not_comparable as why_not_comparable,
    )
    from ._estimate import (
        BenchSizes as BenchSizes,
    )
    from ._estimate import (
        Estimate as Estimate,
    )
    from ._estimate import (
        estimate_s as estimate_s,
    )
    from ._estimate import (
        measured_speeds as measured_speeds,
    )
    from ._estimate import (
        suggested_sizes as suggested_sizes,
    )
    from ._latency import (
        LatencySpec as LatencySpec,
    )
    from ._latency import (
        RequestTiming as RequestTiming,
    )
    from ._latency import (
        default_prompts as default_prompts,
    )
    from ._latency import (
        latency_metrics as latency_metrics,
    )
    from ._latency import (
        run_latency as run_latency,
    )
    from ._latency import (
        run_latency_on_worker as run_latency_on_worker,
    )
    from ._perplexity import (
        compute_perplexity as compute_perplexity,
    )
    from ._perplexity import (
        shipped_text as shipped_text,
    )
    from ._process import (
        run_bench_in_child as run_bench_in_child,
    )
    from ._ranges import (
        int_list as int_list,
    )
    from ._report import (
        fmt_ratio as fmt_ratio,
    )
    from ._report import (
        fmt_value as fmt_value,
    )
    from ._report import (
        md_table as md_table,
    )
    from ._report import (
        render_run as render_run,
    )
    from ._report import (
        result_flags as result_flags,
    )
    from ._results import (
        BenchStore as BenchStore,
    )
    from ._results import (
        StoredRun as StoredRun,
    )
    from ._results import (
        StoreError as StoreError,
    )
    from ._results import (
        store_path as store_path,
    )
    from ._speculative import (
        SpecBenchJob as SpecBenchJob,
    )
    from ._speculative import (
        SpecModeResult as SpecModeResult,
    )
    from ._speculative import (
        compare_speculation as compare_speculation,
    )
    from ._speculative import (
        edit_prompt as edit_prompt,
    )
    from ._stats import (
        percentile as percentile,
    )
    from ._stats import (
        ratio as ratio,
    )
    from ._stats import (
        sample_sd as sample_sd,
    )
    from ._stats import (
        summarize as summarize,
    )
    from ._stats import (
        summary_stat as summary_stat,
    )
    from ._stats import (
        tail_percentile as tail_percentile,
    )
    from ._telemetry import (
        EnergyWindow as EnergyWindow,
    )
    from ._telemetry import (
        Mark as Mark,
    )
    from ._telemetry import (
        Telemetry as Telemetry,
    )
    from ._telemetry import (
        engine_cuda_devices as engine_cuda_devices,
    )
    from ._telemetry import (
        nvml_indices as nvml_indices,
    )
    from ._throughput import (
        BenchCancelled as BenchCancelled,
    )
    from ._throughput import (
        BenchProgress as BenchProgress,
    )
    from ._throughput import (
        BenchSpec as BenchSpec,
    )
    from ._throughput import (
        ModelRef as ModelRef,
    )
    from ._throughput import (
        instances as instances,
    )
    from ._throughput import (
        run_bench as run_bench,
    )
    from ._throughput import (
        spec_tests as spec_tests,
    )

RUN_FORMATS = ("md", "csv", "json", "jsonl")
"""What :func:`render_run` writes (here, not in ``_report``: ``llcuda bench``'s parser offers
them without loading the report code)."""

_EXPORTS = {
    "SpecBenchJob": "_speculative",
    "SpecModeResult": "_speculative",
    "compare_speculation": "_speculative",
    "edit_prompt": "_speculative",
    "compare_runs": "_compare",
    "metric_label": "_compare",
    "why_not_comparable": "_compare",
    "BenchSizes": "_estimate",
    "Estimate": "_estimate",
    "estimate_s": "_estimate",
    "measured_speeds": "_estimate",
    "suggested_sizes": "_estimate",
    "LatencySpec": "_latency",
    "RequestTiming": "_latency",
    "default_prompts": "_latency",
    "latency_metrics": "_latency",
    "run_latency": "_latency",
    "run_latency_on_worker": "_latency",
    "compute_perplexity": "_perplexity",
    "shipped_text": "_perplexity",
    "run_bench_in_child": "_process",
    "int_list": "_ranges",
    "fmt_ratio": "_report",
    "fmt_value": "_report",
    "md_table": "_report",
    "render_run": "_report",
    "result_flags": "_report",
    "BenchStore": "_results",
    "StoreError": "_results",
    "StoredRun": "_results",
    "store_path": "_results",
    "percentile": "_stats",
    "ratio": "_stats",
    "sample_sd": "_stats",
    "summarize": "_stats",
    "summary_stat": "_stats",
    "tail_percentile": "_stats",
    "EnergyWindow": "_telemetry",
    "Mark": "_telemetry",
    "Telemetry": "_telemetry",
    "engine_cuda_devices": "_telemetry",
    "nvml_indices": "_telemetry",
    "BenchCancelled": "_throughput",
    "BenchProgress": "_throughput",
    "BenchSpec": "_throughput",
    "ModelRef": "_throughput",
    "instances": "_throughput",
    "run_bench": "_throughput",
    "spec_tests": "_throughput",
}
__all__ = sorted(["RUN_FORMATS", *_EXPORTS])
__getattr__ = lazy_exports(__name__, _EXPORTS)
