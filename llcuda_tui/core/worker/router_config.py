"""What a worker of many models is told (``llcuda serve`` with no ``-m``, or several): the models
it serves, their aliases, how many may stay loaded and in how much memory, and each request's
``keep_alive`` (Ollama's semantics). :mod:`.router` acts on them."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.worker import protocol as P

if TYPE_CHECKING:
    from llcuda_tui.core.engine import EngineConfig

INSUFFICIENT_MEMORY = 507
"""The status of a model that cannot fit the worker's budget even with every other model
unloaded (WebDAV's "Insufficient Storage", as the issue asked; code ``insufficient_memory``)."""

STORE_CHECK_S = 2.0
"""How often the loaded models are checked against the store (removed, or re-pointed)."""

LOADED, LOADING, UNLOADING, ON_DISK = "loaded", "loading", "unloading", "on_disk"


@dataclass(frozen=True)
class CatalogModel:
    """A model named on the command line (``-m``, given more than once): served by its name."""

    name: str
    path: Path
    sha256: str | None = None


@dataclass(frozen=True)
class ModelsConfig:
    """How a worker serving many models decides what stays loaded."""

    catalog: tuple[CatalogModel, ...] = ()
    """The models served (``-m`` given several times); empty: every model of the store."""
    aliases: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Names clients may use for a model (``gpt-4o-mini`` -> a store name); ``[models.aliases]``
    in the config and ``--alias``. An alias wins over a store name it shadows."""
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    """Each model's own load settings by name (or alias): keys of ``config.MODEL_SETTINGS``,
    checked (``check_model_settings``); what is not given is the worker's."""
    models_max: int = 0
    """Most models loaded at once; 0: no cap (the memory budget decides)."""
    memory_budget_bytes: int | None = None
    """Bytes the loaded models' fit estimates may add up to; None: free VRAM when the worker
    starts (less CUDA's reserve), or available RAM on the CPU."""
    idle_unload_s: float | None = None
    """An idle model is unloaded after this long unless its last request's ``keep_alive``
    said otherwise; None: kept until evicted."""
    store_check_s: float = STORE_CHECK_S


@dataclass(frozen=True)
class Budget:
    """Memory the loaded models may use, by their fit estimates."""

    bytes: int
    kind: str
    """'VRAM' or 'RAM'."""


def settings_by_model(config: ModelsConfig) -> dict[str, dict[str, Any]]:
    """Each model's own settings by its served name: those given for an alias are its
    model's; those given by the model's own name win over them."""
    out: dict[str, dict[str, Any]] = {}
    by_alias = [k for k in config.settings if k in config.aliases]
    for key in by_alias + [k for k in config.settings if k not in config.aliases]:
        out.setdefault(config.aliases.get(key, key), {}).update(config.settings[key])
    return out


SHOWN_SETTINGS = ("n_ctx", "n_gpu_layers", "n_batch", "flash_attn", "type_k", "type_v")


def shown_settings(engine: EngineConfig, parallel: int) -> dict[str, Any]:
    """What a model loads with, as ``/v1/models/{id}`` and ``/llcuda/v1/models`` show it."""
    return {k: getattr(engine, k) for k in SHOWN_SETTINGS} | {"parallel": parallel}


def parse_keep_alive(value: Any) -> float | None:
    """Ollama's ``keep_alive``: seconds (a number), a duration ("5m", "1h30m", "500ms", "-1"),
    0 = unload after the reply, negative = keep forever (``math.inf``); None when not given."""
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _duration(value.strip())
    if seconds is None or math.isnan(seconds):
        raise P.RequestError(
            "'keep_alive' must be seconds or a duration like '5m' (0: unload after the reply; "
            "negative: keep loaded)",
            param="keep_alive",
        )
    return math.inf if seconds < 0 else seconds


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def _duration(text: str) -> float | None:
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    try:
        return sign * float(body)
    except ValueError:
        pass
    parts = _DURATION.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        return None
    return sign * sum(float(n) * _UNITS[u] for n, u in parts)
