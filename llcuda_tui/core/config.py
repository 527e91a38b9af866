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
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from llcuda_tui.core import files
from llcuda_tui.core.engine import KV_TYPES as KV_TYPES  # the engine's, re-exported
from llcuda_tui.core.engine import EngineValues, SamplingValues
from llcuda_tui.core.errors import ConfigError, UserInputError

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

    @property
    def kv_state_dir(self) -> Path:
        """Conversations' saved KV states (engine/_kvstore.py): derived data, safe to clear."""
        return self.data_dir / "kv-states"

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
class EngineDefaults(EngineValues):
    """How models are loaded unless a command says otherwise: config.toml's ``[engine]``. The
    knobs, their defaults and what they mean are :class:`~llcuda_tui.core.engine.EngineValues`,
    shared with every load's ``EngineConfig``."""


@dataclass(frozen=True)
class SamplingDefaults(SamplingValues):
    """Sampling used unless a command or conversation says otherwise."""

    max_tokens: int = 512


@dataclass(frozen=True)
class RemoteDefaults:
    """The team model store, ``[store.remote]``: an S3 bucket (SeaweedFS, MinIO, Ceph RGW, R2,
    AWS S3). ``LLCUDA_REMOTE_URL`` / ``LLCUDA_REMOTE_BUCKET`` override ``url`` / ``bucket``.
    Credentials come from ``key_file``, else ``profile``, else boto3's usual chain (``AWS_*``
    variables, ``~/.aws``); they are never written to the config, logs or output."""

    url: str = ""
    """S3 endpoint, e.g. 'http://seaweed.lan:8333'; empty = AWS S3 for ``region``."""
    bucket: str = ""
    """The bucket; empty = no team store."""
    prefix: str = ""
    """Key prefix inside the bucket, e.g. 'llcuda' (several stores can share a bucket)."""
    region: str = ""
    """Signing region; empty = us-east-1."""
    profile: str = ""
    """A profile of ~/.aws/credentials and ~/.aws/config."""
    key_file: str = ""
    """A file (mode 0600) with aws_access_key_id / aws_secret_access_key lines."""
    ca_file: str = ""
    """CA bundle that verifies the endpoint's TLS certificate; empty = the system's."""


@dataclass(frozen=True)
class StoreDefaults:
    max_size: str = ""
    """Size cap of the model store, e.g. '50GB'; empty = no cap."""
    kv_states_max_size: str = "8GiB"
    """Size cap of the conversations' saved KV states (least recently used go first); empty
    = no cap; '0' = never save one."""
    remote: RemoteDefaults = field(default_factory=RemoteDefaults)
    """The team store (``[store.remote]``)."""


@dataclass(frozen=True)
class TuiDefaults:
    """The terminal UI, ``[tui]``: what it remembers between runs."""

    theme: str = ""
    """The colour theme last chosen in the command palette ("Change theme"); empty = the
    built-in default. A name this Textual does not know is ignored (with a notice)."""
    speculative: str = ""
    """Speculative decoding of the Chat screen's loads, as last chosen in its load settings:
    empty = off, ``ngram`` (prompt lookup) or ``draft`` (with ``draft_model``)."""
    draft_model: str = ""
    """The draft model's store name (``speculative = "draft"``)."""
    draft_max: int = 16
    """Most tokens drafted per step."""


@dataclass(frozen=True)
class ModelsDefaults:
    """A worker serving many models (``llcuda serve`` without ``-m``), ``[models]``."""

    aliases: dict[str, str] = field(default_factory=dict, hash=False)
    """``[models.aliases]``: names clients may use for a model, e.g. ``gpt-4o-mini =
    "smollm2-135m-instruct"``; the response's ``model`` echoes the name asked. ``llcuda serve
    --alias`` adds to them."""
    settings: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    """``[models.settings."NAME"]``: how model NAME loads when it is not as the worker's
    ``[engine]`` / command line says (keys of :data:`MODEL_SETTINGS`, e.g. ``n_ctx = 16384``,
    ``parallel = 1``); ``llcuda serve --model-setting NAME:KEY=VALUE`` adds to them."""


MODEL_SETTINGS: dict[str, type] = {
    "n_ctx": int,
    "n_gpu_layers": int,
    "n_batch": int,
    "n_ubatch": int,
    "n_threads": int,
    "flash_attn": str,
    "type_k": str,
    "type_v": str,
    "ctx_beyond_training": bool,
    "parallel": int,
}
"""What one model of a worker of many may load with on its own: the engine's knobs (named as
in ``[engine]``) and its slots."""
MODEL_PARALLEL_MAX = 256
"""The most slots a model may have (the batch engine's ``MAX_PARALLEL``; a test checks)."""


def check_model_settings(values: Any, where: str) -> dict[str, Any]:
    """One model's settings (a table of :data:`MODEL_SETTINGS` keys), checked as ``[engine]``
    is: ConfigError, one line starting with ``where`` and naming the key."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a table of settings (e.g. n_ctx = 8192)")
    for key, value in values.items():
        expected = MODEL_SETTINGS.get(key)
        if expected is None:
            raise ConfigError(f"{where} has no key '{key}' (known: {', '.join(MODEL_SETTINGS)})")
        if type(value) is not expected:
            raise ConfigError(
                f"{where} {key} must be {expected.__name__}, got {type(value).__name__}"
            )
    engine = {k: v for k, v in values.items() if k != "parallel"}
    try:
        replace(EngineValues(), **engine).validate()
    except UserInputError as exc:
        raise ConfigError(f"{where} {exc}") from None
    parallel = values.get("parallel", 1)
    if not 1 <= parallel <= MODEL_PARALLEL_MAX:
        raise ConfigError(f"{where} parallel must be in [1, {MODEL_PARALLEL_MAX}]")
    return dict(values)


def parse_model_setting(given: str) -> tuple[str, str, Any]:
    """``NAME:KEY=VALUE`` (``llcuda serve --model-setting``) as (name, key, value), the value
    as the key's type; UserInputError (one line) when it is not one."""
    # a store name may hold ':' ("qwen2.5:7b"), never a key: the last ':' before the '='
    head, eq, text = given.partition("=")
    name, colon, key = head.rpartition(":")
    key, text = key.strip(), text.strip()
    if not colon or not name.strip() or not eq or not key or not text:
        raise UserInputError(
            f"--model-setting {given!r}: write NAME:KEY=VALUE, e.g. qwen2.5-7b:n_ctx=16384"
        )
    expected = MODEL_SETTINGS.get(key)
    where = f"--model-setting {given!r}:"
    if expected is None:
        raise ConfigError(f"{where} no key '{key}' (known: {', '.join(MODEL_SETTINGS)})")
    value: Any = text
    if expected is int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{where} {key} must be an integer") from None
    elif expected is bool:
        value = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}
        if text.lower() not in value:
            raise ConfigError(f"{where} {key} must be true or false")
        value = value[text.lower()]
    check_model_settings({key: value}, where)
    return name.strip(), key, value


@dataclass(frozen=True)
class Settings:
    """Everything configurable, passed explicitly (never read from a global)."""

    paths: Paths
    engine: EngineDefaults = field(default_factory=EngineDefaults)
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    store: StoreDefaults = field(default_factory=StoreDefaults)
    tui: TuiDefaults = field(default_factory=TuiDefaults)
    models: ModelsDefaults = field(default_factory=ModelsDefaults)

    @classmethod
    def load(cls, paths: Paths | None = None) -> Settings:
        """Settings from the environment and the config file (if there is one)."""
        paths = paths or Paths.from_env()
        settings = cls(paths=paths)
        cfg = paths.config_file
        if not cfg.exists():
            return settings
        import tomllib  # only with a config file (17 M instructions, 1/20 of `models ls`)

        try:
            raw = tomllib.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {cfg}: {exc}") from None
        return settings.with_overrides(raw, source=str(cfg))

    def with_overrides(self, raw: dict[str, Any], source: str = "config") -> Settings:
        """A copy with the sections of ``raw`` ({'engine': {...}, ...}) applied and checked."""
        sections = {
            "engine": self.engine,
            "sampling": self.sampling,
            "store": self.store,
            "tui": self.tui,
            "models": self.models,
        }
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
    updated = settings.with_overrides({section: {key: value}}, source="setting")
    cfg = settings.paths.config_file
    try:
        old = cfg.read_text(encoding="utf-8") if cfg.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {cfg}: {exc}") from None
    new = _set_toml_line(old, section, key, _toml_value(value))
    import tomllib

    try:
        written = tomllib.loads(new)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot update {cfg} (edit it by hand): {exc}") from None
    if written.get(section, {}).get(key) != value:
        raise ConfigError(f"cannot update {cfg}: [{section}] {key} is set in a way it cannot edit")
    settings.ensure_dirs()
    try:
        files.replace_file(cfg, new.encode("utf-8"), settings.paths.config_dir)
    except OSError as exc:
        raise ConfigError(f"cannot write config file {cfg}: {exc.strerror or exc}") from None
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
        if is_dataclass(expected) and isinstance(value, dict):  # a sub-table: [store.remote]
            changes[key] = _apply(getattr(section, key), value, f"{where[:-1]}.{key}]")
            continue
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise ConfigError(
                f"{where} {key} must be {expected.__name__}, got {type(value).__name__}"
            )
        changes[key] = value
    return replace(section, **changes)


def _validate(s: Settings, source: str) -> None:
    try:
        s.engine.validate()  # the same checks as every load's
    except UserInputError as exc:
        raise ConfigError(f"{source}: engine.{exc}") from None
    smp = s.sampling
    checks = [
        (smp.temperature >= 0, "sampling.temperature must be >= 0"),
        (smp.top_k >= 0, "sampling.top_k must be >= 0"),
        (0 <= smp.top_p <= 1 and 0 <= smp.min_p <= 1, "sampling.top_p/min_p must be in [0, 1]"),
        (smp.repeat_penalty > 0, "sampling.repeat_penalty must be > 0"),
        (smp.max_tokens >= 1, "sampling.max_tokens must be >= 1"),
    ]
    tui = s.tui
    checks += [
        (tui.speculative in ("", "ngram", "draft"), 'tui.speculative must be "", ngram or draft'),
        (1 <= tui.draft_max <= 256, "tui.draft_max must be in 1..256"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{source}: {message}")
    from llcuda_tui.core.fmt import parse_size

    parse_size(s.store.kv_states_max_size, f"{source}: store.kv_states_max_size")
    for alias, target in s.models.aliases.items():
        if not alias or not isinstance(target, str) or not target:
            raise ConfigError(
                f"{source}: models.aliases: {alias!r} must name a model (a non-empty string)"
            )
    for name, values in s.models.settings.items():
        check_model_settings(values, f"{source}: [models.settings.{json.dumps(name)}]")
