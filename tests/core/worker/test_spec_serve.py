"""`llcuda serve --spec` on the starter model (CPU), workers started as a user starts them:
greedy replies of concurrent requests are the replies without speculation (n-gram drafts and a
draft model), drafts get accepted and /metrics counts them, a request can opt out, a stop
string and a client that leaves still end a speculating request, and bad flags or a draft of
another vocabulary are refused in one line."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llcuda_tui.cli import main
from llcuda_tui.core.worker import WorkerServer
from tests.workerproc import REPO, WorkerProcess

pytestmark = pytest.mark.timeout(300)  # workers of a real model on a loaded 2-core machine

# The edit workload: the reply repeats a text of the prompt, so prompt lookup finds drafts.
# Chat-shaped, because the instruct model then copies with wide margins between its top two
# logits: on a CPU a batch of another shape (other slots, a verify batch) can round a near-tie
# differently, with or without speculation (see docs/worker.md). These texts copy the same
# alone and together; one about the store ("A pull hashes while it streams ...") did not, in
# about a third of concurrent rounds, on a worker without speculation too.
TEXTS = [
    "A worker serves one model to many clients. Each request takes a free slot, decodes its "
    "prompt in chunks, and then shares every step with the other slots until it ends.",
    "Tests start a real worker on the loopback address and talk to it over HTTP. They wait on "
    "conditions, never on sleeps, so a busy machine only makes them slower.",
    "The kettle boiled at seven. Anna poured the water over the leaves, waited three minutes, "
    "and carried the pot to the table by the window.",
]


def _body(text: str, **more: Any) -> dict[str, Any]:
    prompt = f"Repeat this text exactly, word for word:\n\n{text}\n\nRepeated:\n\n"
    return {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 80,
        "temperature": 0,
        **more,
    }


def _chat(url: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    resp = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=240)
    assert resp.status_code == 200, resp.text
    reply = resp.json()
    return reply["choices"][0]["message"]["content"], reply["llcuda"]["record"]


def _together(url: str, bodies: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The replies of requests sent at the same moment (they share the worker's slots)."""
    out: list[Any] = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def one(i: int) -> None:
        start.wait()
        out[i] = _chat(url, bodies[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(o is not None for o in out)
    return out


def _metrics(url: str) -> dict[str, float]:
    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def _loaded(worker: WorkerProcess) -> WorkerProcess:
    deadline = time.monotonic() + 240
    while httpx.get(f"{worker.url}/health", timeout=10).status_code != 200:
        assert worker.proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    return worker


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spec-home")


@contextlib.contextmanager
def _serve(home: Path, smollm_path: Path, threads: int, *spec: str) -> Iterator[WorkerProcess]:
    args = ["-m", str(smollm_path), "--parallel", "3", "--ctx", "1024", "--threads", str(threads)]
    worker = WorkerProcess([*args, *spec], home, timeout_s=240)
    try:
        yield _loaded(worker)
    finally:
        worker.kill()
        for stream in (worker.proc.stdout, worker.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def ngram_worker(home: Path, smollm_path: Path, cpu_threads: int) -> Iterator[WorkerProcess]:
    with _serve(home, smollm_path, cpu_threads, "--spec", "ngram", "--draft-max", "8") as worker:
        yield worker


@pytest.fixture(scope="module")
def plain(smollm_worker: WorkerServer) -> list[str]:
    """Each text's greedy reply from a worker without speculation, one request at a time."""
    return [_chat(smollm_worker.url, _body(t))[0] for t in TEXTS]


def test_ngram_replies_of_concurrent_requests_are_the_plain_ones(
    ngram_worker: WorkerProcess, plain: list[str]
) -> None:
    before = _metrics(ngram_worker.url)
    replies = _together(ngram_worker.url, [_body(t) for t in TEXTS])
    assert [text for text, _ in replies] == plain
    records = [record for _, record in replies]
    assert all(r["spec_mode"] == "ngram" for r in records)
    assert all(0 <= r["accepted_tokens"] <= r["drafted_tokens"] for r in records)
    drafted = sum(r["drafted_tokens"] for r in records)
    accepted = sum(r["accepted_tokens"] for r in records)
    assert accepted > 0  # the reply repeats the prompt's text: prompt lookup finds it
    after = _metrics(ngram_worker.url)
    d = "llcuda_spec_drafted_tokens_total"
    a = "llcuda_spec_accepted_tokens_total"
    assert after[d] - before.get(d, 0.0) == drafted
    assert after[a] - before.get(a, 0.0) == accepted > 0


@pytest.mark.parametrize("opt_out", [{"speculative": False}, {"speculative.n_max": 0}])
def test_a_request_can_opt_out(
    ngram_worker: WorkerProcess, plain: list[str], opt_out: dict[str, Any]
) -> None:
    text, record = _chat(ngram_worker.url, _body(TEXTS[0], **opt_out))
    assert text == plain[0]
    assert record["drafted_tokens"] == 0 and record["spec_mode"] == ""
    # a positive n_max leaves it on (the worker's --draft-max applies)
    _, record = _chat(ngram_worker.url, _body(TEXTS[0], **{"speculative.n_max": 4}))
    assert record["drafted_tokens"] > 0


@pytest.mark.parametrize(
    "bad", [{"speculative": "no"}, {"speculative.n_max": -1}, {"speculative.n_max": 1.5}]
)
def test_a_bad_opt_out_is_a_400(ngram_worker: WorkerProcess, bad: dict[str, Any]) -> None:
    resp = httpx.post(f"{ngram_worker.url}/v1/chat/completions", json=_body(TEXTS[0], **bad))
    assert resp.status_code == 400
    assert "speculative" in resp.json()["error"]["message"]


def test_a_stop_string_ends_a_speculating_request(
    ngram_worker: WorkerProcess, plain: list[str]
) -> None:
    stop = "shares"
    assert stop in plain[0]
    text, record = _chat(ngram_worker.url, _body(TEXTS[0], stop=[stop]))
    assert text == plain[0][: plain[0].index(stop)]
    assert record["stop_reason"] == "stop" and record["drafted_tokens"] > 0


def test_a_client_that_leaves_frees_its_slot(ngram_worker: WorkerProcess) -> None:
    body = _body(TEXTS[1], max_tokens=600, ignore_eos=True, stream=True)
    with httpx.Client(base_url=ngram_worker.url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as resp:
            tokens = 0
            for line in resp.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get(
                    "content"
                ):
                    tokens += 1
                if tokens >= 3:
                    break
        deadline = time.monotonic() + 60
        while True:  # the worker notices the closed connection within a step or so
            stats = http.get("/llcuda/v1/info").json()["stats"]
            runs = http.get("/llcuda/v1/runs", params={"limit": 1}).json()["runs"]
            if stats["active"] == 0 and runs and runs[0]["record"]["stop_reason"] == "cancelled":
                break
            assert time.monotonic() < deadline, stats
            time.sleep(0.05)
        assert stats["kv_cells_used"] == 0
        record = runs[0]["record"]
        assert record["stop_reason"] == "cancelled" and record["generated_tokens"] < 600


def test_draft_model_replies_are_the_plain_ones(
    home: Path, smollm_path: Path, cpu_threads: int, plain: list[str]
) -> None:
    spec = ("--spec", "draft", "--draft", str(smollm_path), "--draft-max", "8")
    with _serve(home, smollm_path, cpu_threads, *spec) as worker:
        replies = _together(worker.url, [_body(t) for t in TEXTS[:2]])
        assert [text for text, _ in replies] == plain[:2]
        for _, record in replies:
            assert record["spec_mode"] == "draft"
            # the target drafting for itself: (nearly) every draft is accepted; a near-tie
            # may round differently in the two contexts' batches
            assert record["drafted_tokens"] > 0
            assert record["accepted_tokens"] >= 0.8 * record["drafted_tokens"]
        metrics = _metrics(worker.url)
        assert metrics["llcuda_spec_accepted_tokens_total"] > 0


def test_a_draft_of_another_vocabulary_is_refused_in_one_line(
    smollm_path: Path, tiny_gguf: Path
) -> None:
    cmd = [sys.executable, "-m", "llcuda_tui", "serve", "-m", str(smollm_path), "--port", "0"]
    proc = subprocess.run(
        [*cmd, "--spec", "draft", "--draft", str(tiny_gguf), "--threads", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("llcuda: error: draft model") and str(tiny_gguf) in last
    assert "vocabulary" in last


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--spec", "draft"], "--spec draft needs --draft MODEL"),
        (["--spec", "ngram", "--draft", "x.gguf"], "--spec ngram takes no --draft model"),
        (["--spec", "ngram", "--draft-min", "5", "--draft-max", "2"], "draft_min <= draft_max"),
        (["--spec", "ngram", "--draft-p-min", "1.5"], "p_min must be in [0, 1)"),
    ],
)
def test_bad_spec_flags_are_one_line_and_exit_2(
    tiny_gguf: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    assert main(["serve", "-m", str(tiny_gguf), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llcuda: error: ") and fragment in err[0], err


def test_a_draft_model_goes_with_one_model(
    tiny_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["serve", "-m", str(tiny_gguf), "-m", str(tiny_gguf), "--spec", "draft"]
    assert main([*args, "--draft", str(tiny_gguf)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--spec draft goes with one -m MODEL" in err[0], err
