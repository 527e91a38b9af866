"""Compare two stored benchmark runs: the ratio B / A for every metric both measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llcuda_tui.core.bench._results import StoredRun
from llcuda_tui.core.bench._stats import ratio

# --- comparison -------------------------------------------------------------------------------

THROUGHPUT_METRICS = (
    "avg_ts",
    "j_per_token",
    "tokens_per_j",
    "bandwidth_efficiency",
    "perplexity",
    "sm_clock_mhz_mean",
    "power_w_mean",
)
LATENCY_METRICS = (
    ("ttft_ms", "mean"),
    ("ttft_ms", "p50"),
    ("ttft_ms", "p95"),
    ("ttft_ms", "p99"),
    ("tpot_ms", "mean"),
    ("tpot_ms", "p50"),
    ("itl_ms", "mean"),
    ("itl_ms", "p50"),
    ("itl_ms", "p95"),
    ("itl_ms", "p99"),
    ("e2e_ms", "mean"),
    ("e2e_ms", "p50"),
    ("e2e_ms", "p99"),
    ("output_throughput_tokens_per_s", None),
    ("request_throughput_per_s", None),
    ("window_j_per_token", None),
)
_KEY_FIELDS = ("test", "n_gpu_layers", "n_batch", "n_ubatch", "flash_attn", "type_k", "type_v")


def _row_key(row: dict[str, Any], with_model: bool) -> tuple:
    key = tuple(row.get(k) for k in _KEY_FIELDS)
    return (row.get("model_filename"), *key) if with_model else key


def compare_runs(a: StoredRun, b: StoredRun) -> list[dict[str, Any]]:
    """Rows ``{test, metric, a, b, ratio}`` (ratio = b / a) for what both runs measured.

    Throughput rows match on test, settings and model; failing that on test and settings
    alone when that picks one row (so runs of two different models compare directly).
    """
    out: list[dict[str, Any]] = []
    several = len(a.models) > 1 or len(b.models) > 1
    by_model = {_row_key(r, True): r for r in b.results}
    by_test: dict[tuple, list[dict[str, Any]]] = {}
    for r in b.results:
        by_test.setdefault(_row_key(r, False), []).append(r)
    for ra in a.results:
        rb = by_model.get(_row_key(ra, True))
        if rb is None:  # another model on the same test: compare when that is unambiguous
            candidates = by_test.get(_row_key(ra, False), [])
            rb = candidates[0] if len(candidates) == 1 else None
        if rb is None:
            continue
        label = ra.get("test", "?")
        if several:
            label = f"{ra.get('model_name') or Path(str(ra.get('model_filename'))).name} {label}"
        for metric in THROUGHPUT_METRICS:
            va, vb = ra.get(metric), rb.get(metric)
            if va is None and vb is None:
                continue
            out.append({"test": label, "metric": metric, "a": va, "b": vb, "ratio": ratio(vb, va)})
    if a.latency and b.latency:
        for name, stat in LATENCY_METRICS:
            va, vb = a.latency.get(name), b.latency.get(name)
            if stat is not None:
                va = (va or {}).get(stat)
                vb = (vb or {}).get(stat)
            if va is None and vb is None:
                continue
            metric = f"{name}.{stat}" if stat else name
            out.append({"test": a.mode, "metric": metric, "a": va, "b": vb, "ratio": ratio(vb, va)})
    return out
