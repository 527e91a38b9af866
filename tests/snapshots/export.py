"""Copy the screen snapshots to docs/screenshots/ (the README's screenshots).

.venv/bin/python -m pytest tests/snapshots --snapshot-update
.venv/bin/python tests/snapshots/export.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = ROOT / "tests" / "snapshots" / "__snapshots__" / "test_snapshots"
TARGET = ROOT / "docs" / "screenshots"


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    for screen in ("chat", "models", "gpu", "bench"):
        source = SNAPSHOTS / f"test_{screen}_screen[120x40].svg"
        shutil.copyfile(source, TARGET / f"{screen}.svg")
        print(f"{source.relative_to(ROOT)} -> {(TARGET / f'{screen}.svg').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
