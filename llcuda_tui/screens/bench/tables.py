"""How the Benchmark screen's tables read: a run's results (throughput or latency), the
history with its compare marks, and a compare of two runs. They fill a ``DataTable`` from
core's records; which run is shown or marked stays with the screen."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.bench import metric_label, result_flags, summary_stat, tail_percentile

if TYPE_CHECKING:
    from textual.widgets import DataTable

    from llcuda_tui.core.bench import StoredRun

HISTORY_COLUMNS = ("sel", "run", "date", "mode", "status", "models", "summary")
COMPARE_COLUMNS = ("test", "metric", "A", "B", "B/A")
MARK = "●"
"""The ``sel`` cell of a run marked for compare."""


def fill_results(table: DataTable[Any], run: StoredRun) -> None:
    """``run``'s results, with the columns of its kind (latency or throughput)."""
    table.clear(columns=True)
    if run.latency is not None:
        lat = run.latency
        table.add_columns("metric", "n", "mean", "p50", "p95", "p99")
        for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            s = lat.get(key) or {}
            table.add_row(
                f"{metric_label(key)} (ms)",
                str(s.get("n", 0)),
                # a p95 of 5 requests is their slowest one: n/a below 20 (p99: 100)
                *(num(summary_stat(s, k)) for k in ("mean", "p50", "p95", "p99")),
            )
        out = lat.get("output_throughput_tokens_per_s")
        table.add_row("output t/s", "", num(out), "", "", "")
        return
    table.add_columns(
        "model", "test", "ngl", "batch", "t/s (mean ± sd)", "reps", "p50", "p95", "J/token",
        "validity",
    )  # fmt: skip
    for r in run.results:
        samples = r.get("samples_ts") or []
        table.add_row(
            str(r.get("model_name")),
            str(r.get("test")),
            str(r.get("n_gpu_layers")),
            str(r.get("n_batch")),
            f"{num(r.get('avg_ts'))} ± {num(r.get('stddev_ts'))}",
            str(len(samples)),
            num(tail_percentile(samples, 50)),
            num(tail_percentile(samples, 95)),  # n/a below 20 repetitions
            num(r.get("j_per_token")),
            ", ".join(result_flags(r)) or "ok",  # 'noisy ±N%' when the reps disagree
        )


def fill_history(table: DataTable[Any], runs: Iterable[Any], marked: Sequence[int]) -> None:
    """One row per stored run (``BenchStore.list_runs``' listings), keyed by its id."""
    table.clear()
    for r in runs:
        models = ", ".join(Path(m).name for m in r.models.split(",") if m)
        table.add_row(
            MARK if r.run_id in marked else "",
            str(r.run_id),
            r.created_at[:16],
            r.mode,
            r.status,
            models,
            r.summary,
            key=str(r.run_id),
        )


def update_marks(table: DataTable[Any], column: Any, marked: Sequence[int]) -> None:
    """Only the marks change: rebuilding the table put the cursor back on row 1."""
    for key in table.rows:
        mark = MARK if key.value is not None and int(key.value) in marked else ""
        table.update_cell(key, column, mark)


def fill_compare(table: DataTable[Any], rows: Iterable[dict[str, Any]]) -> None:
    """core's ``compare_runs`` rows: A's and B's value of each metric and their ratio."""
    table.clear()
    for row in rows:
        ratio = row["ratio"]
        table.add_row(
            row["test"],
            row["label"],
            num(row["a"]),
            num(row["b"]),
            "n/a" if ratio is None else f"{ratio:.3f}x",
        )


def num(v: float | None) -> str:
    """A value for the screen's tables (fewer digits than ``llcuda bench``'s reports)."""
    if v is None:
        return "n/a"
    if isinstance(v, bool | int):
        return str(v)
    v = float(v)
    if abs(v) >= 100:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
