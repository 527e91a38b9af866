"""`llcuda cache ls|clear` and `models du` on a state the engine really saved (SmolLM2, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from llcuda_tui.core.config import Paths
from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest, SamplingParams

ROOT = Path(__file__).resolve().parents[1]


def llcuda(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llcuda_tui", *args], cwd=ROOT, env=os.environ.copy(),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cache_lists_and_clears_saved_states(
    llcuda_home: Path, smollm_path: Path, cpu_threads: int
) -> None:
    paths = Paths.from_env()
    empty = llcuda("cache", "ls", "--json")
    assert empty.returncode == 0 and json.loads(empty.stdout)["states"] == []
    config = EngineConfig(
        smollm_path, n_ctx=512, n_threads=cpu_threads, kv_state_dir=paths.kv_state_dir,
        model_sha256="c" * 64,
    )  # fmt: skip
    prompt = "The engine keeps the cells of a conversation, so the next turn is quick. " * 3
    with Engine.load(config) as engine:
        req = GenerationRequest(
            prompt=prompt, max_tokens=4, sampling=SamplingParams(temperature=0.0)
        )
        engine.generate(req)
    listed = llcuda("cache", "ls", "--json")
    states = json.loads(listed.stdout)["states"]
    assert len(states) == 1 and states[0]["tokens"] > 40 and states[0]["bytes"] > 0
    du = json.loads(llcuda("models", "du", "--json").stdout)
    assert du["kv_state_bytes"] == states[0]["bytes"]
    assert "saved KV states" in llcuda("models", "du").stdout
    human = llcuda("cache", "ls")
    assert human.stdout.startswith("1 saved state(s)") and states[0]["key"][:12] in human.stdout
    cleared = llcuda("cache", "clear")
    assert cleared.returncode == 0 and cleared.stdout.startswith("removed 1 saved state(s)")
    assert list(paths.kv_state_dir.iterdir()) == []
    assert json.loads(llcuda("cache", "ls", "--json").stdout)["states"] == []
