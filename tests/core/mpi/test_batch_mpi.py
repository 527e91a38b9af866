"""`mpiexec -n 2 llcuda batch --mpi` (CPU, Open MPI wheel): ranks pull work and rank 0 writes
results in input order, identical to one process; a failure on any rank is one line, once;
each rank's GPUs come from its node-local rank. Every job is bounded by a timeout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.core.mpi.conftest import read_results, run_mpi, write_prompts

FAST = ["--temp", "0", "--ctx", "128", "--threads", "1", "--parallel", "2", "-q"]


def _batch_argv(model: Path, src: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "llcuda_tui", "batch", "--mpi", "-m", str(model), "-i", str(src),
            "-o", str(out), *FAST, *extra]  # fmt: skip


@pytest.mark.timeout(120)
def test_two_ranks_share_the_work_in_input_order(
    mpiexec: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    from llcuda_tui.cli import main

    src = write_prompts(tmp_path / "in.jsonl", 22, max_tokens=8)
    with open(src, "a", encoding="utf-8") as fh:  # chat items travel too
        for i in (22, 23):
            chat = [{"role": "user", "content": f"question {i}"}]
            fh.write(json.dumps({"id": f"q{i}", "messages": chat, "max_tokens": 8}) + "\n")
    single = tmp_path / "single.jsonl"
    assert main(["batch", "-m", str(tiny_gguf), "-i", str(src), "-o", str(single), *FAST]) == 0
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    done = run_mpi(mpiexec, 2, _batch_argv(tiny_gguf, src, out, "--summary", str(summary)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("llcuda batch: 24 written") == 1  # rank 0 reports, once
    results = read_results(out)
    assert [r["id"] for r in results] == [f"q{i}" for i in range(24)]
    assert [r["text"] for r in results] == [r["text"] for r in read_results(single)]
    s = json.loads(summary.read_text())
    by_rank = {r["rank"]: r["items"] for r in s["ranks"]}
    assert set(by_rank) == {0, 1} and sum(by_rank.values()) == 24
    assert by_rank[1] > 0  # rank 1 pulled work (rank 0 cannot finish 24 items in one step)
    assert {r["rank"] for r in results} == {0, 1}


@pytest.mark.timeout(120)
def test_root_without_engine_and_resume(mpiexec: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    src = write_prompts(tmp_path / "in.jsonl", 8)
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "q0", "text": "from before", "rank": 0}\n{"id": "q1", "te')
    done = run_mpi(mpiexec, 2, _batch_argv(tiny_gguf, src, out, "--no-root-engine"))
    assert done.returncode == 0, done.stderr
    results = read_results(out)
    assert [r["id"] for r in results] == [f"q{i}" for i in range(8)]
    assert results[0]["text"] == "from before"
    assert {r["rank"] for r in results[1:]} == {1}  # rank 0 only scheduled


@pytest.mark.timeout(60)
def test_a_bad_line_is_an_error_record_and_the_ranks_go_on(
    mpiexec: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    """One bad line does not stop the job (issue #23): its result is its error, the rest run."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"prompt": "fine"}\n{"prompt": "x", "temprature": 1}\n')
    done = run_mpi(mpiexec, 2, _batch_argv(tiny_gguf, src, out))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert "text" in rows[0]
    assert "line 2: unknown key 'temprature'" in rows[1]["error"]


@pytest.mark.timeout(60)
def test_each_rank_takes_its_node_local_gpus(mpiexec: Path, tmp_path: Path) -> None:
    script = tmp_path / "where.py"
    script.write_text(
        "import json, os\n"
        "from llcuda_tui.core.mpi import ranks\n"
        "comm = ranks.world()\n"
        "p = ranks.place_agreed(comm, 2)\n"
        "print(json.dumps({**p.to_dict(), 'env': os.environ['CUDA_VISIBLE_DEVICES']}))\n"
    )
    done = run_mpi(mpiexec, 2, [str(script)], env={"CUDA_VISIBLE_DEVICES": "4,5,6,7"})
    assert done.returncode == 0, done.stderr
    seen = sorted((json.loads(x) for x in done.stdout.splitlines()), key=lambda d: d["rank"])
    assert [(d["local_rank"], d["env"]) for d in seen] == [(0, "4,5"), (1, "6,7")]


@pytest.mark.timeout(60)
def test_rank_0_without_engine_takes_no_gpu(mpiexec: Path, tmp_path: Path) -> None:
    script = tmp_path / "where.py"
    script.write_text(
        "import json, os\n"
        "from llcuda_tui.core.mpi import ranks\n"
        "comm = ranks.world()\n"
        "p = ranks.place_agreed(comm, 1, root_engine=False)\n"
        "print(json.dumps({**p.to_dict(), 'env': os.environ['CUDA_VISIBLE_DEVICES']}))\n"
    )
    done = run_mpi(mpiexec, 3, [str(script)], env={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert done.returncode == 0, done.stderr
    seen = sorted((json.loads(x) for x in done.stdout.splitlines()), key=lambda d: d["rank"])
    assert [(d["gpus"], d["env"]) for d in seen] == [([], ""), (["0"], "0"), (["1"], "1")]


@pytest.mark.timeout(60)
def test_too_few_gpus_is_one_line_from_rank_0(
    mpiexec: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    src = write_prompts(tmp_path / "in.jsonl", 2)
    argv = _batch_argv(tiny_gguf, src, tmp_path / "out.jsonl", "--gpus-per-rank", "2")
    done = run_mpi(mpiexec, 2, argv, env={"CUDA_VISIBLE_DEVICES": "0,1,2"})
    assert done.returncode == 2
    errors = [x for x in done.stderr.splitlines() if x.startswith("llcuda: error:")]
    assert len(errors) == 1 and "need 4 GPUs on this node but it has 3" in errors[0], done.stderr


@pytest.mark.timeout(60)
def test_an_unusable_output_stops_every_rank(
    mpiexec: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    src = write_prompts(tmp_path / "in.jsonl", 2)
    done = run_mpi(mpiexec, 2, _batch_argv(tiny_gguf, src, tmp_path))  # a directory
    assert done.returncode == 2
    errors = [x for x in done.stderr.splitlines() if x.startswith("llcuda: error:")]
    assert len(errors) == 1 and "is not a regular file" in errors[0], done.stderr


@pytest.mark.timeout(60)
def test_a_rank_failing_mid_run_ends_the_job_instead_of_hanging(
    mpiexec: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    src = write_prompts(tmp_path / "in.jsonl", 12)
    out = tmp_path / "out.jsonl"
    script = tmp_path / "faulty.py"
    script.write_text(
        "import sys\n"
        "from llcuda_tui.core.mpi import batch\n"
        "from llcuda_tui.cli import main\n"
        "original = batch._Runner.submit\n"
        "def submit(self, index, item_id, request):\n"
        "    if self.rank == 1 and index >= 2:\n"
        "        raise RuntimeError('injected fault')\n"
        "    original(self, index, item_id, request)\n"
        "batch._Runner.submit = submit\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    # rank 0 only schedules, so rank 1 surely gets the items that fail
    argv = [str(script), *_batch_argv(tiny_gguf, src, out, "--no-root-engine")[2:]]
    done = run_mpi(mpiexec, 2, argv)
    assert done.returncode != 0
    assert "RuntimeError: injected fault" in done.stderr
    ids = [r["id"] for r in read_results(out)] if out.exists() else []
    assert ids == [f"q{i}" for i in range(len(ids))]  # whatever was written is in order


@pytest.mark.timeout(60)
def test_forgetting_mpi_under_mpiexec_is_refused(
    mpiexec: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    src = write_prompts(tmp_path / "in.jsonl", 2)
    argv = [a for a in _batch_argv(tiny_gguf, src, tmp_path / "out.jsonl") if a != "--mpi"]
    done = run_mpi(mpiexec, 2, argv)
    assert done.returncode == 2
    assert "without --mpi: every rank would run the whole batch" in done.stderr
    assert not (tmp_path / "out.jsonl").exists()
