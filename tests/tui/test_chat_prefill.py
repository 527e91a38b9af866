"""The Chat screen during a long prefill (the starter model on the CPU, through the engine
process): the reply's turn in the transcript shows the prompt's progress, and Esc stops it
mid-prefill without leaving an empty assistant turn (#16 item 5)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llcuda_tui.core.chat import Phase
from llcuda_tui.core.config import Settings
from llcuda_tui.screens.chat.transcript import LiveReply
from llcuda_tui.widgets import ChatMessage
from tests.tui.conftest import SIZE, make_app, wait_for
from tests.tui.test_chat import chat_settings, focused, load_smollm

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(180)]
LONG_PROMPT = "Summarize this: " + "the river carries stones down to the sea, " * 122
"""About 1,100 tokens with SmolLM2's chat template: seconds of prefill on this CPU."""
PROGRESS = re.compile(r"^prefilling ([\d,]+) / ([\d,]+) tokens · Esc stops$")


async def test_prefill_progress_is_shown_and_esc_stops_it_without_an_empty_turn(
    settings: Settings, smollm_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[str] = []
    original_tick = LiveReply.tick

    def recording_tick(self: LiveReply, reply) -> bool:  # type: ignore[no-untyped-def]
        done = original_tick(self, reply)
        subtitle = self.readout
        if not shown or shown[-1] != subtitle:
            shown.append(subtitle)
        return done

    monkeypatch.setattr(LiveReply, "tick", recording_tick)
    app = make_app(chat_settings(settings, max_tokens=24, n_ctx=2048))
    async with app.run_test(size=SIZE) as pilot:
        chat = await load_smollm(pilot, app)
        session = chat.session
        prompt = chat.prompt
        prompt.value = LONG_PROMPT
        await focused(pilot, prompt)
        await pilot.press("enter")

        def mid_prefill() -> bool:
            # in the record line of the reply's turn, the transcript's last one
            turns = list(chat.transcript.children)
            turn = turns[-1] if turns else None  # nothing before the user's turn shows
            if not isinstance(turn, ChatMessage) or turn.stream is None:
                return False
            match = PROGRESS.match(str(turn.query_one(".record").render()))
            return match is not None and 0 < int(match[1].replace(",", "")) < int(
                match[2].replace(",", "")
            )

        await wait_for(pilot, mid_prefill, 120, "prefill progress in the live reply")
        assert session.phase is Phase.STREAMING and session.reply is not None
        assert session.reply.tokens == 0
        await pilot.press("escape")
        await wait_for(pilot, lambda: session.reply is None, 60, "the reply to stop")
        record = session.last_record
        assert record is not None and record.stop_reason == "cancelled"
        # it stopped mid-prefill: part of the prompt decoded, no token
        assert record.generated_tokens == 0
        assert 0 < record.prompt_tokens_evaluated < record.prompt_tokens
        # the history keeps the user's turn, whole, and no empty assistant turn after it
        conv = session.conversation
        assert conv is not None
        messages = app.conversations.messages(conv.id)
        assert [m.role for m in messages] == ["user"]
        assert messages[0].content == LONG_PROMPT.strip()
        assert [w.role for w in chat.query(ChatMessage)] == ["user"]
        assert "nothing saved" in str(chat.query_one("#engine-status").render())
    # the readouts rose, each one a progress line, before any speed readout
    counts = [int(m[1].replace(",", "")) for s in shown if (m := PROGRESS.match(s))]
    assert counts and counts == sorted(counts)
