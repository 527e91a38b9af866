"""bench/mpi_scaling.py keeps working: its CPU smoke run (tiny model, 1 and 2 ranks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.mpi.conftest import REPO


@pytest.mark.timeout(150)
def test_smoke_run_measures_both_modes(mpiexec: Path, tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    cmd = [sys.executable, "bench/mpi_scaling.py", "--smoke", "--ranks", "1,2",
           "--mpiexec", str(mpiexec), "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert [(r["mode"], r["ranks"]) for r in results] == [
        ("batch", 1),
        ("batch", 2),
        ("serve", 1),
        ("serve", 2),
    ]
    assert all(r["generated_tokens"] == 16 * 16 and r["tokens_per_s"] > 0 for r in results)
    assert "| serve | 2 |" in proc.stdout
