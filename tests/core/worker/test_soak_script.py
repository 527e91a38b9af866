"""bench/soak.py on a small scale: against a worker it starts it reports every request and no
error; against a worker that refuses it (a wrong key) it counts the errors and exits 1."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from llcuda_tui.core.worker import WorkerServer
from tests.workerproc import REPO

pytestmark = pytest.mark.timeout(60)


def _soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", REPO / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_small_soak_has_no_errors(tiny_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    args = ["-m", str(tiny_gguf), "--requests", "30", "--warmup", "5", "--ctx", "1024"]
    args += ["--threads", "1", "--prompt-words", "40", "--cancel", "0.3", "--bad", "0.1"]
    args += ["--sample-s", "0.2", "--max-growth-pct", "50", "--json", str(out)]
    assert _soak().main(args) == 0
    summary = json.loads(out.read_text())
    assert summary["errors"] == 0 and summary["problems"] == []
    assert summary["ok"] + summary["cancelled"] + summary["rejected_as_expected"] == 30
    assert summary["cancelled"] > 0 and summary["rejected_as_expected"] > 0
    assert summary["rss_after_warmup_mb"] > 0 and summary["rss_samples"] > 0
    assert summary["latency_p95_s"] >= summary["latency_p50_s"] > 0
    assert summary["final_stats"]["active"] == summary["final_stats"]["kv_cells_used"] == 0


def test_refused_requests_are_errors(tiny_worker: WorkerServer, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    args = ["--url", tiny_worker.url, "--api-key", "wrong-key-42", "--requests", "6"]
    args += ["--warmup", "0", "--clients", "2", "--json", str(out)]
    assert _soak().main(args) == 1
    summary = json.loads(out.read_text())
    assert summary["errors"] == 6 and summary["ok"] == 0
    assert "status 401" in summary["error_messages"][0]
    assert summary["rss_after_warmup_mb"] is None  # no --pid: memory not read
