"""Fuzz the GGUF metadata reader (:func:`llcuda_tui.core.gguf.read_summary`).

Property: on any bytes the reader returns a :class:`GgufSummary` or raises
:class:`ModelLoadError` with a one-line message; never another exception, never a hang, and
never an allocation sized by a count or length the file merely claims.
"""

from __future__ import annotations

import itertools
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llcuda_tui.core.errors import ModelLoadError
from llcuda_tui.core.gguf import GgufSummary, read_summary

SECONDS = 2.0
HUGE = [2**31, 2**32 - 1, 2**62, 2**63, 2**63 - 1, 2**64 - 1, 2**64 - 8]

# GGUF value types: 0-7 scalars, 8 string, 9 array, 10-12 64-bit scalars
SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9
KEYS = [
    "general.architecture",
    "general.name",
    "general.file_type",
    "general.alignment",
    "llama.block_count",
    "llama.context_length",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.sliding_window",
    "llama.attention.sliding_window_pattern",
    "llama.attention.key_length",
    "llama.vocab_size",
    "tokenizer.ggml.tokens",
    "tokenizer.chat_template",
]

_counter = itertools.count()


def s(text: str | bytes, length: int | None = None) -> bytes:
    """A GGUF string: u64 length (the true one unless given), then the bytes."""
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw) if length is None else length) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def gguf(kvs: list[bytes], n_kv: int | None = None, n_tensors: int = 0, tail: bytes = b"") -> bytes:
    n = len(kvs) if n_kv is None else n_kv
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n) + b"".join(kvs) + tail


ARCH = kv("general.architecture", STRING, s("llama"))


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-gguf-") as d:
        yield Path(d)


def read(data: bytes, workdir: Path) -> GgufSummary | None:
    """Read ``data`` as a GGUF file; assert the property; the summary or None (refused)."""
    path = workdir / f"f{next(_counter)}.gguf"  # a fresh name: never rewrite a mapped file
    path.write_bytes(data)
    started = time.thread_time()  # CPU time: a loaded machine stretches wall time
    try:
        summary: GgufSummary | None = read_summary([path])
    except ModelLoadError as exc:
        message = str(exc)
        assert message and "\n" not in message, repr(message)
        summary = None
    finally:
        path.unlink()
    elapsed = time.thread_time() - started
    assert elapsed < SECONDS, f"read took {elapsed:.2f} CPU s"
    if summary is not None:
        assert isinstance(summary, GgufSummary)
        assert 0 <= summary.n_layer == len(summary.layer_bytes)
        assert len(summary.swa_layers) <= summary.n_layer
    return summary


def seed_file() -> bytes:
    """A small valid model GGUF with a value of every type (the mutation seed)."""
    import gguf as g
    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "seed.gguf"
        w = g.GGUFWriter(str(path), "llama")
        w.add_name("seed")
        w.add_block_count(2)
        w.add_context_length(128)
        w.add_embedding_length(8)
        w.add_feed_forward_length(16)
        w.add_head_count(2)
        w.add_head_count_kv([1, 2])
        w.add_file_type(g.LlamaFileType.ALL_F32)
        w.add_uint8("x.u8", 7)
        w.add_int16("x.i16", -3)
        w.add_float32("x.f32", 0.5)
        w.add_float64("x.f64", -1.5)
        w.add_uint64("x.u64", 2**40)
        w.add_bool("x.bool", True)
        w.add_array("x.strings", ["a", "bc", "déf"])
        w.add_array("tokenizer.ggml.tokens", ["<unk>", "<s>", "</s>", "a"])
        w.add_chat_template("{{ messages }}")
        w.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float32))
        w.add_tensor("blk.0.attn_q.weight", np.ones((8, 8), dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path.read_bytes()


SEED = seed_file()


def test_the_seed_reads(workdir: Path) -> None:
    summary = read(SEED, workdir)
    assert summary is not None and summary.arch == "llama" and summary.n_layer == 2


def test_truncation_at_every_offset(workdir: Path) -> None:
    """Every cut in the header, the metadata and the tensor infos; every 16th in the data."""
    from gguf import GGUFReader

    path = workdir / "seed.gguf"
    path.write_bytes(SEED)
    data_start = GGUFReader(path).data_offset
    cuts = [*range(data_start), *range(data_start, len(SEED), 16)]
    for end in cuts:
        assert read(SEED[:end], workdir) is None, f"a file cut at byte {end} was read"


def test_wrapping_tensor_offset_is_refused_quietly(workdir: Path) -> None:
    """Found by the long run: a tensor offset of 2**64 - 1 wrapped around in numpy (with a
    RuntimeWarning on stderr) to a byte inside the file, and the file was read."""
    import warnings

    from gguf import GGUFReader

    path = workdir / "seed-offset.gguf"
    path.write_bytes(SEED)
    info = GGUFReader(path).tensors[0].field
    at = info.offset + sum(int(p.nbytes) for p in info.parts[:-1])  # its data offset
    data = SEED[:at] + struct.pack("<Q", 2**64 - 1) + SEED[at + 8 :]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read(data, workdir) is None


# --- hand-written hostile files: each one once a crash or a hang before the fixes ----------

HOSTILE = {
    # nested arrays 5000 deep: RecursionError in GGUFReader
    "deep-nesting": gguf(
        [ARCH, kv("x", ARRAY, struct.pack("<IQ", ARRAY, 1) * 5000 + struct.pack("<IQ", 4, 0))]
    ),
    # block_count 2**31: a list of 2**31 per-layer sizes (16 GiB), MemoryError
    "layers-2^31": gguf([ARCH, kv("llama.block_count", 4, struct.pack("<I", 2**31))]),
    # 50M layers with a sliding window: 27 s building the per-layer tuples
    "layers-50M-swa": gguf(
        [
            ARCH,
            kv("llama.block_count", 4, struct.pack("<I", 50_000_000)),
            kv("llama.attention.sliding_window", 4, struct.pack("<I", 4)),
        ]
    ),
    # wrong value types: ValueError / TypeError from int()
    "layers-string": gguf([ARCH, kv("llama.block_count", STRING, s("many"))]),
    "layers-nan": gguf([ARCH, kv("llama.block_count", 6, struct.pack("<f", float("nan")))]),
    "layers-inf": gguf([ARCH, kv("llama.block_count", 12, struct.pack("<d", float("inf")))]),
    "file-type-string": gguf([ARCH, kv("general.file_type", STRING, s("Q4"))]),
    "vocab-string": gguf([ARCH, kv("llama.vocab_size", STRING, s("big"))]),
    "kv-heads-strings": gguf(
        [ARCH, kv("llama.attention.head_count_kv", ARRAY, struct.pack("<IQ", STRING, 1) + s("q"))]
    ),
    "tokens-empty-string": gguf([ARCH, kv("tokenizer.ggml.tokens", STRING, s(""))]),
    # a value that is not UTF-8: UnicodeDecodeError
    "name-not-utf8": gguf([ARCH, kv("general.name", STRING, s(b"\xff\xfe"))]),
    "arch-not-utf8": gguf([kv("general.architecture", STRING, s(b"\xc3"))]),
    # claimed-huge counts and lengths
    "kv-count-2^63": gguf([ARCH], n_kv=2**63),
    "tensor-count-2^64-1": gguf([ARCH], n_tensors=2**64 - 1),
    "string-length-2^64-1": gguf([ARCH, kv("general.name", STRING, s("x", 2**64 - 1))]),
    "u8-array-2^62": gguf([ARCH, kv("x", ARRAY, struct.pack("<IQ", 0, 2**62))]),
    "string-array-2^63": gguf([ARCH, kv("x", ARRAY, struct.pack("<IQ", STRING, 2**63) + s("a"))]),
    "long-string-array-then-huge": gguf(
        [ARCH, kv("x", ARRAY, struct.pack("<IQ", STRING, 300) + s("a") * 299 + s("", 2**64 - 1))]
    ),
    "unknown-type": gguf([ARCH, kv("x", 13, b"\0" * 8)]),
    "unknown-array-type": gguf([ARCH, kv("x", ARRAY, struct.pack("<IQ", 99, 1))]),
    "duplicate-key": gguf([ARCH, ARCH]),
    "no-arch": gguf([kv("general.name", STRING, s("x"))]),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file(name: str, workdir: Path) -> None:
    read(HOSTILE[name], workdir)


def test_claimed_lengths_allocate_nothing() -> None:
    """Under a 1.5 GiB address-space limit, files that claim 16 GiB or more are refused
    cleanly (one process: the limit would also catch a slow leak across the cases)."""
    names = [n for n in HOSTILE if "2^" in n or "layers" in n]
    code = (
        "import resource, sys, pathlib\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))\n"
        "from llcuda_tui.core.gguf import read_summary\n"
        "from llcuda_tui.core.errors import ModelLoadError\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        read_summary([pathlib.Path(p)])\n"
        "    except ModelLoadError:\n"
        "        pass\n"
        "print('ok', len(sys.argv) - 1)\n"
    )
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for n in names:
            paths.append(Path(d) / f"{n}.gguf")
            paths[-1].write_bytes(HOSTILE[n])
        proc = subprocess.run(
            [sys.executable, "-c", code, *map(str, paths)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["ok", str(len(names))]


# --- generated files ---------------------------------------------------------------------

lengths = st.one_of(st.none(), st.sampled_from(HUGE), st.integers(0, 2**64 - 1))


@st.composite
def values(draw: st.DrawFn, vtype: int, depth: int = 0) -> bytes:
    """The payload of a value of ``vtype``: mostly well-formed, sometimes lying."""
    if vtype in SCALAR_SIZES:
        return draw(st.binary(min_size=SCALAR_SIZES[vtype], max_size=SCALAR_SIZES[vtype]))
    if vtype == STRING:
        text = draw(st.one_of(st.text(max_size=12).map(str.encode), st.binary(max_size=12)))
        return s(text, draw(lengths))
    if vtype == ARRAY:
        itype = draw(item_types if depth < 3 else st.sampled_from(sorted(SCALAR_SIZES)))
        n = draw(st.integers(0, 4))
        items = [draw(values(itype, depth + 1)) for _ in range(n)] if itype <= 12 else []
        count = draw(st.one_of(st.just(n), st.sampled_from(HUGE), st.integers(0, 300)))
        return struct.pack("<IQ", itype & 0xFFFFFFFF, count) + b"".join(items)
    return draw(st.binary(max_size=16))  # an unknown type: junk follows


value_types = st.one_of(st.integers(0, 12), st.integers(13, 2**32 - 1))
item_types = st.one_of(st.integers(0, 12), st.integers(13, 64))
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=20))


@st.composite
def kv_entries(draw: st.DrawFn) -> bytes:
    key = draw(keys)
    vtype = draw(value_types)
    return kv(key, vtype, draw(values(vtype)))


@st.composite
def gguf_files(draw: st.DrawFn) -> bytes:
    entries = [ARCH] if draw(st.booleans()) else []
    entries += draw(st.lists(kv_entries(), max_size=8))
    n_kv = draw(st.one_of(st.just(len(entries)), st.sampled_from(HUGE), st.integers(0, 20)))
    n_tensors = draw(st.one_of(st.just(0), st.sampled_from(HUGE), st.integers(0, 4)))
    tail = draw(st.binary(max_size=64))
    return gguf(entries, n_kv, n_tensors, tail)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=512))
@example(data=b"")
@example(data=b"GGUF")
@example(data=b"GGUF" + b"\0" * 20)
def test_random_bytes(data: bytes, workdir: Path) -> None:
    read(data, workdir)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=512))
def test_random_bytes_after_a_valid_header(data: bytes, workdir: Path) -> None:
    read(b"GGUF" + struct.pack("<I", 3) + data, workdir)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=gguf_files())
@example(data=HOSTILE["deep-nesting"])
@example(data=HOSTILE["layers-2^31"])
@example(data=HOSTILE["name-not-utf8"])
def test_generated_kv_sections(data: bytes, workdir: Path) -> None:
    read(data, workdir)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flips=st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, len(SEED))),
    splice=st.one_of(st.none(), st.tuples(st.integers(24, len(SEED)), st.sampled_from(HUGE))),
)
def test_mutated_seed(
    flips: list[tuple[int, int]],
    cut: int | None,
    splice: tuple[int, int] | None,
    workdir: Path,
) -> None:
    data = bytearray(SEED)
    for offset, byte in flips:
        data[offset] = byte
    if splice is not None:  # overwrite 8 bytes with a huge little-endian number
        offset, number = splice
        data[offset : offset + 8] = struct.pack("<Q", number)
    read(bytes(data[:cut]), workdir)
