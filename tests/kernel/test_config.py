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


def test_voice_keys_are_checked(tmp_path: Path):
    none = tmp_path / "none.toml"
    with pytest.raises(ConfigError, match="stt_model"):
        load_config(none, env={"LLMOS_STT_MODEL": "large"})
    with pytest.raises(ConfigError, match="vad_end_silence_s"):
        load_config(none, env={"LLMOS_VAD_END_SILENCE_S": "0.05"})
    with pytest.raises(ConfigError, match="tts_rate_wpm"):
        load_config(none, env={"LLMOS_TTS_RATE_WPM": "5"})
    config = load_config(none, env={"LLMOS_STT_MODEL": "base", "LLMOS_VOICE_WAKE_PHRASE": "hey computer"})
    assert config.stt_model == "base" and config.voice_wake_phrase == "hey computer"


def test_serve_keys_read_booleans_and_check_ports(tmp_path: Path):
    path = tmp_path / "config.toml"
    path.write_text("serve_enabled = true\nserve_port = 9000\n")
    config = load_config(path, env={})
    assert config.serve_enabled is True and config.serve_port == 9000 and config.serve_host == "127.0.0.1"
    assert load_config(path, env={"LLMOS_SERVE_ENABLED": "off"}).serve_enabled is False
    for env in ({"LLMOS_SERVE_ENABLED": "maybe"}, {"LLMOS_SERVE_PORT": "0"}, {"LLMOS_SERVE_MAX_WAITING": "-1"}):
        with pytest.raises(ConfigError, match="serve_"):
            load_config(path, env=env)
    path.write_text('serve_port = true\n')
    with pytest.raises(ConfigError, match="serve_port"):
        load_config(path, env={})
