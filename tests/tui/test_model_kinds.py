"""A base (pretrained) model is marked as such in the Chat picker (issue #16): it continues
text instead of answering, and the picker said nothing about it."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Select

from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.store import Store, model_choices
from tests.gguf_factory import write_tiny_llama
from tests.tui.conftest import SIZE, make_app, wait_for

pytestmark = pytest.mark.timeout(120)


def options(select: Select) -> dict[str, str]:  # type: ignore[type-arg]
    """{value: label} of a Select's options."""
    return {str(value): str(label) for label, value in select._options if value is not Select.NULL}


@pytest.mark.asyncio
async def test_the_chat_picker_marks_base_models(
    settings: Settings, smollm_path: Path, gemma_path: Path, tmp_path: Path
) -> None:
    store = Store(Paths.from_env())
    chat_model = write_tiny_llama(tmp_path / "tiny-chat-instruct.gguf", chat_template="{{ x }}")
    store.import_path(chat_model, name="tiny-chat-instruct")
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.screen
        want = {"smollm2-135m-instruct", "gemma-3-270m", "tiny-chat-instruct"}
        await wait_for(pilot, lambda: want <= set(chat.choices), 60, "the models listed")
        labels = options(chat.query_one("#model", Select))
        assert "base" in labels["gemma-3-270m"]  # the starter says it is one
        assert "base" not in labels["smollm2-135m-instruct"]
        assert "base" not in labels["tiny-chat-instruct"]


def test_base_is_told_by_the_starter_the_template_and_the_name(
    settings: Settings, tmp_path: Path
) -> None:
    store = Store(Paths.from_env())
    store.import_path(write_tiny_llama(tmp_path / "plain.gguf"), name="plain")  # no template
    store.import_path(
        write_tiny_llama(tmp_path / "m-base.gguf", chat_template="{{ x }}"), name="m-base"
    )
    store.import_path(
        write_tiny_llama(tmp_path / "m-it.gguf", chat_template="{{ x }}"), name="m-it"
    )
    kinds = {c.name: c.is_base for c in model_choices(settings.paths, include_starters=False)}
    assert kinds == {"plain": True, "m-base": True, "m-it": False}
