"""The report's figures, drawn with matplotlib's Agg backend (no display needed).

Each figure answers one question a reader has when picking a quantization: how fast is each
(speed vs quant), what it costs in quality for the bytes saved (perplexity vs size, the
Pareto front marked), how latency is spread (CDFs), whether the GPU held its clocks and
power during each cell (time series), and what a token costs in energy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class CellData:
    """What a figure needs of one done cell."""

    label: str
    model: str
    quant: str
    size_bytes: int | None
    group: str
    """The settings other than the model (e.g. 'fa=on'): one series per group."""
    rows: list[dict[str, Any]]
    latency: dict[str, Any] | None
    perplexity: float | None
    trace: list[dict[str, Any]]


@dataclass(frozen=True)
class NamedFigure:
    slug: str
    title: str
    caption: str
    figure: Figure


def _new(title: str, ncols: int = 1, width: float = 7.0) -> tuple[Figure, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * (1 if ncols == 1 else 0.75 * ncols), 4.2), dpi=100)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    fig.suptitle(title)
    return fig, axes


def plot_cells(cells: list[CellData], title: str) -> list[NamedFigure]:
    """Every figure the data supports (a figure without data is left out)."""
    figs = [
        _speed(cells, title),
        _pareto(cells),
        _latency_cdf(cells),
        _trace(cells),
        _energy(cells),
    ]
    return [f for f in figs if f is not None]


def _quant_order(cells: list[CellData]) -> list[str]:
    """Models by file size, largest first: the reading order of 'what do I lose going down'."""
    sizes: dict[str, int] = {}
    for c in cells:
        sizes.setdefault(c.model, c.size_bytes or 0)
    return sorted(sizes, key=lambda m: -sizes[m])


def _speed(cells: list[CellData], title: str) -> NamedFigure | None:
    tests = sorted({r["test"] for c in cells for r in c.rows if r.get("avg_ts")})
    if not tests:
        return None
    models = _quant_order(cells)
    groups = sorted({c.group for c in cells})
    fig, axes = _new(f"{title}: speed by quantization", ncols=len(tests))
    width = 0.8 / max(1, len(groups))
    for ax, test in zip(axes, tests, strict=True):
        for gi, group in enumerate(groups):
            xs, ys, errs = [], [], []
            for mi, model in enumerate(models):
                for c in cells:
                    if c.model != model or c.group != group:
                        continue
                    for r in c.rows:
                        if r.get("test") == test and r.get("avg_ts"):
                            xs.append(mi + (gi - (len(groups) - 1) / 2) * width)
                            ys.append(r["avg_ts"])
                            errs.append(r.get("stddev_ts") or 0.0)
            ax.bar(xs, ys, width, yerr=errs, capsize=3, label=group or "default")
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels([_short(m, cells) for m in models], rotation=20, ha="right")
        ax.set_ylabel("tokens/s")
        ax.set_title(test)
        ax.grid(axis="y", alpha=0.3)
    if len(groups) > 1 or groups != [""]:
        axes[-1].legend(fontsize="small")
    fig.tight_layout()
    return NamedFigure(
        "speed",
        "Speed vs quantization",
        "Mean tokens/s per test (error bars: sample sd over repetitions), models largest first.",
        fig,
    )


def _short(model: str, cells: list[CellData]) -> str:
    quant = next((c.quant for c in cells if c.model == model and c.quant), "")
    return quant if quant and len({c.model for c in cells}) > 1 and _unique_quants(cells) else model


def _unique_quants(cells: list[CellData]) -> bool:
    by_model = {c.model: c.quant for c in cells}
    return len(set(by_model.values())) == len(by_model)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both size and perplexity (lower is better)."""
    front = []
    best = float("inf")
    for size, ppl in sorted(points):
        if ppl < best:
            front.append((size, ppl))
            best = ppl
    return front


def _pareto(cells: list[CellData]) -> NamedFigure | None:
    seen: dict[str, tuple[float, float]] = {}
    for c in cells:
        if c.perplexity is not None and c.size_bytes:
            seen.setdefault(c.model, (c.size_bytes / 2**20, c.perplexity))
    if not seen:
        return None
    fig, (ax,) = _new("Perplexity vs file size")
    pts = list(seen.values())
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], zorder=3)
    for model, (x, y) in seen.items():
        ax.annotate(_short(model, cells), (x, y), textcoords="offset points", xytext=(4, 4))
    front = pareto_front(pts)
    ax.plot([p[0] for p in front], [p[1] for p in front], "r--", label="Pareto front", zorder=2)
    ax.set_xlabel("file size (MiB)")
    ax.set_ylabel("perplexity (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return NamedFigure(
        "pareto",
        "Perplexity vs file size",
        "Each quantization's perplexity on the shipped text against its file size; the dashed"
        " line joins the ones no other beats on both (pick from it).",
        fig,
    )


def _latency_cdf(cells: list[CellData]) -> NamedFigure | None:
    with_lat = [c for c in cells if c.latency and c.latency.get("ttft_ms_samples")]
    if not with_lat:
        return None
    fig, axes = _new("Latency distributions", ncols=2)
    for ax, key, name in (
        (axes[0], "ttft_ms_samples", "time to first token (ms)"),
        (axes[1], "e2e_ms_samples", "request latency, end to end (ms)"),
    ):
        for c in with_lat:
            assert c.latency is not None
            values = sorted(c.latency.get(key) or [])
            if not values:
                continue
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.step(values, ys, where="post", label=c.label)
        ax.set_xlabel(name)
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize="x-small")
    fig.tight_layout()
    return NamedFigure(
        "latency-cdf",
        "Latency CDFs",
        "Cumulative distribution of TTFT and end-to-end latency per cell: further left is"
        " better, a long tail to the right is what p99 reports.",
        fig,
    )


def _trace(cells: list[CellData]) -> NamedFigure | None:
    traced = [c for c in cells if any(t.get("power_w") is not None for t in c.trace)]
    if not traced:
        return None
    fig, axes = _new("GPU power and SM clock during each cell", ncols=2)
    for c in traced:
        ts = [t["t_s"] for t in c.trace if t.get("power_w") is not None]
        axes[0].plot(ts, [t["power_w"] for t in c.trace if t.get("power_w") is not None],
                     label=c.label)  # fmt: skip
        clk = [t for t in c.trace if t.get("sm_clock_mhz") is not None]
        axes[1].plot([t["t_s"] for t in clk], [t["sm_clock_mhz"] for t in clk], label=c.label)
    axes[0].set_ylabel("power (W)")
    axes[1].set_ylabel("SM clock (MHz)")
    for ax in axes:
        ax.set_xlabel("seconds into the cell")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize="x-small")
    fig.tight_layout()
    return NamedFigure(
        "gpu-trace",
        "GPU power and clock over time",
        "Sampled every 0.25 s while each cell ran: a clock that sags or power pinned at the"
        " limit means the cell's numbers were throttled.",
        fig,
    )


def _energy(cells: list[CellData]) -> NamedFigure | None:
    bars = []
    for c in cells:
        for r in c.rows:
            if r.get("j_per_token") is not None:
                bars.append((f"{c.label} {r['test']}", r["j_per_token"] * 1000))
    if not bars:
        return None
    fig, (ax,) = _new("Energy per token")
    ax.barh([b[0] for b in bars], [b[1] for b in bars])
    ax.set_xlabel("mJ per token (lower is better)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return NamedFigure(
        "energy",
        "Energy per token",
        "GPU energy (NVML counter) over the timed repetitions divided by the tokens.",
        fig,
    )
