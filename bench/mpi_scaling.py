"""Aggregate decode throughput of an MPI pool for 1, 2, 4 ranks on the same workload, in one run.

For each rank count N (one GPU per rank) and each mode:

* ``batch``: ``mpiexec -n N llcuda batch --mpi`` over the same prompts file; throughput is the
  run's generated tokens / its wall time (first item handed out to last line written; model
  loading excluded), from ``--summary``.
* ``serve``: ``mpiexec -n N llcuda serve --mpi``, then the same prompts sent over HTTP with
  ``N * --parallel`` requests in flight (every slot of every rank busy); throughput is the
  completion tokens / the wall time of the timed requests (after an untimed warm-up round).

Every request generates exactly ``--max-tokens`` tokens (``ignore_eos``), greedy. Speed-up is
against 1 rank of the same mode. On the GPU machine::

    .venv/bin/python bench/mpi_scaling.py --model /root/models/8b-q4km.gguf --ranks 1,2,4

``mpiexec`` comes from PATH (else the venv's, from the Open MPI wheel). ``--smoke`` runs a
seconds-long version on the CPU with a tiny generated model (CI, a laptop).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llcuda_tui.core.mpi.launch import find_mpiexec, mpiexec_command, mpiexec_env  # noqa: E402

PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a transformer language model generates text, step by step.",
    "List the planets of the solar system and one fact about each.",
    "Describe the water cycle to a ten-year-old.",
    "What are the trade-offs between SQL and NoSQL databases?",
    "Summarise the plot of a detective novel you invent.",
    "Give a recipe for bread and explain why each step matters.",
    "Compare the GPU and CPU for matrix multiplication.",
]


@dataclass
class Result:
    mode: str
    ranks: int
    requests: int
    generated_tokens: int
    wall_s: float
    tokens_per_s: float
    speedup: float = 0.0


def write_prompts(path: Path, n: int, max_tokens: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            line = {"id": i, "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens}
            fh.write(json.dumps(line) + "\n")


def engine_args(args: argparse.Namespace, n: int) -> list[str]:
    out = ["-m", str(args.model), "--parallel", str(args.parallel), "--ctx", str(args.ctx)]
    if args.ngl is not None:
        out += ["--ngl", str(args.ngl)]
    # the machine's cores shared by the ranks (more threads than cores only contend)
    threads = args.threads or max(1, min(8, (os.cpu_count() or 1) // n))
    return [*out, "--threads", str(threads)]


def mpi(args: argparse.Namespace, n: int, argv: list[str]) -> list[str]:
    exe = Path(args.mpiexec) if args.mpiexec else find_mpiexec()
    if exe is None:
        raise SystemExit("mpi_scaling: no mpiexec (install the 'mpi' extra or put one on PATH)")
    extra = args.mpi_args.split() if args.mpi_args else []
    return mpiexec_command(n, [*extra, sys.executable, "-m", "llcuda_tui", *argv], exe)


# --- batch ---------------------------------------------------------------------------------


def run_batch(args: argparse.Namespace, n: int, prompts: Path, work: Path) -> Result:
    out, summary = work / f"batch-{n}.jsonl", work / f"batch-{n}.summary.json"
    out.unlink(missing_ok=True)
    argv = ["batch", "--mpi", *engine_args(args, n), "-i", str(prompts), "-o", str(out),
            "--summary", str(summary), "--temp", "0", "--ignore-eos", "-q",
            "--no-fsync"]  # fmt: skip
    proc = subprocess.run(
        mpi(args, n, argv), cwd=REPO, env=mpiexec_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=args.timeout,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"mpi_scaling: batch with {n} rank(s) failed:\n{proc.stderr[-3000:]}")
    s = json.loads(summary.read_text())
    return Result("batch", n, s["written"], s["generated_tokens"], s["wall_s"],
                  s["generated_tokens_per_s"])  # fmt: skip


# --- serve ---------------------------------------------------------------------------------


class Pool:
    def __init__(self, args: argparse.Namespace, n: int) -> None:
        argv = ["serve", "--mpi", "--port", "0", *engine_args(args, n)]
        self.proc = subprocess.Popen(
            mpi(args, n, argv), cwd=REPO, env=mpiexec_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        self.url = self._wait_ready(args.timeout)

    def _wait_ready(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if select.select([self.proc.stdout], [], [], 0.2)[0]:
                line = self.proc.stdout.readline()
                if " ready on " in line:
                    return line.split(" ready on ")[1].split()[0]
        self.stop()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        raise SystemExit(f"mpi_scaling: the pool did not start:\n{err[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def _complete(client: Any, url: str, prompt: str, max_tokens: int) -> int:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    reply = client.post(f"{url}/v1/completions", json=body)
    reply.raise_for_status()
    return int(reply.json()["usage"]["completion_tokens"])


def _fire(url: str, prompts: list[str], max_tokens: int, in_flight: int) -> tuple[int, float]:
    import httpx

    with (
        httpx.Client(timeout=600) as client,
        concurrent.futures.ThreadPoolExecutor(in_flight) as ex,
    ):
        t0 = time.perf_counter()
        tokens = sum(ex.map(lambda p: _complete(client, url, p, max_tokens), prompts))
        return tokens, time.perf_counter() - t0


def run_serve(args: argparse.Namespace, n: int) -> Result:
    pool = Pool(args, n)
    try:
        in_flight = n * args.parallel
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
        _fire(pool.url, prompts[:in_flight], 8, in_flight)  # warm-up: every slot once
        tokens, wall = _fire(pool.url, prompts, args.max_tokens, in_flight)
    finally:
        pool.stop()
    return Result("serve", n, len(prompts), tokens, wall, tokens / wall if wall > 0 else 0.0)


# --- main ----------------------------------------------------------------------------------


def tiny_model(work: Path) -> Path:
    from tests.gguf_factory import write_tiny_llama

    return write_tiny_llama(work / "tiny-llama.gguf")


def table(results: list[Result]) -> str:
    rows = ["| mode | ranks | requests | generated tokens | wall s | tokens/s | speed-up |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        rows.append(f"| {r.mode} | {r.ranks} | {r.requests} | {r.generated_tokens} | "
                    f"{r.wall_s:.2f} | {r.tokens_per_s:.1f} | {r.speedup:.2f}x |")  # fmt: skip
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="/root/models/8b-q4km.gguf")
    p.add_argument("--ranks", default="1,2,4", help="rank counts to measure (1,2,4)")
    p.add_argument("--modes", default="batch,serve", help="batch, serve or both")
    p.add_argument("--prompts", type=int, default=128, help="requests per run (128)")
    p.add_argument("--max-tokens", type=int, default=256, help="tokens per request (256)")
    p.add_argument("--parallel", type=int, default=8, help="slots per rank (8)")
    p.add_argument("--ctx", type=int, default=1024, help="context per sequence (1024)")
    p.add_argument("--ngl", type=int, help="GPU layers (default: all)")
    p.add_argument("--threads", type=int, help="CPU threads per rank (default: cores / ranks)")
    p.add_argument("--mpiexec", help="mpiexec to use (default: PATH, then the venv's)")
    p.add_argument(
        "--mpi-args",
        default="--bind-to none",
        help="extra mpiexec arguments ('--bind-to none': a rank's threads are not pinned to one "
        "core; '' for none)",
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--json", help="write the results here too")
    p.add_argument("--smoke", action="store_true", help="tiny CPU model, few short requests")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="llcuda-mpi-scaling-"))
    if args.smoke:
        args.model, args.prompts, args.max_tokens, args.parallel = tiny_model(work), 16, 16, 2
        args.ctx, args.threads = 256, 1
    ranks = [int(x) for x in args.ranks.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    prompts = work / "prompts.jsonl"
    write_prompts(prompts, args.prompts, args.max_tokens)
    results: list[Result] = []
    for mode in modes:
        base = None
        for n in ranks:
            r = run_batch(args, n, prompts, work) if mode == "batch" else run_serve(args, n)
            base = base or r.tokens_per_s
            r.speedup = r.tokens_per_s / base if base else 0.0
            results.append(r)
            print(f"{mode} {n} rank(s): {r.tokens_per_s:.1f} tokens/s ({r.speedup:.2f}x)",
                  file=sys.stderr, flush=True)  # fmt: skip
    print(table(results))
    if args.json:
        meta = {"model": str(args.model), "prompts": args.prompts, "max_tokens": args.max_tokens,
                "parallel": args.parallel, "ctx": args.ctx}  # fmt: skip
        Path(args.json).write_text(
            json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
