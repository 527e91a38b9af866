"""Benchmark logic that needs no model: argument syntax, statistics, latency metric
definitions, energy/validity aggregation, comparison and output formats."""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import statistics

import numpy as np
import pytest

from llcuda_tui.commands import bench as bench_cli
from llcuda_tui.commands.bench import fa_list, kv_list
from llcuda_tui.core.bench import (
    BenchSpec,
    EnergyWindow,
    LatencySpec,
    Mark,
    ModelRef,
    RequestTiming,
    StoredRun,
    compare_runs,
    default_prompts,
    engine_cuda_devices,
    instances,
    int_list,
    latency_metrics,
    metric_label,
    nvml_indices,
    percentile,
    ratio,
    render_run,
    result_flags,
    sample_sd,
    spec_tests,
    summarize,
    summary_stat,
    tail_percentile,
    why_not_comparable,
)
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.gpu import GpuReading, GpuSample

pytestmark = pytest.mark.timeout(30)
MODEL = ModelRef(__import__("pathlib").Path("/models/m.gguf"), "m")


# --- llama-bench's list syntax -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", (512,)),
        ("128,512", (128, 512)),
        ("128-1024*2", (128, 256, 512, 1024)),
        ("0-32+8", (0, 8, 16, 24, 32)),
        ("1-3", (1, 2, 3)),
        ("-1", (-1,)),
        ("-1,0,99", (-1, 0, 99)),
    ],
)
def test_int_list(text: str, expected: tuple[int, ...]) -> None:
    assert int_list(text) == expected
    assert bench_cli.int_list(text) == expected  # the -p/-n/-ngl option type


@pytest.mark.parametrize("text", ["", "abc", "10-5", "1-5*1", "1-5+0", "5,x", "1.5"])
def test_int_list_rejects(text: str) -> None:
    with pytest.raises(ValueError) as core_error:  # the Benchmark screen's fields
        int_list(text)
    with pytest.raises(argparse.ArgumentTypeError) as cli_error:  # argparse prints its words
        bench_cli.int_list(text)
    assert str(cli_error.value) == str(core_error.value)


def test_fa_and_kv_lists() -> None:
    assert fa_list("on,off,auto,1,0") == ("on", "off", "auto", "on", "off")
    assert kv_list("f16,q8_0,Q4_0") == ("f16", "q8_0", "q4_0")
    with pytest.raises(argparse.ArgumentTypeError):
        fa_list("maybe")
    with pytest.raises(argparse.ArgumentTypeError):
        kv_list("f8")


# --- statistics -------------------------------------------------------------------------------


def test_percentile_matches_numpy_linear() -> None:
    rng = random.Random(7)
    for n in (1, 2, 5, 37):
        values = [rng.uniform(0, 100) for _ in range(n)]
        for q in (0, 25, 50, 95, 99, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_sample_sd_is_llama_bench_and_statistics_stdev() -> None:
    values = [9561.0, 9300.0, 8100.0, 9999.0, 10020.0]
    assert sample_sd(values) == pytest.approx(statistics.stdev(values))
    assert sample_sd([5.0]) == 0.0 and sample_sd([]) is None


def test_summary_and_ratio() -> None:
    s = summarize([1, 2, 3, 4])
    assert (s.n, s.mean, s.p50, s.min, s.max) == (4, 2.5, 2.5, 1, 4)
    empty = summarize([])
    assert empty.n == 0 and empty.mean is None and empty.p99 is None
    assert ratio(2.0, 4.0) == 0.5 and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None


def test_repetitions_that_disagree_are_noisy_and_tails_need_enough_values() -> None:
    two = [100.0, 171.0]  # 71 % apart: issue #16 saw these flagged "ok"
    assert result_flags({"samples_ts": two, "validity_flags": []}) == ["noisy ±37%"]  # sd / mean
    assert result_flags({"samples_ts": [100.0, 101.0, 99.5], "validity_flags": []}) == []
    assert result_flags({"samples_ts": two, "validity_flags": ["power_cap"]})[0] == "power_cap"
    assert result_flags({"samples_ts": [5.0]}) == []  # one value has no spread
    assert tail_percentile(two, 50) == pytest.approx(135.5)
    assert tail_percentile(two, 95) is None and tail_percentile(list(range(20)), 95) is not None
    assert tail_percentile(list(range(99)), 99) is None
    five = summarize([1.0, 2.0, 3.0, 4.0, 5.0]).to_dict()
    assert summary_stat(five, "p50") == 3.0 and summary_stat(five, "mean") == 3.0
    assert summary_stat(five, "p95") is None and summary_stat(five, "p99") is None
    latency = render_run(StoredRun("latency", {}, {}, latency={"ttft_ms": five}), "md")
    ttft = next(line for line in latency.splitlines() if line.startswith("| TTFT"))
    assert ttft.split("|")[5].strip() == "n/a"  # p95 of 5 requests


def test_a_latency_and_a_throughput_run_say_why_they_do_not_compare() -> None:
    lat = StoredRun("latency", {}, {}, latency={"ttft_ms": summarize([1.0]).to_dict()}, run_id=3)
    thr = StoredRun("throughput", {}, {}, [_row("q4", "tg128", 100.0)], run_id=2)
    other = StoredRun("throughput", {}, {}, [_row("q4", "pp512", 900.0)], run_id=1)
    assert compare_runs(lat, thr) == []
    why = why_not_comparable(lat, thr)
    assert why is not None and "run 3 is a latency run and run 2 a throughput run" in why
    assert "no test with the same settings" in (why_not_comparable(thr, other) or "")
    assert why_not_comparable(thr, thr) is None
    assert metric_label("avg_ts") == "t/s" and metric_label("ttft_ms.p95") == "TTFT p95 (ms)"
    assert {r["label"] for r in compare_runs(thr, thr)} >= {"t/s"}


# --- latency metrics, as vLLM's bench serve defines them ------------------------------------


def _timing(start: float, arrivals: list[float], end: float) -> RequestTiming:
    return RequestTiming(start, arrivals, end, prompt_tokens=10, output_tokens=len(arrivals),
                         engine_ttft_s=0.0, engine_decode_tokens_per_s=0.0)  # fmt: skip


def test_latency_metric_definitions() -> None:
    a = _timing(0.0, [0.1, 0.15, 0.25], 0.3)
    b = _timing(0.2, [0.4, 0.5], 0.5)
    one = _timing(0.5, [0.6], 0.6)
    assert a.ttft_s == pytest.approx(0.1)
    assert a.itls_s == pytest.approx([0.05, 0.1])
    assert a.e2e_s == pytest.approx(0.3)
    assert a.tpot_s == pytest.approx((0.3 - 0.1) / 2)  # (E2E - TTFT) / (output - 1)
    assert one.tpot_s is None  # undefined for one token: left out, as vLLM does
    m = latency_metrics([a, b, one], duration_s=0.6)
    assert m["completed"] == 3 and m["total_output_tokens"] == 6
    assert m["ttft_ms"]["mean"] == pytest.approx((100 + 200 + 100) / 3)
    assert m["ttft_ms"]["n"] == 3 and m["tpot_ms"]["n"] == 2
    assert m["itl_ms"]["n"] == 3  # every gap of every request, pooled
    assert m["itl_ms"]["p50"] == pytest.approx(100.0)
    assert m["e2e_ms"]["max"] == pytest.approx(300.0)
    assert m["request_throughput_per_s"] == pytest.approx(5.0)
    assert m["output_throughput_tokens_per_s"] == pytest.approx(10.0)
    assert m["total_token_throughput_per_s"] == pytest.approx(60.0)


# --- energy and validity --------------------------------------------------------------------


def _reading(**kw) -> GpuReading:
    return GpuReading(index=0, **kw)


def test_energy_aggregates_over_repetitions() -> None:
    w = EnergyWindow()
    # four repetitions of 64 tokens, 0.05 s each; the counter moved in three of them
    marks = [0, 30_000, 30_000, 65_000, 100_000]
    for k in range(4):
        a = Mark(k * 0.05, marks[k], ())
        b = Mark((k + 1) * 0.05, marks[k + 1], ())
        w.add(a, b, 64, 0.05, [_reading(sm_clock_mhz=1980, power_w=650.0, temperature_c=50)])
    f = w.fields(active=True)
    assert f["energy_j"] == pytest.approx(100.0)
    assert f["energy_tokens"] == 256 and f["energy_samples"] == 4
    assert f["energy_updates_seen"] == 3
    assert f["j_per_token"] == pytest.approx(100.0 / 256)
    assert f["tokens_per_j"] == pytest.approx(2.56)
    assert f["energy_power_w"] == pytest.approx(500.0)
    assert f["valid"] and f["validity_flags"] == [] and f["sm_clock_mhz_min"] == 1980


def test_counter_reset_is_skipped_and_missing_energy_is_na() -> None:
    w = EnergyWindow()
    w.add(Mark(0, 5_000, ()), Mark(1, 1_000, ()), 10, 1.0, [])  # driver reloaded: skip
    w.add(Mark(1, 1_000, ()), Mark(2, 3_000, ()), 10, 1.0, [])
    assert w.fields(True)["energy_j"] == pytest.approx(2.0)
    none = EnergyWindow()
    none.add(Mark(0, None, ()), Mark(1, None, ()), 10, 1.0, [])
    f = none.fields(True)
    assert f["energy_j"] is None and f["j_per_token"] is None and f["energy_samples"] == 0


def test_power_cap_and_thermal_flag_a_run_but_idle_does_not() -> None:
    idle = _reading(clock_event_reasons=("gpu_idle",), sm_clock_mhz=345)
    capped = _reading(clock_event_reasons=("sw_power_cap",), sm_clock_mhz=1755, power_w=699.0)
    hot = _reading(clock_event_reasons=("hw_thermal_slowdown",), temperature_c=88)
    w = EnergyWindow()
    w.add(Mark(0, 0, ()), Mark(1, 1, ()), 1, 1.0, [idle])
    assert w.fields(True)["valid"]
    w.add(Mark(1, 1, ()), Mark(2, 2, ()), 1, 1.0, [capped, hot])
    f = w.fields(True)
    assert not f["valid"] and f["validity_flags"] == ["power_cap", "thermal_slowdown"]
    assert f["clock_event_reasons"] == ["hw_thermal_slowdown", "sw_power_cap"]
    assert f["sm_clock_mhz_min"] == 345 and f["temperature_c_max"] == 88
    lost = EnergyWindow()
    lost.add(Mark(0, 0, ()), Mark(1, 1, ()), 1, 1.0, [GpuReading(0, status="lost")])
    assert lost.fields(True)["validity_flags"] == ["gpu_lost"]


def test_cpu_run_has_no_telemetry_and_is_valid() -> None:
    f = EnergyWindow().fields(active=False)
    assert f["valid"] and f["energy_j"] is None and f["power_capped"] is None


# --- sweep and spec ---------------------------------------------------------------------------


def test_sweep_order_and_tests_like_llama_bench() -> None:
    spec = BenchSpec(models=(MODEL,), n_prompt=(512, 0, 512), n_gen=(128, 32),
                     n_gpu_layers=(0, -1), flash_attn=("on", "off"))  # fmt: skip
    assert spec_tests(spec) == [("pp512", 512, 0), ("tg128", 0, 128), ("tg32", 0, 32)]
    insts = instances(spec)
    assert len(insts) == 4
    assert [(i.n_gpu_layers, i.flash_attn) for i in insts] == [
        (0, "on"), (0, "off"), (-1, "on"), (-1, "off")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"models": ()}, "no model"),
        ({"repetitions": 0}, "repetitions"),
        ({"n_prompt": (0,), "n_gen": (0,)}, "nothing to measure"),
        ({"n_prompt": (-5,)}, ">= 0"),
        ({"n_gpu_layers": (-2,)}, "-ngl"),
        ({"flash_attn": ("maybe",)}, "flash attention"),
        ({"perplexity": True, "ppl_ctx": 4}, "--ppl-ctx"),
    ],
)
def test_spec_validation(change: dict, message: str) -> None:
    base = {"models": (MODEL,)}
    with pytest.raises(UserInputError, match=message):
        BenchSpec(**{**base, **change}).validate()


def test_latency_spec_validation() -> None:
    with pytest.raises(UserInputError, match="prompts"):
        LatencySpec(MODEL, prompts=("  ",)).validate()
    with pytest.raises(UserInputError, match="concurrency"):
        LatencySpec(MODEL, prompts=("hi",), concurrency=0).validate()
    LatencySpec(MODEL, prompts=default_prompts()).validate()


def test_default_prompts_are_real_text() -> None:
    prompts = default_prompts(n=12, words=40)
    assert len(prompts) == 12
    assert all(30 <= len(p.split()) <= 40 for p in prompts)
    assert len(set(prompts)) > 5


# --- GPU mapping --------------------------------------------------------------------------------


def test_engine_backend_names_cuda_devices() -> None:
    assert engine_cuda_devices("CUDA0 (NVIDIA H100 80GB HBM3)") == [0]
    assert engine_cuda_devices("CUDA0 (A), CUDA1 (B)") == [0, 1]
    assert engine_cuda_devices("CPU") == []


def _two_gpus() -> GpuSample:
    gpus = (
        GpuReading(0, uuid="GPU-aaaa", pci_bus_id="00000000:07:00.0"),
        GpuReading(1, uuid="GPU-bbbb", pci_bus_id="00000000:0F:00.0"),
    )
    return GpuSample(0.0, 0.0, "ok", gpus=gpus)


def test_nvml_indices_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    import llcuda_tui.core.bench._telemetry as telemetry

    monkeypatch.setattr(telemetry, "_indices_by_bus_id", lambda devices, sample: None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvml_indices([0], _two_gpus()) == [0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert nvml_indices([0], _two_gpus()) == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb,GPU-aaaa")
    assert nvml_indices([0, 1], _two_gpus()) == [1, 0]
    assert nvml_indices([0], GpuSample(0.0, 0.0, "unavailable")) == []


# --- comparison and output ------------------------------------------------------------------


def _row(model: str, test: str, ts: float, **extra) -> dict:
    return {"model_filename": model, "model_name": model, "test": test, "n_gpu_layers": -1,
            "n_batch": 2048, "n_ubatch": 512, "flash_attn": True, "type_k": "f16",
            "type_v": "f16", "avg_ts": ts, "stddev_ts": 1.0, "phase": "decode",
            "j_per_token": extra.pop("jpt", None), **extra}  # fmt: skip


def test_compare_gives_ratio_b_over_a() -> None:
    a = StoredRun("throughput", {}, {}, [_row("q4", "pp512", 1000.0), _row("q4", "tg128", 100.0,
                                                                          jpt=0.5)])  # fmt: skip
    b = StoredRun("throughput", {}, {}, [_row("q8", "tg128", 80.0, jpt=0.6)])
    rows = compare_runs(a, b)
    by_metric = {r["metric"]: r for r in rows}
    assert set(by_metric) == {"avg_ts", "j_per_token"}  # pp512 is not in B
    assert by_metric["avg_ts"]["ratio"] == pytest.approx(0.8)
    assert by_metric["j_per_token"]["ratio"] == pytest.approx(1.2)


def test_compare_ablations_match_on_model() -> None:
    a = StoredRun("throughput", {}, {}, [_row("q4", "tg128", 100.0), _row("q8", "tg128", 70.0)])
    b = StoredRun("throughput", {}, {}, [_row("q8", "tg128", 77.0), _row("q4", "tg128", 110.0)])
    rows = {r["test"]: r["ratio"] for r in compare_runs(a, b) if r["metric"] == "avg_ts"}
    assert rows == {"q4 tg128": pytest.approx(1.1), "q8 tg128": pytest.approx(1.1)}


def test_compare_latency_runs() -> None:
    lat_a = {"ttft_ms": summarize([10.0, 20.0]).to_dict(), "output_throughput_tokens_per_s": 50.0}
    lat_b = {"ttft_ms": summarize([5.0, 10.0]).to_dict(), "output_throughput_tokens_per_s": 100.0}
    rows = compare_runs(StoredRun("latency", {}, {}, latency=lat_a),
                        StoredRun("latency", {}, {}, latency=lat_b))  # fmt: skip
    got = {r["metric"]: r["ratio"] for r in rows}
    assert got["ttft_ms.mean"] == pytest.approx(0.5)
    assert got["output_throughput_tokens_per_s"] == pytest.approx(2.0)


def _run_for_output() -> StoredRun:
    rows = [_row("q4", "pp512", 1000.0, samples_ns=[1, 2], validity_flags=["power_cap"]),
            _row("q4", "tg128", 100.0, samples_ns=[3, 4], validity_flags=[])]  # fmt: skip
    return StoredRun("throughput", {"build_commit": "abc123"}, {}, rows, run_id=7)


def test_output_formats() -> None:
    run = _run_for_output()
    rows = json.loads(render_run(run, "json"))
    assert [r["test"] for r in rows] == ["pp512", "tg128"]
    lines = render_run(run, "jsonl").splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["avg_ts"] == 100.0
    table = list(csv.DictReader(io.StringIO(render_run(run, "csv"))))
    assert table[0]["avg_ts"] == "1000.0" and json.loads(table[0]["samples_ns"]) == [1, 2]
    md = render_run(run, "md")
    assert md.splitlines()[0].startswith("| model") and "power_cap" in md and "abc123" in md
    lat = StoredRun("latency", {}, {}, latency={"ttft_ms": summarize([1.0]).to_dict()}, run_id=3)
    assert json.loads(render_run(lat, "json"))["run_id"] == 3
    assert "ttft_ms.p99" in render_run(lat, "csv").splitlines()[0]
    assert "TTFT (ms)" in render_run(lat, "md")
