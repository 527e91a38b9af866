"""A stored benchmark run as text: Markdown tables (llama-bench's columns), CSV, JSON (llama-bench:
a list of rows) and JSON lines. ``llcuda bench`` prints these and the Benchmark screen exports
them, so a run reads the same in both.
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.bench import RUN_FORMATS as RUN_FORMATS
from llcuda_tui.core.bench._stats import coefficient_of_variation, noise_flags, summary_stat
from llcuda_tui.core.fmt import fmt_size

if TYPE_CHECKING:
    from ._results import StoredRun


def render_run(run: StoredRun, fmt: str) -> str:
    """The run in ``fmt``: md (tables), csv, json (llama-bench: a list of rows), jsonl."""
    if run.latency is not None:
        return _render_latency(run, fmt)
    rows = run.results or run.perplexity  # a perplexity-only run has no throughput rows
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows)
    if fmt == "csv":
        return _csv(rows)
    return _md_throughput(run)


def _render_latency(run: StoredRun, fmt: str) -> str:
    lat = dict(run.latency or {}, run_id=run.run_id)
    if fmt == "json":
        return json.dumps(lat, indent=2) + "\n"
    if fmt == "jsonl":
        return json.dumps(lat) + "\n"
    if fmt == "csv":
        return _csv([_flatten(lat)])
    head = (
        f"{run.mode}: {lat.get('model_name')} on {lat.get('backend')}, "
        f"{lat.get('concurrency')} stream(s), {lat.get('completed')} requests, "
        f"{lat.get('max_tokens')} tokens each\n\n"
    )
    rows = []
    for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        s = lat.get(name) or {}
        stats = [fmt_value(summary_stat(s, k)) for k in ("mean", "p50", "p95", "p99")]
        rows.append([name.replace("_ms", "").upper() + " (ms)", str(s.get("n", 0)), *stats])
    table = md_table(["metric", "n", "mean", "p50", "p95", "p99"], rows)
    tail = [
        f"\nrequest throughput: {fmt_value(lat.get('request_throughput_per_s'))} req/s",
        f"output throughput:  {fmt_value(lat.get('output_throughput_tokens_per_s'))} tokens/s",
        f"total throughput:   {fmt_value(lat.get('total_token_throughput_per_s'))} tokens/s",
    ]
    if lat.get("window_j_per_token") is not None:
        tail.append(
            f"energy:             {fmt_value(lat['window_j_per_token'])} J per output token "
            f"({lat.get('window_energy_samples')} sample(s))"
        )
    return head + table + "\n".join(tail) + "\n"


def _md_throughput(run: StoredRun) -> str:
    rows = run.results
    if not rows:
        return _md_perplexity(run.perplexity) if run.perplexity else "no results\n"
    swept = {
        key
        for key in ("n_batch", "n_ubatch", "type_k", "type_v", "n_threads", "n_ctx")
        if len({str(r.get(key)) for r in rows}) > 1
    }
    headers = ["model", "size", "params", "backend", "ngl", "fa", *sorted(swept), "test", "t/s",
               "J/tok", "eff", "ppl", "flags"]  # fmt: skip
    table = []
    for r in rows:
        table.append([
            str(r.get("model_type") or r.get("model_name")),
            _size(r.get("model_size")),
            _params(r.get("model_n_params")),
            str(r.get("backends")),
            str(r.get("n_gpu_layers")),
            "1" if r.get("flash_attn") else "0",
            *[str(r.get(k)) for k in sorted(swept)],
            str(r.get("test")),
            f"{fmt_value(r.get('avg_ts'))} ± {fmt_value(r.get('stddev_ts'))}",
            _energy(r),
            _pct(r.get("bandwidth_efficiency")),
            fmt_value(r.get("perplexity")),
            ",".join(result_flags(r)) or "ok",
        ])  # fmt: skip
    env = run.env
    foot = (
        f"\nbuild: {env.get('build_commit') or '?'} (llama-cpp-python "
        f"{env.get('llama_cpp_python') or '?'}), {env.get('gpu_info') or env.get('cpu_info')}"
    )
    if env.get("driver_version"):
        foot += f", driver {env['driver_version']}"
    return md_table(headers, table) + foot + "\n"


def result_flags(row: dict[str, Any]) -> list[str]:
    """A throughput row's flags for a person: the GPU's (power_cap, thermal_slowdown, …),
    then ``noisy ±N%`` when its repetitions spread by more than NOISY_CV (computed from the
    samples, so runs stored before the flag existed get it too)."""
    flags = list(row.get("validity_flags") or [])
    samples = [float(v) for v in row.get("samples_ts") or []]
    if noise_flags(samples):
        cv = coefficient_of_variation(samples) or 0.0
        flags.append(f"noisy ±{cv * 100:.0f}%")
    return flags


def _md_perplexity(ppl: list[dict[str, Any]]) -> str:
    rows = [[str(p.get("model_name")), fmt_value(p.get("perplexity")), str(p.get("n_ctx")),
             str(p.get("n_chunks")), str(p.get("n_tokens_scored")), str(p.get("text_name"))]
            for p in ppl]  # fmt: skip
    return md_table(["model", "ppl", "ctx", "chunks", "tokens scored", "text"], rows)


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with its columns padded to the widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]  # fmt: skip

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)]) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in r.items()})
    return buf.getvalue()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def fmt_value(v: Any) -> str:
    """A measured value for a table: ``n/a`` for None, ints as they are, floats to 4 digits."""
    if v is None:
        return "n/a"
    if isinstance(v, bool | int):
        return str(v)
    if abs(v) >= 100:
        return f"{v:.2f}"
    return f"{v:.4g}" if abs(v) < 1 else f"{v:.3f}"


def fmt_ratio(v: float | None) -> str:
    """A B/A ratio as ``1.234x`` (``n/a`` when a side is missing)."""
    return "n/a" if v is None else f"{v:.3f}x"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.0f} %"


def _energy(r: dict[str, Any]) -> str:
    j = r.get("j_per_token")
    if j is None:
        return "n/a"
    return f"{j:.4g} ({r.get('energy_samples')})"


def _size(n: int | None) -> str:
    if not n:
        return "n/a"
    return fmt_size(n, 2, "GiB" if n >= 2**30 else "MiB")


def _params(n: int | None) -> str:
    if not n:
        return "n/a"
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"
