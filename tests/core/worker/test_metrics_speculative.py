"""The worker's /metrics counts speculative drafts from the run records it observes."""

from __future__ import annotations

from llcuda_tui.core.engine import RunRecord
from llcuda_tui.core.worker.metrics import WorkerMetrics


def _record(drafted: int, accepted: int) -> RunRecord:
    return RunRecord(
        prompt_tokens=10, generated_tokens=20, ttft_s=0.1, prefill_s=0.1, decode_s=1.0,
        prefill_tokens_per_s=100.0, decode_tokens_per_s=19.0, total_s=1.1, stop_reason="length",
        prompt_tokens_evaluated=10, model_sha256=None, backend="CPU", n_gpu_layers=0, n_ctx=512,
        spec_mode="ngram" if drafted else "", drafted_tokens=drafted, accepted_tokens=accepted,
        acceptance_rate=accepted / drafted if drafted else 0.0,
    )  # fmt: skip


def test_metrics_sum_drafted_and_accepted_tokens() -> None:
    metrics = WorkerMetrics()
    for drafted, accepted in ((12, 9), (0, 0), (8, 2)):
        metrics.observe_run(_record(drafted, accepted))
    text = metrics.render(None).decode()
    assert "llcuda_spec_drafted_tokens_total 20.0" in text
    assert "llcuda_spec_accepted_tokens_total 11.0" in text
