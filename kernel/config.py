"""Configuration: declared once (type, default, meaning), loaded from TOML, env and flags.

Order of precedence: command-line flags > environment (``LLMOS_<KEY>``) > the TOML file
(``config.toml`` in the user config directory, or ``$LLMOS_CONFIG``) > defaults.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from .prose import Prose
from .syscalls.decide import DEFAULT_THRESHOLD


STT_MODELS = ("tiny.en", "base")  # the whisper weights make setup installs


class ConfigError(Exception):
    """A config value or file that cannot be used; one line."""


@dataclass
class Config:
    backend: str = field(default="llamacpp", metadata={"help": "llamacpp (a local GGUF file) or openai (a remote server)"})
    model: str = field(default="", metadata={"help": "GGUF file for the local backend; empty = the embedded default"})
    base_url: str = field(default="http://127.0.0.1:8080/v1", metadata={"help": "OpenAI-compatible server for --backend openai"})
    api_key: str = field(default="", metadata={"help": "bearer token for the remote server, if it needs one"})
    remote_model: str = field(default="", metadata={"help": "model name to ask the remote server for"})
    n_ctx: int = field(default=8192, metadata={"help": "context window (tokens)"})
    threads: int = field(default=0, metadata={"help": "CPU threads for llama.cpp; 0 = all cores"})
    slice_tokens: int = field(default=32, metadata={"help": "time slice of the scheduler, in tokens"})
    max_rounds: int = field(default=4, metadata={"help": "most system calls in one turn"})
    decision_threshold: float = field(default=DEFAULT_THRESHOLD, metadata={"help": "nats by which CALL must beat ANSWER"})
    temperature: float = field(default=Prose().temperature, metadata={
        "help": "answers' sampling temperature (0 = greedy); calls are always greedy"})
    repeat_penalty: float = field(default=Prose().repeat_penalty, metadata={
        "help": "answers' repetition penalty over their last 64 tokens (1.0 = off)"})
    dry_multiplier: float = field(default=Prose().dry_multiplier, metadata={
        "help": "answers' DRY penalty on repeated sequences (0 = off)"})
    max_answer_tokens: int = field(default=512, metadata={"help": "longest answer, in tokens"})
    data_dir: str = field(default="", metadata={"help": "journal, stores and snapshots; empty = the user data directory"})
    grants: list[str] = field(default_factory=list, metadata={"help": "permissions granted to devices"})
    devices: dict = field(default_factory=dict, metadata={
        "help": "each device's settings: [devices.<name>], e.g. [devices.browser] search_url, allow_private"})
    chroma_url: str = field(default="", metadata={
        "help": "long-term memory on a Chroma server (http://host:port); empty = the local store in data_dir"})
    # voice: "label", "choices", "range" and "unit" shape their editors in the desktop's Settings
    voice_wake_phrase: str = field(default="", metadata={
        "help": 'voice mode answers only utterances that start with it, e.g. "hey computer"; empty = every utterance',
        "label": "Wake phrase"})
    stt_model: str = field(default="tiny.en", metadata={
        "help": "whisper model for voice: tiny.en or base", "label": "Speech recognition", "choices": STT_MODELS})
    vad_end_silence_s: float = field(default=0.45, metadata={
        "help": "seconds of silence that end an utterance (shorter answers sooner, longer lets you pause)",
        "label": "End of utterance after", "range": (0.2, 5.0), "unit": " s of silence"})
    tts_rate_wpm: int = field(default=180, metadata={
        "help": "speaking rate of the voice replies, words per minute", "label": "Speaking rate",
        "range": (60, 500), "unit": " words/min"})
    tts_voice: str = field(default="", metadata={
        "help": "a pyttsx3/espeak-ng voice id; empty = the default English voice", "label": "Voice (espeak-ng id)"})
    document_embedder: str = field(default="static", metadata={
        "help": "embeds ingested documents: static (distilled from MiniLM, fast) or minilm; memories always use minilm"})
    # llmos serve, and the desktop's switch for it (Settings, "Serve to other programs")
    serve_enabled: bool = field(default=False, metadata={
        "help": "the desktop window serves its kernel to other programs (the API of llmos serve)"})
    serve_host: str = field(default="127.0.0.1", metadata={
        "help": "llmos serve: the address to listen on; any but loopback needs serve_api_key"})
    serve_port: int = field(default=8177, metadata={"help": "llmos serve: the port"})
    serve_api_key: str = field(default="", metadata={
        "help": "llmos serve: clients must send 'Authorization: Bearer <key>'; empty = no key (loopback only)"})
    serve_max_waiting: int = field(default=8, metadata={
        "help": "llmos serve: requests that may wait for the model; one more gets HTTP 429 with Retry-After"})
    mcp: dict = field(default_factory=dict, metadata={
        "help": "MCP servers: [mcp.servers.<name>] command, args, env, cwd, permissions, timeout_s, side_effects"})

    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir) if self.data_dir else Path(platformdirs.user_data_dir("llmos"))


def default_config_path() -> Path:
    env = os.environ.get("LLMOS_CONFIG")
    return Path(env) if env else Path(platformdirs.user_config_dir("llmos")) / "config.toml"


def _coerce(name: str, kind: Any, value: Any) -> Any:
    try:
        if kind in ("dict", dict):
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
        if kind in ("bool", bool):
            if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.strip().lower() in ("1", "true", "yes", "on")
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind in ("int", int):
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if kind in ("float", float):
            return float(value)
        if kind in ("str", str):
            if not isinstance(value, (str, int, float)):
                raise TypeError
            return str(value)
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return list(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {name!r}: cannot use {value!r} ({kind})") from None


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    env = os.environ if env is None else env
    fields = {f.name: f for f in dataclasses.fields(Config)}
    values: dict[str, Any] = {}
    path = path or default_config_path()
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        unknown = set(data) - set(fields)
        if unknown:
            raise ConfigError(f"config file {path}: unknown keys {sorted(unknown)}")
        values.update(data)
    for name in fields:
        key = f"LLMOS_{name.upper()}"
        if key in env:
            values[name] = env[key]
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    config = Config(**{k: _coerce(k, fields[k].type, v) for k, v in values.items()})
    if config.backend not in ("llamacpp", "openai"):
        raise ConfigError(f"config key 'backend': {config.backend!r} is not llamacpp or openai")
    if config.document_embedder not in ("static", "minilm"):
        raise ConfigError(f"config key 'document_embedder': {config.document_embedder!r} is not static or minilm")
    if config.n_ctx < 512 or config.slice_tokens < 1 or config.max_rounds < 0:
        raise ConfigError("config: n_ctx must be >= 512, slice_tokens >= 1, max_rounds >= 0")
    if not (0.0 <= config.temperature <= 2.0 and 1.0 <= config.repeat_penalty <= 2.0
            and 0.0 <= config.dry_multiplier <= 5.0):
        raise ConfigError("config: temperature must be 0 to 2, repeat_penalty 1 to 2, dry_multiplier 0 to 5")
    if config.stt_model not in STT_MODELS:
        raise ConfigError(f"config key 'stt_model': {config.stt_model!r} is not one of {', '.join(STT_MODELS)}")
    if not 0.2 <= config.vad_end_silence_s <= 5.0:
        raise ConfigError("config key 'vad_end_silence_s': use 0.2 to 5 seconds")
    if not 60 <= config.tts_rate_wpm <= 500:
        raise ConfigError("config key 'tts_rate_wpm': use 60 to 500 words per minute")
    if config.serve_max_waiting < 0:
        raise ConfigError("config key 'serve_max_waiting': use 0 or more requests")
    if not 0 < config.serve_port < 65536:
        raise ConfigError("config key 'serve_port': use a port from 1 to 65535")
    return config
