"""Load on a real worker (tiny model, CPU): 200 sequential and 50 concurrent requests, mixed
streamed and whole, through our client, the official one and plain HTTP, with no errors."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest

from llcuda_tui.core.engine import GenerationRequest, SamplingParams
from llcuda_tui.core.worker import RemoteEngine, WorkerServer
from tests.core.worker.conftest import API_KEY, auth

pytestmark = pytest.mark.timeout(90)


def _count(metrics: str, name: str) -> float:
    return sum(
        float(line.rpartition(" ")[2]) for line in metrics.splitlines() if line.startswith(name)
    )


def test_200_sequential_requests(tiny_worker: WorkerServer) -> None:
    import openai

    oa = openai.OpenAI(base_url=f"{tiny_worker.url}/v1", api_key=API_KEY, max_retries=0)
    with (
        RemoteEngine.connect(tiny_worker.url, API_KEY) as remote,
        httpx.Client(base_url=tiny_worker.url, headers=auth(), timeout=10) as http,
    ):
        for i in range(200):
            kind = i % 4
            if kind == 0:
                req = GenerationRequest(prompt=f"hello w{i}", max_tokens=4, ignore_eos=True)
                assert remote.generate(req)[1].generated_tokens == 4
            elif kind == 1:
                body = {"prompt": f"the cat {i}", "max_tokens": 4, "ignore_eos": True}
                r = http.post("/v1/completions", json=body)
                assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
            elif kind == 2:
                body = {
                    "messages": [{"role": "user", "content": f"hi {i}"}],
                    "max_tokens": 4,
                    "ignore_eos": True,
                    "stream": True,
                }
                with http.stream("POST", "/v1/chat/completions", json=body) as r:
                    assert r.status_code == 200
                    lines = [line for line in r.iter_lines() if line.startswith("data: ")]
                assert lines[-1] == "data: [DONE]" and '"finish_reason":"length"' in lines[-2]
            else:
                out = oa.completions.create(
                    model="tiny", prompt=f"a dog {i}", max_tokens=4, extra_body={"ignore_eos": True}
                )
                assert out.usage is not None and out.usage.completion_tokens == 4
        stats = http.get("/llcuda/v1/info").json()["stats"]
        assert (stats["active"], stats["queued"], stats["kv_cells_used"]) == (0, 0, 0)


def test_50_concurrent_requests_are_batched(tiny_worker: WorkerServer) -> None:
    greedy = SamplingParams(temperature=0.0)
    with RemoteEngine.connect(tiny_worker.url, API_KEY) as remote:
        solo = {i: remote.generate(_req(i, greedy))[0] for i in range(5)}
        steps_before = remote.refresh().raw["stats"]["steps"]

        def one(i: int) -> tuple[int, str, int]:
            if i % 2:
                text, rec = remote.generate(_req(i % 5, greedy))
                return i, text, rec.generated_tokens
            with httpx.Client(base_url=tiny_worker.url, headers=auth(), timeout=20) as http:
                body = {
                    "prompt": f"hello w{i % 5}",
                    "max_tokens": 16,
                    "temperature": 0,
                    "ignore_eos": True,
                }
                r = http.post("/v1/completions", json=body)
                assert r.status_code == 200, r.text
                return i, r.json()["choices"][0]["text"], r.json()["usage"]["completion_tokens"]

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            results = list(pool.map(one, range(50)))
        elapsed = time.monotonic() - t0
        assert all(n == 16 for _, _, n in results)
        assert all(text == solo[i % 5] for i, text, _ in results)
        info = remote.refresh().raw
        # 50 x 16 tokens through 4 slots: far fewer decode steps than tokens
        assert info["stats"]["steps"] - steps_before < 50 * 16 / 2
        assert info["stats"]["active"] == 0 and info["stats"]["queued"] == 0
    metrics = httpx.get(f"{tiny_worker.url}/metrics", headers=auth()).text
    assert _count(metrics, 'llcuda_requests_total{path="/v1/completions",status="5') == 0
    assert elapsed < 60


def _req(i: int, sampling: SamplingParams) -> GenerationRequest:
    return GenerationRequest(
        prompt=f"hello w{i}", max_tokens=16, sampling=sampling, ignore_eos=True
    )
