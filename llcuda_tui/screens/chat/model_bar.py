"""The model bar: the model picker (each model with its fit on this machine) and the load
settings (GPU layers, context, and a button for speculative decoding's dialog). It shows and
reads; the screen's workers list (:func:`list_choices`) and load (:func:`load_choice`), off
the UI thread."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Input, Select

from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.screens.chat.load_dialog import SpecChoice
from llcuda_tui.screens.chat.spec_button import SpecButton

if TYPE_CHECKING:
    from llcuda_tui.core.config import Settings
    from llcuda_tui.core.engine import ProcessEngine
    from llcuda_tui.core.fit import DeviceMemory
    from llcuda_tui.core.store import FitBadge, ModelChoice


class LoadProgress:
    """Written by the engine thread during a load, read by the UI timer."""

    fraction = 0.0

    def set(self, fraction: float) -> None:
        self.fraction = fraction


def list_choices(
    settings: Settings, device: DeviceMemory | None, ngl: int, ctx: int, draft: str | None = None
) -> tuple[list[ModelChoice], dict[str, FitBadge]]:
    """This machine's pickable models and their fit badges at ``ngl``/``ctx`` (blocks: it
    reads the store and the GGUF headers); ``draft``: the name of a speculative draft model
    loaded beside each, whose memory the badges count. Raises ``LlcudaError``."""
    from llcuda_tui.core.store import fit_badge, model_choices

    e = settings.engine
    choices = model_choices(settings.paths)
    beside = next((c.summary for c in choices if c.name == draft), None)
    return choices, {
        c.name: fit_badge(c, ctx, ngl, device, e.type_k, e.flash_attn, beside) for c in choices
    }


def _path_and_sha(choice: ModelChoice, settings: Settings) -> tuple[Path, str | None]:
    """Where ``choice``'s file is now (a store entry by its name: it may have been re-pulled)."""
    from llcuda_tui.core.store import resolve_name

    if choice.source == "store":
        found = resolve_name(choice.name, settings.paths)
        if found is not None:
            return found
    return choice.path, choice.sha256


def load_choice(
    choice: ModelChoice,
    settings: Settings,
    ngl: int,
    ctx: int,
    progress: LoadProgress,
    spec: SpecChoice | None = None,
    draft: ModelChoice | None = None,
) -> tuple[ProcessEngine, str]:
    """Load ``choice`` in an engine process (blocks), with ``spec``'s speculative decoding
    (``draft``: its draft model); the engine and the model's sha256. Raises ``LlcudaError``
    (a draft of another vocabulary: the engine's one line)."""
    from llcuda_tui.core.engine import EngineConfig, ProcessEngine
    from llcuda_tui.core.store import file_sha256

    path, sha256 = _path_and_sha(choice, settings)
    sha256 = sha256 or file_sha256(path)
    draft_path = _path_and_sha(draft, settings)[0] if draft is not None else None
    speculative = spec.settings(draft_path, ngl) if spec is not None else None
    config = EngineConfig.from_settings(
        path, settings, kv_states=True, n_gpu_layers=ngl, n_ctx=ctx, model_sha256=sha256,
        speculative=speculative,
    )  # fmt: skip
    # in a child process: a repaint here cannot delay its tokens (engine/_process.py)
    return ProcessEngine.load(config, on_progress=progress.set), sha256


class ModelBar(Horizontal):
    """``model [picker] ngl [n] ctx [n] [spec] [Load]``; the buttons' ``Button.Pressed`` and
    the fields' ``Input.Changed`` reach the screen."""

    def __init__(
        self,
        n_gpu_layers: int,
        n_ctx: int,
        spec: SpecChoice | None = None,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._defaults = (n_gpu_layers, n_ctx)
        self._spec = spec
        self.choices: dict[str, ModelChoice] = {}
        """The pickable models by name, as last listed."""
        self.badges: dict[str, FitBadge] = {}
        self._next_pick: str | None = None

    def compose(self) -> ComposeResult:
        ngl, ctx = self._defaults
        yield Select([], prompt="model", id="model")
        # named by their border titles: labels beside them took 8 of the 54 columns left at
        # 80x24, and the picker showed "s… ▼"
        for field_id, value, what in (("ngl", ngl, "GPU layers (-1 all)"), ("ctx", ctx, "context")):
            field = Input(str(value), id=field_id, type="integer", tooltip=what)
            field.border_title = field_id
            yield field
        yield SpecButton(self._spec or SpecChoice(), self.local_choices, id="spec")
        yield Button("Load", id="load", variant="primary")

    @property
    def spec(self) -> SpecChoice:
        """Speculative decoding of the next Load (the spec button's; remembered)."""
        return self.query_one(SpecButton).spec

    def local_choices(self) -> list[ModelChoice]:
        """The listed models of this machine (what a draft model can be)."""
        return [c for c in self.choices.values() if c.source != "worker"]

    def spec_and_draft(self) -> tuple[SpecChoice, ModelChoice | None]:
        """What the next Load uses for speculative decoding, and its draft model (draft mode).
        Raises ``UserInputError`` when that draft is not a listed model of this machine."""
        from llcuda_tui.core.errors import UserInputError

        spec = self.spec
        if spec.mode != "draft":
            return spec, None
        draft = self.choices.get(spec.draft_model)
        if draft is None or draft.source == "worker":
            raise UserInputError(
                f"the draft model {spec.draft_model or '(none)'} is not on this machine: pick "
                "another in the load settings (the spec button, or F8)"
            )
        return spec, draft

    def load_settings(self) -> tuple[int, int]:
        """(GPU layers, context) as typed; the defaults for a field that is not a number."""
        return self._int_field("ngl", self._defaults[0]), self._int_field("ctx", self._defaults[1])

    def _int_field(self, field_id: str, default: int) -> int:
        try:
            return int(self.query_one(f"#{field_id}", Input).value)
        except ValueError:
            return default

    @property
    def picked_name(self) -> str | None:
        value = self.query_one("#model", Select).value
        return value if isinstance(value, str) else None

    def picked(self) -> ModelChoice | None:
        """The picked model, if it is one of the listed choices."""
        name = self.picked_name
        return self.choices.get(name) if name is not None else None

    def pick(self, name: str) -> None:
        """Pick ``name`` when it is listed."""
        if name in self.choices:
            self.query_one("#model", Select).value = name

    def prefer(self, name: str) -> None:
        """Pick ``name`` now if it is listed, and at the next listing (a model just loaded,
        e.g. a worker's, which the next listing brings)."""
        if name in self.choices:
            self.pick(name)
        else:
            self._next_pick = name

    def show_choices(
        self,
        choices: list[ModelChoice],
        badges: dict[str, FitBadge],
        loaded: str | None,
        fallback: str | None,
    ) -> ModelChoice | None:
        """List ``choices`` and pick (and return) the default: the one picked now (a new
        ctx or ngl relists the models: the pick must survive it, or Load loads the wrong
        model) unless a model was just loaded (:meth:`prefer`), else the ``loaded`` model,
        else ``fallback`` (the conversation's model), else core's :func:`default_choice`."""
        from llcuda_tui.core.store import default_choice  # loaded by then: models are listed

        self.choices = {c.name: c for c in choices}
        self.badges = badges
        select = self.query_one("#model", Select)
        preferred = self._next_pick or self.picked_name or loaded or fallback
        if self._next_pick in self.choices:  # a listing made before the load may lack it
            self._next_pick = None
        default = default_choice(choices, preferred)
        select.set_options([(self.choice_label(c), c.name) for c in choices])
        if default is not None:
            select.value = default.name
        return default

    def choice_label(self, c: ModelChoice) -> str:
        if c.source == "worker":
            state = f", {c.state.replace('_', ' ')}" if c.state else ""
            return f"{c.name} (worker{state})"
        badge = self.badges.get(c.name)
        base = " · base: continues text" if c.is_base else ""
        return (
            f"{c.name} {c.quant} {fmt_size(c.size_bytes)} ({badge.short if badge else '?'}){base}"
        )
