from __future__ import annotations

from pathlib import Path

import pytest

from llmos.kernel.config import ConfigError, load_config


def test_precedence_flags_over_env_over_file(tmp_path: Path):
    path = tmp_path / "config.toml"
    path.write_text('n_ctx = 4096\nslice_tokens = 16\nmodel = "/from/file.gguf"\ngrants = ["network"]\n')
    config = load_config(path, env={"LLMOS_SLICE_TOKENS": "8", "LLMOS_MODEL": "/from/env.gguf"},
                         overrides={"model": "/from/flag.gguf", "n_ctx": None})
    assert config.n_ctx == 4096 and config.slice_tokens == 8
    assert config.model == "/from/flag.gguf" and config.grants == ["network"]


def test_bad_config_gives_one_line_errors(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("n_ctx = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, env={})
    bad.write_text("no_such_key = 1")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="cannot use"):
        load_config(tmp_path / "none.toml", env={"LLMOS_N_CTX": "lots"})
    with pytest.raises(ConfigError, match="backend"):
        load_config(tmp_path / "none.toml", env={}, overrides={"backend": "magic"})
