"""Edges: what a careless user or an attacker types, sends or points at (issue #23, the rows
under "Edges" in docs/reliability.md). Each test failed on the code before its fix."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest, SamplingParams
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.worker import Listen, RemoteEngine, WorkerServer, read_api_key
from llcuda_tui.core.worker.batch import BatchEngine
from tests.core.worker.conftest import API_KEY, tiny_config
from tests.test_cli import assert_one_line_error, llcuda
from tests.workerproc import REPO

GREEDY = SamplingParams(temperature=0.0)


# --- 4: lone surrogates ----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_lone_surrogate_is_a_400_naming_the_field_and_the_connection_lives(
    tiny_gguf: Path,
) -> None:
    bad = [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a\ud800"}]},
         "messages[0].content"),
        ("/v1/completions", {"prompt": "\udfff"}, "prompt"),
        ("/llcuda/v1/tokenize", {"content": "x\ud800"}, "content"),
    ]  # fmt: skip
    with WorkerServer(tiny_config(tiny_gguf, api_key=None)) as w, httpx.Client() as client:
        for path, body, field in bad:
            raw = json.dumps(body)  # ensure_ascii: "\ud800" travels as valid JSON
            r = client.post(w.url + path, content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 400, (path, r.text)
            assert field in r.json()["error"]["message"]
        ok = client.post(w.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2})
        assert ok.status_code == 200  # same keep-alive client: the connection was not reset


def test_infer_with_bytes_that_are_not_utf8_is_one_line(tiny_gguf: Path) -> None:
    proc = llcuda("infer", "-m", str(tiny_gguf), "-p", os.fsdecode(b"a\xffb"), "-n", "2")
    assert_one_line_error(proc, 2)
    assert "not valid UTF-8" in proc.stderr and "0xff" in proc.stderr


def test_an_engine_request_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(UserInputError, match="message 1's content is not valid UTF-8"):
        GenerationRequest(messages=[{"role": "user", "content": "\ud800"}], max_tokens=1)


# --- 5, 17, 8: llcuda batch --------------------------------------------------------------------


def test_one_bad_batch_item_is_an_error_record_and_the_rest_run(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [
        json.dumps({"id": "a", "prompt": "hello", "max_tokens": 2}),
        "{not json",
        json.dumps({"id": "c", "prompt": "x\ud800y", "max_tokens": 2}),
        json.dumps({"id": "d", "prompt": "bye", "max_tokens": 2, "temperature": "hot"}),
        json.dumps({"id": "e", "prompt": "again", "max_tokens": 2}),
    ]
    src.write_text("\n".join(lines) + "\n")
    proc = llcuda("batch", "-m", str(tiny_gguf), "-i", str(src), "-o", str(out),
                  "--ctx", "256", "--threads", "1", "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", 2, "c", "d", "e"]
    assert "text" in rows[0] and "text" in rows[4]
    assert "not valid JSON" in rows[1]["error"]
    assert "UTF-8" in rows[2]["error"]
    assert "temperature" in rows[3]["error"]
    assert "3 failed" in proc.stdout


def test_batch_refuses_the_same_file_as_input_and_output(tiny_gguf: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": 1, "prompt": "hi"}) + "\n")
    link = tmp_path / "same.jsonl"
    link.symlink_to(src)
    proc = llcuda("batch", "-m", str(tiny_gguf), "-i", str(src), "-o", str(link))
    assert_one_line_error(proc, 2)
    assert "same file" in proc.stderr
    assert src.read_text() == json.dumps({"id": 1, "prompt": "hi"}) + "\n"


def test_batch_refuses_a_device_as_input(tiny_gguf: Path, tmp_path: Path) -> None:
    proc = llcuda("batch", "-m", str(tiny_gguf), "-i", "/dev/zero", "-o", str(tmp_path / "o"),
                  timeout=60)  # fmt: skip
    assert_one_line_error(proc, 2)
    assert "not a regular file" in proc.stderr


def test_an_api_key_file_is_read_bounded(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="not a regular file"):
        read_api_key("/dev/zero")
    big = tmp_path / "big"
    big.write_text("k" * 100_000)
    with pytest.raises(UserInputError, match="larger than 4096 bytes"):
        read_api_key(str(big))
    proc = llcuda("serve", "-m", "x", "--api-key-file", "/dev/zero", timeout=60)
    assert_one_line_error(proc, 2)


# --- 6, 7, 19: numbers out of range ----------------------------------------------------------


@pytest.mark.parametrize("threads", ["100000", "-5"])
@pytest.mark.parametrize("command", ["infer", "serve", "batch"])
def test_threads_out_of_range_are_refused_before_loading(
    command: str, threads: str, tiny_gguf: Path, tmp_path: Path
) -> None:
    extra = {
        "infer": ["-p", "hi"],
        "serve": [],
        "batch": ["-i", str(tmp_path / "i"), "-o", str(tmp_path / "o")],
    }[command]
    proc = llcuda(command, "-m", str(tiny_gguf), "--threads", threads, *extra, timeout=60)
    assert_one_line_error(proc, 2)
    assert "threads must be in [1, " in proc.stderr


def test_config_threads_out_of_range_are_refused() -> None:
    with pytest.raises(UserInputError, match="n_threads must be in"):
        EngineConfig(Path("m.gguf"), n_threads=100_000).validate()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("n_ctx", [99_999_999_999, 2**32, 8192])
def test_a_context_beyond_the_model_is_refused_before_allocating(
    tiny_gguf: Path, n_ctx: int
) -> None:
    cfg = EngineConfig(tiny_gguf, n_ctx=n_ctx, n_threads=1)  # the tiny model: 2048 trained
    with pytest.raises(UserInputError, match=r"at most|trained"):
        Engine.load(cfg).close()
    with pytest.raises(UserInputError, match=r"at most|trained"):
        BatchEngine.load(cfg, 2).close()


@pytest.mark.timeout(60)
def test_a_longer_context_loads_when_asked_for_explicitly(tiny_gguf: Path) -> None:
    cfg = EngineConfig(tiny_gguf, n_ctx=8192, n_threads=1, ctx_beyond_training=True)
    with Engine.load(cfg) as engine:
        assert engine.info.n_ctx == 8192
        # YaRN by 2048 / 8192, as llama.cpp logged it for the context it made
        assert engine.info.rope_scaling == "yarn"
        assert engine.info.rope_freq_scale == pytest.approx(0.25)
        assert engine.generate(GenerationRequest(prompt="hi", max_tokens=2, sampling=GREEDY))
    with BatchEngine.load(replace(cfg, n_ctx=4096), 2) as batch:  # per sequence: 2x training
        assert batch.info.rope_scaling == "yarn"
        assert batch.info.rope_freq_scale == pytest.approx(0.5)
    within = replace(cfg, n_ctx=1024)  # the flag only allows: no scaling inside training
    with Engine.load(within) as engine:
        assert engine.info.rope_scaling == "model" and engine.info.rope_freq_scale == 1.0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["infer", "batch"])
def test_ctx_beyond_training_on_the_command_line(
    command: str, tiny_gguf: Path, tmp_path: Path
) -> None:
    if command == "infer":
        args = ["-p", "hi", "-n", "2", "--json"]
    else:
        (tmp_path / "in.jsonl").write_text('{"id": "a", "prompt": "hi", "max_tokens": 2}\n')
        args = ["-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
                "--parallel", "1", "-q"]  # fmt: skip
    base = [command, "-m", str(tiny_gguf), "--ctx", "8192", "--threads", "1", *args]
    refused = llcuda(*base, timeout=60)
    assert_one_line_error(refused, 2)
    assert "--ctx-beyond-training" in refused.stderr  # the refusal names the way past it
    allowed = llcuda(*base, "--ctx-beyond-training", timeout=60)
    assert allowed.returncode == 0, allowed.stderr
    if command == "infer":
        load = json.loads(allowed.stdout)["load"]
        assert load["rope_scaling"] == "yarn" and load["rope_freq_scale"] == pytest.approx(0.25)


@pytest.mark.timeout(120)
def test_serve_ctx_beyond_training_reports_the_scaling(tiny_gguf: Path, worker_process) -> None:
    w = worker_process.start("-m", str(tiny_gguf), "--ctx", "4096", "--ctx-beyond-training",
                             "--threads", "1", "--parallel", "2")  # fmt: skip
    info = httpx.get(w.url + "/llcuda/v1/info", timeout=30).json()
    assert info["load"]["n_ctx"] == 4096 and info["load"]["rope_scaling"] == "yarn"
    assert info["load"]["rope_freq_scale"] == pytest.approx(0.5)  # 2048 trained / 4096


@pytest.mark.timeout(120)
def test_the_quick_memory_bound_is_never_below_the_estimate(
    tiny_gguf: Path, smollm_path: Path, gemma_path: Path
) -> None:
    """The engine skips reading the GGUF's summary when a bound from llama.cpp's loaded model
    is far below the machine's memory; that is only sound if the bound is above the estimate
    for every placement, cache type and flash attention setting."""
    from llcuda_tui.core.engine._limits import _upper_bound
    from llcuda_tui.core.fit import FitRequest, estimate
    from llcuda_tui.core.gguf import read_summary

    for path in (tiny_gguf, smollm_path, gemma_path):
        summary = read_summary([path])
        with Engine.load(EngineConfig(path, n_ctx=256, n_threads=1)) as engine:
            for n_ctx in (256, 4096, 100_000):
                bound = _upper_bound(engine.model_ptr, n_ctx, 512)
                assert bound is not None
                for ngl in (-1, 0, 2):
                    for kv in ("f32", "q8_0"):
                        for flash in (True, False):
                            req = FitRequest(n_ctx=n_ctx, n_gpu_layers=ngl, type_k=kv,
                                             type_v=kv, flash_attn=flash)  # fmt: skip
                            needs = estimate(summary, req)
                            assert needs.total <= bound, (path.name, req)


def huge_context_gguf(path: Path) -> Path:
    """A tiny model whose metadata says it was trained on 2^24 tokens (the most any load may
    ask for), with enough KV heads and layers that its KV cache at that context is at least
    twice this machine's RAM and GPU memory together: the training check passes, memory
    cannot."""
    from llcuda_tui.core.engine import MAX_CTX, list_devices
    from llcuda_tui.core.fit import ram_device
    from tests.gguf_factory import write_tiny_llama

    total = ram_device().total_bytes + sum(d.total_bytes for d in list_devices() if d.kind != "CPU")
    per_layer = MAX_CTX * 2 * 256 * 2  # K and V, 4 KV heads of 64, f16, per token
    layers = -(-2 * total // per_layer)
    return write_tiny_llama(path, n_embd=256, n_head=4, n_head_kv=4, n_layer=layers,
                            n_ff=128, context_length=MAX_CTX, f16=True)  # fmt: skip


FIT_CHILD = """
import json, resource, sys, time
from dataclasses import replace
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # never a runaway allocation
from llcuda_tui.core.engine import Engine, EngineConfig, MAX_CTX
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.worker.batch import BatchEngine
cfg = EngineConfig(Path(sys.argv[1]), n_ctx=0, n_threads=1, n_gpu_layers=0)
out = []
for load in (lambda: Engine.load(cfg), lambda: Engine.load(replace(cfg, n_ctx=MAX_CTX)),
             lambda: BatchEngine.load(replace(cfg, n_ctx=MAX_CTX // 2), 2)):
    t0 = time.monotonic()
    try:
        load().close()
        out.append(["loaded", 0.0])
    except UserInputError as exc:
        out.append([str(exc), time.monotonic() - t0])
status = Path("/proc/self/status").read_text()
hwm = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1]) * 1024
print(json.dumps({"results": out, "peak_rss": hwm}))
"""


@pytest.mark.timeout(120)
def test_a_context_that_cannot_fit_in_memory_is_refused_before_allocating(tmp_path: Path) -> None:
    from llcuda_tui.core.fit import ram_device

    path = huge_context_gguf(tmp_path / "huge-context.gguf")
    proc = subprocess.run(
        [sys.executable, "-c", FIT_CHILD, str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    ram = ram_device().total_bytes
    for message, seconds in report["results"]:
        assert "of RAM (KV cache" in message and "more than the" in message, message
        assert "\n" not in message and "(estimate)" in message
        kv = float(message.split("KV cache ")[1].split(" GiB")[0]) * (1 << 30)
        assert kv > ram  # the KV cache alone could never fit
        assert seconds < 20, seconds  # a metadata read and arithmetic, not an allocation
    assert report["peak_rss"] < 1 << 30  # nothing the size of the cache was ever touched
    # the command line: one line, exit 2; and a normal context of the same model still loads
    refused = llcuda("infer", "-m", str(path), "--ctx", "0", "--ngl", "0", "-p", "hi",
                     "--threads", "1", timeout=60)  # fmt: skip
    assert_one_line_error(refused, 2)
    assert "of RAM" in refused.stderr
    with Engine.load(EngineConfig(path, n_ctx=512, n_threads=1)) as engine:
        assert engine.info.n_ctx == 512


def test_serve_ctx_beyond_the_model_is_one_line(tiny_gguf: Path) -> None:
    proc = llcuda("serve", "-m", str(tiny_gguf), "--ctx", "99999999999", timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "at most" in proc.stderr


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("knob", ["temperature", "top_p", "min_p", "repeat_penalty"])
def test_sampling_numbers_must_be_finite(knob: str, value: float) -> None:
    with pytest.raises(UserInputError):
        SamplingParams(**{knob: value})


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["infer", "-m", "MODEL", "-p", "hi", "--temp", "nan"], "must be finite"),
        (["infer", "-m", "MODEL", "-p", "hi", "--temp", "inf"], "must be finite"),
        (["models", "show", "MODEL", "--ctx", "-5"], "argument --ctx: must be >= 0"),
        (["models", "gc", "--grace", "nan"], "argument --grace: must be a finite number"),
    ],
)
def test_bad_numbers_on_the_command_line_are_one_line(
    args: list[str], fragment: str, tiny_gguf: Path
) -> None:
    proc = llcuda(*(str(tiny_gguf) if a == "MODEL" else a for a in args), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert fragment in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2  # argparse: usage + one error line


# --- 15, 16: the worker's door and its signals -----------------------------------------------


@pytest.mark.timeout(120)
def test_a_lowercase_bearer_is_accepted_and_a_query_key_is_not_logged(tiny_gguf: Path) -> None:
    access = logging.getLogger("uvicorn.access")
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    access.addHandler(handler)  # before connecting: uvicorn logs only if the logger has one
    try:
        listen = Listen(port=0, log_level="info")
        with WorkerServer(tiny_config(tiny_gguf), listen) as w, httpx.Client() as client:
            auth = {"authorization": f"bearer {API_KEY}"}
            assert client.get(w.url + "/v1/models", headers=auth).status_code == 200
            basic = {"authorization": f"Basic {API_KEY}"}
            assert client.get(w.url + "/v1/models", headers=basic).status_code == 401
            leaked = client.get(w.url + f"/v1/models?api_key={API_KEY}")
            assert leaked.status_code == 401
    finally:
        access.removeHandler(handler)
    logged = [r.getMessage() for r in seen]
    assert any("/v1/models?" in m for m in logged), logged
    assert not any(API_KEY in m for m in logged), logged


@pytest.mark.timeout(90)
def test_sighup_drains_like_sigterm(smollm_path: Path, worker_process: type) -> None:
    w = worker_process.start("-m", str(smollm_path), "--ctx", "1024", "--threads", "1",
                             "--parallel", "1", "--shutdown-grace", "1")  # fmt: skip
    first = threading.Event()
    result: dict[str, object] = {}

    def run() -> None:
        try:
            long = GenerationRequest(
                prompt="Once", max_tokens=800, ignore_eos=True, sampling=GREEDY
            )
            with RemoteEngine.connect(w.url) as remote:
                stream = remote.stream(long)
                chunks = [next(stream)]
                first.set()
                chunks += list(stream)
                result["record"] = chunks[-1].record
        except BaseException as exc:  # checked below
            result["record"] = exc
            first.set()

    t = threading.Thread(target=run)
    t.start()
    assert first.wait(30)
    w.signal(signal.SIGHUP)
    t.join(30)
    rc = w.proc.wait(30)
    record = result["record"]
    assert getattr(record, "stop_reason", None) == "cancelled", record  # a final event came
    assert rc == 0
