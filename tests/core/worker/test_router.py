"""One worker, many models (core/worker/router.py): real workers on 127.0.0.1 serving a real
store of tiny random GGUFs (and the starter chat model where a generation must last a while),
loading models on demand, swapping, unloading, refusing what cannot fit."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from llcuda_tui.core.config import Paths
from llcuda_tui.core.engine import EngineConfig
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.store import Store
from llcuda_tui.core.worker import RemoteEngine, WorkerConfig, WorkerServer
from llcuda_tui.core.worker.router import ModelRouter
from llcuda_tui.core.worker.router_config import CatalogModel, ModelsConfig, parse_keep_alive
from tests.gguf_factory import write_tiny_llama

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("router-models")
    return {
        "alpha": write_tiny_llama(d / "alpha.gguf", seed=1, name="alpha"),
        "beta": write_tiny_llama(d / "beta.gguf", seed=2, name="beta"),
        "big": write_tiny_llama(
            d / "big.gguf", n_embd=256, n_ff=1024, n_layer=4, n_head=8, seed=3, name="big"
        ),
    }


@pytest.fixture()
def store(llcuda_home: Path, ggufs: dict[str, Path]) -> Store:
    s = Store(Paths.from_env())
    for name in ("alpha", "beta"):
        s.import_path(ggufs[name], name=name)
    return s


def template(n_ctx: int = 512) -> EngineConfig:
    return EngineConfig(Paths.from_env().store_dir, n_ctx=n_ctx, n_threads=1)


def many(n_ctx: int = 512, parallel: int = 2, **models: Any) -> WorkerConfig:
    return WorkerConfig(
        engine=template(n_ctx),
        model_name="",
        parallel=parallel,
        paths=Paths.from_env(),
        models=ModelsConfig(**models),
    )


@pytest.fixture()
def serve() -> Iterator[Callable[[WorkerConfig], WorkerServer]]:
    started: list[WorkerServer] = []

    def start(config: WorkerConfig) -> WorkerServer:
        worker = WorkerServer(config).start()
        started.append(worker)
        return worker

    yield start
    for w in started:
        w.stop()


def complete(http: httpx.Client, model: str | None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"prompt": "hello world", "max_tokens": 4, "temperature": 0}
    if model is not None:
        body["model"] = model
    return http.post("/v1/completions", json=body | extra)


def states(http: httpx.Client) -> dict[str, str]:
    return {m["id"]: m["state"] for m in http.get("/v1/models").json()["data"]}


def metric(http: httpx.Client, name: str, **labels: str) -> float:
    """The sum of the series ``name`` whose labels include ``labels`` (0 when none)."""
    total = 0.0
    for line in http.get("/metrics").text.splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m is None:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def wait_for(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# --- acceptance ------------------------------------------------------------------------------


def test_two_models_served_by_name(store: Store, serve: Callable[..., WorkerServer]) -> None:
    worker = serve(many(aliases={"gpt-4o-mini": "alpha"}))
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        assert http.get("/health").json() == {"status": "ok"}  # ready before any load
        assert states(http) == {"alpha": "on_disk", "beta": "on_disk", "gpt-4o-mini": "on_disk"}
        texts = {}
        for name in ("alpha", "beta"):
            resp = complete(http, name, max_tokens=8)
            assert resp.status_code == 200, resp.text
            assert resp.json()["model"] == name
            texts[name] = resp.json()["choices"][0]["text"]
        assert texts["alpha"] != texts["beta"]  # two different random models answered
        # an alias is echoed as asked, and is the same loaded model
        aliased = complete(http, "gpt-4o-mini", max_tokens=8)
        assert aliased.json()["model"] == "gpt-4o-mini"
        assert aliased.json()["choices"][0]["text"] == texts["alpha"]
        listing = http.get("/v1/models").json()["data"]
        assert {m["id"]: m["state"] for m in listing} == {
            "alpha": "loaded",
            "beta": "loaded",
            "gpt-4o-mini": "loaded",
        }
        assert next(m for m in listing if m["id"] == "gpt-4o-mini")["alias_of"] == "alpha"
        one = http.get("/v1/models/beta")
        assert one.status_code == 200 and one.json()["state"] == "loaded"
        assert http.get("/v1/models/gpt-4o-mini").json()["alias_of"] == "alpha"
        missing = http.get("/v1/models/nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"
        unknown = complete(http, "nope")
        assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"
        nameless = complete(http, None)
        assert nameless.status_code == 400 and "'model' is required" in nameless.text
        # streamed too: every event names the model asked for
        body = {"model": "gpt-4o-mini", "prompt": "hi", "max_tokens": 3, "stream": True}
        with http.stream("POST", "/v1/completions", json=body) as resp:
            events = [json.loads(line[6:]) for line in resp.iter_lines() if line[6:7] == "{"]
        assert events and all(e["model"] == "gpt-4o-mini" for e in events)
        assert metric(http, "llcuda_model_requests_total", model="alpha") == 3
        assert metric(http, "llcuda_model_requests_total", model="beta") == 1
        assert metric(http, "llcuda_model_generated_tokens_total", model="beta") == 8
        assert metric(http, "llcuda_model_load_seconds_count", model="alpha") == 1
        info = http.get("/llcuda/v1/models").json()
        assert {m["id"] for m in info["models"]} == {"alpha", "beta"}
        assert {e["name"]: e["state"] for e in info["store"]} == {
            "alpha": "loaded",
            "beta": "loaded",
        }
        assert http.post("/llcuda/v1/tokenize", json={"model": "beta", "content": "hello"}).json()[
            "tokens"
        ]


def test_concurrent_requests_for_an_unloaded_model_load_it_once(
    store: Store, serve: Callable[..., WorkerServer]
) -> None:
    worker = serve(many(parallel=4))
    with httpx.Client(base_url=worker.url, timeout=60) as http, ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda _: complete(http, "beta"), range(10)))
        assert [r.status_code for r in replies] == [200] * 10
        assert {r.json()["choices"][0]["text"] for r in replies}.__len__() == 1  # greedy
        assert metric(http, "llcuda_model_loads_total", model="beta") == 1
        assert metric(http, "llcuda_model_requests_total", model="beta") == 10
        assert metric(http, "llcuda_model_loads_total", model="alpha") == 0


def test_models_max_1_swaps_after_the_in_flight_request(
    llcuda_home: Path, ggufs: dict[str, Path], smollm_path: Path, serve: Callable[..., WorkerServer]
) -> None:
    s = Store(Paths.from_env())
    s.import_path(smollm_path, name="chat")
    s.import_path(ggufs["beta"], name="beta")
    worker = serve(many(n_ctx=512, parallel=1, models_max=1))
    n = 120
    with httpx.Client(base_url=worker.url, timeout=120) as http:
        body = {"model": "chat", "prompt": "Once upon a time", "max_tokens": n, "stream": True}
        body |= {"ignore_eos": True, "temperature": 0}
        other: dict[str, Any] = {}
        seen: set[tuple[str, str]] = set()
        with http.stream("POST", "/v1/completions", json=body) as resp:
            lines = resp.iter_lines()
            first = [line for _, line in zip(range(4), lines, strict=False) if line]
            assert first  # the chat model is loaded and generating

            def ask_beta() -> None:
                with httpx.Client(base_url=worker.url, timeout=120) as h:
                    other["reply"] = complete(h, "beta")

            t = threading.Thread(target=ask_beta)
            t.start()
            wait_for(lambda: states(http).get("chat") == "unloading" or not t.is_alive())
            seen.add(tuple(sorted(states(http).items())))  # type: ignore[arg-type]
            rest = [line for line in lines if line.startswith("data: {")]
        t.join(60)
        events = [json.loads(line[6:]) for line in rest]
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        assert other["reply"].status_code == 200, other["reply"].text
        # the chat model's request ran to its end (not cancelled by the swap) ...
        runs = http.get("/llcuda/v1/runs").json()["runs"]
        chat_run = next(r for r in runs if r["model"] == "chat")
        assert chat_run["record"]["stop_reason"] == "length"
        assert chat_run["record"]["generated_tokens"] == n
        # ... before beta loaded: one model at a time
        beta_run = next(r for r in runs if r["model"] == "beta")
        assert chat_run["created"] <= beta_run["created"]
        assert (("beta", "loading"), ("chat", "unloading")) in seen
        assert states(http) == {"chat": "on_disk", "beta": "loaded"}
        assert metric(http, "llcuda_model_unloads_total", model="chat", reason="evicted") == 1
        assert metric(http, "llcuda_model_loads_total", model="beta") == 1
        # and back: the idle beta makes room for the chat model at once
        assert complete(http, "chat").status_code == 200
        assert states(http) == {"chat": "loaded", "beta": "on_disk"}


def test_keep_alive_0_unloads_after_the_reply(
    store: Store, serve: Callable[..., WorkerServer]
) -> None:
    worker = serve(many(idle_unload_s=0.3))
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        resp = complete(http, "alpha", keep_alive=0)
        assert resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] == 4
        wait_for(lambda: states(http)["alpha"] == "on_disk")
        assert metric(http, "llcuda_model_unloads_total", model="alpha", reason="keep_alive") == 1
        # --idle-unload: beta goes after 0.3 s idle; alpha kept by keep_alive -1
        assert complete(http, "beta").status_code == 200
        assert complete(http, "alpha", keep_alive="-1").status_code == 200
        wait_for(lambda: states(http)["beta"] == "on_disk")
        assert metric(http, "llcuda_model_unloads_total", model="beta", reason="idle") == 1
        time.sleep(0.6)
        assert states(http)["alpha"] == "loaded"
        bad = complete(http, "alpha", keep_alive="five minutes")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "keep_alive"


def test_choices_of_one_request_hold_their_model_until_the_last_is_done(
    store: Store, serve: Callable[..., WorkerServer]
) -> None:
    worker = serve(many())
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        resp = complete(http, "alpha", n=3, seed=7, keep_alive=0)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert [c["index"] for c in body["choices"]] == [0, 1, 2] and body["model"] == "alpha"
        assert body["usage"]["completion_tokens"] == 12
        wait_for(lambda: states(http)["alpha"] == "on_disk")  # released once, after all three
        assert metric(http, "llcuda_model_unloads_total", model="alpha", reason="keep_alive") == 1
        assert metric(http, "llcuda_model_requests_total", model="alpha") == 1
        assert metric(http, "llcuda_model_generated_tokens_total", model="alpha") == 12


def test_a_model_too_big_for_the_budget_is_refused_in_one_line(
    store: Store, ggufs: dict[str, Path], serve: Callable[..., WorkerServer]
) -> None:
    store.import_path(ggufs["big"], name="big")
    from prometheus_client import CollectorRegistry

    sizing = ModelRouter(ModelsConfig(), template(), 2, Paths.from_env(), CollectorRegistry())
    needs = {n: sizing._needs(store.entry(n).manifest.summary) for n in ("alpha", "big")}  # type: ignore[arg-type]
    small, big = needs["alpha"], needs["big"]
    assert small is not None and big is not None and big > 2 * small
    worker = serve(many(memory_budget_bytes=small * 3 // 2))  # one small model, not two
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        assert complete(http, "alpha").status_code == 200
        refused = complete(http, "big")
        assert refused.status_code == 507
        error = refused.json()["error"]
        assert error["code"] == "insufficient_memory" and "\n" not in error["message"]
        assert "GiB missing even with every other model unloaded" in error["message"]
        assert "'big' needs about" in error["message"]
        # nothing was unloaded for it, and the worker serves on
        assert states(http) == {"alpha": "loaded", "beta": "on_disk", "big": "on_disk"}
        assert complete(http, "alpha").status_code == 200
        # beta fits beside alpha only by evicting it (the budget holds one small model)
        assert complete(http, "beta").status_code == 200
        assert states(http)["alpha"] == "on_disk"
        assert metric(http, "llcuda_model_unloads_total", model="alpha", reason="evicted") == 1


def test_a_model_removed_from_the_store_serves_its_requests_then_goes(
    llcuda_home: Path, ggufs: dict[str, Path], smollm_path: Path, serve: Callable[..., WorkerServer]
) -> None:
    s = Store(Paths.from_env())
    s.import_path(smollm_path, name="chat")
    s.import_path(ggufs["beta"], name="beta")
    worker = serve(many(n_ctx=512, parallel=1, store_check_s=0.1))
    n = 150
    with httpx.Client(base_url=worker.url, timeout=120) as http:
        body = {"model": "chat", "prompt": "Once upon a time", "max_tokens": n, "stream": True}
        body |= {"ignore_eos": True, "temperature": 0}
        with http.stream("POST", "/v1/completions", json=body) as resp:
            lines = resp.iter_lines()
            assert [line for _, line in zip(range(4), lines, strict=False) if line]
            # the loaded model is leased: rm refuses, naming this process
            with pytest.raises(Exception, match=f"in use by process {os.getpid()}"):
                s.remove("chat")
            s.remove("chat", force=True)
            assert "chat" not in states(http)  # no longer listed at once
            # the worker's next look at the store (every store_check_s) retires it
            held = lambda: http.get("/llcuda/v1/models").json()["models"]  # noqa: E731
            wait_for(lambda: all(m["removed"] for m in held()))
            gone = complete(http, "chat")
            assert gone.status_code == 404  # and no new requests
            events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        run = http.get("/llcuda/v1/runs", params={"limit": 1}).json()["runs"][0]
        assert run["model"] == "chat" and run["record"]["generated_tokens"] == n
        wait_for(
            lambda: metric(http, "llcuda_model_unloads_total", model="chat", reason="removed") == 1
        )
        assert http.get("/llcuda/v1/models").json()["models"] == []
        assert complete(http, "beta").status_code == 200  # serving on


# --- the rest --------------------------------------------------------------------------------


def test_explicit_load_and_unload(store: Store, serve: Callable[..., WorkerServer]) -> None:
    worker = serve(many())
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        loaded = http.post("/llcuda/v1/models/beta/load")
        assert loaded.status_code == 200 and loaded.json()["state"] == "loaded"
        assert loaded.json()["load"]["n_ctx"] == 512
        assert states(http)["beta"] == "loaded"
        assert http.post("/llcuda/v1/models/beta/load").json()["state"] == "loaded"
        assert metric(http, "llcuda_model_loads_total", model="beta") == 1
        assert metric(http, "llcuda_model_requests_total", model="beta") == 0  # no request
        unloaded = http.post("/llcuda/v1/models/beta/unload")
        assert unloaded.status_code == 200 and unloaded.json()["state"] == "on_disk"
        assert states(http)["beta"] == "on_disk"
        assert metric(http, "llcuda_model_unloads_total", model="beta", reason="request") == 1
        again = http.post("/llcuda/v1/models/beta/unload")  # not loaded: nothing to do
        assert again.status_code == 200 and again.json()["state"] == "on_disk"
        assert http.post("/llcuda/v1/models/nope/load").status_code == 404
        assert http.post("/llcuda/v1/models/nope/unload").status_code == 404
        bad = http.post("/llcuda/v1/models/beta/load", json={"keep_alive": "soon"})
        assert bad.status_code == 400


def test_a_worker_of_many_models_says_it_does_not_embed(
    store: Store, serve: Callable[..., WorkerServer]
) -> None:
    worker = serve(many())
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        resp = http.post("/v1/embeddings", json={"model": "beta", "input": "hello"})
        assert resp.status_code == 400
        error = resp.json()["error"]
        assert error["code"] == "model_not_embedding" and error["param"] == "model"
        assert "llcuda serve -m MODEL --embeddings" in error["message"]
        assert complete(http, "beta").status_code == 200  # and it still chats


def test_a_worker_of_one_model_answers_load_and_refuses_unload(
    tiny_worker: WorkerServer,
) -> None:
    from tests.core.worker.conftest import auth

    with httpx.Client(base_url=tiny_worker.url, timeout=10, headers=auth()) as http:
        assert http.post("/llcuda/v1/models/tiny/load").json()["state"] == "loaded"
        assert http.post("/llcuda/v1/models/other/load").status_code == 404
        refused = http.post("/llcuda/v1/models/tiny/unload")
        assert refused.status_code == 400 and "one -m" in refused.text


def test_a_failed_load_is_an_error_for_its_requests_only(
    ggufs: dict[str, Path], tmp_path: Path, serve: Callable[..., WorkerServer]
) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\0" * 64)
    catalog = (CatalogModel("bad", bad), CatalogModel("beta", ggufs["beta"]))
    worker = serve(many(catalog=catalog))
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        assert states(http) == {"bad": "on_disk", "beta": "on_disk"}
        failed = complete(http, "bad")
        assert failed.status_code in (400, 500)
        error = failed.json()["error"]
        assert error["code"] == "model_load_failed" and "\n" not in error["message"]
        assert states(http)["bad"] == "on_disk"
        assert metric(http, "llcuda_model_load_failures_total", model="bad") == 1
        assert complete(http, "beta").status_code == 200
        assert complete(http, "alpha").status_code == 404  # only the -m models are served


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (None, None),
        (0, 0.0),
        ("0", 0.0),
        (30, 30.0),
        (1.5, 1.5),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("300", 300.0),
        (-1, float("inf")),
        ("-1m", float("inf")),
    ],
)
def test_keep_alive_parses_as_ollama_does(given: Any, seconds: float | None) -> None:
    assert parse_keep_alive(given) == seconds


@pytest.mark.parametrize("given", ["soon", "5 m", "", "m", True, [], "nan"])
def test_bad_keep_alive_is_a_400(given: Any) -> None:
    from llcuda_tui.core.worker.protocol import RequestError

    with pytest.raises(RequestError, match="keep_alive"):
        parse_keep_alive(given)


# --- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--alias", "gpt-4o-mini"], "--alias 'gpt-4o-mini': write ALIAS=MODEL"),
        (["--mpi"], "--mpi serves one model"),
        (["--memory-budget", "lots"], "--memory-budget: 'lots' is not a size"),
        (["--models-max", "2", "--name", "x"], "--name goes with one -m"),
        (["--embeddings"], "--embeddings and --pooling go with one -m MODEL"),
        (["--model-setting", "alpha:ngl=3"], "'alpha:ngl=3': no key 'ngl' (known: n_ctx,"),
        (["--model-setting", "alpha"], "--model-setting 'alpha': write NAME:KEY=VALUE"),
        (["--model-setting", "alpha:n_ctx=big"], "n_ctx must be an integer"),
        (["--model-setting", "alpha:n_ctx=-2"], "n_ctx must be >= 0"),
        (["--model-setting", "alpha:parallel=0"], "parallel must be in [1, 256]"),
        (["--model-setting", "alpha:type_k=q5"], "type_k must be one of"),
    ],
)
def test_bad_many_model_options_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    from llcuda_tui.cli import main

    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llcuda: error: ") and fragment in err[0], err


def test_llcuda_serve_without_m_serves_the_store(
    store: Store, llcuda_home: Path, worker_process: Any
) -> None:
    import signal
    import subprocess
    import sys

    from tests.workerproc import REPO

    config = Paths.from_env().config_file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        '[models.aliases]\nfast = "beta"\n\n[models.settings."beta"]\nn_ctx = 128\n',
        encoding="utf-8",
    )
    worker = worker_process.start(
        "--ctx", "256", "--models-max", "1", "--alias", "gpt-4o-mini=alpha",
        "--model-setting", "fast:parallel=2",
    )  # fmt: skip
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        assert states(http) == {
            "alpha": "on_disk",
            "beta": "on_disk",
            "fast": "on_disk",
            "gpt-4o-mini": "on_disk",
        }
        resp = complete(http, "gpt-4o-mini")
        assert resp.status_code == 200 and resp.json()["model"] == "gpt-4o-mini"
        rm = subprocess.run(
            [sys.executable, "-m", "llcuda_tui", "models", "rm", "alpha"],
            cwd=REPO, env={**os.environ, "LLCUDA_HOME": str(llcuda_home)},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert rm.returncode != 0 and f"in use by process {worker.proc.pid}" in rm.stderr
        assert complete(http, "fast").json()["model"] == "fast"  # the config's alias of beta
        assert states(http)["alpha"] == "on_disk" and states(http)["beta"] == "loaded"
        # beta's own settings: the config's n_ctx, the command line's parallel (by its alias)
        beta = http.get("/v1/models/beta").json()
        assert beta["n_ctx"] == 128 and beta["settings"]["parallel"] == 2
        assert http.get("/v1/models/alpha").json()["settings"]["n_ctx"] == 256
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(30) == 0
    assert not list((Paths.from_env().store_dir / "inuse").glob("*.lease"))  # leases let go


def test_our_client_lists_loads_and_unloads_a_workers_models(
    store: Store, serve: Callable[..., WorkerServer]
) -> None:
    from llcuda_tui.core.engine import GenerationRequest, SamplingParams

    worker = serve(many())
    with RemoteEngine.connect(worker.url, model="beta") as remote:
        assert remote.remote.model == ""  # nothing loaded yet
        assert {m["id"]: m["loaded"] for m in remote.models()} == {"alpha": False, "beta": False}
        assert remote.load_model("alpha", keep_alive="5m")["state"] == "loaded"
        _, record = remote.generate(
            GenerationRequest(prompt="hello", max_tokens=3, sampling=SamplingParams(temperature=0))
        )
        assert record.generated_tokens == 3  # as "beta", which loaded for it
        listed = {m["id"]: m["loaded"] for m in remote.models()}
        assert listed == {"alpha": True, "beta": True}
        assert remote.unload_model("alpha")["state"] == "on_disk"
        assert {m["id"]: m["loaded"] for m in remote.models()} == {"alpha": False, "beta": True}
        remote.refresh()
        assert remote.remote.model == "beta" and remote.info.n_ctx == 512
        with pytest.raises(UserInputError, match="not served here"):
            remote.load_model("nope")


# --- a request that waits for its model's load ------------------------------------------------


@contextlib.contextmanager
def load_held_back(store: Store, name: str) -> Iterator[None]:
    """Loads of ``name`` wait while the block runs: the store lock its load takes (to note
    the use, as another process's ``models pin`` would hold it) is held here."""
    from filelock import FileLock

    lock = FileLock(str(store.layout.lock(f"state-{store.names()[name]}")))
    with lock:
        yield


def test_a_stream_waiting_for_its_models_load_gets_heartbeats(
    store: Store, serve: Callable[..., WorkerServer]
) -> None:
    """The client gives up after ``read_timeout_s`` of silence; a load held back 2.5 times
    that long must not look like a dead worker: the stream carries loading heartbeats."""
    from llcuda_tui.core.engine import GenerationRequest, SamplingParams

    silence_s = 1.0  # 20 heartbeats: a loaded machine still gets one through
    worker = serve(replace(many(), heartbeat_s=0.05))
    request = GenerationRequest(prompt="hello", max_tokens=3, sampling=SamplingParams())
    with (
        RemoteEngine.connect(worker.url, model="beta", read_timeout_s=silence_s) as remote,
        httpx.Client(base_url=worker.url, timeout=30) as http,
        ThreadPoolExecutor(1) as pool,
    ):
        with load_held_back(store, "beta"):
            reply = pool.submit(remote.generate, request)
            wait_for(lambda: remote.loading == "beta" or reply.done())
            assert remote.loading == "beta"  # the heartbeat names the model that loads
            time.sleep(2.5 * silence_s)  # the load takes longer than the client's patience
            assert states(http)["beta"] == "loading" and not reply.done()
        _, record = reply.result(60)
        assert record.generated_tokens == 3 and remote.loading is None
        assert states(http)["beta"] == "loaded"


def test_a_stream_whose_load_fails_after_it_started_ends_with_the_error(
    ggufs: dict[str, Path], tmp_path: Path, serve: Callable[..., WorkerServer]
) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\0" * 64)
    worker = serve(replace(many(catalog=(CatalogModel("bad", bad),)), heartbeat_s=0.05))
    body = {"model": "bad", "prompt": "hi", "max_tokens": 3, "stream": True}
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        with http.stream("POST", "/v1/completions", json=body) as resp:
            lines = [line for line in resp.iter_lines() if line]
        # refused after its stream started: the status is 200 and the error its last event
        assert resp.status_code == 200 and lines[0].startswith(": loading bad")
        error = json.loads(next(line for line in lines if line.startswith("data: {"))[6:])
        assert error["error"]["code"] == "model_load_failed", error
        assert lines[-1] == "data: [DONE]"
        # what is refused before any wait keeps its status
        unknown = http.post("/v1/completions", json=body | {"model": "nope"})
        assert unknown.status_code == 404


def test_a_client_leaving_while_its_model_loads_holds_nothing(
    store: Store, serve: Callable[..., WorkerServer]
) -> None:
    worker = serve(replace(many(), heartbeat_s=0.05))
    body = {"model": "beta", "prompt": "hi", "max_tokens": 3, "stream": True}
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        with load_held_back(store, "beta"), http.stream("POST", "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            assert next(lines).startswith(": loading beta")
            assert next(line for line in lines if line).startswith(": loading beta")
        # gone while beta loads
        wait_for(lambda: states(http)["beta"] == "loaded")
        assert metric(http, "llcuda_model_requests_total", model="beta") == 0
        # nothing holds beta: a keep_alive 0 request unloads it after its reply
        assert complete(http, "beta", keep_alive=0).status_code == 200
        wait_for(lambda: states(http)["beta"] == "on_disk")


def test_a_call_naming_a_model_that_loads_waits_for_it(
    store: Store, serve: Callable[..., WorkerServer]
) -> None:
    """Counting a chat's tokens (a JSON reply, no heartbeats) names the model: while the
    worker says it loads, the client waits past its timeout, then asks again."""
    from llcuda_tui.core.engine import GenerationRequest

    timeout_s = 1.0
    worker = serve(many())
    chat = GenerationRequest(messages=[{"role": "user", "content": "hello"}], max_tokens=1)
    with (
        RemoteEngine.connect(worker.url, model="alpha", timeout_s=timeout_s) as remote,
        httpx.Client(base_url=worker.url, timeout=30) as http,
        ThreadPoolExecutor(1) as pool,
    ):
        with load_held_back(store, "alpha"):
            counted = pool.submit(remote.count_tokens, chat)
            wait_for(lambda: states(http)["alpha"] == "loading" or counted.done())
            time.sleep(2.5 * timeout_s)  # the load takes longer than the client's timeout
            assert not counted.done()
            wait_for(lambda: remote.loading == "alpha")  # it says what it waits for
        assert counted.result(60) > 0
        assert remote.tokenize("hello")  # names the model too (a many-model worker needs it)


# --- per-model load settings -------------------------------------------------------------------


def test_each_model_loads_with_its_own_settings(
    store: Store, serve: Callable[..., WorkerServer]
) -> None:
    settings = {"alpha": {"n_ctx": 256, "parallel": 1}, "beta": {"n_ctx": 1024}}
    worker = serve(many(n_ctx=512, parallel=2, settings=settings))
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        # before a load: what each will load with
        alpha = http.get("/v1/models/alpha").json()
        assert alpha["settings"]["n_ctx"] == 256 and alpha["settings"]["parallel"] == 1
        assert "n_ctx" not in alpha  # not loaded yet
        for name in ("alpha", "beta"):
            assert complete(http, name).status_code == 200
        held = {m["id"]: m for m in http.get("/llcuda/v1/info").json()["models"]}
        assert held["alpha"]["load"]["n_ctx"] == 256 and held["beta"]["load"]["n_ctx"] == 1024
        assert http.get("/v1/models/alpha").json()["n_ctx"] == 256
        assert http.get("/v1/models/beta").json()["n_ctx"] == 1024
        assert held["beta"]["settings"]["parallel"] == 2  # the worker's, not given for beta
        # the fit estimate is each model's own: same shape, beta's KV cache 8x alpha's cells
        assert held["beta"]["needs_bytes"] > held["alpha"]["needs_bytes"]
        # each engine has the slots it was given: KV cells are n_ctx x parallel
        stats = http.get("/llcuda/v1/info").json()["stats"]
        assert stats["slots"] == 1 + 2 and stats["kv_cells_total"] == 256 * 1 + 1024 * 2
        # a prompt longer than alpha's sequence is too long for alpha only
        long_prompt = " ".join(["hello"] * 50)  # about 400 tokens of the tiny vocabulary
        assert complete(http, "alpha", prompt=long_prompt).status_code == 400
        assert complete(http, "beta", prompt=long_prompt).status_code == 200


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ("ngl = 3", "[models.settings.\"alpha\"] has no key 'ngl' (known: n_ctx, n_gpu_layers"),
        ('n_ctx = "big"', '[models.settings."alpha"] n_ctx must be int, got str'),
        ('flash_attn = "maybe"', "flash_attn must be auto, on or off"),
        ("parallel = 0", "parallel must be in [1, 256]"),
    ],
)
def test_a_bad_model_setting_in_the_config_is_one_line_naming_the_key(
    llcuda_home: Path, capsys: pytest.CaptureFixture[str], table: str, fragment: str
) -> None:
    from llcuda_tui.cli import main

    config = Paths.from_env().config_file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[models.settings."alpha"]\n{table}\n', encoding="utf-8")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and str(config) in err[0], err


def test_the_model_parallel_cap_is_the_batch_engines() -> None:
    from llcuda_tui.core.config import MODEL_PARALLEL_MAX
    from llcuda_tui.core.worker.batch import MAX_PARALLEL

    assert MODEL_PARALLEL_MAX == MAX_PARALLEL


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("qwen2.5:7b:n_ctx=2048", ("qwen2.5:7b", "n_ctx", 2048)),  # ':' in a store name
        ("chat:ctx_beyond_training=on", ("chat", "ctx_beyond_training", True)),
        ("chat: type_v = q8_0", ("chat", "type_v", "q8_0")),
    ],
)
def test_model_setting_parses_name_key_and_typed_value(given: str, parsed: tuple[Any, ...]) -> None:
    from llcuda_tui.core.config import parse_model_setting

    assert parse_model_setting(given) == parsed
