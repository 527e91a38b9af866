"""One snapshot per screen at 120x40 and at 80x24 (the smallest size every screen must be
usable at), the Chat screen while a reply streams, and the keys screen (?), on fixed data:
no model is loaded (the chat engine is a stand-in with a fixed LoadInfo and token count), GPU
data is a recorded H100 trace, the clock, the disk's free space and the fit device are fixed,
and cursors do not blink.

Update after an intended change: ``pytest tests/snapshots --snapshot-update``; the README's
screenshots (docs/screenshots/) are these files, copied by ``tests/snapshots/export.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input

from llcuda_tui.core.bench import BenchStore, StoredRun
from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.conversations import ChatSettings
from llcuda_tui.core.engine import LoadInfo
from llcuda_tui.core.store import ModelChoice, Store
from tests.tui.conftest import h100_sampler, make_app, wait_for

pytestmark = pytest.mark.timeout(120)
SIZES = [pytest.param((120, 40), id="120x40"), pytest.param((80, 24), id="80x24")]
GIB = 2**30

REPLY = """A **GGUF** file is a single-file model format used by llama.cpp:

- the weights, quantized (here `Q4_1`: 4-bit blocks with a scale and a minimum)
- the tokenizer and the chat template
- metadata: architecture, context length, layer count

```python
from llcuda_tui.core.gguf import read_summary
print(read_summary([path]).quant)
```"""
RECORD = {
    "prompt_tokens": 38,
    "generated_tokens": 96,
    "ttft_s": 0.061,
    "prefill_s": 0.05,
    "decode_s": 1.21,
    "prefill_tokens_per_s": 760.0,
    "decode_tokens_per_s": 78.5,
    "total_s": 1.28,
    "stop_reason": "eos",
    "prompt_tokens_evaluated": 38,
    "model_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "backend": "CPU",
    "n_gpu_layers": 0,
    "n_ctx": 4096,
}


class StandInEngine:
    """What the Chat screen reads of an engine, with fixed values (no model is loaded)."""

    info = LoadInfo(
        model_path="SmolLM2-135M-Instruct.Q4_1.gguf",
        model_desc="llama ?B Q4_1",
        architecture="llama",
        n_params=134_515_008,
        model_size_bytes=98_325_024,
        n_layers=30,
        n_layers_offloaded=0,
        n_vocab=49152,
        n_ctx_train=8192,
        backend="CPU",
        load_time_s=0.21,
        n_ctx=4096,
        n_batch=512,
        n_ubatch=512,
        n_threads=2,
        flash_attn=False,
        backend_sampling=False,
        type_k="f16",
        type_v="f16",
        chat_template="gguf",
        llama_cpp_python="0.3.36",
        n_gpu_layers=0,
    )

    def count_tokens(self, request: Any) -> int:
        return sum(4 + len(m["content"].split()) * 4 // 3 for m in request.messages)

    def cancel(self) -> None:
        return None

    def close(self) -> None:
        return None


def no_blink(app: Any) -> None:
    """Cursors drawn steadily. Call it before the text under a cursor changes: TextArea's line
    cache key leaves ``cursor_blink`` out, so a line drawn in the blink's off phase was reused
    without its cursor after the blink stopped (the chat snapshot had or lacked the cursor by
    when it was taken)."""
    for widget in app.screen.query("Input, TextArea"):
        widget.cursor_blink = False  # type: ignore[attr-defined]


async def settled(pilot: Any, state: Any, quiet: int = 10) -> None:
    """Until ``state()`` is the same ``quiet`` pauses in a row (a second): at 80x24 the
    transcript scrolls, and its scrollbar was drawn while the reply's Markdown was still being
    laid out (the thumb's size changed from run to run). A quarter of a second was not enough
    on a loaded machine: the Markdown's blocks are laid out over several refreshes."""
    seen, same = state(), 0
    while same < quiet:
        await pilot.pause(0.1)
        now = state()
        same = same + 1 if now == seen else 0
        seen = now


@pytest.fixture()
def fixed_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    usage = shutil._ntuple_diskusage(1000 * GIB, 400 * GIB, 600 * GIB)  # type: ignore[attr-defined]
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage)


@pytest.mark.parametrize("size", SIZES)
def test_chat_screen(
    size: tuple[int, int], snap_compare: Any, settings: Settings, smollm_path: Path
) -> None:
    choice = ModelChoice(
        "smollm2-135m-instruct",
        smollm_path,
        RECORD["model_sha256"],
        "Q4_1",
        smollm_path.stat().st_size,
        "starter",
    )
    app = make_app(settings, engine=StandInEngine(), engine_choice=choice)
    store = app.conversations
    other = store.create(title="Rust lifetimes, briefly")
    store.add_message(other.id, "user", "Explain Rust lifetimes in two sentences.")
    conv = store.create(
        model="smollm2-135m-instruct", settings=ChatSettings(temperature=0.2, max_tokens=256)
    )
    store.add_message(conv.id, "user", "What is a GGUF file?")
    store.add_message(conv.id, "assistant", REPLY, model="smollm2-135m-instruct", record=RECORD)

    async def ready(pilot: Any) -> None:
        chat = app.screen
        await wait_for(pilot, lambda: chat.choices and chat.plan is not None, what="ready")
        no_blink(app)
        before = chat.plan.history_tokens
        chat.prompt.value = "And how is it different\nfrom safetensors?"
        await wait_for(pilot, lambda: chat.plan.history_tokens > before, what="recount")
        state = lambda: (chat.transcript.virtual_size, chat.transcript.scroll_y)  # noqa: E731
        await settled(pilot, state)
        # the scrollbar repainted from the settled state: its last paint could come from an
        # earlier layout (the same scroll state and text, the thumb a fraction of a row short of
        # the bottom); the stored snapshot had such a stale thumb, and matched only sometimes
        chat.transcript.vertical_scrollbar.refresh()
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=size, run_before=ready)


STREAMED = (
    "Both hold a model's weights. **safetensors** stores tensors only, safely (no code runs "
    "on load); the tokenizer and the config are files beside it.\n\nGGUF puts the weights, "
    "quantized, the tokenizer and the chat template in one file that llama.cpp maps into "
    "memory, so a model is one download and"
)


@pytest.mark.parametrize("size", SIZES)
def test_chat_screen_streaming(
    size: tuple[int, int], snap_compare: Any, settings: Settings, smollm_path: Path
) -> None:
    """A reply while it streams: its own turn, the conversation's last, with its progress
    (the text is appended as the drain timer appends it; no generation runs)."""
    choice = ModelChoice(
        "smollm2-135m-instruct",
        smollm_path,
        RECORD["model_sha256"],
        "Q4_1",
        smollm_path.stat().st_size,
        "starter",
    )
    app = make_app(settings, engine=StandInEngine(), engine_choice=choice)
    store = app.conversations
    conv = store.create(
        model="smollm2-135m-instruct", settings=ChatSettings(temperature=0.2, max_tokens=256)
    )
    store.add_message(conv.id, "user", "What is a GGUF file?")
    store.add_message(conv.id, "assistant", REPLY, model="smollm2-135m-instruct", record=RECORD)
    store.add_message(conv.id, "user", "And how is it different from safetensors?")

    async def ready(pilot: Any) -> None:
        chat = app.screen
        await wait_for(pilot, lambda: chat.choices and chat.plan is not None, what="ready")
        no_blink(app)
        turn = chat.transcript.add_streaming("smollm2-135m-instruct")
        chat.transcript.anchor()
        await pilot.pause()
        for i in range(0, len(STREAMED), 40):  # in batches, as the drain timer appends
            turn.append(STREAMED[i : i + 40])
            await pilot.pause()
        turn.show_progress("61 tokens · 78.5 t/s · Esc stops")
        state = lambda: (chat.transcript.virtual_size, chat.transcript.scroll_y)  # noqa: E731
        await settled(pilot, state)
        chat.transcript.vertical_scrollbar.refresh()
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES)
def test_models_screen(
    size: tuple[int, int], snap_compare: Any, settings: Settings, tiny_gguf: Path, fixed_disk: None
) -> None:
    store = Store(Paths.from_env())
    entry = store.import_path(tiny_gguf, name="acme/tiny-llama:F32")
    # one model under two names (importing twice gave one only when both imports fell in the
    # same second: the manifest records its creation time)
    store.publish(entry.manifest, ["tiny-llama"])
    store.set_pinned("acme/tiny-llama:F32", True)
    app = make_app(settings, start_screen="models")

    async def ready(pilot: Any) -> None:
        screen = app.screen
        await wait_for(pilot, lambda: len(screen.entries) == 2, what="store listing")
        await wait_for(pilot, lambda: "fit" in str(screen.query_one("#detail").render()))
        await wait_for(pilot, lambda: not screen.workers, what="workers done")
        # Textual 8's DataTable keeps rows painted before it measured their cells (on idle)
        # in its render cache; under load that painted the table with header-wide columns
        table = screen.query_one("#store-table", DataTable)
        names = table.ordered_columns[0]
        await wait_for(pilot, lambda: names.content_width >= 19, what="column widths")
        table.notify_style_update()
        screen.query_one("#repo", Input).value = "bartowski/SmolLM2-135M-Instruct-GGUF"
        no_blink(app)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES)
def test_gpu_screen(size: tuple[int, int], snap_compare: Any, settings: Settings) -> None:
    app = make_app(settings, gpu_sampler=h100_sampler(), start_screen="gpu")

    async def ready(pilot: Any) -> None:
        await wait_for(pilot, lambda: app.screen.query("GpuPanel"), what="panel")
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES)
def test_bench_screen(size: tuple[int, int], snap_compare: Any, settings: Settings) -> None:
    with BenchStore.open(settings.paths) as bench:
        for run in bench_runs():
            bench.save_run(run)
    app = make_app(settings, gpu_sampler=h100_sampler(), start_screen="bench")

    async def ready(pilot: Any) -> None:
        screen = app.screen
        await wait_for(pilot, lambda: screen.choices, what="models")
        screen.show_run(screen.load_run(2))
        screen.progress.values = [112.4, 118.0, 117.1, 118.6, 117.9]
        screen.poll()
        screen.set_status("run 2 done: pp512 7981.2 t/s, tg128 117.9 t/s")
        no_blink(app)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(size: tuple[int, int], snap_compare: Any, settings: Settings) -> None:
    """The keys of every screen, opened with ? on the GPU screen (its keys come first)."""
    app = make_app(settings, gpu_sampler=h100_sampler(), start_screen="gpu")

    async def ready(pilot: Any) -> None:
        await wait_for(pilot, lambda: app.screen.query("GpuPanel"), what="panel")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: app.screen.query("#help-keys"), what="help screen")
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=ready)


def bench_runs() -> list[StoredRun]:
    def row(test: str, ts: list[float], ngl: int, flags: list[str]) -> dict[str, Any]:
        mean = sum(ts) / len(ts)
        sd = (sum((x - mean) ** 2 for x in ts) / (len(ts) - 1)) ** 0.5
        return {
            "test": test,
            "model_name": "smollm2-135m-instruct",
            "model_filename": "SmolLM2-135M-Instruct.Q4_1.gguf",
            "n_gpu_layers": ngl,
            "n_batch": 2048,
            "n_ubatch": 512,
            "flash_attn": True,
            "type_k": "f16",
            "type_v": "f16",
            "avg_ts": mean,
            "stddev_ts": sd,
            "samples_ts": ts,
            "j_per_token": 0.0041 if test.startswith("tg") else 0.00021,
            "validity_flags": flags,
            "backends": "CUDA",
        }

    env = {"gpu_info": "NVIDIA H100 80GB HBM3", "build_commit": "b1c2d3e"}
    first = StoredRun(
        "throughput",
        env,
        {},
        created_at="2026-01-01T09:00:00+0000",
        command="llcuda tui",
        results=[
            row("pp512", [7702.0, 7811.5, 7755.2], -1, []),
            row("tg128", [111.0, 112.2, 110.9], -1, []),
        ],
    )
    second = StoredRun(
        "throughput",
        env,
        {},
        created_at="2026-01-01T09:05:00+0000",
        command="llcuda tui",
        results=[
            row("pp512", [7950.1, 8003.7, 7990.4, 7975.0, 7987.0], -1, []),
            row("tg128", [112.4, 118.0, 117.1, 118.6, 117.9], -1, ["power_capped"]),
        ],
    )
    return [first, second]
