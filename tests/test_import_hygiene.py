"""``llcuda_tui.core`` is importable without the TUI: each core module, imported alone in a
fresh interpreter, leaves ``textual`` (and ``rich``) out of ``sys.modules``."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import llcuda_tui.core

CORE_MODULES = sorted(
    m.name for m in pkgutil.walk_packages(llcuda_tui.core.__path__, "llcuda_tui.core.")
)


@pytest.mark.timeout(120)
def test_every_core_module_imports_without_textual() -> None:
    code = (
        "import importlib, sys\n"
        "bad = []\n"
        "for name in sys.argv[1:]:\n"
        "    before = set(sys.modules)\n"
        "    importlib.import_module(name)\n"
        "    leaked = {m.split('.')[0] for m in set(sys.modules) - before} & {'textual', 'rich'}\n"
        "    if leaked:\n"
        "        bad.append(f'{name}: {sorted(leaked)}')\n"
        "print('\\n'.join(bad))\n"
    )
    assert len(CORE_MODULES) > 10
    # one fresh interpreter per module: a module cannot hide behind another's imports
    for name in CORE_MODULES:
        proc = subprocess.run(
            [sys.executable, "-c", code, name], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"{name}: {proc.stderr.strip().splitlines()[-1:]}"
        assert proc.stdout.strip() == "", proc.stdout
