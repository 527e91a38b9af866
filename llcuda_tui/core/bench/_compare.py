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
METRIC_LABELS = {
    "avg_ts": "t/s",
    "j_per_token": "J/token",
    "tokens_per_j": "tokens/J",
    "bandwidth_efficiency": "bandwidth used",
    "perplexity": "perplexity",
    "sm_clock_mhz_mean": "SM clock (MHz)",
    "power_w_mean": "power (W)",
    "ttft_ms": "TTFT",
    "tpot_ms": "time per token",
    "itl_ms": "inter-token",
    "e2e_ms": "end-to-end",
    "output_throughput_tokens_per_s": "output t/s",
    "request_throughput_per_s": "requests/s",
    "window_j_per_token": "J/output token",
}
"""What a person reads for each metric (the tables); exports and ``--json`` keep the
llama-bench and vLLM names (``metric``)."""


def metric_label(metric: str) -> str:
    """``avg_ts`` -> ``t/s``, ``ttft_ms.p95`` -> ``TTFT p95 (ms)``; unknown names as they are."""
    name, _, stat = metric.partition(".")
    label = METRIC_LABELS.get(name, name)
    if stat:
        return f"{label} {stat} (ms)" if name.endswith("_ms") else f"{label} {stat}"
    return label


def why_not_comparable(a: StoredRun, b: StoredRun) -> str | None:
    """Why runs ``a`` and ``b`` have nothing to compare (None when they have): a latency run
    measures requests (TTFT, time per token), a throughput run llama-bench's pp/tg t/s."""

    def kind(run: StoredRun) -> str:
        if run.latency:
            return "latency"
        return "throughput" if run.results else "perplexity" if run.perplexity else "empty"

    ka, kb = kind(a), kind(b)
    if ka != kb:
        return (
            f"run {a.run_id} is a {ka} run and run {b.run_id} a {kb} run: they measure different "
            "things and cannot be compared (mark two of one kind)"
        )
    if not compare_runs(a, b):
        return f"runs {a.run_id} and {b.run_id} have no test with the same settings to compare"
    return None


_KEY_FIELDS = ("test", "n_gpu_layers", "n_batch", "n_ubatch", "flash_attn", "type_k", "type_v")


def _row_key(row: dict[str, Any], with_model: bool) -> tuple:
    key = tuple(row.get(k) for k in _KEY_FIELDS)
    return (row.get("model_filename"), *key) if with_model else key


def compare_runs(a: StoredRun, b: StoredRun) -> list[dict[str, Any]]:
    """Rows ``{test, metric, label, a, b, ratio}`` (ratio = b / a) for what both runs measured
    (``label``: :func:`metric_label`).

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
            out.append({"test": label, "metric": metric, "label": metric_label(metric),
                        "a": va, "b": vb, "ratio": ratio(vb, va)})  # fmt: skip
    if a.latency and b.latency:
        for name, stat in LATENCY_METRICS:
            va, vb = a.latency.get(name), b.latency.get(name)
            if stat is not None:
                va = (va or {}).get(stat)
                vb = (vb or {}).get(stat)
            if va is None and vb is None:
                continue
            metric = f"{name}.{stat}" if stat else name
            out.append({"test": a.mode, "metric": metric, "label": metric_label(metric),
                        "a": va, "b": vb, "ratio": ratio(vb, va)})  # fmt: skip
    return out
