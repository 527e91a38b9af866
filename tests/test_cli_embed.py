"""`llcuda embed` as a user runs it (the installed entry point in a subprocess): texts from the
arguments, a file or stdin, a summary or one JSON object; bad input is one line and exit 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import LLCUDA, assert_one_line_error, llcuda

pytestmark = pytest.mark.timeout(180)


def _vectors(stdout: str) -> np.ndarray:
    out = json.loads(stdout)
    assert [d["index"] for d in out["data"]] == list(range(len(out["data"])))
    return np.array([d["embedding"] for d in out["data"]])


def test_texts_as_json(tiny_bert: Path) -> None:
    proc = llcuda("embed", "-m", str(tiny_bert), "hello world", "the cat", "hello world", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["pooling"], out["dimensions"]) == ("mean", 32)
    v = _vectors(proc.stdout)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    assert float(v[0] @ v[2]) == pytest.approx(1.0, abs=1e-5)
    assert float(v[0] @ v[1]) < 0.999
    assert out["usage"]["prompt_tokens"] == 4 + 4 + 4  # [CLS] w w [SEP], [CLS] the cat [SEP]...


def test_a_file_or_stdin_gives_one_text_a_line(tiny_bert: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("hello world\n\n  \nthe cat sat\n", encoding="utf-8")
    from_file = llcuda("embed", "-m", str(tiny_bert), "--file", str(texts), "--json")
    assert from_file.returncode == 0, from_file.stderr
    from_stdin = subprocess.run(
        [LLCUDA, "embed", "-m", str(tiny_bert), "--json"], input=texts.read_text(),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert from_stdin.returncode == 0, from_stdin.stderr
    a, b = _vectors(from_file.stdout), _vectors(from_stdin.stdout)
    assert a.shape == (2, 32)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_the_summary_is_a_line_a_text(tiny_bert: Path) -> None:
    proc = llcuda("embed", "-m", str(tiny_bert), "--pooling", "cls", "hello world", "the cat")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("0     4 tokens  [") and "cos(0) +1.0000" in lines[0]
    assert "'the cat'" in lines[1]
    assert "2 texts, 32 dimensions, cls pooling, 8 tokens" in proc.stderr


def test_a_generative_model_mean_pools(smollm_path: Path) -> None:
    proc = llcuda("embed", "-m", str(smollm_path), "hello world", "hello world", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["pooling"], out["dimensions"]) == ("mean", 576)
    v = _vectors(proc.stdout)
    assert float(v[0] @ v[1]) == pytest.approx(1.0, abs=1e-5)


def test_bad_input_is_one_line_and_exit_2(tiny_bert: Path, tmp_path: Path) -> None:
    model = str(tiny_bert)
    assert_one_line_error(llcuda("embed", "-m", model, "hello " * 80), 2)  # past 64 positions
    proc = llcuda("embed", "-m", model, "--file", str(tmp_path / "missing.txt"))
    assert_one_line_error(proc, 2)
    assert "cannot read --file" in proc.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    proc = llcuda("embed", "-m", model, "--file", str(empty))
    assert_one_line_error(proc, 2)
    assert "nothing to embed" in proc.stderr
    bad_utf8 = subprocess.run(
        [LLCUDA, "embed", "-m", model], input=b"hello \xff world\n", capture_output=True,
        timeout=120,
    )  # fmt: skip
    assert bad_utf8.returncode == 2
    assert b"not valid UTF-8" in bad_utf8.stderr and b"Traceback" not in bad_utf8.stderr
    assert llcuda("embed", "-m", model, "--pooling", "rank", "hi").returncode == 2
    assert_one_line_error(llcuda("embed", "-m", str(tmp_path / "nope.gguf"), "hi"), 2)


def test_serve_refuses_embeddings_with_mpi(tiny_bert: Path) -> None:
    proc = llcuda("serve", "-m", str(tiny_bert), "--mpi", "--embeddings")
    assert_one_line_error(proc, 2)
    assert "--mpi" in proc.stderr
