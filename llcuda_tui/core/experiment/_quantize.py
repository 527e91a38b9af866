"""``llcuda models quantize``: make quantized store entries from a stored model through
llama.cpp's ``llama_model_quantize`` (bound in llama-cpp-python), with progress.

The output is written under the store's ``tmp/``, fsynced, then ingested (hardlinked, hashed)
and published with a manifest whose source records the input's sha256 and the settings, so a
result can always be traced to what it was made from. A half-written output never becomes an
entry: it stays a ``.part`` file that is deleted on the way out.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llcuda_tui.core.errors import LlcudaError, UserInputError
from llcuda_tui.core.store import ModelEntry, QuantizedSource, Store, check_name

UNQUANTIZED = ("F32", "F16", "BF16")
"""Types a model can be quantized from without losing twice (llama.cpp's own rule)."""

_TENSOR_LINE = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\s*\]")
"""llama.cpp logs '[  12/ 201] blk.1.attn_q.weight ...' per tensor: that is the progress."""

QuantProgress = Callable[[str, int, int], None]
"""(type, tensors done, tensors in all)."""


class QuantizeError(LlcudaError):
    """llama.cpp could not quantize the model."""


@dataclass(frozen=True)
class QuantizeResult:
    entry: ModelEntry
    type: str
    created: bool
    """False when an entry of that name already held this quantization (nothing was done)."""


def quant_types() -> list[str]:
    """The quantization types this llama.cpp build knows (``LLAMA_FTYPE_MOSTLY_*``)."""
    import llama_cpp

    prefix = "LLAMA_FTYPE_MOSTLY_"
    return sorted(n.removeprefix(prefix) for n in dir(llama_cpp) if n.startswith(prefix))


def parse_types(text: str) -> list[str]:
    """'q4_k_m,Q8_0' -> ['Q4_K_M', 'Q8_0'], each checked against :func:`quant_types`."""
    types = [t.strip().upper() for t in text.split(",") if t.strip()]
    if not types:
        raise UserInputError("--type needs at least one quantization type, e.g. Q4_K_M")
    known = quant_types()
    for t in types:
        if t not in known:
            raise UserInputError(f"unknown quantization type '{t}' (one of: {', '.join(known)})")
    return list(dict.fromkeys(types))


def output_name(source_name: str, source_quant: str, qtype: str) -> str:
    """'tiny-F16' quantized to Q8_0 is 'tiny-Q8_0' (the source's own type suffix replaced)."""
    stem = source_name
    if source_quant and stem.lower().endswith(source_quant.lower()):
        stem = stem[: -len(source_quant)].rstrip("-_.") or stem
    return check_name(f"{stem}-{qtype}")


def quantize(
    store: Store,
    name: str,
    types: Sequence[str],
    *,
    allow_requantize: bool = False,
    imatrix: Path | None = None,
    threads: int = 0,
    on_progress: QuantProgress | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> list[QuantizeResult]:
    """Quantize stored model ``name`` to each of ``types``; one new store entry per type."""
    if imatrix is not None:
        # llama_model_quantize_params.imatrix is a C++ std::unordered_map that only
        # llama-quantize's own loader fills: the C API cannot take a file from Python.
        raise UserInputError(
            "--imatrix is not supported: llama.cpp's C API takes an importance matrix only as"
            " a C++ map; use llama.cpp's llama-quantize for imatrix quantizations"
        )
    source = store.entry(name)
    if len(source.manifest.files) != 1:
        raise UserInputError(f"{source.name} is a split model; quantize works on one GGUF file")
    source_quant = source.manifest.quant.upper()
    requant = source_quant not in UNQUANTIZED
    if requant and not allow_requantize:
        raise UserInputError(
            f"{source.name} is already quantized ({source_quant}); quantizing it again loses"
            " quality twice (pass --allow-requantize to do it anyway)"
        )
    if requant and on_warning is not None:
        on_warning(
            f"warning: re-quantizing {source.name} ({source_quant}): the result is worse than"
            " one made from the F16/F32 original"
        )
    types = [t.upper() for t in types]
    known = quant_types()
    for t in types:
        if t not in known:
            raise UserInputError(f"unknown quantization type '{t}'")
    results = []
    for qtype in types:
        out_name = output_name(source.name, source_quant, qtype)
        existing = store.lookup(out_name)
        if existing is not None:
            src = store.entry(existing).manifest.source
            if (
                isinstance(src, QuantizedSource)
                and src.source_sha256 == source.sha256
                and src.type == qtype
            ):
                results.append(QuantizeResult(store.entry(existing), qtype, False))
                continue
            raise UserInputError(f"a model named '{out_name}' already exists (llcuda models rm it)")
        results.append(_quantize_one(store, source, qtype, out_name, requant, threads, on_progress))
    return results


def _quantize_one(
    store: Store,
    source: ModelEntry,
    qtype: str,
    out_name: str,
    requant: bool,
    threads: int,
    on_progress: QuantProgress | None,
) -> QuantizeResult:
    import llama_cpp

    from llcuda_tui.core.engine import capture_llama_log

    store.ensure()
    log = capture_llama_log()
    tmp = store.layout.tmp / f"quantize-{os.getpid()}-{threading.get_ident()}-{qtype}.part"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    params.nthread = threads
    params.allow_requantize = requant
    mark = log.mark()
    outcome: list[int] = []

    def work() -> None:
        outcome.append(
            llama_cpp.llama_model_quantize(
                str(source.path).encode(), str(tmp).encode(), ctypes.byref(params)
            )
        )

    # The call blocks for the whole model; a thread lets progress be read from the log.
    thread = threading.Thread(target=work, name=f"quantize-{qtype}", daemon=True)
    try:
        thread.start()
        seen = mark
        while thread.is_alive():
            thread.join(0.2)
            lines = log.since(seen)
            seen += len(lines)
            for _level, line in lines:
                m = _TENSOR_LINE.search(line)
                if m and on_progress is not None:
                    on_progress(qtype, int(m.group(1)), int(m.group(2)))
        if not outcome or outcome[0] != 0 or not tmp.is_file():
            cause = log.first_error(mark) or "llama_model_quantize failed"
            raise QuantizeError(f"cannot quantize {source.name} to {qtype}: {cause}")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        sha = store.ingest_file(tmp)
        from llcuda_tui.core.store import ManifestFile

        filename = f"{out_name}.gguf"
        files = [ManifestFile("model", filename, sha, tmp.stat().st_size)]
        src = QuantizedSource(
            source_sha256=source.sha256,
            source_name=source.name,
            type=qtype,
            source_quant=source.manifest.quant,
            requantized=requant,
            llama_cpp_version=getattr(llama_cpp, "__version__", None),
        )
        manifest = store.build_manifest(src, files)
        store.publish(manifest, [out_name])
    finally:
        thread.join()
        tmp.unlink(missing_ok=True)
    return QuantizeResult(store.entry(out_name), qtype, True)
