"""`llcuda bench` and `llcuda gpu` as a user runs them: the installed entry point in a
subprocess, with this test's own LLCUDA_HOME."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LLCUDA = shutil.which("llcuda") or str(Path(sys.executable).parent / "llcuda")
HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed")
pytestmark = pytest.mark.timeout(120)


def llcuda(*args: str, timeout: float = 110) -> subprocess.CompletedProcess:
    return subprocess.run([LLCUDA, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("llcuda: error: ") and text in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@needs_llama
def test_acceptance_cpu_bench_json(llcuda_home: Path) -> None:
    """`llcuda bench -m gemma-3-270m -p 64 -n 32 -r 2 -o json` gives llama-bench-style JSON
    plus our fields, and the run lands in the store."""
    proc = llcuda("bench", "-m", "gemma-3-270m", "-p", "64", "-n", "32", "-r", "2", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["test"] for r in rows] == ["pp64", "tg32"]
    llama_bench_fields = {
        "build_commit", "cpu_info", "gpu_info", "backends", "model_filename", "model_type",
        "model_size", "model_n_params", "n_batch", "n_ubatch", "n_threads", "type_k", "type_v",
        "n_gpu_layers", "flash_attn", "n_prompt", "n_gen", "test_time", "avg_ns", "stddev_ns",
        "avg_ts", "stddev_ts", "samples_ns", "samples_ts",
    }  # fmt: skip
    ours = {
        "run_id", "phase", "backend", "n_ctx", "llama_cpp_python", "model_sha256",
        "energy_j", "j_per_token", "tokens_per_j", "energy_samples", "energy_window_s",
        "sm_clock_mhz_min", "temperature_c_max", "power_w_mean", "clock_event_reasons",
        "power_capped", "thermal_slowdown", "valid", "validity_flags", "gpu_name", "gpu_uuid",
        "driver_version", "memory_bandwidth_bytes_per_s", "bandwidth_efficiency",
    }  # fmt: skip
    for r in rows:
        assert llama_bench_fields | ours <= set(r), (llama_bench_fields | ours) - set(r)
        assert r["avg_ts"] > 0 and len(r["samples_ns"]) == 2 and r["n_gpu_layers"] == -1
        assert r["type_k"] == "f16" and r["n_batch"] == 2048 and r["n_ubatch"] == 512
        assert r["model_sha256"] and r["build_commit"]
    assert (rows[0]["n_prompt"], rows[0]["n_gen"], rows[1]["n_prompt"], rows[1]["n_gen"]) == (
        64, 0, 0, 32
    )  # fmt: skip
    assert (llcuda_home / "data" / "bench.sqlite").is_file()
    assert f"saved as run {rows[0]['run_id']}" in proc.stderr

    hist = llcuda("bench", "history", "--json")
    assert hist.returncode == 0
    listed = json.loads(hist.stdout)
    assert [h["run_id"] for h in listed] == [rows[0]["run_id"]]
    shown = llcuda("bench", "show", "last", "-o", "jsonl")
    assert [json.loads(x)["test"] for x in shown.stdout.splitlines()] == ["pp64", "tg32"]
    same = llcuda("bench", "compare", "last", "last", "--json")
    ratios = [m["ratio"] for m in json.loads(same.stdout)["metrics"] if m["metric"] == "avg_ts"]
    assert ratios == [1.0, 1.0]


def test_gpu_json_without_a_gpu_is_an_answer_not_an_error() -> None:
    proc = llcuda("gpu", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {"state", "message", "gpus", "driver_version"} <= set(data)
    if data["state"] != "ok":  # no GPU here (CI): say so
        assert data["state"] == "unavailable" and data["gpus"] == []
        assert data["message"].startswith("no NVIDIA GPU found")
    text = llcuda("gpu")
    assert text.returncode == 0 and text.stdout.strip()


def test_gpu_watch_prints_one_json_line_per_sample() -> None:
    proc = llcuda("gpu", "--watch", "--json", "--count", "3", "--interval", "0.1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and all("state" in json.loads(x) for x in lines)


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["gpu", "--interval", "0.01"], 2, "between 0.1 and 60"),
        (["gpu", "--watch", "--count", "-1"], 2, "--count"),
        (["bench"], 2, "no model given"),
        (["bench", "-m", "x", "-p", "abc"], 2, "not a number list"),
        (["bench", "-m", "x", "-r", "0"], 2, "must be >= 1, not 0"),
        (["bench", "-m", "x", "-fa", "maybe"], 2, "flash attention"),
        (["bench", "-m", "x", "-ctk", "f8"], 2, "KV cache type"),
        (["bench", "-m", "/nonexistent/model.gguf"], 2, "not found"),
        (["bench", "-m", "no-such-model"], 2, "no model named"),
        (["bench", "compare", "1", "2"], 2, "no benchmark run"),
        (["bench", "compare", "soon", "1"], 2, "bad benchmark run id"),
        (["bench", "show", "-3"], 2, "no benchmark run"),
        (["bench", "-o", "xml"], 2, "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], code: int, text: str) -> None:
    assert_one_line_error(llcuda(*args), code, text)


def test_bad_model_file_and_text_files(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model at all")
    assert_one_line_error(llcuda("bench", "-m", str(fake)), 2, "not a GGUF file")
    missing = tmp_path / "nope.txt"
    proc = llcuda("bench", "-m", str(fake), "--latency", "--prompt-file", str(missing))
    assert_one_line_error(proc, 2, "cannot read prompt file")


@needs_llama
def test_bench_refusals_need_the_model(gemma_path: Path, tmp_path: Path) -> None:
    g = str(gemma_path)
    assert_one_line_error(llcuda("bench", "-m", g, "-p", "64", "--ctx", "16"), 2, "--ctx 16")
    assert_one_line_error(llcuda("bench", "-m", g, "--latency", "-n", "8,16"), 2, "one value")
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n\n")
    proc = llcuda("bench", "-m", g, "--latency", "--prompt-file", str(empty))
    assert_one_line_error(proc, 2, "no prompts")


def test_gpu_record_writes_a_trace_or_says_why_not(tmp_path: Path) -> None:
    out = tmp_path / "trace.json"
    proc = llcuda("gpu", "--record", str(out), "--count", "2", "--interval", "0.1")
    if proc.returncode == 0:  # a GPU is here
        assert len(json.loads(out.read_text())["ticks"]) == 2
    else:
        assert_one_line_error(proc, 1, "nothing to record: no NVIDIA GPU found")
        assert not out.exists()


def test_history_of_an_empty_store() -> None:
    proc = llcuda("bench", "history")
    assert proc.returncode == 0 and "no benchmark runs yet" in proc.stdout
