"""The Chat screen on a worker of many models (core/worker/router.py): the picker lists each
model the worker serves ('NAME @ URL', with its state), and picking one and loading it binds
the chat to that model, so a reply streams from it (a real worker on 127.0.0.1 serving a store
of two tiny GGUFs, nothing loaded at first)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from textual.screen import Screen
from textual.widgets import Select

from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.engine import EngineConfig
from llcuda_tui.core.store import Store
from llcuda_tui.core.worker import RemoteEngine, WorkerConfig, WorkerServer
from llcuda_tui.core.worker.router import ModelsConfig
from tests.gguf_factory import write_tiny_llama
from tests.tui.conftest import SIZE, make_app, wait_for
from tests.tui.conftest import notices as messages
from tests.tui.test_chat import chat_settings, send, streaming

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(180)]


def two_model_worker(tmp_path: Path) -> tuple[Store, WorkerConfig]:
    """The test's store with two tiny models, and a worker of many models serving it."""
    paths = Paths.from_env()
    store = Store(paths)
    for seed, name in ((1, "alpha"), (2, "beta")):
        store.import_path(write_tiny_llama(tmp_path / f"{name}.gguf", seed=seed, name=name),
                          name=name)  # fmt: skip
    cfg = WorkerConfig(
        engine=EngineConfig(paths.store_dir, n_ctx=512, n_threads=1),
        model_name="",
        parallel=1,
        paths=paths,
        models=ModelsConfig(),
    )
    return store, cfg


async def test_picker_lists_each_model_and_a_reply_streams_from_the_picked_one(
    settings: Settings, tmp_path: Path
) -> None:
    _, cfg = two_model_worker(tmp_path)
    with WorkerServer(cfg) as worker:
        app = make_app(chat_settings(settings), workers=[worker.url])
        async with app.run_test(size=SIZE) as pilot:
            chat = app.screen
            alpha, beta = f"alpha @ {worker.url}", f"beta @ {worker.url}"
            await wait_for(pilot, lambda: {alpha, beta} <= set(chat.choices), what="both models")
            assert chat.choices[beta].served_model == "beta"
            assert chat.bar.choice_label(chat.choices[beta]) == f"{beta} (worker, on disk)"
            assert app.engine is None  # nothing bound: a request would name no model
            chat.query_one("#model", Select).value = beta
            await pilot.click("#load")
            await wait_for(
                pilot, lambda: app.engine_choice is not None and app.engine_choice.name == beta,
                60, "beta bound",
            )  # fmt: skip
            assert isinstance(app.engine, RemoteEngine) and app.engine.model == "beta"
            await wait_for(pilot, lambda: chat.choices.get(beta) is not None
                           and chat.choices[beta].state == "loaded", what="relisted")  # fmt: skip
            await send(pilot, chat, "Say hello.")
            record = chat.session.last_record
            assert record is not None and record.generated_tokens > 0, messages(app)
            saved = app.conversations.messages(chat.session.conversation.id)
            assert [m.role for m in saved] == ["user", "assistant"]
            assert saved[1].model == beta and saved[1].content
            listed = httpx.get(f"{worker.url}/v1/models", timeout=10).json()["data"]
            states = {m["id"]: m.get("state") for m in listed}
            assert states["beta"] == "loaded" and states["alpha"] == "on_disk"


async def test_a_model_the_worker_cannot_load_says_so_in_the_status_line(
    settings: Settings, tmp_path: Path
) -> None:
    store, cfg = two_model_worker(tmp_path)
    with WorkerServer(cfg) as worker:
        app = make_app(chat_settings(settings), workers=[worker.url])
        async with app.run_test(size=SIZE) as pilot:
            chat = app.screen
            beta = f"beta @ {worker.url}"
            await wait_for(pilot, lambda: beta in chat.choices, what="the worker's models")
            store.remove("beta", force=True)  # gone from the worker's store since it listed
            chat.query_one("#model", Select).value = beta
            await pilot.click("#load")
            status = chat.query_one("#engine-status")
            await wait_for(pilot, lambda: "load failed" in str(status.render()), 60, "failure")
            assert f"worker {worker.url} did not load beta" in str(status.render())
            assert app.engine is None and chat.session.phase.name == "IDLE"


def status(chat: object) -> str:
    from textual.widgets import Static

    assert isinstance(chat, Screen)
    return str(chat.query_one("#engine-status", Static).render())


async def test_a_chat_whose_model_was_unloaded_loads_it_again_on_the_next_message(
    settings: Settings, tmp_path: Path
) -> None:
    """The next message to a model the worker unloaded since (--idle-unload, keep_alive 0,
    eviction) loads it inside the request; a load slower than the client's 2 s of patience
    (held back here by the store lock it takes) is no dead worker: the reply comes."""
    import asyncio

    from filelock import FileLock

    store, cfg = two_model_worker(tmp_path)
    with WorkerServer(cfg) as worker:
        app = make_app(chat_settings(settings), workers=[worker.url])
        async with app.run_test(size=SIZE) as pilot:
            chat = app.screen
            beta = f"beta @ {worker.url}"
            await wait_for(pilot, lambda: beta in chat.choices, what="the worker's models")
            chat.query_one("#model", Select).value = beta
            await pilot.click("#load")
            await wait_for(
                pilot, lambda: app.engine_choice is not None and app.engine_choice.name == beta,
                60, "beta bound",
            )  # fmt: skip
            await send(pilot, chat, "Say hello.")
            assert (
                httpx.post(f"{worker.url}/llcuda/v1/models/beta/unload", timeout=30).json()["state"]
                == "on_disk"
            )

            def beta_state() -> str:
                listed = httpx.get(f"{worker.url}/v1/models/beta", timeout=10).json()
                return str(listed["state"])

            held = FileLock(str(store.layout.lock(f"state-{store.names()['beta']}")))
            with held:  # beta's next load waits for this lock
                prompt = chat.prompt
                prompt.value = "And again."
                prompt.focus()
                await wait_for(pilot, lambda: prompt.value == "And again.", 10, "the prompt")
                await pilot.press("enter")
                await wait_for(pilot, lambda: beta_state() == "loading", 30, "beta loading")
                await wait_for(
                    pilot, lambda: "the worker is loading beta" in status(chat), 30,
                    "the status line saying the worker loads the model",
                )  # fmt: skip
                await asyncio.sleep(3.0)  # longer than the client's 2 s of silence
            await wait_for(pilot, lambda: not streaming(chat), 90, "reply end")
            record = chat.session.last_record
            assert record is not None and record.generated_tokens > 0, messages(app)
            saved = app.conversations.messages(chat.session.conversation.id)
            assert [m.role for m in saved] == ["user", "assistant"] * 2 and saved[3].content
            assert beta_state() == "loaded"
