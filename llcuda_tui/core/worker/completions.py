"""The generation endpoints, ``POST /v1/chat/completions`` and ``/v1/completions``: a request is
parsed, handed to the engine's thread, and answered as server-sent events (``stream``) or as one
JSON reply, with usage and our run record.

Tokens come back through the request's :class:`Bridge`, drained here. A chat request with
tools has its reply parsed for calls (:mod:`.toolcalls`): answered as ``tool_calls`` (streamed:
as OpenAI's deltas), ``finish_reason: "tool_calls"``; ``tool_choice`` ``required`` or named
adds the grammar that makes the reply those calls. A client that
disconnects cancels its sequence (and frees its slot) within one step; on shutdown every
stream still ends with a proper last event.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive

from llcuda_tui.core.engine import GenerationHandle, GenerationRequest, RunRecord
from llcuda_tui.core.errors import ContextLengthError, GrammarError, UserInputError
from llcuda_tui.core.worker import protocol as P
from llcuda_tui.core.worker.bridge import Bridge
from llcuda_tui.core.worker.endpoints import in_thread, json_reply, read_body
from llcuda_tui.core.worker.state import WorkerState
from llcuda_tui.core.worker.toolcalls import ToolCallStream, parse_reply

if TYPE_CHECKING:
    from llcuda_tui.core.worker.router import ModelUse

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
"""No caching, and no buffering in a proxy (nginx) in front of the worker."""


async def chat(state: WorkerState, request: Request) -> Response:
    """An OpenAI chat completion (``messages``)."""
    return await _complete(state, request, chat=True)


async def completions(state: WorkerState, request: Request) -> Response:
    """An OpenAI text completion (``prompt``: text or token ids)."""
    return await _complete(state, request, chat=False)


async def _complete(state: WorkerState, request: Request, chat: bool) -> Response:
    state.check_ready()
    cfg = state.config
    body = P.parse_body(await read_body(request, cfg.max_body_bytes))
    parse = P.parse_chat if chat else P.parse_completion
    parsed = parse(body, cfg.sampling, state.limits())
    use = await state.use_model(body)  # many models: loads the one named (or waits for room)
    try:
        return await _generate(state, request, chat, body, parsed, use)
    except BaseException:
        use.release()  # unless submitted: a generation lets go when it settles
        raise


async def _generate(
    state: WorkerState,
    request: Request,
    chat: bool,
    body: dict[str, Any],
    parsed: P.ParsedRequest,
    use: ModelUse,
) -> Response:
    engine, cfg = use.engine, state.config
    plan = parsed.tools
    if plan is not None and plan.constrained:
        grammar = plan.grammar(engine.template.tool_support)
        sampling = replace(parsed.request.sampling, grammar=grammar)
        parsed = replace(parsed, request=replace(parsed.request, sampling=sampling))
    _check_vocabulary(parsed.request, engine.info.n_vocab)
    bridge = Bridge(state.waker)
    try:
        handle = await in_thread(lambda: engine.submit(parsed.request, bridge.put, bridge.put))
    except ContextLengthError as exc:  # clients fall back to a larger model on this code
        param = "messages" if chat else "prompt"
        raise P.RequestError(str(exc), param=param, code="context_length_exceeded") from None
    except GrammarError as exc:
        given = [k for k in ("response_format", "json_schema", "grammar", "tools") if k in body]
        raise P.RequestError(str(exc), param=given[0] if given else "grammar") from None
    use.release_when_done(handle)
    _record_when_done(state, handle, "chat" if chat else "completions", use.name)
    calls = None
    if plan is not None and plan.parses:
        calls = ToolCallStream(plan.names, plan.parallel)
    if parsed.stream:
        shaper = P.StreamShaper(chat, use.name, parsed.include_usage)
        events = _events(bridge, handle, shaper, cfg.heartbeat_s, calls)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return await _whole(use.name, request, bridge, handle, chat, calls)


def _check_vocabulary(request: GenerationRequest, n_vocab: int) -> None:
    """A 400 naming the field for token ids outside the model's vocabulary."""
    if n_vocab <= 0:
        return
    bad = [t for t in request.sampling.logit_bias if not 0 <= t < n_vocab]
    if bad:
        message = f"logit bias names token {bad[0]}, outside the vocabulary ({n_vocab})"
        raise P.RequestError(message, param="logit_bias")
    bad = [t for t in request.tokens or () if not 0 <= t < n_vocab]
    if bad:
        message = f"token id {bad[0]} is outside the vocabulary ({n_vocab})"
        raise P.RequestError(message, param="prompt")


def _record_when_done(
    state: WorkerState, handle: GenerationHandle, endpoint: str, model: str
) -> None:
    """Keep the run record (also of a cancelled request) once the engine settles it."""
    loop = asyncio.get_running_loop()

    def done(future: concurrent.futures.Future[RunRecord]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: shutting down
            loop.call_soon_threadsafe(state.add_run, endpoint, model, future.result())

    handle.future.add_done_callback(done)


async def _events(
    bridge: Bridge,
    handle: GenerationHandle,
    shaper: P.StreamShaper,
    heartbeat_s: float,
    calls: ToolCallStream | None = None,
) -> AsyncIterator[bytes]:
    """The SSE stream: one event per token, a heartbeat when idle, a last event either way;
    with ``calls``, text that may be a tool call is held (its token's event has no text) and
    the calls come as ``tool_calls`` deltas before the last event."""
    finished = False
    try:
        yield shaper.opening() or P.HEARTBEAT
        while not finished:
            items = await bridge.get(heartbeat_s)
            if not items:
                yield P.HEARTBEAT
                continue
            out = []
            for item in items:
                if isinstance(item, BaseException):
                    status = 400 if isinstance(item, UserInputError) else 500
                    out.append(shaper.error(str(item), status))
                    finished = True
                    break
                if calls is not None:
                    deltas = calls.feed(item.text)
                    if item.record is not None:
                        deltas += calls.finish()
                    out.extend(shaper.delta(d) for d in deltas)
                    if item.record is not None:
                        out.append(shaper.closing("", item.record, bool(calls.calls)))
                        finished = True
                        break
                    if not deltas:
                        out.append(shaper.token(""))
                    continue
                if item.record is not None:
                    out.append(shaper.closing(item.text, item.record))
                    finished = True
                    break
                out.append(shaper.token(item.text))
            yield b"".join(out)
    finally:
        if not finished:  # the client went away (or the server is cancelling us)
            handle.cancel()


async def _whole(
    model: str,
    request: Request,
    bridge: Bridge,
    handle: GenerationHandle,
    chat: bool,
    calls: ToolCallStream | None = None,
) -> Response:
    """The whole reply as one JSON body; a client that leaves first cancels the generation."""
    collect = asyncio.ensure_future(_collect(bridge))
    gone = asyncio.ensure_future(_wait_disconnect(request.receive))
    try:
        await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not collect.done():
            handle.cancel()
            collect.cancel()
        gone.cancel()
    if not collect.done() or collect.cancelled():
        return Response(status_code=499)  # nobody is listening
    text, record = collect.result()
    if calls is not None:
        reply = parse_reply(text, calls.names, calls.parallel)
        made = [c.to_openai() for c in reply.calls]
        return json_reply(P.whole_response(chat, model, reply.content, record, made))
    return json_reply(P.whole_response(chat, model, text, record))


async def _collect(bridge: Bridge) -> tuple[str, RunRecord]:
    parts: list[str] = []
    while True:
        for item in await bridge.get(3600.0):
            if isinstance(item, BaseException):
                raise item
            parts.append(item.text)
            if item.record is not None:
                return "".join(parts), item.record


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
