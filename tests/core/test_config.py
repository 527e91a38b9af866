from __future__ import annotations

from pathlib import Path

import pytest

from llcuda_tui.core.config import Paths, Settings
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
