"""Our worker (`llcuda serve`) against llama.cpp's `llama-server`, same model, one run.

Usage (on the GPU machine, after
`bash .device/build.sh && source /root/env.sh && bash .device/models.sh 8b`):
    python bench/worker_vs_llama_server.py /root/models/8b-q4km.gguf [--tokens 256]
        [--streams 8] [-r 3] [--ctx 4096] [--json OUT.json] [--worker-arg=--backend-sampling=off]

One after the other, each alone on the GPU, every generation greedy (temperature 0, top-k 1,
the cheapest greedy llama-server has), ignore-eos, N tokens from the same short prompt:
  1. in-process: Engine.generate; decode t/s from its run record
  2. our worker, `python -m llcuda_tui serve --parallel S` in a subprocess, read over loopback
     with our RemoteEngine:
       a. one stream: decode t/s as the tokens arrived at the client, and tokens / wall time
       b. S concurrent streams: aggregate = all tokens / wall time (first request sent to last
          token received)
  3. `llama-server -np S -fa on -ngl 99` with the same client, requests and measures
and prints the issue's ratios:
  worker 1 stream decode / in-process decode                  (target >= 0.95)
  worker S streams aggregate / worker 1 stream (tokens/wall)  (target >= 4)
  worker S streams aggregate / llama-server S streams         (target >= 1.0)
`--no-llama-server` skips step 3 (for a smoke test on a CPU machine with a tiny model).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest, SamplingParams
from llcuda_tui.core.worker.client import RemoteEngine

GREEDY = SamplingParams(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0)
PROMPT = "Once upon a time there was a"


def request(n: int) -> GenerationRequest:
    return GenerationRequest(prompt=PROMPT, max_tokens=n, sampling=GREEDY, ignore_eos=True)


def in_process(model: str, args: argparse.Namespace) -> dict[str, float]:
    cfg = EngineConfig(
        Path(model), n_gpu_layers=args.ngl, n_ctx=args.ctx, n_batch=2048, flash_attn=args.fa
    )
    with Engine.load(cfg) as eng:
        eng.generate(request(32))
        tps = [eng.generate(request(args.tokens))[1].decode_tokens_per_s for _ in range(args.reps)]
        return {
            "decode_tps": statistics.mean(tps),
            "decode_tps_sd": _sd(tps),
            "backend_sampling": float(eng.info.backend_sampling),
        }


def one_stream(remote: RemoteEngine, n: int) -> dict[str, float]:
    t0 = time.perf_counter()
    _, rec = remote.generate(request(n))
    wall = time.perf_counter() - t0
    assert rec.generated_tokens == n, rec
    return {
        "decode_tps": rec.decode_tokens_per_s,
        "tokens_per_wall_s": n / wall,
        "ttft_ms": rec.ttft_s * 1000,
    }


def many_streams(remote: RemoteEngine, n: int, streams: int) -> dict[str, float]:
    records: list[object] = [None] * streams
    errors: list[BaseException] = []
    go = threading.Barrier(streams + 1)

    def run(i: int) -> None:
        try:
            go.wait()
            records[i] = remote.generate(request(n))[1]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    tokens = sum(r.generated_tokens for r in records)  # type: ignore[attr-defined]
    assert tokens == n * streams, tokens
    per_stream = [r.decode_tokens_per_s for r in records]  # type: ignore[attr-defined]
    return {
        "aggregate_tps": tokens / wall,
        "per_stream_decode_tps": statistics.mean(per_stream),
        "max_ttft_ms": max(r.ttft_s for r in records) * 1000,
    }  # type: ignore[attr-defined]


def measure(url: str, args: argparse.Namespace) -> dict[str, float]:
    """One stream (r times) then S streams (r rounds) against the server at ``url``."""
    with RemoteEngine.connect(url, wait_loaded_s=300, read_timeout_s=60) as remote:
        remote.generate(request(32))
        many_streams(remote, 32, args.streams)  # warm-up: graphs for every batch size
        ones = [one_stream(remote, args.tokens) for _ in range(args.reps)]
        manys = [many_streams(remote, args.tokens, args.streams) for _ in range(args.reps)]
    out = {f"one_{k}": statistics.mean(o[k] for o in ones) for k in ones[0]}
    out["one_decode_tps_sd"] = _sd([o["decode_tps"] for o in ones])
    out.update({f"many_{k}": statistics.mean(m[k] for m in manys) for k in manys[0]})
    out["many_aggregate_tps_sd"] = _sd([m["aggregate_tps"] for m in manys])
    return out


class Proc:
    """A server subprocess whose output goes to a log file; killed on exit."""

    def __init__(
        self, cmd: list[str], log: Path, env: dict[str, str] | None = None, pipe: bool = False
    ) -> None:
        self.log = log
        self.fh = open(log, "w")  # noqa: SIM115 - closed in stop()
        out = subprocess.PIPE if pipe else self.fh  # an unread pipe would block a chatty server
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=self.fh, text=True, env=env)

    def wait_line(self, marker: str, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if select.select([self.proc.stdout], [], [], 0.5)[0]:
                line = self.proc.stdout.readline()
                self.fh.write(line)
                if marker in line:
                    return line
        self.stop()
        sys.exit(f"{self.proc.args[0]} did not start; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.fh.close()


def our_worker(model: str, args: argparse.Namespace, home: Path) -> dict[str, float]:
    cmd = [
        sys.executable,
        "-m",
        "llcuda_tui",
        "serve",
        "-m",
        model,
        "--port",
        "0",
        "--parallel",
        str(args.streams),
        "--ctx",
        str(args.ctx),
        "--ngl",
        str(args.ngl),
        "--fa",
        args.fa,
        "--batch",
        "2048",
        *args.worker_arg,
    ]
    env = {**os.environ, "LLCUDA_HOME": str(home)}
    proc = Proc(cmd, home / "worker.log", env, pipe=True)
    try:
        url = proc.wait_line(" ready on ", 600).split(" ready on ")[1].split()[0]
        return measure(url, args)
    finally:
        proc.stop()


def llama_server(model: str, args: argparse.Namespace, home: Path) -> dict[str, float]:
    exe = args.llama_server or shutil.which("llama-server")
    if exe is None:
        sys.exit("llama-server not on PATH (source /root/env.sh on the GPU machine)")
    port = _free_port()
    cmd = [
        exe,
        "-m",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-np",
        str(args.streams),
        "-c",
        str(args.ctx * args.streams),
        "-ngl",
        "99" if args.ngl < 0 else str(args.ngl),
        "-fa",
        args.fa if args.fa != "auto" else "on",
        "-b",
        "2048",
        "-ub",
        "512",
    ]
    proc = Proc(cmd, home / "llama-server.log")
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc)
        return measure(url, args)
    finally:
        proc.stop()


def _wait_healthy(url: str, proc: Proc, timeout_s: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.stop()
    sys.exit(f"llama-server did not become healthy; see {proc.log}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("-r", "--reps", type=int, default=3)
    ap.add_argument("--ctx", type=int, default=4096, help="context per sequence")
    ap.add_argument("--ngl", type=int, default=-1)
    ap.add_argument("--fa", default="on", choices=["auto", "on", "off"])
    ap.add_argument("--llama-server", help="path to llama-server (default: on PATH)")
    ap.add_argument("--no-llama-server", action="store_true", help="skip llama-server")
    ap.add_argument("--worker-arg", action="append", default=[], help="extra `llcuda serve` arg")
    ap.add_argument("--json", help="write all numbers here")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="llcuda-bench-"))
    n, s = args.tokens, args.streams
    results: dict[str, object] = {"model": Path(args.model).name, "tokens": n, "streams": s}
    inproc = in_process(args.model, args)
    results["in_process"] = inproc
    print(
        f"in-process: decode {inproc['decode_tps']:.1f} ± {inproc['decode_tps_sd']:.1f} t/s "
        f"(backend sampling {bool(inproc['backend_sampling'])})",
        flush=True,
    )
    ours = our_worker(args.model, args, home)
    results["worker"] = ours
    _print("worker", ours, s)
    ratios = {
        "worker_1_over_in_process": ours["one_decode_tps"] / inproc["decode_tps"],
        f"worker_{s}_over_worker_1": ours["many_aggregate_tps"] / ours["one_tokens_per_wall_s"],
    }
    if not args.no_llama_server:
        ref = llama_server(args.model, args, home)
        results["llama_server"] = ref
        _print("llama-server", ref, s)
        ratios[f"worker_{s}_over_llama_server_{s}"] = (
            ours["many_aggregate_tps"] / ref["many_aggregate_tps"]
        )
        ratios[f"llama_server_{s}_over_1"] = (
            ref["many_aggregate_tps"] / ref["one_tokens_per_wall_s"]
        )
    results["ratios"] = ratios
    targets = {
        "worker_1_over_in_process": 0.95,
        f"worker_{s}_over_worker_1": 4.0,
        f"worker_{s}_over_llama_server_{s}": 1.0,
    }
    for key, value in ratios.items():
        target = targets.get(key)
        verdict = "" if target is None else (" ok" if value >= target else f" BELOW {target}")
        print(f"  {key}: {value:.3f}x{verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"logs: {home}")


def _print(name: str, r: dict[str, float], streams: int) -> None:
    print(
        f"{name}: 1 stream decode {r['one_decode_tps']:.1f} ± {r['one_decode_tps_sd']:.1f} t/s "
        f"({r['one_tokens_per_wall_s']:.1f} tokens/wall s, TTFT {r['one_ttft_ms']:.0f} ms); "
        f"{streams} streams aggregate {r['many_aggregate_tps']:.1f} ± "
        f"{r['many_aggregate_tps_sd']:.1f} t/s (per stream {r['many_per_stream_decode_tps']:.1f}, "
        f"max TTFT {r['many_max_ttft_ms']:.0f} ms)",
        flush=True,
    )


if __name__ == "__main__":
    main()
