"""Experiments end to end: a 2x2 sweep killed with SIGKILL after its first cell resumes and
completes with exactly 4 results; malformed files are one line naming the key; the report's
HTML, Markdown (+PNG) and PDF (rendered with pdftoppm) hold the figures."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llcuda_tui.core.config import Settings
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.experiment import (
    ExperimentStore,
    expand_cells,
    load_experiment,
    pareto_front,
    parse_experiment,
    prepare_models,
    run_experiment,
    start_or_resume,
    write_report,
)
from llcuda_tui.core.store import Store
from tests.gguf_factory import write_tiny_llama

LLCUDA = str(Path(sys.executable).parent / "llcuda")
pytestmark = pytest.mark.timeout(300)

SWEEP = """
name = "tiny 2x2"
repetitions = 2
[models]
source = "tiny-F16"
quantize = ["Q8_0", "Q4_0"]
[axes]
flash_attn = ["off", "on"]
threads = [2]
[tests]
pp = [256]
tg = [48]
"""


@pytest.fixture()
def f16_in_store(settings: Settings, tmp_path: Path) -> Store:
    store = Store.from_settings(settings)
    # a bigger tiny model: each cell takes a moment, so the kill lands between cells
    f16 = write_tiny_llama(tmp_path / "tiny-F16.gguf", n_embd=256, n_ff=512, n_layer=4, f16=True)
    store.import_path(f16, name="tiny-F16")
    return store


def _experiment_file(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_killed_after_first_cell_resumes_with_exactly_four_results(
    f16_in_store: Store, settings: Settings, tmp_path: Path
) -> None:
    path = _experiment_file(tmp_path, SWEEP)
    proc = subprocess.Popen(
        [LLCUDA, "experiment", "run", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    assert proc.stdout is not None
    try:
        seen = []
        for line in proc.stdout:  # blocks until the CLI says a cell is done (or exits)
            seen.append(line)
            if line.startswith("[1/4] "):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, (seen, proc.stderr.read() if proc.stderr else "")

    with ExperimentStore.open(settings.paths) as store:
        (exp,) = store.list_experiments()
        first = exp.cells[0]
        assert first.status == "done" and first.run_id is not None
        assert exp.done < 4, "the kill came too late to test resuming"
        assert exp.status != "complete"

    proc2 = subprocess.run(
        [LLCUDA, "experiment", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=280,
        env=dict(os.environ),
    )
    assert proc2.returncode == 0, proc2.stderr
    assert f"resuming experiment {exp.experiment_id}" in proc2.stdout
    assert "[4/4] " in proc2.stdout and "[1/4] " not in proc2.stdout

    with ExperimentStore.open(settings.paths) as store:
        (done,) = store.list_experiments()
        assert done.experiment_id == exp.experiment_id and done.status == "complete"
        assert [c.status for c in done.cells] == ["done"] * 4
        assert done.cells[0].run_id == first.run_id and done.cells[0].attempts == 1  # skipped
        run_ids = {c.run_id for c in done.cells}
        assert len(run_ids) == 4
        # exactly one stored run per cell: no orphan from the killed attempt
        assert len(store.list_runs(limit=100)) == 4
        keys = {(c.model, c.settings["flash_attn"]) for c in done.cells}
        assert keys == {(m, fa) for m in ("tiny-Q8_0", "tiny-Q4_0") for fa in ("off", "on")}
        for c in done.cells:
            run = store.get_run(c.run_id)
            assert {r["test"] for r in run.results} == {"pp256", "tg48"}
            assert all(r["valid"] for r in run.results)  # validity flags computed per cell

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LLCUDA, "experiment", *args], capture_output=True, text=True, timeout=120,
            env=dict(os.environ),
        )  # fmt: skip

    shown = cli("show", str(exp.experiment_id))
    assert shown.returncode == 0, shown.stderr
    assert "tiny-Q8_0 fa=off" in shown.stdout and "tiny-Q4_0 fa=on" in shown.stdout
    assert "4/4 cells  tiny 2x2" in cli("ls").stdout
    assert cli("rm", "last").returncode == 0
    assert cli("ls").stdout.startswith("no experiments")
    with ExperimentStore.open(settings.paths) as store:
        assert store.list_runs(limit=100) == []  # the cells' runs went with it
    missing = cli("show", "7")
    assert missing.returncode != 0 and "no experiment '7'" in missing.stderr


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[models]\nnames = ["a"]\n[axes]\nflash_attn = ["maybe"]\n', "axes.flash_attn"),
        ('[models]\nnames = ["a"]\n[axes]\nn_gpu_layers = "all"\n', "axes.n_gpu_layers"),
        ('[models]\nnames = ["a"]\n[axes]\nkv_cache = ["q8_0"]\n', "axes.kv_cache"),
        ('[models]\nquantize = ["Q4_0"]\n', "models.quantize"),
        ('repetitions = 0\n[models]\nnames = ["a"]\n', "repetitions"),
        ('[models]\nnames = ["a"]\n[tests]\nlatency = { requests = "x" }\n', "tests.latency"),
        ('[models]\nnames = ["a"]\n[tests]\npp = []\ntg = []\n', "tests"),
    ],
)
def test_malformed_file_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = _experiment_file(tmp_path, text)
    with pytest.raises(UserInputError, match=f"key '{key}"):
        load_experiment(path)


def test_malformed_file_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    path = _experiment_file(tmp_path, '[models]\nnames = ["a"]\n[axes]\nflash_attn = [1]\n')
    proc = subprocess.run(
        [LLCUDA, "experiment", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "axes.flash_attn" in lines[0] and "Traceback" not in proc.stderr
    bad_toml = _experiment_file(tmp_path, "name = [\n", "bad.toml")
    proc = subprocess.run(
        [LLCUDA, "experiment", "run", str(bad_toml)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "not valid TOML" in proc.stderr


def test_listed_cells_filter_the_cross_product() -> None:
    spec = parse_experiment(
        {
            "models": {"names": ["a", "b"]},
            "axes": {"flash_attn": ["off", "on"], "n_batch": [256, 512]},
            "cells": [{"model": "a", "flash_attn": "on"}, {"n_batch": 256, "flash_attn": "off"}],
        },
        "test",
    )
    axes = {k: list(v) for k, v in spec.axes.items()}
    full = parse_experiment({"models": {"names": ["a", "b"]}, "axes": axes}, "t")
    assert len(expand_cells(full, ["a", "b"])) == 8
    cells = expand_cells(spec, ["a", "b"])
    assert [c.key for c in cells] == [
        "model=a;flash_attn=off;n_batch=256",
        "model=a;flash_attn=on;n_batch=256",
        "model=a;flash_attn=on;n_batch=512",
        "model=b;flash_attn=off;n_batch=256",
    ]


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [(4.0, 10.0), (8.0, 9.0), (6.0, 11.0), (16.0, 8.5), (12.0, 9.5)]
    assert pareto_front(points) == [(4.0, 10.0), (8.0, 9.0), (16.0, 8.5)]


REPORTED = """
name = "report sweep"
repetitions = 1
[models]
source = "tiny-F16"
quantize = ["Q8_0", "Q4_0"]
[axes]
threads = [2]
[tests]
pp = [64]
tg = [16]
perplexity = { ctx = 64, chunks = 2 }
latency = { requests = 3, max_tokens = 8 }
"""


def _not_blank(png: Path) -> float:
    """The fraction of pixels that are not (near) white."""
    import matplotlib.image

    img = np.asarray(matplotlib.image.imread(png))[..., :3]
    if img.dtype != np.uint8:
        img = (img * 255).astype(np.uint8)
    return float((img.min(axis=2) < 200).mean())


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="needs pdftoppm (poppler-utils)")
def test_report_html_md_pdf(f16_in_store: Store, settings: Settings, tmp_path: Path) -> None:
    spec = load_experiment(_experiment_file(tmp_path, REPORTED))
    models = prepare_models(spec, settings)
    assert models == ["tiny-Q8_0", "tiny-Q4_0"]
    with ExperimentStore.open(settings.paths) as store:
        exp_id, resumed = start_or_resume(store, spec, models, None)
        assert not resumed
        assert run_experiment(store, exp_id, spec, settings) == 2
        out = tmp_path / "out"
        md = write_report(store, exp_id, out / "report.md")
        (html,) = write_report(store, exp_id, out / "report.html")
        (pdf,) = write_report(store, exp_id, out / "report.pdf")
        with pytest.raises(UserInputError, match=r"name a \.md, \.html or \.pdf"):
            write_report(store, exp_id, out / "report.docx")

    md_text = md[0].read_text()
    pngs = sorted((out / "report_files").glob("*.png"))
    assert {p.name for p in pngs} == {"speed.png", "pareto.png", "latency-cdf.png"}
    for i, png in enumerate(md[1:], 1):  # every figure shown is named, and exists
        assert f"](report_files/{png.name})" in md_text
        assert f"## Figure {i}: " in md_text
        assert _not_blank(png) > 0.01
    assert "tiny-Q8_0" in md_text and "tiny-Q4_0" in md_text and "ppl" in md_text

    html_text = html.read_text()
    assert html_text.count("data:image/png;base64,") == 3  # self-contained
    assert 'src="http' not in html_text and 'src="report_files' not in html_text

    assert pdf.read_bytes().startswith(b"%PDF")
    subprocess.run(
        ["pdftoppm", "-f", "1", "-l", "1", "-png", "-r", "40", str(pdf), str(tmp_path / "page")],
        check=True,
        timeout=120,
    )
    (page,) = tmp_path.glob("page*.png")
    assert _not_blank(page) > 0.01  # the first page has the speed figure on it
    assert not list(out.glob("*.tmp")) and not list(out.glob("w-*"))
