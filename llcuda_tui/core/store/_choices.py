"""What the TUI offers to load: the store's models, the starter models not imported yet, and
what a worker serves, each as a :class:`ModelChoice` (quant, size, GGUF summary)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from llcuda_tui.core.config import Paths
from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.gguf import GgufSummary, read_summary
from llcuda_tui.core.store._records import ModelEntry
from llcuda_tui.core.store._starter import STARTERS, installed_starters
from llcuda_tui.core.store._store import list_models

DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"
_CHAT_NAME = re.compile(r"(instruct|chat|[-_.]it\b|[-_.]sft\b|rlhf|dpo)")
_BASE_NAME = re.compile(r"[-_. ]base\b|\bpretrained?\b|[-_.]pt\b")


@dataclass(frozen=True)
class ModelChoice:
    """A model the user can pick: a store entry, a starter model or a worker's model."""

    name: str
    path: Path
    sha256: str | None
    quant: str
    size_bytes: int
    source: str
    """'store', 'starter' or 'worker'."""
    summary: GgufSummary | None = None
    """Its GGUF summary (None when the header could not be read)."""
    pinned: bool = False
    last_used: float | None = None
    url: str | None = None
    """The worker serving it ('worker' choices)."""
    served_model: str | None = None
    """The model's name on a worker of many models (what its requests send); None for a
    worker's one model."""
    state: str | None = None
    """On a worker of many models: 'loaded', 'loading', 'unloading' or 'on_disk' when listed."""

    @property
    def is_base(self) -> bool:
        """A base (pretrained) model rather than a chat one: it continues the text it is given
        instead of answering. A starter says so; otherwise a GGUF without a chat template, or
        one named '...-base' (and not '...-instruct', '-chat', '-it')."""
        starter = STARTERS.get(self.name)
        if starter is not None:
            return starter.base
        if self.source == "worker" or self.summary is None:
            return False  # nothing to tell by
        names = f"{self.name} {self.summary.name} {self.path.name}".lower()
        if _CHAT_NAME.search(names):
            return False
        return not self.summary.has_chat_template or _BASE_NAME.search(names) is not None


class ServedModel(Protocol):
    """What a worker says it serves (a ``WorkerInfo``)."""

    @property
    def url(self) -> str: ...

    @property
    def model(self) -> str: ...


def worker_choice(remote: ServedModel) -> ModelChoice:
    """The choice for what a worker serves (its ``WorkerInfo``): 'MODEL @ URL'."""
    model = remote.model or "model"
    return ModelChoice(f"{model} @ {remote.url}", Path(model), None, "?", 0, "worker",
                       url=remote.url)  # fmt: skip


def worker_model_choices(url: str, states: dict[str, str]) -> list[ModelChoice]:
    """One choice per model a worker of many models serves ('NAME @ URL'), ``states`` by
    name as its ``/llcuda/v1/models`` gives them."""
    return [
        ModelChoice(
            f"{name} @ {url}",
            Path(name),
            None,
            "?",
            0,
            "worker",
            url=url,
            served_model=name,
            state=state,
        )
        for name, state in states.items()
    ]


def model_choices(paths: Paths, include_starters: bool = True) -> list[ModelChoice]:
    """The store's models, then the starter models that are not in the store yet."""
    out = [choice_from_entry(e) for e in list_models(paths)]
    if include_starters:
        names = {c.name for c in out}
        for name, path in installed_starters(paths).items():
            if name in names:
                continue
            summary = _summary(path)
            quant = summary.quant if summary is not None else "?"
            out.append(
                ModelChoice(
                    name,
                    path,
                    STARTERS[name].sha256,
                    quant or "?",
                    path.stat().st_size,
                    "starter",
                    summary,
                )
            )
    return out


def choice_from_entry(e: ModelEntry) -> ModelChoice:
    """A store entry as a ModelChoice."""
    m = e.manifest
    return ModelChoice(
        e.name,
        e.path,
        e.sha256,
        m.quant or "?",
        m.size,
        "store",
        m.summary,
        e.state.pinned,
        e.state.last_used,
    )


def _summary(path: Path) -> GgufSummary | None:
    try:
        return read_summary([path])
    except (LlcudaError, OSError, ValueError):
        return None


def default_choice(choices: list[ModelChoice], preferred: str | None = None) -> ModelChoice | None:
    """``preferred`` when listed; else the most recently used store model that is not a
    starter; else the starter chat model."""
    by_name = {c.name: c for c in choices}
    if preferred and preferred in by_name:
        return by_name[preferred]
    own = [c for c in choices if c.name not in STARTERS]
    if own:
        return max(own, key=lambda c: (c.last_used or 0.0, c.name))
    return by_name.get(DEFAULT_CHAT_MODEL) or (choices[0] if choices else None)
