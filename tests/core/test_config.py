from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from llcuda_tui.core.config import Paths, Settings, save_setting
from llcuda_tui.core.errors import ConfigError


def test_llcuda_home_holds_everything(llcuda_home: Path) -> None:
    p = Paths.from_env()
    for d in (p.data_dir, p.cache_dir, p.config_dir, p.store_dir, p.starter_dir):
        assert llcuda_home in d.parents


def test_platformdirs_without_llcuda_home() -> None:
    p = Paths.from_env({})
    assert "llcuda-tui" in str(p.data_dir)


def test_config_file_sets_defaults(settings: Settings) -> None:
    cfg = settings.paths.config_file
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[engine]\nn_gpu_layers = 12\nn_ctx = 8192\nflash_attn = "off"\n'
                   "[sampling]\ntemperature = 0\nseed = 7\n")  # fmt: skip
    s = Settings.load(settings.paths)
    assert s.engine.n_gpu_layers == 12 and s.engine.n_ctx == 8192 and s.engine.flash_attn == "off"
    assert s.sampling.temperature == 0.0 and s.sampling.seed == 7
    assert s.sampling.top_k == 40  # untouched keys keep their defaults


@pytest.mark.parametrize(
    "text, message",
    [
        ("[engine]\nn_ctx = -5\n", "n_ctx must be >= 0"),
        ("[engine]\nwhat = 1\n", "has no key 'what'"),
        ("[nope]\n", "unknown section"),
        ("[engine\n", "cannot read config"),
        ('[engine]\nflash_attn = "sometimes"\n', "flash_attn"),
        ("[sampling]\ntop_p = 2.0\n", "top_p"),
    ],
)
def test_bad_config_is_a_clear_error(settings: Settings, text: str, message: str) -> None:
    cfg = settings.paths.config_file
    cfg.parent.mkdir(parents=True)
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        Settings.load(settings.paths)


def test_save_setting_changes_one_line_and_keeps_the_rest(settings: Settings) -> None:
    first = save_setting(settings, "store", "max_size", "50GB")  # no file yet: created
    assert first.store.max_size == "50GB"
    cfg = settings.paths.config_file
    assert cfg.read_text() == '[store]\nmax_size = "50GB"\n'
    cfg.write_text('# mine\n[store]\n# cap\nmax_size = "50GB"\n\n[engine]\nn_ctx = 2048\n')
    second = save_setting(Settings.load(settings.paths), "store", "max_size", 'a "b"')
    assert second.store.max_size == 'a "b"' and second.engine.n_ctx == 2048
    text = cfg.read_text()
    assert text.startswith("# mine\n[store]\n# cap\n") and "n_ctx = 2048" in text
    assert tomllib.loads(text)["store"] == {"max_size": 'a "b"'}
    third = save_setting(second, "sampling", "seed", 7)  # a new table at the end
    assert third.sampling.seed == 7 and Settings.load(settings.paths).sampling.seed == 7
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["config.toml"]  # no temp left


def test_save_setting_refuses_bad_values_and_leaves_the_file(settings: Settings) -> None:
    save_setting(settings, "engine", "n_ctx", 1024)
    before = settings.paths.config_file.read_text()
    with pytest.raises(ConfigError, match="n_ctx must be int"):
        save_setting(settings, "engine", "n_ctx", "big")
    with pytest.raises(ConfigError, match="has no key 'nope'"):
        save_setting(settings, "engine", "nope", 1)
    with pytest.raises(ConfigError, match="n_ctx must be >= 0"):
        save_setting(settings, "engine", "n_ctx", -5)
    assert settings.paths.config_file.read_text() == before


def test_engine_defaults_are_the_engine_config_knobs(settings: Settings, tmp_path: Path) -> None:
    """One source for the knobs: the config's defaults are EngineConfig's, and a load from the
    settings takes every one of them."""
    from dataclasses import fields

    from llcuda_tui.core.config import EngineDefaults
    from llcuda_tui.core.engine import EngineConfig, EngineValues

    knobs = [f.name for f in fields(EngineValues)]
    assert [f.name for f in fields(EngineDefaults)] == knobs
    defaults = EngineConfig(tmp_path / "m.gguf")
    assert EngineDefaults().engine_values() == defaults.engine_values()
    cfg = settings.paths.config_file
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[engine]\nn_threads = 3\ntype_k = "q8_0"\nflash_attn = "on"\n')
    s = Settings.load(settings.paths)
    loaded = EngineConfig.from_settings(tmp_path / "m.gguf", s, n_ctx=99, n_batch=None)
    assert (loaded.n_threads, loaded.type_k, loaded.flash_attn) == (3, "q8_0", "on")
    assert (loaded.n_ctx, loaded.n_batch) == (99, 512)  # None: the setting stays
    cfg.write_text('[engine]\ntype_k = "q3"\n')
    with pytest.raises(ConfigError, match=r"engine\.type_k must be one of"):
        Settings.load(settings.paths)
