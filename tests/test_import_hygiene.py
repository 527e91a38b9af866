"""``llcuda_tui.core`` is importable without the TUI: each core module, imported alone in a
fresh interpreter, leaves ``textual`` (and ``rich``) out of ``sys.modules``. And start-up
loads only what it needs: the parser none of the commands' core, ``--version`` no llama_cpp,
the TUI no screen but its first. (The layers themselves: ``lint-imports``, pyproject.toml.)"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

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


# --- start-up: what a command loads before it runs (bench/startup.py measures the time) --------

# third-party packages that cost tens of milliseconds each to import: none is needed to parse
# the command line, to print --version on a CPU build, or to show the TUI's first screen
HEAVY = {"textual", "rich", "numpy", "llama_cpp", "gguf", "jinja2", "httpx", "huggingface_hub"}
HEAVY |= {"starlette", "uvicorn", "pynvml", "mpi4py", "prometheus_client"}
# core modules the parser may load: the lazy package facades, the errors it reports, formatting
PARSER_CORE = {"llcuda_tui.core", "llcuda_tui.core._lazy", "llcuda_tui.core.errors"}
PARSER_CORE |= {"llcuda_tui.core.fmt"}
LIST_MODULES = (
    "import json, sys\n"
    "print(json.dumps({n: hasattr(m, '__path__') for n, m in list(sys.modules.items())}))\n"
)


def _modules_after(code: str) -> dict[str, bool]:
    """Every module a fresh interpreter holds after ``code`` (name -> is a package)."""
    proc = subprocess.run(
        [sys.executable, "-c", code + LIST_MODULES], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _heavy(modules: dict[str, bool]) -> set[str]:
    return {name for name in modules if name.split(".")[0] in HEAVY}


@pytest.mark.timeout(120)
def test_the_parser_loads_no_command_core() -> None:
    modules = _modules_after("from llcuda_tui.cli import build_parser\nbuild_parser()\n")
    assert "llcuda_tui.commands.models" in modules  # every command registered its parser
    core = {
        name
        for name, is_package in modules.items()
        if name.startswith("llcuda_tui.core.") and not is_package and name not in PARSER_CORE
    }
    assert core == set(), "imported by the parser; import it in the command's run"
    assert _heavy(modules) == set()


@pytest.mark.timeout(120)
def test_version_does_not_import_llama_cpp() -> None:
    from llcuda_tui._preload import llama_package_dir

    package = llama_package_dir()
    if package is None or (package / "lib" / "libggml-cuda.so").exists():
        pytest.skip("a CUDA build lists its GPUs through llama_cpp")
    modules = _modules_after(
        "import contextlib, io\n"
        "from llcuda_tui.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['--version']) == 0\n"
        "assert 'built for CPU' in out.getvalue(), out.getvalue()\n"
    )
    assert _heavy(modules) == set()


@pytest.mark.timeout(120)
def test_models_ls_loads_only_its_own_command_and_the_store_it_reads(tmp_path: Path) -> None:
    code = (
        "import contextlib, io, os\n"
        f"os.environ['LLCUDA_HOME'] = {str(tmp_path)!r}\n"
        "from llcuda_tui.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['models', 'ls']) == 0\n"
        "assert 'the store is empty' in out.getvalue(), out.getvalue()\n"
    )
    modules = _modules_after(code)
    assert _heavy(modules) == set()
    commands = {name for name in modules if name.startswith("llcuda_tui.commands.")}
    assert commands == {"llcuda_tui.commands.models", "llcuda_tui.commands.models_remote",
                        "llcuda_tui.commands.argtypes"}  # fmt: skip
    # reading the settings and listing the store: not the engine's types, the GGUF reader, the
    # Hub or the store's other verbs (each loads with its verb), nor tomllib without a config
    unneeded = {"llcuda_tui.core.engine._types", "llcuda_tui.core.engine._sampling"}
    unneeded |= {"llcuda_tui.core.gguf", "llcuda_tui.core.store._hub", "tomllib", "random"}
    unneeded |= {f"llcuda_tui.core.store.{m}" for m in ("_pull", "_maint", "_adopt", "_local")}
    assert unneeded & set(modules) == set()


@pytest.mark.timeout(120)
def test_the_tui_imports_only_its_first_screen_before_it_is_ready() -> None:
    modules = _modules_after(
        "import asyncio\n"
        "from llcuda_tui.app import LlcudaApp\n"
        "from llcuda_tui.core.config import Settings\n"
        "async def main():\n"
        "    app = LlcudaApp(\n"
        "        Settings.load(), gpu_live=False, autoload=False, adopt_starters=False\n"
        "    )\n"
        "    async with app.run_test(size=(120, 40)) as pilot:\n"
        "        while app.screen.id == '_default' or not app.screen.is_mounted:\n"
        "            await pilot.pause(0.01)\n"
        "        await pilot.pause()\n"
        "        assert type(app.screen).__module__.startswith('llcuda_tui.screens.chat')\n"
        "asyncio.run(main())\n"
    )
    others = {"llcuda_tui.screens.models", "llcuda_tui.screens.gpu", "llcuda_tui.screens.bench"}
    assert others & set(modules) == set(), "load a screen's module on its first switch"
    # no worker attached: the worker client and its HTTP stack wait for one
    assert {"llcuda_tui.core.worker.client", "httpx"} & set(modules) == set()


@pytest.mark.timeout(60)
def test_fit_badges_of_stored_models_import_no_gguf_reader() -> None:
    # the TUI's model picker at start-up: a stored model's summary comes from its manifest;
    # its fit (KV cache sizes included) needs no `import gguf`, which imports numpy (0.4 s)
    modules = _modules_after(
        "from llcuda_tui.core.fit import DeviceMemory, FitRequest, fit\n"
        "from llcuda_tui.core.gguf import GgufSummary\n"
        "s = GgufSummary('llama', n_layer=4, n_embd=64, n_head=4, n_head_kv=4, head_dim_k=16,\n"
        "                head_dim_v=16, tensor_bytes=1 << 20)\n"
        "ram = DeviceMemory('ram', 'RAM', 1 << 34, 1 << 34)\n"
        "for kv in ('f16', 'q8_0', 'q4_0'):\n"
        "    fit(s, FitRequest(type_k=kv, type_v=kv), ram)\n"
    )
    assert {"numpy", "gguf", "llama_cpp"} & set(modules) == set()


@pytest.mark.timeout(60)
def test_libllama_is_loaded_when_numpy_is_first_imported() -> None:
    from llcuda_tui._preload import llama_package_dir

    if llama_package_dir() is None:
        pytest.skip("llama-cpp-python is not installed")
    code = (
        "import sys\n"
        "import llcuda_tui._preload as preload\n"
        "assert preload._libllama is None, 'loaded by import llcuda_tui: no command needs it'\n"
        "import numpy\n"
        "assert preload._libllama is not None, 'numpy came in without libllama loaded first'\n"
        "maps = open('/proc/self/maps').read()\n"
        "assert 'libllama' in maps\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
