"""bench/multiturn.py on the CPU starter model, CI-sized: a chat whose history grows turn after
turn through a real `llcuda serve`; every turn after the first finds the whole earlier
conversation in the worker's cache (usage.prompt_tokens_details.cached_tokens), so only the new
turn is prefilled. Hit counts, not times: the times are the benchmark's."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from llcuda_tui.core.engine._prefix import KEEP_ALIGN
from tests.workerproc import REPO

pytestmark = pytest.mark.timeout(600)


def test_each_turn_reuses_the_conversation_so_far(smollm_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "turns.json"
    cmd = [sys.executable, str(REPO / "bench" / "multiturn.py"), str(smollm_path)]
    cmd += ["--no-llama-server", "--turns", "5", "--reply", "8", "--words", "30"]
    cmd += ["--ctx", "2048", "--worker-arg=--threads=1", "--json", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-2000:]
    turns = json.loads(out.read_text())["ours"]
    assert [t["turn"] for t in turns] == [1, 2, 3, 4, 5]
    assert turns[0]["cached_tokens"] == 0
    for before, turn in itertools.pairwise(turns):
        assert turn["prompt_tokens"] > before["prompt_tokens"]
        # everything the previous request sent is still in the slot (to an aligned position)
        assert turn["cached_tokens"] >= before["prompt_tokens"] - KEEP_ALIGN, turn
        assert turn["cached_tokens"] < turn["prompt_tokens"]
