"""The Chat screen on remote workers (real ``llcuda serve`` on 127.0.0.1): the model picker
lists this machine's models and each attached worker, a reply streams through a worker that
wants an API key, a wrong key says why, and a worker killed mid-reply is an error within 2 s
after which the app chats on a local model."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from textual.widgets import Select

from llcuda_tui.core.config import Settings
from llcuda_tui.core.conversations import ChatSettings
from llcuda_tui.core.worker.access import WorkerAccess
from llcuda_tui.core.worker.client import RemoteEngine
from llcuda_tui.core.worker.server import Listen, WorkerServer
from llcuda_tui.messages import ChoicesReady
from tests.core.worker.conftest import API_KEY, tiny_config
from tests.tui.conftest import SIZE, make_app, wait_for
from tests.tui.conftest import notices as messages
from tests.tui.test_chat import chat_settings, focused, load_smollm, send
from tests.workerproc import worker_process  # noqa: F401

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(180)]


async def test_picker_lists_workers_and_a_reply_streams_through_one(
    settings: Settings, tiny_gguf: Path
) -> None:
    with WorkerServer(tiny_config(tiny_gguf, 2048), Listen(port=0)) as server:
        app = make_app(
            chat_settings(settings), workers=[server.url], worker_access=WorkerAccess(API_KEY)
        )
        async with app.run_test(size=SIZE) as pilot:
            chat = app.screen
            name = f"tiny @ {server.url}"
            await wait_for(pilot, lambda: name in chat.choices, what="the worker in the picker")
            assert isinstance(app.engine, RemoteEngine)
            assert "smollm2-135m-instruct" in chat.choices  # this machine's models too
            assert chat.choices[name].source == "worker"
            assert chat.query_one("#model", Select).value == name
            # a listing asked for before the worker attached can answer after the one asked
            # for when it did (a thread worker cannot be stopped; on a busy machine it came
            # last and the picker lost the worker): the older answer is dropped
            local = [c for c in chat.choices.values() if c.source != "worker"]
            chat.post_message(ChoicesReady(local, {}, chat.listing - 1))
            await pilot.pause()
            await pilot.pause()
            assert name in chat.choices and chat.query_one("#model", Select).value == name
            await send(pilot, chat, "Say hello.")
            record = chat.session.last_record
            assert record is not None and record.generated_tokens > 0, messages(app)
            saved = app.conversations.messages(chat.session.conversation.id)
            assert [m.role for m in saved] == ["user", "assistant"]
            assert saved[1].model == name and saved[1].content


async def test_a_wrong_api_key_says_why(settings: Settings, tiny_gguf: Path) -> None:
    with WorkerServer(tiny_config(tiny_gguf), Listen(port=0)) as server:
        app = make_app(settings, workers=[server.url], worker_access=WorkerAccess("wrong-key-42"))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: any("API key" in m for m in messages(app)), 20)
            assert app.engine is None
            assert f"worker {server.url} refused the API key" in " ".join(messages(app))


async def test_worker_killed_mid_reply_is_an_error_and_local_models_still_work(
    settings: Settings,
    smollm_path: Path,
    worker_process: type,  # noqa: F811
) -> None:
    worker = worker_process.start("-m", str(smollm_path), "--ctx", "2048", "--threads", "1")
    app = make_app(chat_settings(settings, max_tokens=1500, n_ctx=2048), workers=[worker.url])
    async with app.run_test(size=SIZE) as pilot:
        chat = app.screen
        session = chat.session
        await wait_for(pilot, lambda: isinstance(app.engine, RemoteEngine), 30, "attach")
        chat.prompt.value = "Write a very long story about a dragon and a baker."
        await focused(pilot, chat.prompt)
        await pilot.press("enter")
        await wait_for(pilot, lambda: session.reply is not None and session.reply.tokens >= 4, 60)
        worker.signal(signal.SIGKILL)
        killed = time.monotonic()
        await wait_for(pilot, lambda: session.reply is None, 10, "the reply to end")
        assert time.monotonic() - killed <= 2.5  # 2 s, plus one drain tick
        assert "generation failed" in str(chat.query_one("#engine-status").render())
        assert any(worker.url in m for m in messages(app))
        # still usable: pick this machine's model, load it, chat
        local = "smollm2-135m-instruct"
        await wait_for(pilot, lambda: local in chat.choices, 30, "local models listed")
        chat.query_one("#model", Select).value = local
        app.release_engine()
        await load_smollm(pilot, app)
        chat.action_new_conversation()
        conv = chat.new_conversation()
        session.conversation = app.conversations.update(
            conv.id, settings=ChatSettings(temperature=0.0, max_tokens=24)
        )
        await send(pilot, chat, "Say hello.")
        assert session.last_record is not None and session.last_record.backend == "CPU"


class PlainOpenAIServer:
    """An OpenAI-compatible server that is not an llcuda worker, as llama-server looks to our
    client: ``/v1/*`` goes to a real worker, everything else (``/llcuda/v1/*``) is a 404.
    Real uvicorn on 127.0.0.1, in a thread."""

    def __init__(self, upstream: WorkerServer) -> None:
        import socket
        import threading

        import httpx
        import uvicorn
        from starlette.applications import Starlette
        from starlette.background import BackgroundTask
        from starlette.responses import JSONResponse, StreamingResponse
        from starlette.routing import Route

        headers = {"authorization": f"Bearer {API_KEY}"}
        client = httpx.AsyncClient(base_url=upstream.url, headers=headers, timeout=30)

        async def forward(request):  # type: ignore[no-untyped-def]
            if not request.url.path.startswith("/v1/"):
                return JSONResponse({"error": {"message": "Not Found"}}, status_code=404)
            sent = client.build_request(
                request.method, request.url.path, content=await request.body(),
                headers={"content-type": request.headers.get("content-type", "")},
            )  # fmt: skip
            resp = await client.send(sent, stream=True)
            kind = {"content-type": resp.headers.get("content-type", "")}
            return StreamingResponse(resp.aiter_raw(), resp.status_code, kind,
                                     background=BackgroundTask(resp.aclose))  # fmt: skip

        app = Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, args=([self.sock],), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


async def test_a_plain_openai_server_chats_without_a_context_count(
    settings: Settings, tiny_gguf: Path
) -> None:
    with WorkerServer(tiny_config(tiny_gguf, 2048), Listen(port=0)) as upstream:
        plain = PlainOpenAIServer(upstream)
        try:
            app = make_app(chat_settings(settings), workers=[plain.url])
            async with app.run_test(size=SIZE) as pilot:
                chat = app.screen
                await wait_for(pilot, lambda: isinstance(app.engine, RemoteEngine), 20)
                assert app.engine.remote.kind == "openai"
                await send(pilot, chat, "Say hello.")
                saved = app.conversations.messages(chat.session.conversation.id)
                assert [m.role for m in saved] == ["user", "assistant"], messages(app)
                assert saved[1].content and chat.session.last_record.generated_tokens > 0
                meter = str(chat.query_one("#meter").render())
                assert f"not counted: {plain.url} is not an llcuda worker" in meter
        finally:
            plain.stop()
