"""`llcuda batch` on one process (no MPI): results in input order with run records, per-item
errors, resuming a partly written output, bad input as one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llcuda_tui.cli import main
from tests.core.mpi.conftest import read_results, write_prompts

FAST = ["--temp", "0", "--ctx", "128", "--threads", "1", "--parallel", "3", "-q"]


def _batch(model: Path, src: Path, out: Path, *extra: str) -> int:
    return main(["batch", "-m", str(model), "-i", str(src), "-o", str(out), *FAST, *extra])


@pytest.mark.timeout(60)
def test_results_in_input_order_with_records(tiny_gguf: Path, tmp_path: Path) -> None:
    src = write_prompts(tmp_path / "in.jsonl", 10)
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    assert _batch(tiny_gguf, src, out, "--summary", str(summary)) == 0
    results = read_results(out)
    assert [r["id"] for r in results] == [f"q{i}" for i in range(10)]
    assert [r["index"] for r in results] == list(range(10))
    for r in results:
        assert r["rank"] == 0 and isinstance(r["text"], str)
        assert r["record"]["generated_tokens"] == 6 and r["record"]["stop_reason"] == "length"
    s = json.loads(summary.read_text())
    assert (s["total"], s["written"], s["skipped"], s["errors"]) == (10, 10, 0, 0)
    assert s["generated_tokens"] == 60 and s["generated_tokens_per_s"] > 0
    assert [r["items"] for r in s["ranks"]] == [10]


@pytest.mark.timeout(60)
def test_greedy_text_matches_the_in_process_engine(tiny_gguf: Path, tmp_path: Path) -> None:
    from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest, SamplingParams

    src = write_prompts(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    assert _batch(tiny_gguf, src, out) == 0
    with Engine.load(EngineConfig(tiny_gguf, n_ctx=128, n_threads=1)) as engine:
        for i, r in enumerate(read_results(out)):
            req = GenerationRequest(
                prompt=f"item {i} says", max_tokens=6, sampling=SamplingParams(temperature=0.0)
            )
            assert r["text"] == engine.generate(req)[0]


@pytest.mark.timeout(60)
def test_a_failing_item_is_an_error_line_not_a_failed_run(tiny_gguf: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    long_prompt = " ".join(["word"] * 400)  # more tokens than --ctx 128
    lines = [{"id": "ok", "prompt": "hello"}, {"id": "long", "prompt": long_prompt}]
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out.jsonl"
    assert _batch(tiny_gguf, src, out, "-n", "2") == 0
    ok, bad = read_results(out)
    assert ok["id"] == "ok" and "record" in ok
    assert bad["id"] == "long" and "the prompt has" in bad["error"] and "record" not in bad


@pytest.mark.timeout(60)
def test_resume_skips_finished_items_and_repairs_a_torn_line(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_prompts(tmp_path / "in.jsonl", 6)
    full = tmp_path / "full.jsonl"
    assert _batch(tiny_gguf, src, full) == 0
    lines = full.read_text().splitlines(keepends=True)
    partial = tmp_path / "partial.jsonl"
    partial.write_text(lines[0] + lines[1] + lines[2][:25])  # crashed while writing item 3
    capsys.readouterr()
    assert _batch(tiny_gguf, src, partial) == 0
    assert "4 written (2 already done" in capsys.readouterr().out
    resumed = read_results(partial)
    assert [r["id"] for r in resumed] == [f"q{i}" for i in range(6)]
    assert [r["text"] for r in resumed] == [r["text"] for r in read_results(full)]
    assert _batch(tiny_gguf, src, partial) == 0
    assert "all 6 items are already in" in capsys.readouterr().out
    assert len(read_results(partial)) == 6


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llcuda: error: "), err
    return err[0]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("content", "extra", "fragment"),
    [
        ("", [], "holds no prompts"),
        ('{"prompt": "a"}\n', ["--parallel", "0"], "--parallel must be in"),
        ('{"prompt": "a"}\n', ["--no-root-engine"], "--no-root-engine needs --mpi"),
        ('{"prompt": "a"}\n', ["--gpus-per-rank", "0"], "--gpus-per-rank must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tiny_gguf: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    extra: list[str],
    fragment: str,
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    out = tmp_path / "out.jsonl"
    assert _batch(tiny_gguf, src, out, *extra) == 2
    assert fragment in _one_error_line(capsys)
    assert not out.exists() or out.read_text() == ""


@pytest.mark.timeout(30)
def test_missing_model_and_input(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_prompts(tmp_path / "in.jsonl", 1)
    out = tmp_path / "out.jsonl"
    assert _batch(tmp_path / "no.gguf", src, out) == 2
    assert "model file not found" in _one_error_line(capsys)
    assert _batch(tiny_gguf, tmp_path / "none.jsonl", out) == 2
    assert "input file not found" in _one_error_line(capsys)
