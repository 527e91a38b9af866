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

from llcuda_tui.core.engine import GenerationHandle, GenerationRequest, RunRecord, TokenLogprob
from llcuda_tui.core.errors import ContextLengthError, GrammarError, UserInputError
from llcuda_tui.core.worker import protocol as P
from llcuda_tui.core.worker.bridge import Bridge
from llcuda_tui.core.worker.endpoints import in_thread, json_reply, read_body
from llcuda_tui.core.worker.state import ServedEngine, WorkerState
from llcuda_tui.core.worker.toolcalls import ToolCallStream, parse_reply

if TYPE_CHECKING:
    from llcuda_tui.core.worker.model_use import ModelUse

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
    if parsed.stream and state.models is not None:
        return await _stream_once_loaded(state, request, chat, body, parsed)
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
    requests = list(parsed.requests)
    if plan is not None and plan.constrained:
        grammar = plan.grammar(engine.template.tool_support)
        requests = [replace(r, sampling=replace(r.sampling, grammar=grammar)) for r in requests]
    echoes = [_prompt_text(engine, r) for r in requests] if parsed.echo else None
    if parsed.suffix is not None:
        requests = [_infill(engine, r, parsed.suffix) for r in requests]
    for r in requests:
        _check_vocabulary(r, engine.info.n_vocab)
    bridge = Bridge(state.waker)
    try:
        handles = await in_thread(lambda: _submit_all(engine, requests, bridge))
    except ContextLengthError as exc:  # clients fall back to a larger model on this code
        param = "messages" if chat else "prompt"
        raise P.RequestError(str(exc), param=param, code="context_length_exceeded") from None
    except GrammarError as exc:
        given = [k for k in ("response_format", "json_schema", "grammar", "tools") if k in body]
        raise P.RequestError(str(exc), param=given[0] if given else "grammar") from None
    use.release_when_all_done(handles)
    for handle in handles:
        _record_when_done(state, handle, "chat" if chat else "completions", use.name)
    calls: list[ToolCallStream | None] = [None] * len(handles)
    if plan is not None and plan.parses:
        calls = [ToolCallStream(plan.names, plan.parallel) for _ in handles]
    logprobs = requests[0].logprobs is not None
    if parsed.stream:
        shaper = P.StreamShaper(chat, use.name, parsed.include_usage, logprobs, parsed.n)
        # one plain choice keeps its own loop: it runs for every token of every stream, and
        # the choices' bookkeeping (indexes, records, echoes, logprobs) is not free there
        if len(handles) == 1 and not logprobs and echoes is None:
            events = _events(bridge, handles[0], shaper, cfg.heartbeat_s, calls[0])
        else:
            events = _choice_events(bridge, handles, shaper, cfg.heartbeat_s, calls, echoes)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return await _whole(use.name, request, bridge, handles, chat, calls, echoes, logprobs, parsed.n)


async def _stream_once_loaded(
    state: WorkerState, request: Request, chat: bool, body: dict[str, Any], parsed: P.ParsedRequest
) -> Response:
    """A streamed request to a worker of many models. Its model may have to load first (or
    wait for room), which takes seconds to minutes: once the router says the request waits,
    the stream starts and sends heartbeats (``: loading``) until the model is in, so a client
    that takes silence for a dead worker (ours, after 2 s) waits as long as the load takes.
    What the router refuses before waiting (no such model, one too big) keeps its status;
    what fails after the stream started is an error event."""
    assert state.models is not None
    waits = asyncio.Event()
    acquiring = asyncio.ensure_future(
        state.models.acquire(body.get("model"), body.get("keep_alive"), on_wait=waits.set)
    )
    waiting = asyncio.ensure_future(waits.wait())
    try:
        await asyncio.wait({acquiring, waiting}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the server is cancelling us
        acquiring.cancel()
        raise
    finally:
        waiting.cancel()
    if not acquiring.done():
        events = _loading_then(state, request, chat, body, parsed, acquiring)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    use = acquiring.result()  # loaded already, or refused (a RequestError: its status)
    try:
        return await _generate(state, request, chat, body, parsed, use)
    except BaseException:
        use.release()
        raise


async def _loading_then(
    state: WorkerState,
    request: Request,
    chat: bool,
    body: dict[str, Any],
    parsed: P.ParsedRequest,
    acquiring: asyncio.Future[ModelUse],
) -> AsyncIterator[bytes]:
    """Heartbeats while the request's model loads, then its stream (as :func:`_generate`'s)."""
    name = str(body.get("model"))
    beat = P.loading_heartbeat(name)
    inner: Any = None
    try:
        yield beat
        while not acquiring.done():
            await asyncio.wait({acquiring}, timeout=state.config.heartbeat_s)
            if not acquiring.done():
                yield beat
        use = acquiring.result()
        try:
            response = await _generate(state, request, chat, body, parsed, use)
        except BaseException:
            use.release()
            raise
        assert isinstance(response, StreamingResponse)  # a streamed request streams
        inner = response.body_iterator
        async for part in inner:
            yield part
    except P.RequestError as exc:  # the load failed, or the request does not fit the model
        shaper = P.StreamShaper(chat, name, False, False, parsed.n)
        yield shaper.error(str(exc), exc.status, exc.code)
    finally:
        if not acquiring.done():  # the client left while the model loaded
            acquiring.cancel()
        close = getattr(inner, "aclose", None)
        if close is not None:  # closes the generation's stream (it cancels what still runs)
            await close()


def _submit_all(
    engine: ServedEngine, requests: list[GenerationRequest], bridge: Bridge
) -> list[GenerationHandle]:
    """Submit every choice's request (choice ``i``'s chunks come back tagged ``i``): to a
    batch engine as one group (choices of one prompt share its cells); when one is refused,
    the ones already queued are cancelled."""
    puts = [bridge.putter(i) if i else bridge.put for i in range(len(requests))]
    many = getattr(engine, "submit_many", None)
    if many is not None and len(requests) > 1:
        handles_of: list[GenerationHandle] = many(requests, [(p, p) for p in puts])
        return handles_of
    handles: list[GenerationHandle] = []
    try:
        for r, put in zip(requests, puts, strict=True):
            handles.append(engine.submit(r, put, put))
    except BaseException:
        for handle in handles:
            handle.cancel()
        raise
    return handles


def _prompt_text(engine: ServedEngine, request: GenerationRequest) -> str:
    """The text ``echo`` puts first: the prompt, or its token ids' text."""
    if request.prompt is not None:
        return request.prompt
    return engine.detokenize(request.tokens or ())


def _infill(engine: ServedEngine, request: GenerationRequest, suffix: str) -> GenerationRequest:
    """``request`` as a fill-in-the-middle prompt: [BOS] FIM_PRE prompt FIM_SUF suffix FIM_MID
    (llama-server's infill without its repository context); a 400 naming ``suffix`` for a
    model whose vocabulary has no FIM tokens."""
    fim = engine.fim_tokens()
    if fim is None:
        raise P.RequestError(
            "'suffix' needs a model with fill-in-the-middle tokens, and this one has none",
            param="suffix", code="unsupported_parameter",
        )  # fmt: skip
    pre, suf, mid = fim
    if request.tokens is not None:
        prefix = list(request.tokens)
    else:
        prefix = engine.tokenize(request.prompt or "", add_special=False, parse_special=False)
    bos = engine.tokenize("", add_special=True, parse_special=False)
    after = engine.tokenize(suffix, add_special=False, parse_special=False)
    tokens = [*bos, pre, *prefix, suf, *after, mid]
    return replace(request, prompt=None, tokens=tokens)


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
    """The SSE stream of one choice without logprobs (the hot path): one event per token, a
    heartbeat when idle, a last event either way; with ``calls``, text that may be a tool call
    is held (its token's event has no text) and the calls come as ``tool_calls`` deltas
    before the last event."""
    finished = False
    try:
        yield shaper.opening() or P.HEARTBEAT
        while not finished:
            items = await bridge.get(heartbeat_s)
            if not items:
                yield P.HEARTBEAT
                continue
            out = []
            for _, item in items:
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


async def _choice_events(
    bridge: Bridge,
    handles: list[GenerationHandle],
    shaper: P.StreamShaper,
    heartbeat_s: float,
    calls: list[ToolCallStream | None],
    echoes: list[str] | None,
) -> AsyncIterator[bytes]:
    """The SSE stream of several choices (or of logprobs, or an echo): as :func:`_events`,
    each event naming its choice's index; each choice ends with its own last event (its
    finish reason and record), then usage and [DONE] once all have."""
    records: list[RunRecord | None] = [None] * len(handles)
    left = len(handles)
    failed = False
    try:
        yield shaper.opening(len(handles)) or P.HEARTBEAT
        if echoes is not None:
            yield b"".join(shaper.token(text, i) for i, text in enumerate(echoes))
        while left and not failed:
            items = await bridge.get(heartbeat_s)
            if not items:
                yield P.HEARTBEAT
                continue
            out = []
            for index, item in items:
                if isinstance(item, BaseException):
                    status = 400 if isinstance(item, UserInputError) else 500
                    out.append(shaper.error(str(item), status))
                    failed = True
                    break
                if records[index] is not None:
                    continue
                call = calls[index]
                if call is not None:
                    deltas = call.feed(item.text)
                    if item.record is not None:
                        deltas += call.finish()
                    out.extend(shaper.delta(d, index) for d in deltas)
                    if item.logprobs or (not deltas and item.record is None):
                        out.append(shaper.token("", index, item.logprobs))
                    if item.record is not None:
                        out.append(shaper.finish(index, "", item.record, bool(call.calls)))
                elif item.record is not None:
                    out.append(shaper.finish(index, item.text, item.record, False, item.logprobs))
                else:
                    out.append(shaper.token(item.text, index, item.logprobs))
                if item.record is not None:
                    records[index] = item.record
                    left -= 1
            if not left and not failed:
                out.append(shaper.ending([r for r in records if r is not None]))
            yield b"".join(out)
    finally:
        if left:  # failed, or the client went away (or the server is cancelling us)
            for handle in handles:
                handle.cancel()


async def _whole(
    model: str,
    request: Request,
    bridge: Bridge,
    handles: list[GenerationHandle],
    chat: bool,
    calls: list[ToolCallStream | None],
    echoes: list[str] | None = None,
    logprobs: bool = False,
    n: int = 1,
) -> Response:
    """The whole reply as one JSON body; a client that leaves first cancels the generation."""
    collect = asyncio.ensure_future(_collect(bridge, len(handles)))
    gone = asyncio.ensure_future(_wait_disconnect(request.receive))
    try:
        await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not collect.done() or collect.cancelled() or collect.exception() is not None:
            for handle in handles:
                handle.cancel()
        if not collect.done():
            collect.cancel()
        gone.cancel()
    if not collect.done() or collect.cancelled():
        return Response(status_code=499)  # nobody is listening
    replies = collect.result()
    choices, records = [], []
    for index, (text, entries, record) in enumerate(replies):
        records.append(record)
        call = calls[index]
        if echoes is not None:
            text = echoes[index] + text
        shaped = None
        if logprobs:
            shaped = P.chat_logprobs(entries) if chat else P.legacy_logprobs(entries, 0)
        if call is not None:
            reply = parse_reply(text, call.names, call.parallel)
            made = [c.to_openai() for c in reply.calls]
            choices.append(P.reply_choice(chat, index, reply.content, record, made, shaped))
        else:
            choices.append(P.reply_choice(chat, index, text, record, (), shaped))
    return json_reply(P.whole_reply(chat, model, choices, records, n))


async def _collect(
    bridge: Bridge, n_choices: int
) -> list[tuple[str, list[TokenLogprob], RunRecord]]:
    """Each choice's (text, logprobs, record), once every choice has ended."""
    parts: list[list[str]] = [[] for _ in range(n_choices)]
    entries: list[list[TokenLogprob]] = [[] for _ in range(n_choices)]
    records: list[RunRecord | None] = [None] * n_choices
    left = n_choices
    while left:
        for index, item in await bridge.get(3600.0):
            if isinstance(item, BaseException):
                raise item
            parts[index].append(item.text)
            entries[index].extend(item.logprobs)
            if item.record is not None and records[index] is None:
                records[index] = item.record
                left -= 1
    return [("".join(p), e, r) for p, e, r in zip(parts, entries, records, strict=True) if r]


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
