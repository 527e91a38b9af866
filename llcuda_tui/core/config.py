"""Paths and settings.

Everything the program writes lives under ``LLCUDA_HOME`` when that variable is set
(``$LLCUDA_HOME/data``, ``/cache``, ``/config``); otherwise under the platform's user
directories (platformdirs). Defaults for the engine and sampling come from
``<config_dir>/config.toml``; a missing file means built-in defaults, a bad one is a
:class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from llcuda_tui.core.engine import SamplingValues
from llcuda_tui.core.errors import ConfigError

APP_NAME = "llcuda-tui"
HOME_ENV = "LLCUDA_HOME"


@dataclass(frozen=True)
class Paths:
    """Where llcuda-tui keeps its files."""

    data_dir: Path
    cache_dir: Path
    config_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def starter_dir(self) -> Path:
        """Assembled starter models (the gemma package ships chunks that must be joined)."""
        return self.data_dir / "starter"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @classmethod
    def from_env(cls, environ: os._Environ[str] | dict[str, str] | None = None) -> Paths:
        env = os.environ if environ is None else environ
        home = env.get(HOME_ENV)
        if home:
            base = Path(home).expanduser()
            return cls(base / "data", base / "cache", base / "config")
        import platformdirs

        return cls(
            Path(platformdirs.user_data_dir(APP_NAME)),
            Path(platformdirs.user_cache_dir(APP_NAME)),
            Path(platformdirs.user_config_dir(APP_NAME)),
        )


@dataclass(frozen=True)
class EngineDefaults:
    """How models are loaded unless a command says otherwise."""

    n_gpu_layers: int = -1
    """Layers offloaded to the GPU; -1 = all, 0 = none (CPU only)."""
    n_ctx: int = 4096
    """Context length in tokens; 0 = the model's training context."""
    n_batch: int = 512
    """Largest prompt chunk submitted to one llama_decode call."""
    n_ubatch: int = 512
    """Physical batch size inside llama.cpp."""
    n_threads: int = 0
    """CPU threads for generation; 0 = number of physical cores (at most 8)."""
    flash_attn: str = "auto"
    """'auto' (on with CUDA, off on CPU), 'on' or 'off'."""
    type_k: str = "f16"
    """KV cache type for K (f16, q8_0, q4_0)."""
    type_v: str = "f16"
    """KV cache type for V (f16, q8_0, q4_0)."""


@dataclass(frozen=True)
class SamplingDefaults(SamplingValues):
    """Sampling used unless a command or conversation says otherwise."""

    max_tokens: int = 512


@dataclass(frozen=True)
class StoreDefaults:
    max_size: str = ""
    """Size cap of the model store, e.g. '50GB'; empty = no cap."""


@dataclass(frozen=True)
class Settings:
    """Everything configurable, passed explicitly (never read from a global)."""

    paths: Paths
    engine: EngineDefaults = field(default_factory=EngineDefaults)
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    store: StoreDefaults = field(default_factory=StoreDefaults)

    @classmethod
    def load(cls, paths: Paths | None = None) -> Settings:
        """Settings from the environment and the config file (if there is one)."""
        paths = paths or Paths.from_env()
        settings = cls(paths=paths)
        cfg = paths.config_file
        if not cfg.exists():
            return settings
        try:
            raw = tomllib.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {cfg}: {exc}") from None
        return settings.with_overrides(raw, source=str(cfg))

    def with_overrides(self, raw: dict[str, Any], source: str = "config") -> Settings:
        """A copy with the sections of ``raw`` ({'engine': {...}, ...}) applied and checked."""
        sections = {"engine": self.engine, "sampling": self.sampling, "store": self.store}
        updated: dict[str, Any] = {}
        for name, values in raw.items():
            if name not in sections:
                raise ConfigError(f"{source}: unknown section [{name}]")
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [{name}] must be a table")
            updated[name] = _apply(sections[name], values, f"{source}: [{name}]")
        settings = replace(self, **updated)
        _validate(settings, source)
        return settings

    def ensure_dirs(self) -> None:
        for d in (self.paths.data_dir, self.paths.cache_dir, self.paths.config_dir):
            d.mkdir(parents=True, exist_ok=True)


def save_setting(settings: Settings, section: str, key: str, value: Any) -> Settings:
    """Set ``[section] key = value`` in the config file and return the updated settings.

    The value is checked as :meth:`Settings.with_overrides` checks the file; only that one line
    of the file changes (comments and other keys stay); the file is replaced atomically, so a
    reader sees the old or the new file, never a part."""
    from llcuda_tui.core.store import _fs as storefs

    updated = settings.with_overrides({section: {key: value}}, source="setting")
    cfg = settings.paths.config_file
    try:
        old = cfg.read_text(encoding="utf-8") if cfg.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {cfg}: {exc}") from None
    new = _set_toml_line(old, section, key, _toml_value(value))
    try:
        written = tomllib.loads(new)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot update {cfg} (edit it by hand): {exc}") from None
    if written.get(section, {}).get(key) != value:
        raise ConfigError(f"cannot update {cfg}: [{section}] {key} is set in a way it cannot edit")
    settings.ensure_dirs()
    storefs.atomic_write(cfg, new.encode("utf-8"), settings.paths.config_dir)
    return updated


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string


def _set_toml_line(text: str, section: str, key: str, value: str) -> str:
    """``text`` with ``key = value`` in table ``[section]`` (replaced, added, or a new table)."""
    lines = text.splitlines()
    current, header_at = "", None
    key_line = re.compile(rf"\s*{re.escape(key)}\s*=")
    for i, line in enumerate(lines):
        m = re.match(r"\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
        if m:
            current = m.group(1).strip()
            if current == section:
                header_at = i
            continue
        if current == section and key_line.match(line):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    if header_at is not None:
        lines.insert(header_at + 1, f"{key} = {value}")
    else:
        if lines and lines[-1].strip():
            lines.append("")
        lines += [f"[{section}]", f"{key} = {value}"]
    return "\n".join(lines) + "\n"


def _apply(section: Any, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(section)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        f = known.get(key)
        if f is None:
            raise ConfigError(f"{where} has no key '{key}' (known: {', '.join(known)})")
        expected = type(getattr(section, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise ConfigError(
                f"{where} {key} must be {expected.__name__}, got {type(value).__name__}"
            )
        changes[key] = value
    return replace(section, **changes)


def _validate(s: Settings, source: str) -> None:
    e, smp = s.engine, s.sampling
    checks = [
        (e.n_gpu_layers >= -1, "engine.n_gpu_layers must be >= -1"),
        (e.n_ctx >= 0, "engine.n_ctx must be >= 0"),
        (e.n_batch >= 1 and e.n_ubatch >= 1, "engine.n_batch and n_ubatch must be >= 1"),
        (e.n_threads >= 0, "engine.n_threads must be >= 0"),
        (e.flash_attn in ("auto", "on", "off"), "engine.flash_attn must be auto, on or off"),
        (e.type_k in KV_TYPES and e.type_v in KV_TYPES, f"KV types must be one of {KV_TYPES}"),
        (smp.temperature >= 0, "sampling.temperature must be >= 0"),
        (smp.top_k >= 0, "sampling.top_k must be >= 0"),
        (0 <= smp.top_p <= 1 and 0 <= smp.min_p <= 1, "sampling.top_p/min_p must be in [0, 1]"),
        (smp.repeat_penalty > 0, "sampling.repeat_penalty must be > 0"),
        (smp.max_tokens >= 1, "sampling.max_tokens must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{source}: {message}")


KV_TYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")


def default_threads() -> int:
    """Physical cores, capped at 8: decode is memory-bound and more threads only contend."""
    n = os.cpu_count() or 1
    return max(1, min(8, n // 2 if n >= 4 else n))
