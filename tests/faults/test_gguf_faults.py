"""Broken and hostile GGUF files at load: truncated, zero-byte, random-bytes and wrong-magic
files, and files whose header claims absurd sizes. Our reader (llcuda_tui/core/gguf.py) and the
engine (llama.cpp) both refuse them with one line naming the file, quickly, without allocating
what the header claims; the file is left as it was and a good model loads right after."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest, SamplingParams
from llcuda_tui.core.errors import ModelLoadError
from llcuda_tui.core.gguf import read_summary
from tests.workerproc import REPO

pytestmark = pytest.mark.timeout(60)


def _cut(fraction: float) -> Callable[[bytes], bytes]:
    return lambda good: good[: int(len(good) * fraction)]


BAD_FILES: dict[str, tuple[Callable[[bytes], bytes | None], str]] = {
    "missing": (lambda good: None, "not found"),
    "zero-byte": (lambda good: b"", "empty"),
    "wrong-magic": (lambda good: b"GGML" + good[4:], "not a GGUF file"),
    "zip-file": (lambda good: b"PK\x03\x04 not a gguf at all", "not a GGUF file"),
    "random-bytes": (lambda good: bytes(range(256)) * 64, "not a GGUF file"),
    "truncated-header": (lambda good: good[:5000], "truncated or corrupt|not a readable"),
    "truncated-weights": (_cut(0.5), "truncated or corrupt|not a readable"),
}


def assert_usable(good: Path) -> None:
    """A good model still reads and generates in the same process."""
    assert read_summary([good]).arch == "llama"
    with Engine.load(EngineConfig(good, n_ctx=256, n_threads=1)) as eng:
        req = GenerationRequest(prompt="hi", max_tokens=2, ignore_eos=True,
                                sampling=SamplingParams(temperature=0.0))  # fmt: skip
        assert eng.generate(req)[1].generated_tokens == 2


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_files_are_one_line_errors(kind: str, tmp_path: Path, tiny_gguf: Path) -> None:
    make, message = BAD_FILES[kind]
    bad = tmp_path / f"{kind}.gguf"
    content = make(tiny_gguf.read_bytes())
    if content is not None:
        bad.write_bytes(content)
    for load in (lambda: Engine.load(EngineConfig(bad, n_ctx=256)), lambda: read_summary([bad])):
        t0 = time.monotonic()
        with pytest.raises(ModelLoadError, match=message) as err:
            load()
        assert time.monotonic() - t0 < 2.0
        text = str(err.value)
        assert "\n" not in text and str(bad) in text and err.value.exit_code == 2
    if content is not None:
        assert bad.read_bytes() == content  # the file is left as it was
    assert_usable(tiny_gguf)


# --- absurd sizes -----------------------------------------------------------------------------

STRING, ARRAY, F32 = 8, 9, 6


def _str(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def _header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


ARCH = _str(b"general.architecture") + struct.pack("<I", STRING) + _str(b"llama")
HUGE = 2**62
ABSURD: dict[str, bytes] = {
    "string-length": _header(0, 2) + ARCH + _str(b"general.name")
    + struct.pack("<IQ", STRING, HUGE),
    "key-length": _header(0, 1) + struct.pack("<Q", HUGE),
    "array-count": _header(0, 2) + ARCH + _str(b"tokenizer.ggml.scores")
    + struct.pack("<IIQ", ARRAY, F32, HUGE),
    "string-array-count": _header(0, 2) + ARCH + _str(b"tokenizer.ggml.tokens")
    + struct.pack("<IIQ", ARRAY, STRING, HUGE),
    "kv-count": _header(0, 2**40) + ARCH,
    "tensor-count": _header(2**40, 1) + ARCH,
    "tensor-dims": _header(1, 1) + ARCH + _str(b"t")
    + struct.pack("<IQQIQ", 2, 2**40, 2**40, 0, 0),
    "tensor-n-dims": _header(1, 1) + ARCH + _str(b"t") + struct.pack("<I", 2**31),
}  # fmt: skip

AS_LIMIT = 1 << 30
"""Address space for the child: a few hundred MB is what loading the tiny model takes."""

CHILD = """
import json, resource, sys, time
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from llcuda_tui.core.engine._local import Engine, EngineConfig
from llcuda_tui.core.errors import ModelLoadError
from llcuda_tui.core.gguf import read_summary
from tests.faults.test_gguf_faults import assert_usable
out = {{}}
for path in sys.argv[2:]:
    for who, load in (("reader", lambda: read_summary([Path(path)])),
                      ("engine", lambda: Engine.load(EngineConfig(Path(path), n_ctx=64)))):
        t0 = time.monotonic()
        try:
            load()
            out[f"{{path}} {{who}}"] = ["loaded", 0.0]
        except ModelLoadError as exc:
            out[f"{{path}} {{who}}"] = [str(exc), time.monotonic() - t0]
assert_usable(Path(sys.argv[1]))
print(json.dumps(out))
"""


def test_absurd_sizes_fail_fast_without_huge_allocations(tmp_path: Path, tiny_gguf: Path) -> None:
    paths = []
    for name, head in ABSURD.items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(head + bytes(4096))  # zeros after: reads past the claim find nothing
        paths.append(str(path))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(limit=AS_LIMIT), str(tiny_gguf), *paths],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]  # a MemoryError or abort ends up here
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 2 * len(ABSURD)
    for key, (message, seconds) in results.items():
        path = key.rsplit(" ", 1)[0]
        assert message != "loaded", key
        assert path in message and "\n" not in message, (key, message)
        assert seconds < 2.0, (key, seconds)
