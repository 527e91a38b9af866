"""The worker's Prometheus metrics (``GET /metrics``), in a registry of its own."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from llcuda_tui.core.engine import RunRecord

if TYPE_CHECKING:
    from llcuda_tui.core.worker.batch import BatchStats


class WorkerMetrics:
    """Request counts, token counts, latency histograms and the slot loop's gauges."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "llcuda_requests", "HTTP requests by path and status", ["path", "status"], registry=r
        )
        self.prompt_tokens = Counter(
            "llcuda_prompt_tokens", "Prompt tokens of finished requests", registry=r
        )
        self.generated_tokens = Counter("llcuda_generated_tokens", "Generated tokens", registry=r)
        # speculative decoding, as llama-server's n_drafted / n_drafted_accepted counters
        self.drafted = Counter(
            "llcuda_spec_drafted_tokens", "Tokens drafted for verification", registry=r
        )
        self.draft_accepted = Counter(
            "llcuda_spec_accepted_tokens", "Drafted tokens the model accepted", registry=r
        )
        self.runs = Counter(
            "llcuda_runs", "Finished generations by stop reason", ["stop_reason"], registry=r
        )
        self.dropped_connections = Counter(
            "llcuda_dropped_connections",
            "Connections closed on a slow or over-limit client, by reason",
            ["reason"],
            registry=r,
        )
        latency = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
        self.ttft = Histogram(
            "llcuda_time_to_first_token_seconds",
            "Request to first token",
            buckets=latency,
            registry=r,
        )
        itl = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1)
        self.itl = Histogram(
            "llcuda_inter_token_latency_seconds", "Time between tokens", buckets=itl, registry=r
        )
        self.duration = Histogram(
            "llcuda_request_duration_seconds", "Whole generation", buckets=latency, registry=r
        )
        self.queue_depth = Gauge("llcuda_queue_depth", "Requests waiting for a slot", registry=r)
        self.active = Gauge("llcuda_active_sequences", "Sequences holding a slot", registry=r)
        self.slots = Gauge("llcuda_slots", "Sequences that can run at once", registry=r)
        self.kv_used = Gauge("llcuda_kv_cells_used", "KV cache cells in use", registry=r)
        self.kv_total = Gauge("llcuda_kv_cells_total", "KV cache cells", registry=r)
        self.kv_usage = Gauge("llcuda_kv_cache_usage_ratio", "KV cells in use / total", registry=r)
        self.decode_steps = Gauge("llcuda_decode_steps", "llama_decode calls so far", registry=r)
        self.ready = Gauge("llcuda_model_ready", "1 once the model is loaded", registry=r)

    def observe_run(self, record: RunRecord) -> None:
        """Count one finished generation (tokens, stop reason, TTFT, inter-token times)."""
        self.prompt_tokens.inc(record.prompt_tokens)
        self.generated_tokens.inc(record.generated_tokens)
        self.runs.labels(record.stop_reason).inc()
        if record.drafted_tokens:
            self.drafted.inc(record.drafted_tokens)
            self.draft_accepted.inc(record.accepted_tokens)
        self.duration.observe(record.total_s)
        if record.generated_tokens:
            self.ttft.observe(record.ttft_s)
        times = record.token_times_s
        for a, b in itertools.pairwise(times):
            self.itl.observe(b - a)

    def render(self, stats: BatchStats | None) -> bytes:
        """The exposition text, the gauges set from the engine's ``stats`` (None: not loaded)."""
        from prometheus_client import generate_latest

        self.ready.set(1 if stats is not None else 0)
        if stats is not None:
            s = stats
            self.queue_depth.set(s.queued)
            self.active.set(s.active)
            self.slots.set(s.slots)
            self.kv_used.set(s.kv_cells_used)
            self.kv_total.set(s.kv_cells_total)
            self.kv_usage.set(s.kv_usage)
            self.decode_steps.set(s.steps)
        return bytes(generate_latest(self.registry))
