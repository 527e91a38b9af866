"""The reply streams inside the conversation (issue #16, frictions): as the transcript's last
turn, the transcript following it, and it stays where it streamed when it is rendered as
Markdown at the end. It streamed in a separate panel below the input, then jumped into the
conversation (and the transcript was scrolled to its end even when the user had scrolled up
to read)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from textual.widgets import Markdown

from llcuda_tui.core.config import Settings
from llcuda_tui.core.conversations import ChatSettings
from llcuda_tui.core.engine import Chunk, RunRecord
from llcuda_tui.widgets import ChatMessage, StreamView
from tests.tui.conftest import make_app, wait_for
from tests.tui.test_chat import chat_settings, focused, load_smollm, streaming

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(240)]


async def test_the_reply_streams_as_the_last_turn_and_stays_there(
    settings: Settings, smollm_path: Path
) -> None:
    settings = chat_settings(settings, max_tokens=600, n_ctx=2048)
    app = make_app(settings)
    # an earlier exchange taller than the transcript, in few tokens (a slow, loaded machine
    # makes a token or two a second: the reply need not fill the screen itself)
    conv = app.conversations.create(settings=ChatSettings.from_defaults(settings.sampling))
    app.conversations.add_message(conv.id, "user", "Count to twenty, one number a line.")
    numbers = "\n".join(str(n) for n in range(1, 21))
    app.conversations.add_message(conv.id, "assistant", numbers, model="smollm2-135m-instruct")
    async with app.run_test(size=(80, 24)) as pilot:
        chat = await load_smollm(pilot, app)
        await wait_for(pilot, lambda: chat.session.conversation is not None, 10, "the chat")
        transcript = chat.transcript
        prompt = chat.prompt
        prompt.value = "Write a very long story about a dragon who learns to bake bread."
        await focused(pilot, prompt)
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.live.message is not None, 60, "the reply's turn")
        turn = chat.live.message
        assert turn is not None and turn.stream is not None
        # the reply's turn is the transcript's last, under the user's, and nothing else on
        # the screen shows the reply
        assert list(transcript.children)[-1] is turn
        roles = [w.role for w in transcript.query(ChatMessage)]
        assert roles == ["user", "assistant", "user", "assistant"]
        assert [v.parent for v in chat.query(StreamView)] == [turn]
        # it grows, the transcript following it to its end
        await wait_for(
            pilot,
            lambda: len(turn.stream.lines) >= 3,  # type: ignore[union-attr]
            120,
            "three lines of the reply",
        )
        await wait_for(
            pilot,
            lambda: transcript.max_scroll_y > 0 and transcript.scroll_y == transcript.max_scroll_y,
            10,
            "the transcript at the reply's end",
        )
        # its newest line and the progress under it are in view
        progress = turn.query_one(".record")
        assert transcript.region.contains_region(progress.region)
        assert "tokens" in str(progress.render()) or "streaming" in str(progress.render())
        assert turn.stream.region.bottom >= transcript.region.y
        # the user scrolls up to read: the reply keeps streaming, the view stays put
        transcript.scroll_home(animate=False)
        await wait_for(pilot, lambda: transcript.scroll_y == 0, 10, "scrolled to the top")
        assert chat.session.reply is not None
        lines = len(turn.stream.lines)
        await wait_for(
            pilot,
            lambda: len(turn.stream.lines) > lines or not streaming(chat),  # type: ignore[union-attr]
            60,
            "more of the reply",
        )
        assert transcript.scroll_y == 0
        await pilot.press("escape")
        await wait_for(pilot, lambda: not streaming(chat), 60, "the reply to stop")
        await pilot.pause()
        # the same turn, now the saved reply rendered as Markdown, where it streamed
        saved = app.conversations.messages(chat.session.conversation.id)[-1]  # type: ignore[union-attr]
        assert saved.role == "assistant" and saved.record["stop_reason"] == "cancelled"
        assert list(transcript.children)[-1] is turn
        assert turn.stream is None and not chat.query(StreamView)
        assert turn.query(Markdown) and turn.text == saved.content and turn.seq == saved.seq
        assert "decode" in str(turn.query_one(".record").render())
        assert transcript.scroll_y == 0


async def test_the_streaming_body_grows_in_steps_up_to_its_limit() -> None:
    """Each change of the body's height is a layout and a repaint of the transcript: it grows
    ``step`` lines at a time, never past ``max_lines``, and then shows the newest lines; a
    batch that adds no line repaints without a layout."""
    from textual.app import App, ComposeResult

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield StreamView(step=3, max_lines=6)

    layouts: list[bool] = []
    app = One()
    async with app.run_test(size=(24, 12)) as pilot:
        view = app.query_one(StreamView)
        original = view.refresh

        def counting_refresh(*regions, layout=False, **kw):  # type: ignore[no-untyped-def]
            layouts.append(layout)
            return original(*regions, layout=layout, **kw)

        view.refresh = counting_refresh  # type: ignore[method-assign]
        await pilot.pause()
        heights = []
        for n in range(1, 11):
            view.append(f"line {n}\n" if n < 10 else "line 10")
            await pilot.pause()
            heights.append(view.size.height)
        assert heights == [3, 3, 6, 6, 6, 6, 6, 6, 6, 6]
        assert view.lines[-1] == "line 10"
        shown = [view.render_line(y).text.rstrip() for y in range(view.size.height)]
        assert shown == [f"line {n}" for n in range(5, 11)]
        assert layouts.count(True) == 2  # one per step: 3 lines, then 6
        layouts.clear()
        view.append(" more")  # the same line: a repaint of it, no layout
        await pilot.pause()
        assert layouts == [False] and view.size.height == 6


async def test_the_streaming_body_has_two_heights_one_layout_while_it_streams() -> None:
    """Mounted ``step`` lines tall (laid out before the first token), it goes straight to
    ``max_lines`` when its text outgrows that: one layout while the reply streams, where
    growing a step at a time made one per step (2 -> 4 -> 6 -> 7 here)."""
    from textual.app import App, ComposeResult

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield StreamView(step=2, max_lines=7)

    layouts: list[bool] = []
    app = One()
    async with app.run_test(size=(24, 12)) as pilot:
        view = app.query_one(StreamView)
        original = view.refresh

        def counting_refresh(*regions, layout=False, **kw):  # type: ignore[no-untyped-def]
            layouts.append(layout)
            return original(*regions, layout=layout, **kw)

        await pilot.pause()
        assert view.size.height == 2  # before any text: its first height
        view.refresh = counting_refresh  # type: ignore[method-assign]
        heights = []
        for n in range(1, 11):
            view.append(f"line {n}\n" if n < 10 else "line 10")
            await pilot.pause()
            heights.append(view.size.height)
        assert heights == [2, 7, 7, 7, 7, 7, 7, 7, 7, 7]  # "line 1\n" is two lines
        assert layouts.count(True) == 2  # the growth's, and Textual's own for the new size
        shown = [view.render_line(y).text.rstrip() for y in range(view.size.height)]
        assert shown == [f"line {n}" for n in range(4, 11)]
        assert view.text.count("\n") == 9 and view.lines[-1] == "line 10"


def stopped_record(tokens: int) -> RunRecord:
    """A run record as an engine sends it for a reply stopped with Esc."""
    return RunRecord(
        prompt_tokens=8, generated_tokens=tokens, ttft_s=0.05, prefill_s=0.04, decode_s=0.5,
        prefill_tokens_per_s=200.0, decode_tokens_per_s=tokens / 0.5, total_s=0.55,
        stop_reason="cancelled", prompt_tokens_evaluated=8, model_sha256=None, backend="CPU",
        n_gpu_layers=0, n_ctx=2048,
    )  # fmt: skip


@pytest.mark.parametrize("ending", ["cancelled", "error"])
async def test_short_batches_wait_a_tick_and_the_end_shows_all_of_the_reply(ending: str) -> None:
    """A repaint costs about as much for a word as for a line: a tick's text under
    MIN_REPAINT_CHARS waits for the next tick (at most HOLD_TICKS), the first text and a long
    batch show at once, and when the reply ends (Esc or an error) every character is shown."""
    from textual.app import App, ComposeResult
    from textual.widgets import TextArea

    from llcuda_tui.core.chat import ReplyStream
    from llcuda_tui.screens.chat.transcript import HOLD_TICKS, MIN_REPAINT_CHARS, LiveReply

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield TextArea(id="prompt")
            yield ChatMessage("assistant", streaming=True)

    app = One()
    async with app.run_test(size=(60, 20)) as pilot:
        await pilot.pause()
        turn = app.query_one(ChatMessage)
        live = LiveReply(app.query_one(TextArea))
        live.begin(turn)
        assert gc.get_freeze_count() > 0  # while it streams, no full collection walks the app
        reply = ReplyStream()
        try:
            reply.on_chunk(Chunk("Once"))
            live.tick(reply)
            assert turn.text == "Once"  # the first text: at once
            reply.on_chunk(Chunk(" upon"))
            live.tick(reply)
            assert turn.text == "Once"  # 5 characters: they wait a tick
            for _ in range(HOLD_TICKS - 1):
                live.tick(reply)
            assert turn.text == "Once upon"
            long = " a time" * (MIN_REPAINT_CHARS // 7 + 1)
            reply.on_chunk(Chunk(long))
            live.tick(reply)
            assert turn.text == "Once upon" + long  # a long batch: at once
            reply.on_chunk(Chunk(" there"))
            live.tick(reply)
            assert turn.text == "Once upon" + long  # held...
            reply.on_chunk(Chunk(" was"))
            if ending == "cancelled":
                reply.on_chunk(Chunk("", record=stopped_record(6)))
            else:
                reply.on_error(RuntimeError("the engine went away"))
            assert live.tick(reply) is True
            # ...and shown with the rest when it ends: nothing is lost
            assert turn.text == reply.text == "Once upon" + long + " there was"
        finally:
            live.end()
        assert gc.get_freeze_count() == 0


async def test_a_turn_sent_at_once_is_not_counted_again_while_its_reply_streams(
    settings: Settings, smollm_path: Path
) -> None:
    """Each change to the message box schedules a context count 0.3 s later; a turn sent
    before that (typed, Enter) is counted by its own plan, and the count that waited is
    dropped: it fired mid-reply (a tokenization in the engine process and a layout of the
    meter beside the decoding)."""
    from llcuda_tui.core.chat import Phase
    from llcuda_tui.messages import ContextPlanned

    counts: list[tuple[bool, Phase]] = []
    settings = chat_settings(settings, max_tokens=200, n_ctx=2048)
    app = make_app(settings)

    def hook(message: object) -> None:
        if isinstance(message, ContextPlanned):
            counts.append((message.send, app.screen.session.phase))  # type: ignore[attr-defined]

    async with app.run_test(size=(120, 40), message_hook=hook) as pilot:
        chat = await load_smollm(pilot, app)
        await wait_for(pilot, lambda: chat.count_timer is None, 10, "the load's count")
        prompt = chat.prompt
        prompt.value = "Write a long story about a lighthouse keeper and a storm."
        await focused(pilot, prompt)
        await wait_for(pilot, lambda: chat.count_timer is not None, 10, "a count scheduled")
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.live.message is not None, 60, "the reply's turn")
        assert chat.count_timer is None  # the send dropped it
        await wait_for(pilot, lambda: not streaming(chat), 120, "the reply's end")
        assert chat.session.last_record is not None
        assert (True, Phase.PLANNING) in counts  # the send's own plan
        assert not [c for c in counts if not c[0] and c[1] is not Phase.IDLE]
