"""A request's hold on one of a many-model worker's engines (:class:`ModelUse`), and the
per-model series the worker's ``/metrics`` shows (:class:`ModelMetrics`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import concurrent.futures

    from llcuda_tui.core.engine import GenerationHandle, RunRecord
    from llcuda_tui.core.worker.state import ServedEngine


@dataclass
class ModelUse:
    """A request's hold on a model's engine: released once its generation is done (or at
    once when it never started), so the model is not unloaded under it."""

    engine: ServedEngine
    name: str
    """What the request asked for (an alias too): what the response's ``model`` echoes."""
    model: str
    """The served model's name (the metrics' label)."""
    _on_release: Callable[[RunRecord | None], None] | None = None

    def release(self, record: RunRecord | None = None) -> None:
        """Let go (idempotent); any thread."""
        on_release, self._on_release = self._on_release, None
        if on_release is not None:
            on_release(record)

    def release_when_done(self, handle: GenerationHandle) -> None:
        """Let go when ``handle``'s generation has settled (also when cancelled or failed);
        a :meth:`release` before that does nothing (the engine still runs it)."""
        on_release, self._on_release = self._on_release, None
        if on_release is None:
            return

        def done(future: concurrent.futures.Future[RunRecord]) -> None:
            ok = not future.cancelled() and future.exception() is None
            on_release(future.result() if ok else None)

        handle.future.add_done_callback(done)

    def release_when_all_done(self, handles: Sequence[GenerationHandle]) -> None:
        """:meth:`release_when_done` for the choices of one request (``n`` > 1, prompt
        arrays): let go when the last has settled, counting the tokens of every one."""
        if len(handles) == 1:
            self.release_when_done(handles[0])
            return
        on_release, self._on_release = self._on_release, None
        if on_release is None:
            return
        lock, records, left = threading.Lock(), [], [len(handles)]

        def done(future: concurrent.futures.Future[RunRecord]) -> None:
            ok = not future.cancelled() and future.exception() is None
            with lock:
                if ok:
                    records.append(future.result())
                left[0] -= 1
                last = left[0] == 0
            if last and on_release is not None:
                on_release(_summed(records))

        for handle in handles:
            handle.future.add_done_callback(done)


def _summed(records: list[RunRecord]) -> RunRecord | None:
    """One record carrying the tokens of all (what the per-model counters read)."""
    if not records:
        return None
    return replace(
        records[0],
        prompt_tokens=sum(r.prompt_tokens for r in records),
        generated_tokens=sum(r.generated_tokens for r in records),
    )


class ModelMetrics:
    """Per-model series on the worker's registry (labels ``model="..."``)."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        r = registry
        self.loads = Counter("llcuda_model_loads", "Model loads", ["model"], registry=r)
        self.load_failures = Counter(
            "llcuda_model_load_failures", "Model loads that failed", ["model"], registry=r
        )
        self.unloads = Counter(
            "llcuda_model_unloads",
            "Model unloads by reason (idle, keep_alive, evicted, request, removed, shutdown)",
            ["model", "reason"],
            registry=r,
        )
        buckets = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
        self.load_seconds = Histogram(
            "llcuda_model_load_seconds", "Time to load a model", ["model"], buckets=buckets,
            registry=r,
        )  # fmt: skip
        self.requests = Counter(
            "llcuda_model_requests", "Requests served by model", ["model"], registry=r
        )
        self.prompt_tokens = Counter(
            "llcuda_model_prompt_tokens", "Prompt tokens by model", ["model"], registry=r
        )
        self.generated_tokens = Counter(
            "llcuda_model_generated_tokens", "Generated tokens by model", ["model"], registry=r
        )
        self.loaded = Gauge(
            "llcuda_model_loaded", "1 while the model is loaded", ["model"], registry=r
        )
        self.in_flight = Gauge(
            "llcuda_model_in_flight", "Requests holding the model", ["model"], registry=r
        )
        self.budget = Gauge(
            "llcuda_models_budget_bytes", "Memory the loaded models may use", registry=r
        )
        self.used = Gauge(
            "llcuda_models_used_bytes", "Fit estimates of the models loaded or loading", registry=r
        )
