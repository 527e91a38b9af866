"""`llcuda` as a user runs it: the installed entry point in a subprocess."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

LLCUDA = shutil.which("llcuda") or str(Path(sys.executable).parent / "llcuda")


def llcuda(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [LLCUDA, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("llcuda: error: ")
    assert "Traceback" not in proc.stderr


def test_version_names_the_backend() -> None:
    proc = llcuda("--version")
    assert proc.returncode == 0
    assert "llcuda-tui 0.1.0" in proc.stdout
    assert "llama-cpp-python 0.3.36, built for CPU" in proc.stdout


def test_bare_llcuda_exits_cleanly_without_a_terminal() -> None:
    proc = subprocess.run(
        [LLCUDA], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(180)
def test_infer_gemma_counts_by_name() -> None:
    proc = llcuda("infer", "-m", "gemma-3-270m", "-p", "1, 2, 3, 4, 5,", "-n", "8", "--temp", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(" 6, 7, 8"), proc.stdout
    assert "decode" in proc.stderr and "CPU" in proc.stderr


@pytest.mark.timeout(180)
def test_infer_smollm_chat_json(smollm_path: Path) -> None:
    proc = llcuda("infer", "-m", "smollm2-135m-instruct", "--chat", "-p", "Say hello.",
                  "--temp", "0", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "hello" in out["text"].lower()
    rec = out["record"]
    for key in (
        "prompt_tokens",
        "generated_tokens",
        "ttft_s",
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
        "stop_reason",
        "backend",
        "n_gpu_layers",
        "n_ctx",
    ):
        assert key in rec
    assert rec["stop_reason"] == "eos"


def test_truncated_model_is_one_line_exit_2(tmp_path: Path, gemma_path: Path) -> None:
    bad = tmp_path / "truncated.gguf"
    with open(gemma_path, "rb") as src:
        bad.write_bytes(src.read(1 << 20))
    proc = llcuda("infer", "-m", str(bad), "-p", "x")
    assert_one_line_error(proc, 2)
    assert "truncated.gguf" in proc.stderr


def test_missing_model_and_bad_values(tmp_path: Path) -> None:
    assert_one_line_error(llcuda("infer", "-m", str(tmp_path / "nope.gguf"), "-p", "x"), 2)
    assert_one_line_error(llcuda("infer", "-m", "no-such-model", "-p", "x"), 2)
    assert_one_line_error(llcuda("infer", "-m", "gemma-3-270m", "-p", "x", "--top-p", "7"), 2)
    assert_one_line_error(llcuda("infer", "-m", "gemma-3-270m"), 2)  # argparse: no prompt
    assert_one_line_error(llcuda("infer", "-m", "gemma-3-270m", "-p", "x", "-n", "abc"), 2)


def test_bad_config_file_is_one_line(llcuda_home: Path) -> None:
    cfg = llcuda_home / "config" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("[engine]\nn_ctx = 'big'\n")
    proc = llcuda("infer", "-m", "gemma-3-270m", "-p", "x")
    assert_one_line_error(proc, 2)
    assert "n_ctx must be int" in proc.stderr


def test_models_starter_json() -> None:
    proc = llcuda("models", "starter", "--json")
    assert proc.returncode == 0, proc.stderr
    names = {row["name"] for row in json.loads(proc.stdout)}
    assert {"smollm2-135m-instruct", "gemma-3-270m"} <= names


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_the_command_table_has_each_commands_own_help() -> None:
    from llcuda_tui.cli import COMMANDS, build_parser

    listed = {a.dest: a.help for a in _subparsers(build_parser())._choices_actions}
    assert listed == COMMANDS  # what the one-line entries of commands not run say


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["models", "--help"], ["models", "ls", "--help"], ["models", "remote", "--help"]],
)
def test_building_only_the_named_parsers_helps_and_parses_alike(argv: list[str]) -> None:
    import contextlib
    import io

    from llcuda_tui.cli import build_parser

    def run(parser: argparse.ArgumentParser) -> str:
        with contextlib.redirect_stdout(io.StringIO()) as out, pytest.raises(SystemExit):
            parser.parse_args(argv)
        return out.getvalue()

    def parsed(parser: argparse.ArgumentParser, words: list[str]) -> dict[str, object]:
        values = vars(parser.parse_args(words))
        func = values["func"]  # a partial is made per parser: compare what it calls
        values["func"] = (func.func, func.args) if isinstance(func, partial) else func
        return values

    assert run(build_parser(argv)) == run(build_parser())
    for words in (["models", "ls", "--json"], ["models", "pull", "a/b", "--quant", "Q4_K_M"]):
        assert parsed(build_parser(words), words) == parsed(build_parser(), words)
