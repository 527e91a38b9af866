"""Experiment files: TOML, like the config, validated with one-line errors that name the key.

::

    name = "quants x flash attention"
    repetitions = 3
    [models]                       # stored names (or GGUF paths) ...
    names = ["smollm2-Q8_0"]
    # ... or one model and the quant types to make from it first (llcuda models quantize)
    source = "tiny-F16"
    quantize = ["Q8_0", "Q4_0"]
    allow_requantize = false
    [axes]                         # every combination is one cell (per model)
    n_gpu_layers = [99]
    n_ctx = [0]
    n_batch = [2048]
    n_ubatch = [512]
    flash_attn = ["off", "on"]
    type_k = ["f16"]
    type_v = ["f16"]
    threads = [0]
    concurrency = [1]
    [tests]
    pp = [512]                     # prompt processing, tokens
    tg = [128]                     # generation, tokens
    latency = { requests = 8, max_tokens = 64 }   # TTFT/ITL/E2E percentiles
    perplexity = { ctx = 512, chunks = 4 }
    energy = true
    [warmup]
    runs = 1                       # untimed repetitions before each test (0 or 1)
    [[cells]]                      # optional: only these cells (keys filter the product)
    flash_attn = "on"
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llcuda_tui.core.errors import UserInputError

AXES: dict[str, tuple[type, Any]] = {
    "n_gpu_layers": (int, -1),
    "n_ctx": (int, 0),
    "n_batch": (int, 2048),
    "n_ubatch": (int, 512),
    "flash_attn": (str, "auto"),
    "type_k": (str, "f16"),
    "type_v": (str, "f16"),
    "threads": (int, 0),
    "concurrency": (int, 1),
}
"""Axis name -> (value type, default when the file leaves the axis out)."""

_TOP = {"name", "repetitions", "models", "axes", "tests", "warmup", "cells"}
_MODELS = {"names", "source", "quantize", "allow_requantize"}
_TESTS = {"pp", "tg", "latency", "perplexity", "energy"}
_LATENCY = {"requests", "max_tokens"}
_PERPLEXITY = {"ctx", "chunks"}
_FLASH = ("auto", "on", "off")


class ExperimentFileError(UserInputError):
    """The experiment file is not valid (the message names the file and the key)."""


@dataclass(frozen=True)
class LatencyTest:
    requests: int = 8
    max_tokens: int = 64


@dataclass(frozen=True)
class PerplexityTest:
    ctx: int = 512
    chunks: int = 4


@dataclass(frozen=True)
class ExperimentSpec:
    """A parsed experiment: models x the cross product of ``axes`` (or the listed cells)."""

    name: str
    models: tuple[str, ...] = ()
    source: str | None = None
    quantize: tuple[str, ...] = ()
    allow_requantize: bool = False
    axes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    pp: tuple[int, ...] = (512,)
    tg: tuple[int, ...] = (128,)
    latency: LatencyTest | None = None
    perplexity: PerplexityTest | None = None
    energy: bool = True
    repetitions: int = 3
    warmup_runs: int = 1
    cells: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "models": list(self.models),
            "source": self.source,
            "quantize": list(self.quantize),
            "allow_requantize": self.allow_requantize,
            "axes": {k: list(v) for k, v in self.axes.items()},
            "pp": list(self.pp),
            "tg": list(self.tg),
            "latency": vars(self.latency) if self.latency else None,
            "perplexity": vars(self.perplexity) if self.perplexity else None,
            "energy": self.energy,
            "repetitions": self.repetitions,
            "warmup_runs": self.warmup_runs,
            "cells": [dict(c) for c in self.cells],
        }


@dataclass(frozen=True)
class Cell:
    """One point of the experiment: a model and one value per axis. ``key`` names it."""

    model: str
    settings: dict[str, Any]

    @property
    def key(self) -> str:
        parts = [f"model={self.model}"] + [f"{k}={self.settings[k]}" for k in sorted(self.settings)]
        return ";".join(parts)

    def label(self, axes: list[str]) -> str:
        """The model and the axes that vary in the experiment, e.g. 'tiny-Q8_0 fa=on'."""
        shown = [f"{_SHORT.get(a, a)}={self.settings[a]}" for a in axes if a in self.settings]
        return " ".join([self.model, *shown])


_SHORT = {"flash_attn": "fa", "n_gpu_layers": "ngl", "n_batch": "b", "n_ubatch": "ub"}


def load_experiment(path: Path) -> ExperimentSpec:
    """Parse and validate the experiment file ``path``."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ExperimentFileError(f"cannot read experiment file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentFileError(f"experiment file {path}: not valid TOML: {exc}") from None
    return parse_experiment(raw, str(path), default_name=Path(path).stem)


def parse_experiment(raw: dict[str, Any], where: str, default_name: str = "") -> ExperimentSpec:
    def bad(key: str, why: str) -> ExperimentFileError:
        return ExperimentFileError(f"experiment file {where}: key '{key}': {why}")

    def table(key: str, value: Any, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise bad(key, "must be a table")
        for k in value:
            if k not in allowed:
                raise bad(f"{key}.{k}", f"unknown key (known: {', '.join(sorted(allowed))})")
        return value

    def ints(key: str, value: Any, minimum: int) -> tuple[int, ...]:
        values = value if isinstance(value, list) else [value]
        if not values:
            raise bad(key, "must not be empty")
        for v in values:
            if not isinstance(v, int) or isinstance(v, bool):
                raise bad(key, f"must be an integer or a list of integers (got {v!r})")
            if v < minimum:
                raise bad(key, f"must be >= {minimum} (got {v})")
        return tuple(values)

    def count(key: str, value: Any, minimum: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise bad(key, f"must be an integer >= {minimum} (got {value!r})")
        return value

    table("(top level)", raw, _TOP)
    name = raw.get("name", default_name or "experiment")
    if not isinstance(name, str) or not name.strip():
        raise bad("name", "must be a non-empty string")

    models_t = table("models", raw.get("models", {}), _MODELS)
    names = models_t.get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise bad("models.names", "must be a list of model names")
    source = models_t.get("source")
    if source is not None and (not isinstance(source, str) or not source):
        raise bad("models.source", "must be a model name")
    quant = models_t.get("quantize", [])
    if not isinstance(quant, list) or not all(isinstance(q, str) and q for q in quant):
        raise bad("models.quantize", "must be a list of quant types, e.g. ['Q4_K_M', 'Q8_0']")
    if quant and source is None:
        raise bad("models.quantize", "needs models.source (the model to quantize)")
    if source is not None and not quant:
        raise bad("models.source", "needs models.quantize (the types to make from it)")
    if not names and not quant:
        raise bad("models", "give models.names, or models.source with models.quantize")
    allow = models_t.get("allow_requantize", False)
    if not isinstance(allow, bool):
        raise bad("models.allow_requantize", "must be true or false")

    axes_t = table("axes", raw.get("axes", {}), set(AXES))
    axes: dict[str, tuple[Any, ...]] = {}
    for axis, (kind, _default) in AXES.items():
        if axis not in axes_t:
            continue
        key = f"axes.{axis}"
        if kind is int:
            minimum = -1 if axis == "n_gpu_layers" else (1 if axis == "concurrency" else 0)
            if axis in ("n_batch", "n_ubatch"):
                minimum = 1
            axes[axis] = ints(key, axes_t[axis], minimum)
        else:
            values = axes_t[axis] if isinstance(axes_t[axis], list) else [axes_t[axis]]
            if not values or not all(isinstance(v, str) for v in values):
                raise bad(key, "must be a string or a list of strings")
            if axis == "flash_attn":
                # TOML booleans read naturally here: true/false mean on/off
                for v in values:
                    if v not in _FLASH:
                        raise bad(key, f"must be on, off or auto (got {v!r})")
            axes[axis] = tuple(values)

    tests_t = table("tests", raw.get("tests", {"pp": [512], "tg": [128]}), _TESTS)
    pp = ints("tests.pp", tests_t.get("pp", []), 0) if "pp" in tests_t else ()
    tg = ints("tests.tg", tests_t.get("tg", []), 0) if "tg" in tests_t else ()
    latency = None
    if "latency" in tests_t:
        lt = table("tests.latency", tests_t["latency"], _LATENCY)
        latency = LatencyTest(
            count("tests.latency.requests", lt.get("requests", 8), 1),
            count("tests.latency.max_tokens", lt.get("max_tokens", 64), 1),
        )
    perplexity = None
    if "perplexity" in tests_t:
        pt = table("tests.perplexity", tests_t["perplexity"], _PERPLEXITY)
        perplexity = PerplexityTest(
            count("tests.perplexity.ctx", pt.get("ctx", 512), 8),
            count("tests.perplexity.chunks", pt.get("chunks", 4), 1),
        )
    energy = tests_t.get("energy", True)
    if not isinstance(energy, bool):
        raise bad("tests.energy", "must be true or false")
    if not any(pp) and not any(tg) and latency is None and perplexity is None:
        raise bad("tests", "nothing to measure: give pp, tg, latency or perplexity")
    if any(c > 1 for c in axes.get("concurrency", ())) and latency is None:
        raise bad("axes.concurrency", "needs tests.latency (concurrency is a latency setting)")

    repetitions = count("repetitions", raw.get("repetitions", 3), 1)
    warmup_t = table("warmup", raw.get("warmup", {}), {"runs"})
    warmup_runs = count("warmup.runs", warmup_t.get("runs", 1), 0)
    if warmup_runs > 1:
        raise bad("warmup.runs", "must be 0 or 1 (one untimed run warms the caches)")

    cells_raw = raw.get("cells", [])
    if not isinstance(cells_raw, list):
        raise bad("cells", "must be an array of tables ([[cells]])")
    cells = []
    for i, c in enumerate(cells_raw):
        ct = table(f"cells[{i}]", c, {"model", *AXES})
        cells.append(dict(ct))

    return ExperimentSpec(
        name=name.strip(),
        models=tuple(names),
        source=source,
        quantize=tuple(q.upper() for q in quant),
        allow_requantize=allow,
        axes=axes,
        pp=pp,
        tg=tg,
        latency=latency,
        perplexity=perplexity,
        energy=energy,
        repetitions=repetitions,
        warmup_runs=warmup_runs,
        cells=tuple(cells),
    )


def expand_cells(spec: ExperimentSpec, models: list[str]) -> list[Cell]:
    """Every cell of ``spec`` over ``models`` (the resolved store names), in a fixed order;
    with ``[[cells]]``, only those the listed tables match."""
    axes = list(spec.axes)
    product = [
        Cell(model, dict(zip(axes, values, strict=True)))
        for model in models
        for values in itertools.product(*(spec.axes[a] for a in axes))
    ]
    if not spec.cells:
        return product

    def matches(cell: Cell, want: dict[str, Any]) -> bool:
        return all(
            (cell.model == v) if k == "model" else (cell.settings.get(k) == v)
            for k, v in want.items()
        )

    return [c for c in product if any(matches(c, w) for w in spec.cells)]


def setting(cell: Cell, axis: str) -> Any:
    """The cell's value of ``axis`` (the default when the experiment does not vary it)."""
    return cell.settings.get(axis, AXES[axis][1])


def varying_axes(spec: ExperimentSpec) -> list[str]:
    return [a for a, v in spec.axes.items() if len(v) > 1]


def varying_axes_of(spec: dict[str, Any]) -> list[str]:
    """:func:`varying_axes` of a stored spec (:meth:`ExperimentSpec.to_dict`)."""
    return [a for a, v in (spec.get("axes") or {}).items() if len(v) > 1]
