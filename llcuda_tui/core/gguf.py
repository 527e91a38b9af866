"""GGUF metadata through the ``gguf`` package's GGUFReader (no parser of our own).

:func:`read_summary` gives what the store shows and what the fit estimate needs: architecture,
parameter count, quant type, context length, layers, heads, vocabulary size, whether a chat
template is present, and the bytes of the weights per layer.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from llcuda_tui.core.errors import ModelLoadError, one_line

GGUF_MAGIC = b"GGUF"
SPLIT_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_QUANT_TOKEN = re.compile(
    r"^(?:I?Q[1-8](?:_[0-9A-Z]+)*|BF16|F16|F32|FP16|FP32|TQ[12]_0|MXFP4(?:_MOE)?|NVFP4)$",
    re.IGNORECASE,
)
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.")
SWA_PATTERNS = {
    "gemma2": (2, False),
    "gemma3": (6, False),
    "gemma3n": (5, False),
    "gemma-embedding": (6, False),
    "cohere2": (4, False),
    "llama4": (4, False),
    "exaone4": (4, False),
    "olmo2": (4, False),
    "gpt-oss": (2, False),
}
"""llama.cpp's built-in sliding-window layer patterns (n, dense_first) per architecture, used
when the GGUF has a sliding window but no ``attention.sliding_window_pattern``."""


@dataclass(frozen=True)
class GgufSummary:
    """What a GGUF model is, read from its header (all shards of a split model)."""

    arch: str
    name: str = ""
    quant: str = ""
    file_type: int | None = None
    parameter_count: int = 0
    context_length: int = 0
    n_layer: int = 0
    n_embd: int = 0
    n_ff: int = 0
    n_head: int = 0
    n_head_kv: int = 0
    head_dim_k: int = 0
    head_dim_v: int = 0
    n_vocab: int = 0
    sliding_window: int = 0
    has_chat_template: bool = False
    split_count: int = 1
    tensor_bytes: int = 0
    embd_bytes: int = 0
    """token_embd.weight: llama.cpp keeps it in host memory."""
    output_bytes: int = 0
    """output.weight, or a copy of token_embd when the embeddings are tied."""
    output_tied: bool = False
    layer_bytes: tuple[int, ...] = field(default_factory=tuple)
    n_head_kv_layers: tuple[int, ...] = field(default_factory=tuple)
    """Per-layer KV heads when the model varies them (empty otherwise)."""
    swa_layers: tuple[int, ...] = field(default_factory=tuple)
    """Layers that use the sliding window (their KV cache can be smaller)."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layer_bytes"] = list(self.layer_bytes)
        d["n_head_kv_layers"] = list(self.n_head_kv_layers)
        d["swa_layers"] = list(self.swa_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GgufSummary:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        for key in ("layer_bytes", "n_head_kv_layers", "swa_layers"):
            values[key] = tuple(values.get(key) or ())
        return cls(**values)

    @property
    def other_bytes(self) -> int:
        """Weights outside the layers, the embeddings and the output (norms, rope tables)."""
        tied = self.output_bytes if self.output_tied else 0
        return max(
            0,
            self.tensor_bytes + tied - self.embd_bytes - self.output_bytes - sum(self.layer_bytes),
        )


def check_gguf_file(path: Path) -> None:
    """Refuse a missing, empty, non-GGUF or obviously truncated file with one clear line."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"model file not found: {p}")
    if not p.is_file():
        raise ModelLoadError(f"not a file: {p}")
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {p}: {exc.strerror}") from None
    if size == 0:
        raise ModelLoadError(f"{p} is empty (0 bytes), not a GGUF model")
    if head[:4] != GGUF_MAGIC:
        raise ModelLoadError(f"{p} is not a GGUF file (it starts with {head[:4]!r}, not b'GGUF')")
    if size < 24:
        raise ModelLoadError(f"{p} is truncated ({size} bytes)")
    version = int.from_bytes(head[4:8], "little")
    if version not in (2, 3):
        raise ModelLoadError(f"{p} has unsupported GGUF version {version}")


def has_gguf_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def quant_from_filename(filename: str) -> str | None:
    """The quant type named in a GGUF file name (``...-Q4_K_M.gguf`` -> ``Q4_K_M``)."""
    stem = Path(filename).name
    m = SPLIT_RE.match(stem)
    if m:
        stem = m.group("prefix")
    elif stem.lower().endswith(".gguf"):
        stem = stem[: -len(".gguf")]
    found = [t for t in re.split(r"[-.]", stem) if _QUANT_TOKEN.match(t)]
    return found[-1].upper() if found else None


def split_info(filename: str) -> tuple[str, int, int] | None:
    """(prefix, shard number, shard count) of a ``-0000N-of-0000M.gguf`` name, else None."""
    m = SPLIT_RE.match(Path(filename).name)
    if m is None:
        return None
    return m.group("prefix"), int(m.group("no")), int(m.group("count"))


def read_summary(shards: Sequence[Path]) -> GgufSummary:
    """Summary of a model given its file, or all of its shards in order."""
    if not shards:
        raise ModelLoadError("no GGUF file given")
    readers = [_open(p) for p in shards]
    try:
        return _read_summary(shards, readers)
    except (ValueError, TypeError, OverflowError, IndexError, KeyError) as exc:
        # a value of the wrong type or range: a string block count, a NaN, non-UTF-8 bytes
        raise ModelLoadError(f"{shards[0]} has malformed metadata: {one_line(exc)}") from None


MAX_BLOCKS = 65_536
"""More layers than any model has: a larger ``block_count`` is corrupt (it sizes lists)."""


def _read_summary(shards: Sequence[Path], readers: list[Any]) -> GgufSummary:
    meta = _metadata(readers[0])
    arch = str(meta.get("general.architecture") or "")
    if not arch:
        raise ModelLoadError(f"{shards[0]} has no general.architecture: not a model GGUF")
    n_layer = _int(meta, f"{arch}.block_count")
    if not 0 <= n_layer <= MAX_BLOCKS:
        raise ModelLoadError(f"{shards[0]} claims {n_layer} layers: corrupt metadata")
    tensors = [t for r in readers for t in r.tensors]
    weights = _weight_layout(tensors, n_layer)
    return _summary(arch, meta, weights, len(shards), _vocab_size(readers[0], arch, meta))


def _summary(
    arch: str, meta: dict[str, Any], weights: dict[str, Any], split_count: int, n_vocab: int
) -> GgufSummary:
    n_embd = _int(meta, f"{arch}.embedding_length")
    n_head = _int(meta, f"{arch}.attention.head_count")
    kv = meta.get(f"{arch}.attention.head_count_kv")
    kv_layers = tuple(int(x) for x in kv) if isinstance(kv, list) else ()
    n_head_kv = max(kv_layers) if kv_layers else int(kv if kv is not None else n_head)
    default_head_dim = n_embd // n_head if n_head else 0
    file_type = meta.get("general.file_type")
    n_layer = _int(meta, f"{arch}.block_count")
    window = _int(meta, f"{arch}.attention.sliding_window")
    return GgufSummary(
        arch=arch,
        name=str(meta.get("general.name") or ""),
        quant=_file_type_name(file_type) or weights["dominant_type"],
        file_type=int(file_type) if file_type is not None else None,
        parameter_count=weights["params"],
        context_length=_int(meta, f"{arch}.context_length"),
        n_layer=n_layer,
        n_embd=n_embd,
        n_ff=_first_int(meta.get(f"{arch}.feed_forward_length")),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=_int(meta, f"{arch}.attention.key_length") or default_head_dim,
        head_dim_v=_int(meta, f"{arch}.attention.value_length") or default_head_dim,
        n_vocab=n_vocab,
        sliding_window=window,
        has_chat_template="tokenizer.chat_template" in meta,
        split_count=split_count,
        tensor_bytes=weights["bytes"],
        embd_bytes=weights["embd"],
        output_bytes=weights["output"],
        output_tied=weights["tied"],
        layer_bytes=tuple(weights["layers"]),
        n_head_kv_layers=kv_layers if len(set(kv_layers)) > 1 else (),
        swa_layers=_swa_layers(arch, meta, n_layer) if window else (),
    )


def _swa_layers(arch: str, meta: dict[str, Any], n_layer: int) -> tuple[int, ...]:
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list):
        return tuple(i for i, is_swa in enumerate(pattern[:n_layer]) if is_swa)
    n, dense_first = SWA_PATTERNS.get(arch, (0, False))
    if isinstance(pattern, int):
        n = pattern
    if n == 0 and arch not in SWA_PATTERNS and pattern is None:
        return ()
    if dense_first:
        return tuple(i for i in range(n_layer) if n == 0 or i % n != 0)
    return tuple(i for i in range(n_layer) if n == 0 or i % n < n - 1)


def _open(path: Path) -> Any:
    check_gguf_file(path)
    import numpy as np

    try:
        # a corrupt offset or shape that overflows numpy's integers is an error, not a
        # RuntimeWarning on stderr and a wrapped-around value
        with np.errstate(over="raise"):
            return _reader_class()(path)
    except FileNotFoundError:
        raise ModelLoadError(f"model file not found: {path}") from None
    except (
        ValueError,
        KeyError,
        IndexError,
        OSError,
        struct.error,
        TypeError,
        OverflowError,
        RecursionError,  # arrays nested thousands deep
        FloatingPointError,  # numpy's integer overflow, raised by the errstate above
    ) as exc:
        raise ModelLoadError(f"{path} is not a readable GGUF file: {one_line(exc)}") from None


_READER: Any = None


def _reader_class() -> Any:
    """GGUFReader, sped up for large arrays.

    GGUFReader splits every array element into its own numpy view: a 262k-token vocabulary
    takes ~20 s. The subclass reads a numeric array as one view and steps over a long string
    array without splitting it (the store only needs its length). Same fields otherwise.
    """
    global _READER
    if _READER is None:
        _READER = _make_reader_class()
    return _READER


_READER_INTERNALS = ("_get", "_build_fields", "_build_tensor_info", "_get_field_parts")
"""The GGUFReader methods the sped-up reader overrides."""


def _make_reader_class() -> Any:
    import numpy as np
    from gguf import GGUFReader, GGUFValueType

    if not all(callable(getattr(GGUFReader, name, None)) for name in _READER_INTERNALS):
        # a gguf release without these internals: read the slow, plain way rather than fail
        return GGUFReader

    class SummaryReader(GGUFReader):  # type: ignore[misc]
        # GGUFReader trusts the counts and lengths in the file; a slice past the end of the
        # memory map silently comes back short. These checks turn a length that the file
        # cannot hold into an error before anything is built from it.
        def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> Any:
            end = int(offset) + np.dtype(dtype).itemsize * int(count)
            if int(count) < 0 or end > len(self.data):
                raise ValueError(
                    f"a value at byte {offset} claims {int(count)} item(s), past the end of "
                    f"the file ({len(self.data)} bytes): truncated or corrupt"
                )
            return super()._get(offset, dtype, count, override_order)

        def _build_fields(self, offs: int, count: int) -> int:
            _check_count(self.data, offs, count, _MIN_KV_BYTES, "metadata keys")
            return super()._build_fields(offs, count)

        def _build_tensor_info(self, offs: int, count: int) -> Any:
            _check_count(self.data, offs, count, _MIN_TENSOR_INFO_BYTES, "tensors")
            return super()._build_tensor_info(offs, count)

        def _get_field_parts(self, orig_offs: int, raw_type: int) -> Any:
            if raw_type != GGUFValueType.ARRAY:
                return super()._get_field_parts(orig_offs, raw_type)
            raw_itype = self._get(orig_offs, np.uint32)
            alen = self._get(orig_offs + 4, np.uint64)
            itype, count, offs = GGUFValueType(int(raw_itype[0])), int(alen[0]), orig_offs + 12
            types = [GGUFValueType.ARRAY, itype]
            nptype = self.gguf_scalar_to_np.get(itype)
            if nptype is not None:
                values = self._get(offs, nptype, count)
                return 12 + int(values.nbytes), [raw_itype, alen, values], [2], types
            if itype == GGUFValueType.STRING:
                _check_count(self.data, offs, count, 8, "strings")
                if count > 256:
                    end = _skip_strings(self.data, offs, count, self.byte_order != "I")
                    blob = self._get(offs, np.uint8, end - offs)
                    return end - orig_offs, [raw_itype, alen, blob], [], types
            return super()._get_field_parts(orig_offs, raw_type)

    return SummaryReader


_MIN_KV_BYTES = 8 + 4 + 1
"""The smallest metadata entry: key length, value type, a one-byte value."""
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8
"""The smallest tensor info: name length, dimension count, type, data offset."""


def _check_count(data: Any, offs: int, count: int, min_bytes: int, what: str) -> None:
    """Refuse a count of ``what`` that the rest of the file cannot hold."""
    left = len(data) - int(offs)
    if int(count) * min_bytes > left:
        raise ValueError(
            f"the header claims {int(count)} {what}, more than the {left} bytes left in the "
            "file can hold: truncated or corrupt"
        )


def _skip_strings(data: Any, offs: int, count: int, swapped: bool) -> int:
    """Offset just past ``count`` length-prefixed GGUF strings starting at ``offs``."""
    unpack = struct.Struct(">Q" if swapped else "<Q").unpack_from
    view = memoryview(data)
    for _ in range(count):
        (length,) = unpack(view, offs)
        offs += 8 + length
    return offs


def _metadata(reader: Any) -> dict[str, Any]:
    """Scalar and short-array metadata values; long arrays as their length."""
    from gguf import GGUFValueType

    meta: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if not fld.types:
            continue
        if fld.types[0] == GGUFValueType.ARRAY:
            count = int(fld.parts[4][0])
            meta[key] = fld.contents() if count <= 256 else count
        elif key == "tokenizer.chat_template":
            meta[key] = True
        else:
            meta[key] = fld.contents()
    return meta


def _vocab_size(reader: Any, arch: str, meta: dict[str, Any]) -> int:
    explicit = meta.get(f"{arch}.vocab_size")
    if explicit:
        return int(explicit)
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return int(tokens.parts[4][0]) if tokens is not None else 0


def _weight_layout(tensors: Sequence[Any], n_layer: int) -> dict[str, Any]:
    layers = [0] * n_layer
    total = embd = output = params = 0
    by_type: dict[str, int] = {}
    for t in tensors:
        size, name = int(t.n_bytes), str(t.name)
        total += size
        params += int(t.n_elements)
        if len(t.shape) >= 2:
            by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + size
        m = _BLOCK_RE.match(name)
        if m and int(m.group(1)) < n_layer:
            layers[int(m.group(1))] += size
        elif name == "token_embd.weight":
            embd = size
        elif name == "output.weight":
            output = size
    tied = output == 0 and embd > 0
    return {
        "bytes": total,
        "params": params,
        "embd": embd,
        "output": embd if tied else output,
        "tied": tied,
        "layers": layers,
        "dominant_type": max(by_type, key=lambda k: by_type[k]) if by_type else "",
    }


def _file_type_name(file_type: Any) -> str:
    if file_type is None:
        return ""
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(int(file_type)).name
    except ValueError:
        return ""
    if name == "GUESSED":
        return ""
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _int(meta: dict[str, Any], key: str) -> int:
    return _first_int(meta.get(key))


def _first_int(value: Any) -> int:
    if isinstance(value, list):
        return int(max(value)) if value else 0
    return int(value) if value is not None else 0
