"""Soak test of the worker: many mixed requests, some cancelled; no errors, no memory growth.

Starts `python -m llcuda_tui serve -m MODEL --parallel N` on a free 127.0.0.1 port (or uses the
worker at --url; give --pid to have its memory read), waits for /health, sends --warmup
requests, reads the worker's resident memory (RSS, psutil, children included), then sends
--requests requests from --clients threads and reads the RSS every --sample-s seconds.

The mix (seeded, so two runs send the same requests): chat or completions; streamed or whole;
short, medium or long prompts; max_tokens in [--min-tokens, --max-tokens]. A share of the
streams (--cancel) is abandoned after 1-3 token events (the connection is closed, which cancels
the sequence on the worker), and a share of the requests (--bad) is deliberately invalid and
must get a 400 JSON error. An error is anything else: a refused or failed valid request, a
stream that ended without its last event and [DONE], a bad request that was not a 400, a
connection error. At the end the worker must be idle (no active sequence, no KV cell in use)
and, when we started it, stop with exit 0 on SIGTERM and without a traceback.

Prints a JSON summary (and writes it to --json) and exits 1 when there were errors or the RSS
grew by --max-growth-pct (5) or more from after the warm-up to the end.

    .venv/bin/python bench/soak.py                      # smollm2-135m on the CPU, 1000 requests
    .venv/bin/python bench/soak.py -m MODEL --parallel 8 --worker-arg=--ngl=-1 --json soak.json
    .venv/bin/python bench/soak.py --url http://127.0.0.1:8090 --pid 1234 --api-key KEY
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic, perf_counter, sleep
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
TEXT = (
    "the quick brown fox jumps over a lazy dog while river stones hum quietly under autumn "
    "leaves and distant bells count hours for sleepy towns beside the sea"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", default="smollm2-135m-instruct", help="path or name")
    p.add_argument("--url", help="use this running worker instead of starting one")
    p.add_argument("--pid", type=int, help="with --url: the worker's process id (for its RSS)")
    p.add_argument("--api-key", help="the worker's API key (with --url)")
    p.add_argument("--parallel", type=int, default=4, help="worker slots (default 4)")
    p.add_argument("--ctx", type=int, default=1024, help="context per sequence (1024)")
    p.add_argument("--threads", type=int, default=0, help="worker CPU threads (0 = default)")
    p.add_argument("--worker-arg", action="append", default=[], help="extra `serve` argument")
    p.add_argument("--requests", type=int, default=1000, help="measured requests (1000)")
    p.add_argument("--warmup", type=int, default=50, help="requests before the baseline (50)")
    p.add_argument("--clients", type=int, default=6, help="concurrent client threads (6)")
    p.add_argument("--min-tokens", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--prompt-words", type=int, default=200, help="longest prompt, words (200)")
    p.add_argument("--cancel", type=float, default=0.1, help="share of streams abandoned (0.1)")
    p.add_argument("--bad", type=float, default=0.02, help="share of invalid requests (0.02)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sample-s", type=float, default=1.0, help="RSS sampling interval (1 s)")
    p.add_argument("--max-growth-pct", type=float, default=5.0)
    p.add_argument("--timeout-s", type=float, default=120.0, help="per request (120 s)")
    p.add_argument("--json", help="also write the summary here")
    return p.parse_args(argv)


# --- the requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    chat: bool
    stream: bool
    body: dict[str, Any]
    cancel_after: int = 0
    """Abandon the stream after this many token events (0 = read it to the end)."""
    expect_status: int = 200


def make_jobs(n: int, rng: random.Random, args: argparse.Namespace) -> list[Job]:
    jobs, words = [], TEXT.split()
    for _ in range(n):
        chat = rng.random() < 0.5
        stream = rng.random() < 0.6
        long = args.prompt_words
        size = rng.choices((min(6, long), max(1, long // 5), long), weights=(5, 3, 2))[0]
        text = " ".join(rng.choice(words) for _ in range(rng.randint(max(1, size // 2), size)))
        body: dict[str, Any] = {
            "model": "soak",
            "max_tokens": rng.randint(args.min_tokens, args.max_tokens),
            "temperature": rng.choice((0.0, 0.7, 1.0)),
            "seed": rng.randint(0, 2**31),
        }
        if chat:
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = text
        if rng.random() < args.bad:
            body["max_tokens"] = 10**9  # more than any worker allows: a 400
            jobs.append(Job(chat, stream, body, expect_status=400))
            continue
        cancel_after = 0
        if stream and rng.random() < args.cancel:
            cancel_after = rng.randint(1, 3)
            body["max_tokens"] = max(body["max_tokens"], 32)
            body["ignore_eos"] = True  # still running when we leave
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        jobs.append(Job(chat, stream, body, cancel_after))
    return jobs


@dataclass
class Tally:
    ok: int = 0
    cancelled: int = 0
    rejected: int = 0
    """Invalid requests answered with the expected 400."""
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    tokens: int = 0
    messages: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, message: str) -> None:
        with self.lock:
            self.errors += 1
            if len(self.messages) < 20:
                self.messages.append(message)


def run_job(http: httpx.Client, job: Job, tally: Tally) -> None:
    path = "/v1/chat/completions" if job.chat else "/v1/completions"
    t0 = perf_counter()
    try:
        if job.stream and job.expect_status == 200:
            outcome = _streamed(http, path, job)
        else:
            outcome = _whole(http, path, job)
    except httpx.HTTPError as exc:
        tally.error(f"{path}: {type(exc).__name__}: {exc}")
        return
    kind, detail = outcome
    with tally.lock:
        if kind == "ok":
            tally.ok += 1
            tally.tokens += detail
            tally.latencies_s.append(perf_counter() - t0)
        elif kind == "cancelled":
            tally.cancelled += 1
        elif kind == "rejected":
            tally.rejected += 1
    if kind == "error":
        tally.error(f"{path}: {detail}")


def _whole(http: httpx.Client, path: str, job: Job) -> tuple[str, Any]:
    resp = http.post(path, json=job.body)
    if resp.status_code != job.expect_status:
        return (
            "error",
            f"status {resp.status_code} (expected {job.expect_status}): {resp.text[:200]}",
        )
    body = resp.json()
    if job.expect_status != 200:
        return ("rejected", 0) if "error" in body else ("error", f"no error body: {body}")
    used = body.get("usage", {}).get("completion_tokens")
    if (
        not body.get("choices")
        or not isinstance(used, int)
        or not 0 < used <= job.body["max_tokens"]
    ):
        return "error", f"malformed reply: {str(body)[:200]}"
    return "ok", used


def _streamed(http: httpx.Client, path: str, job: Job) -> tuple[str, Any]:
    events = 0
    finished = done = False
    usage = None
    with http.stream("POST", path, json=job.body) as resp:
        if resp.status_code != 200:
            resp.read()
            return "error", f"status {resp.status_code}: {resp.text[:200]}"
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                return "error", f"error event: {event['error']}"
            choices = event.get("choices") or []
            if event.get("usage"):
                usage = event["usage"]
            if choices and choices[0].get("finish_reason"):
                finished = True
            elif choices:
                events += 1
                if job.cancel_after and events >= job.cancel_after + (1 if job.chat else 0):
                    return "cancelled", 0  # leaving the block closes the connection
    if not (done and finished and usage):
        return "error", f"stream ended early (done={done}, finished={finished}, usage={usage})"
    return "ok", usage["completion_tokens"]


def run_all(
    url: str, headers: dict[str, str], jobs: list[Job], clients: int, timeout_s: float
) -> Tally:
    tally = Tally()
    queue = list(reversed(jobs))
    qlock = threading.Lock()

    def client() -> None:
        timeout = httpx.Timeout(timeout_s, connect=10.0)
        with httpx.Client(base_url=url, headers=headers, timeout=timeout) as http:
            while True:
                with qlock:
                    if not queue:
                        return
                    job = queue.pop()
                run_job(http, job, tally)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally


# --- the worker and its memory ---------------------------------------------------------------


class Worker:
    """``python -m llcuda_tui serve`` in a subprocess, its log in a temporary file."""

    def __init__(self, args: argparse.Namespace) -> None:
        cmd = [sys.executable, "-m", "llcuda_tui", "serve", "-m", args.model, "--port", "0"]
        cmd += ["--parallel", str(args.parallel), "--ctx", str(args.ctx)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        cmd += args.worker_arg
        self.cmd = cmd
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (read in stop())
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        self.pid = self.proc.pid
        self.url = self._wait_ready(300.0)

    def _wait_ready(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        deadline = monotonic() + timeout_s
        while monotonic() < deadline and self.proc.poll() is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            line = self.proc.stdout.readline() if ready else ""
            if " ready on " in line:
                return line.split(" ready on ")[1].split()[0]
        self.proc.kill()
        self.proc.wait()
        raise SystemExit(f"the worker did not start: {self.stderr()[-2000:]}")

    def stop(self) -> tuple[int, str]:
        """SIGTERM; (exit code, its stderr)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        log = self.stderr()
        self.log.close()
        return rc, log

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()


def rss_bytes(pid: int) -> int:
    import psutil

    proc = psutil.Process(pid)
    return proc.memory_info().rss + sum(
        c.memory_info().rss for c in proc.children(recursive=True) if c.is_running()
    )


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        t0 = monotonic()
        while not self._halt.is_set():
            self.samples.append((monotonic() - t0, rss_bytes(self.pid)))
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def settle(http: httpx.Client, timeout_s: float = 10.0) -> dict[str, Any]:
    """The worker's stats once no sequence runs (cancelled ones settle within a step)."""
    deadline = monotonic() + timeout_s
    while True:
        resp = http.get("/llcuda/v1/info")
        if resp.status_code != 200:
            return {"error": f"/llcuda/v1/info answered {resp.status_code}"}
        stats = resp.json().get("stats") or {}
        if (stats.get("active"), stats.get("queued"), stats.get("kv_cells_used")) == (0, 0, 0):
            return stats
        if monotonic() > deadline:
            return stats
        sleep(0.05)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    warm_jobs = make_jobs(args.warmup, rng, args)
    jobs = make_jobs(args.requests, rng, args)
    worker = None if args.url else Worker(args)
    url = args.url or worker.url  # type: ignore[union-attr]
    pid = worker.pid if worker is not None else args.pid
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    summary: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "worker": " ".join(worker.cmd[1:]) if worker is not None else url,
    }
    problems: list[str] = []
    try:
        warm = run_all(url, headers, warm_jobs, args.clients, args.timeout_s)
        with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
            settle(http)
            base = rss_bytes(pid) if pid else None
            sampler = RssSampler(pid, args.sample_s) if pid else None
            if sampler is not None:
                sampler.start()
            t0 = perf_counter()
            tally = run_all(url, headers, jobs, args.clients, args.timeout_s)
            duration = perf_counter() - t0
            stats = settle(http)
            if sampler is not None:
                sampler.stop()
            end = rss_bytes(pid) if pid else None
            health = http.get("/health").status_code
        if (stats.get("active"), stats.get("kv_cells_used")) != (0, 0):
            problems.append(f"the worker is not idle at the end: {stats}")
        if health != 200:
            problems.append(f"/health is {health} at the end")
        if warm.errors:
            problems.append(f"{warm.errors} errors in the warm-up: {warm.messages[:3]}")
    finally:
        if worker is not None:
            rc, log = worker.stop()
            if rc != 0 or "Traceback" in log:
                problems.append(f"the worker exited {rc}: {log[-2000:]}")
    growth = None if not (base and end) else (end - base) / base * 100
    peak = max((s for _, s in sampler.samples), default=None) if sampler is not None else None
    lat = tally.latencies_s
    summary.update(
        {
            "requests": args.requests,
            "warmup": args.warmup,
            "clients": args.clients,
            "parallel": args.parallel if worker is not None else None,
            "ok": tally.ok,
            "cancelled": tally.cancelled,
            "rejected_as_expected": tally.rejected,
            "errors": tally.errors,
            "error_messages": tally.messages,
            "problems": problems,
            "generated_tokens": tally.tokens,
            "rss_after_warmup_mb": _mb(base),
            "rss_end_mb": _mb(end),
            "rss_peak_mb": _mb(peak),
            "growth_pct": None if growth is None else round(growth, 2),
            "rss_samples": len(sampler.samples) if sampler is not None else 0,
            "latency_p50_s": _round(_pct(lat, 50)),
            "latency_p95_s": _round(_pct(lat, 95)),
            "duration_s": round(duration, 1),
            "requests_per_s": round(args.requests / duration, 2),
            "final_stats": stats,
        }
    )
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    failed = tally.errors or problems or (growth is not None and growth >= args.max_growth_pct)
    return 1 if failed else 0


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


if __name__ == "__main__":
    sys.exit(main())
