"""The load settings dialog: speculative decoding for the Chat screen's next Load (off,
prompt lookup, or a draft model picked from the store) and how many tokens to draft.

What it edits is a :class:`SpecChoice`, remembered in config.toml's ``[tui]`` (as the theme
is); :meth:`SpecChoice.settings` turns it into the engine's ``SpecSettings`` at load time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Select, Static

from llcuda_tui.widgets import KeyFooter

if TYPE_CHECKING:
    from llcuda_tui.core.config import TuiDefaults
    from llcuda_tui.core.engine import RunRecord, SpecSettings
    from llcuda_tui.core.store import ModelChoice

MODES = (
    ("speculative decoding off", ""),
    ("prompt lookup (ngram): drafts from the conversation itself, no second model", "ngram"),
    ("draft model: a small model of the same vocabulary drafts", "draft"),
)
MODE_NAMES = {"": "off", "ngram": "prompt lookup", "draft": "draft model"}


@dataclass(frozen=True)
class SpecChoice:
    """Speculative decoding as the Chat screen loads models with it."""

    mode: str = ""
    """Empty = off, ``ngram`` (prompt lookup) or ``draft``."""
    draft_model: str = ""
    """The draft's name in the model picker (``draft``)."""
    draft_max: int = 16

    @classmethod
    def from_tui(cls, tui: TuiDefaults) -> SpecChoice:
        return cls(tui.speculative, tui.draft_model, tui.draft_max)

    @property
    def short(self) -> str:
        """The model bar's button: ``spec off``, ``lookup``, ``draft``."""
        return {"ngram": "lookup", "draft": "draft"}.get(self.mode, "spec off")

    def describe(self) -> str:
        """``prompt lookup, up to 16 drafted`` / ``draft model NAME, ...`` / ``off``."""
        if not self.mode:
            return "off"
        what = MODE_NAMES[self.mode] + (f" {self.draft_model}" if self.mode == "draft" else "")
        return f"{what}, up to {self.draft_max} drafted"

    def settings(self, draft_path: Path | None, n_gpu_layers: int) -> SpecSettings | None:
        """The engine's settings (None: off). The draft goes where the target goes: on the
        CPU with it (``n_gpu_layers`` 0), else all of it on the GPU (it is the small one)."""
        from llcuda_tui.core.engine import SpecSettings

        if not self.mode:
            return None
        return SpecSettings(
            mode=self.mode,
            draft_model=draft_path if self.mode == "draft" else None,
            draft_max=self.draft_max,
            draft_n_gpu_layers=0 if n_gpu_layers == 0 else -1,
        )


class LoadSettingsDialog(ModalScreen[SpecChoice | None]):
    """Edit the speculative decoding of the next Load; Enter in a field or Ctrl+S saves,
    Esc cancels."""

    DEFAULT_CSS = """
    LoadSettingsDialog { align: center middle; }
    LoadSettingsDialog > Vertical {
        width: 80; max-width: 100%; height: auto; max-height: 100%; padding: 0 2;
        border: thick $primary; background: $surface;
    }
    LoadSettingsDialog .title { text-style: bold; }
    LoadSettingsDialog .hint { color: $text-muted; height: auto; margin-bottom: 1; }
    LoadSettingsDialog Input { border-title-color: $text-muted; }
    LoadSettingsDialog .row { height: 3; }
    LoadSettingsDialog #spec-draft { width: 1fr; }
    LoadSettingsDialog #spec-draft-max { width: 16; }
    LoadSettingsDialog #spec-error { color: $error; height: auto; }
    LoadSettingsDialog .buttons { height: auto; align-horizontal: right; }
    LoadSettingsDialog Button { margin-left: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "save", "Save", tooltip="Enter in a field saves too"),
    ]

    def __init__(self, choice: SpecChoice, drafts: list[ModelChoice]) -> None:
        super().__init__()
        self.choice = choice
        self.drafts = drafts
        """The models a draft can be (this machine's, not a worker's)."""

    def compose(self) -> ComposeResult:
        names = [d.name for d in self.drafts]
        draft = self.choice.draft_model
        # no labels above the fields: at 80x24 they pushed the buttons off the screen (the
        # options and the prompt say what each is; a Select shows no border title)
        mode = Select(MODES, value=self.choice.mode, allow_blank=False, id="spec-mode")
        picker = Select(
            [(f"{d.name} {d.quant}", d.name) for d in self.drafts],
            prompt="draft model (the chat model's vocabulary)",
            value=draft if draft in names else Select.NULL,
            id="spec-draft",
        )
        draft_max = Input(str(self.choice.draft_max), id="spec-draft-max", type="integer")
        draft_max.border_title, draft_max.tooltip = "draft max", "most tokens drafted per step"
        with Vertical():
            yield Static("Load settings: speculative decoding", classes="title")
            yield Static(
                "A drafter guesses the next tokens and the model checks them in one step; the "
                "reply stays the same. Applies at the next Load, to greedy replies only "
                "(temperature 0 in the conversation's Settings, Ctrl+O).",
                classes="hint",
            )
            yield mode
            with Horizontal(classes="row"):
                yield picker
                yield draft_max
            yield Static("", id="spec-error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="spec-cancel")
                yield Button("Save", id="spec-save", variant="primary")
        yield KeyFooter(app_keys=False)

    def on_mount(self) -> None:
        self.show_draft_picker()

    @on(Select.Changed, "#spec-mode")
    def show_draft_picker(self) -> None:
        """The draft picker is there for the draft mode only."""
        draft = self.query_one("#spec-mode", Select).value == "draft"
        self.query_one("#spec-draft", Select).disabled = not draft

    @on(Input.Submitted)
    def field_submitted(self) -> None:
        self.action_save()

    @on(Button.Pressed)
    def button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "spec-save":
            self.action_save()
        else:
            self.dismiss(None)

    def action_save(self) -> None:
        mode = str(self.query_one("#spec-mode", Select).value)
        draft = self.query_one("#spec-draft", Select).value
        error = self.query_one("#spec-error", Static)
        try:
            draft_max = int(self.query_one("#spec-draft-max", Input).value)
        except ValueError:
            draft_max = 0
        if not 1 <= draft_max <= 256:
            error.update("draft max must be a number from 1 to 256")
            return
        if mode == "draft" and not isinstance(draft, str):
            error.update("pick the draft model (or choose prompt lookup, which needs none)")
            return
        name = draft if isinstance(draft, str) and mode == "draft" else self.choice.draft_model
        self.dismiss(SpecChoice(mode, name, draft_max))


def spec_status(engine: object) -> str:
    """`` · speculative: ngram, up to 16 drafted`` for an engine loaded here with speculative
    decoding (its config says so: a ProcessEngine's), else empty."""
    spec = getattr(getattr(engine, "config", None), "speculative", None)
    if spec is None:
        return ""
    return f" · speculative: {spec.mode}, up to {spec.draft_max} drafted"


def spec_note(engine: object, record: RunRecord) -> str:
    """What speculation did in a reply, for the status line: ``, 30/40 drafts accepted``; for
    an engine loaded with it whose reply ran without (it sampled), why; else empty."""
    if record.drafted_tokens:
        return f", {record.accepted_tokens}/{record.drafted_tokens} drafts accepted"
    if spec_status(engine) and not record.spec_mode:
        return ", no drafts: speculation runs at temperature 0 only (Settings, Ctrl+O)"
    return ""
