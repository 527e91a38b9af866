"""Benchmarks through the real engine on the starter models (CPU; small sizes)."""

from __future__ import annotations

import math
import random
import threading
from pathlib import Path

import pytest

from llcuda_tui.core.bench import (
    BenchCancelled,
    BenchSpec,
    BenchStore,
    LatencySpec,
    ModelRef,
    default_prompts,
    run_bench,
    run_latency,
)
from llcuda_tui.core.errors import UserInputError

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        __import__("importlib").util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python is not installed (scripts/setup.sh)",
    ),
]


def _spec(model: Path, **kw) -> BenchSpec:
    base = dict(models=(ModelRef(model, model.stem),), n_prompt=(16,), n_gen=(4,),
                repetitions=2, n_threads=(2,))  # fmt: skip
    return BenchSpec(**{**base, **kw})


def test_throughput_sweep_is_measured_and_stored(gemma_path: Path, tmp_path: Path) -> None:
    progress = []
    with BenchStore(tmp_path / "b.sqlite") as store:
        run = run_bench(_spec(gemma_path, n_batch=(16, 8)), progress.append, store=store)
        stored = store.get_run("last")
    rows = run.results
    assert [(r["test"], r["n_batch"]) for r in rows] == [
        ("pp16", 16), ("tg4", 16), ("pp16", 8), ("tg4", 8)
    ]  # fmt: skip
    for r in rows:
        assert r["avg_ts"] > 0 and len(r["samples_ts"]) == 2 and r["stddev_ts"] >= 0
        assert r["avg_ts"] == pytest.approx(sum(r["samples_ts"]) / 2)
        assert r["samples_ts"][0] == pytest.approx((r["n_prompt"] + r["n_gen"]) * 1e9
                                                   / r["samples_ns"][0])  # fmt: skip
        assert r["backend"] == "CPU" and r["backends"] == "CPU" and r["valid"] is True
        assert r["energy_j"] is None and r["bandwidth_efficiency"] is None
        assert r["model_size"] > 0 and r["model_type"].startswith("gemma3")
        assert r["build_commit"] and r["n_ctx"] >= 16
    assert rows[2]["n_batch_effective"] == 8
    assert stored.run_id == run.run_id and stored.results == rows
    assert progress and progress[-1].done == progress[-1].total
    assert run.env["llama_cpp_python"] and run.env["build_commit"]


def test_cancel_stops_and_saves_nothing_half_done(gemma_path: Path, tmp_path: Path) -> None:
    cancel = threading.Event()
    with BenchStore(tmp_path / "b.sqlite") as store:
        with pytest.raises(BenchCancelled, match="cancelled"):
            run_bench(_spec(gemma_path), lambda p: cancel.set(), cancel, store=store)
        assert store.list_runs() == []


def test_context_smaller_than_the_test_is_refused(gemma_path: Path) -> None:
    with pytest.raises(UserInputError, match="--ctx 8"):
        run_bench(_spec(gemma_path, n_ctx=(8,)))


def test_perplexity_through_the_engine_logits(gemma_path: Path) -> None:
    from llcuda_tui.core.bench import compute_perplexity, shipped_text
    from llcuda_tui.core.engine import Engine, EngineConfig

    cfg = EngineConfig(gemma_path, n_ctx=64, n_batch=64, n_threads=2, backend_sampling="off")
    with Engine.load(cfg) as eng:
        real = compute_perplexity(eng, n_ctx=64, max_chunks=1)
        words = shipped_text().split()
        random.Random(0).shuffle(words)
        shuffled = compute_perplexity(eng, " ".join(words), n_ctx=64, max_chunks=1)
        again = compute_perplexity(eng, n_ctx=64, max_chunks=1)
        with pytest.raises(UserInputError, match="too short"):
            compute_perplexity(eng, "Hello there.", n_ctx=64)
        with pytest.raises(UserInputError, match="exceeds"):
            compute_perplexity(eng, n_ctx=1024)
    assert real.n_chunks == 1 and real.n_tokens_scored == 64 - 1 - 32
    assert math.isfinite(real.perplexity) and 1 < real.perplexity < 200
    assert shuffled.perplexity > real.perplexity * 1.5  # word salad is less predictable
    assert again.perplexity == pytest.approx(real.perplexity, rel=1e-4)  # deterministic


def test_ablation_reports_speed_and_perplexity_per_model(
    gemma_path: Path, smollm_path: Path
) -> None:
    models = (ModelRef(smollm_path, "smollm"), ModelRef(gemma_path, "gemma"))
    spec = _spec(gemma_path, models=models, n_prompt=(8,), n_gen=(0,), repetitions=1,
                 perplexity=True, ppl_ctx=32, ppl_chunks=1)  # fmt: skip
    run = run_bench(spec)
    assert [p["model_name"] for p in run.perplexity] == ["smollm", "gemma"]
    assert all(p["perplexity"] > 1 for p in run.perplexity)
    assert [r["model_name"] for r in run.results] == ["smollm", "gemma"]
    assert [r["perplexity"] for r in run.results] == [p["perplexity"] for p in run.perplexity]


def test_perplexity_only_run(gemma_path: Path) -> None:
    spec = _spec(gemma_path, n_prompt=(0,), n_gen=(0,), perplexity=True, ppl_ctx=32,
                 ppl_chunks=1)  # fmt: skip
    run = run_bench(spec)
    assert run.results == [] and len(run.perplexity) == 1
    assert run.perplexity[0]["n_tokens_scored"] == 15


def test_latency_on_the_real_generation_path(gemma_path: Path, tmp_path: Path) -> None:
    spec = LatencySpec(ModelRef(gemma_path, "gemma"), default_prompts(3, words=12), iters=2,
                       warmup=1, max_tokens=4, n_ctx=256, n_threads=2)  # fmt: skip
    with BenchStore(tmp_path / "b.sqlite") as store:
        run = run_latency(spec, store=store)
    lat = run.latency
    assert run.mode == "latency" and lat is not None and run.run_id is not None
    assert lat["completed"] == 2 and lat["total_output_tokens"] == 8
    assert lat["itl_ms"]["n"] == 2 * 3 and lat["tpot_ms"]["n"] == 2
    assert 0 < lat["ttft_ms"]["p50"] <= lat["e2e_ms"]["p50"]
    assert lat["output_throughput_tokens_per_s"] > 0 and lat["concurrency"] == 1


def test_concurrency_runs_streams_side_by_side(gemma_path: Path) -> None:
    spec = LatencySpec(ModelRef(gemma_path, "gemma"), default_prompts(4, words=10), iters=4,
                       warmup=0, max_tokens=3, concurrency=2, n_ctx=256, n_threads=1)  # fmt: skip
    run = run_latency(spec)
    lat = run.latency
    assert run.mode == "concurrency" and lat is not None and lat["concurrency"] == 2
    assert lat["completed"] == 4 and lat["request_throughput_per_s"] > 0
