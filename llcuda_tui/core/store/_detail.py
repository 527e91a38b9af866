"""The model-detail table that the Models screen and ``llcuda models show`` both print."""

from __future__ import annotations

from llcuda_tui.core.fmt import fmt_ago, fmt_size
from llcuda_tui.core.store._records import ModelEntry


def describe_model(entry: ModelEntry, now: float | None = None) -> list[tuple[str, str]]:
    """(label, value) rows about ``entry``: names, GGUF metadata, size, hash, source, files,
    pinned and last used (``now``: the clock to say 'ago' against; None: the real one).
    Each front end adds its fit estimate below."""
    g, m = entry.manifest.gguf, entry.manifest
    aliases = f" ({', '.join(entry.aliases)})" if entry.aliases else ""
    rows: list[tuple[str, object]] = [
        ("name", entry.name + aliases),
        ("arch", g.get("arch")),
        ("parameters", f"{(g.get('parameter_count') or 0) / 1e9:.3f} B"),
        ("quant", g.get("quant")),
        ("context length", g.get("context_length")),
        ("layers", g.get("n_layer")),
        ("heads (kv)", f"{g.get('n_head')} ({g.get('n_head_kv')})"),
        ("embedding", g.get("n_embd")),
        ("vocab", g.get("n_vocab")),
        ("chat template", "yes" if g.get("has_chat_template") else "no"),
        ("size", fmt_size(m.size)),
        ("sha256", entry.sha256),
        ("source", m.source.describe()),
        ("files", ", ".join(f.filename for f in m.files)),
        ("pinned", "yes" if entry.state.pinned else "no"),
        ("last used", fmt_ago(entry.state.last_used, now)),
    ]
    return [(label, str(value)) for label, value in rows]


def detail_text(rows: list[tuple[str, str]]) -> str:
    """``rows`` as the aligned text both front ends print (label column 15 wide)."""
    return "\n".join(f"{label:15} {value}" for label, value in rows)
