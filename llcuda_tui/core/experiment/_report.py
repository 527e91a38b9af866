"""``llcuda experiment report``: the cells' table and figures as Markdown (figures as PNG in
``<stem>_files/`` next to it), one self-contained HTML (figures inlined), or a PDF
(matplotlib's PDF backend: one figure per page, the table last). Files are written to a
temporary name, fsynced and renamed (:mod:`llcuda_tui.core.files`)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from llcuda_tui.core.errors import LlcudaError, UserInputError
from llcuda_tui.core.experiment._plots import CellData, NamedFigure, plot_cells
from llcuda_tui.core.experiment._spec import varying_axes_of
from llcuda_tui.core.experiment._store import DONE, ExperimentStore, StoredExperiment

REPORT_FORMATS = (".md", ".html", ".pdf")


def cell_data(store: ExperimentStore, exp: StoredExperiment) -> list[CellData]:
    """The done cells with their runs, labelled by the axes the experiment varies."""
    axes = varying_axes_of(exp.spec)
    out = []
    for c in exp.cells:
        if c.status != DONE or c.run_id is None:
            continue
        run = store.get_run(c.run_id)
        rows = run.results
        ppl = next((p.get("perplexity") for p in run.perplexity if p.get("perplexity")), None)
        size = next((r.get("model_size") for r in rows if r.get("model_size")), None)
        if size is None and run.latency:
            size = run.latency.get("model_size")
        shown = [f"{_short(a)}={c.settings[a]}" for a in axes if a in c.settings]
        out.append(
            CellData(
                label=" ".join([c.model, *shown]),
                model=c.model,
                quant=_quant_of(c.model),
                size_bytes=size,
                group=" ".join(shown),
                rows=rows,
                latency=run.latency,
                perplexity=ppl,
                trace=c.trace,
            )
        )
    return out


def _short(axis: str) -> str:
    return {"flash_attn": "fa", "n_gpu_layers": "ngl", "n_batch": "b", "n_ubatch": "ub"}.get(
        axis, axis
    )


def _quant_of(model: str) -> str:
    from llcuda_tui.core.gguf import quant_from_filename

    return quant_from_filename(model + ".gguf") or ""


def cell_table(store: ExperimentStore, exp: StoredExperiment) -> list[dict[str, str]]:
    """One row per cell (done or not): its settings and headline numbers, as text."""
    from llcuda_tui.core.fmt import fmt_size

    done = {d.label: d for d in cell_data(store, exp)}
    axes = varying_axes_of(exp.spec)
    table = []
    for c in exp.cells:
        shown = [f"{_short(a)}={c.settings[a]}" for a in axes if a in c.settings]
        label = " ".join([c.model, *shown])
        d = done.get(label) if c.status == DONE else None
        row: dict[str, str] = {"cell": label, "status": c.status}
        tests = sorted({r["test"] for x in done.values() for r in x.rows if r.get("avg_ts")})
        for t in tests:
            r = next((r for r in (d.rows if d else []) if r.get("test") == t), None)
            row[f"{t} t/s"] = _num(r.get("avg_ts") if r else None, 1)
        if any(x.perplexity is not None for x in done.values()):
            row["ppl"] = _num(d.perplexity if d else None, 3)
        if any(x.latency for x in done.values()):
            ttft = ((d.latency or {}).get("ttft_ms") or {}) if d else {}
            for p in ("p50", "p95", "p99"):
                row[f"ttft {p} ms"] = _num(ttft.get(p), 1)
        jpt = [float(r["j_per_token"]) for r in (d.rows if d else []) if r.get("j_per_token")]
        if any(r.get("j_per_token") for x in done.values() for r in x.rows):
            row["mJ/token"] = _num(jpt[0] * 1000 if jpt else None, 2)
        row["size"] = fmt_size(d.size_bytes, 2) if d and d.size_bytes else "-"
        flags = sorted({f for r in (d.rows if d else []) for f in r.get("validity_flags") or []})
        row["valid"] = ("no: " + ",".join(flags)) if flags else ("yes" if d else "-")
        row["seconds"] = _num(c.seconds, 1)
        table.append(row)
    return table


def _write(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename: a report is never half-written."""
    from llcuda_tui.core.files import replace_file

    try:
        replace_file(path, data, path.parent)
    except OSError as exc:
        raise LlcudaError(f"cannot write {path}: {exc.strerror or exc}") from None


def _num(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _md(table: list[dict[str, str]]) -> str:
    from llcuda_tui.core.bench import md_table

    if not table:
        return "no cells\n"
    headers = list(table[0])
    return md_table(headers, [[row.get(h, "-") for h in headers] for row in table])


def write_report(store: ExperimentStore, ref: str | int, output: Path) -> list[Path]:
    """Write the report of experiment ``ref`` to ``output`` (.md, .html or .pdf); the files."""
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in REPORT_FORMATS:
        raise UserInputError(
            f"report format '{suffix or output.name}' unknown: name a .md, .html or .pdf file"
        )
    exp = store.get_experiment(ref)
    data = cell_data(store, exp)
    if not data:
        raise UserInputError(f"experiment {exp.experiment_id} has no finished cell to report")
    table = cell_table(store, exp)
    figures = plot_cells(data, exp.name)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LlcudaError(f"cannot write {output}: {exc.strerror or exc}") from None
    if suffix == ".md":
        return _write_md(exp, table, figures, output)
    if suffix == ".html":
        return [_write_html(exp, table, figures, output)]
    return [_write_pdf(exp, table, figures, output)]


def _heading(exp: StoredExperiment) -> str:
    done = sum(c.status == DONE for c in exp.cells)
    return (
        f"Experiment {exp.experiment_id}: {exp.name} ({done}/{len(exp.cells)} cells,"
        f" {exp.status}, started {exp.created_at})"
    )


def _png(fig: NamedFigure) -> bytes:
    buf = io.BytesIO()
    fig.figure.savefig(buf, format="png")
    return buf.getvalue()


def _write_md(
    exp: StoredExperiment, table: list[dict[str, str]], figures: list[NamedFigure], output: Path
) -> list[Path]:
    fig_dir = output.with_name(f"{output.stem}_files")
    fig_dir.mkdir(exist_ok=True)
    written = []
    parts = [f"# {_heading(exp)}\n", "## Results\n", _md(table), ""]
    for i, fig in enumerate(figures, 1):
        png = fig_dir / f"{fig.slug}.png"
        _write(png, _png(fig))
        written.append(png)
        rel = f"{fig_dir.name}/{png.name}"
        parts += [f"## Figure {i}: {fig.title}\n", f"![{fig.title}]({rel})\n", fig.caption, ""]
    _write(output, "\n".join(parts).encode())
    return [output, *written]


def _write_html(
    exp: StoredExperiment, table: list[dict[str, str]], figures: list[NamedFigure], output: Path
) -> Path:
    esc = html.escape
    headers = list(table[0])
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(r.get(h, '-'))}</td>" for h in headers) + "</tr>" for r in table
    )
    figs = "".join(
        f"<figure><h2>Figure {i}: {esc(f.title)}</h2>"
        f'<img alt="{esc(f.title)}" src="data:image/png;base64,'
        f'{base64.b64encode(_png(f)).decode()}"><figcaption>{esc(f.caption)}</figcaption>'
        "</figure>"
        for i, f in enumerate(figures, 1)
    )
    doc = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{esc(exp.name)}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        "img{max-width:100%}figcaption{color:#555}</style></head><body>"
        f"<h1>{esc(_heading(exp))}</h1><h2>Results</h2><table><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in headers)
        + f"</tr>{rows}</table>{figs}</body></html>"
    )
    _write(output, doc.encode())
    return output


def _write_pdf(
    exp: StoredExperiment, table: list[dict[str, str]], figures: list[NamedFigure], output: Path
) -> Path:
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    buf = io.BytesIO()
    with PdfPages(buf) as pdf:
        for i, fig in enumerate(figures, 1):
            fig.figure.text(0.01, 0.01, f"Figure {i}: {fig.caption}", fontsize=6, wrap=True)
            pdf.savefig(fig.figure)
        page = Figure(figsize=(11, 1.2 + 0.3 * len(table)))
        ax = page.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.set_title(_heading(exp), fontsize=9)
        headers = list(table[0])
        t = ax.table(
            cellText=[[r.get(h, "-") for h in headers] for r in table],
            colLabels=headers,
            loc="center",
        )
        t.auto_set_font_size(False)
        t.set_fontsize(7)
        pdf.savefig(page)
    _write(output, buf.getvalue())
    return output
