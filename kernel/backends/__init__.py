"""Model backends behind one Protocol (see base.py): local llama.cpp, remote OpenAI-compatible, scripted."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import Backend, BackendError, SamplingParams, Stream, SwitchInfo

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["Backend", "BackendError", "SamplingParams", "Stream", "SwitchInfo", "make_backend"]


def make_backend(config: "Config") -> Backend:
    """The backend the config asks for (not yet loaded: call ``load()``, the kernel does)."""
    if config.backend == "openai":
        from .openai import OpenAIBackend, OpenAIOptions

        return OpenAIBackend(OpenAIOptions(base_url=config.base_url, api_key=config.api_key,
                                           model=config.remote_model))
    from .llamacpp import LlamaCppBackend, LlamaOptions

    return LlamaCppBackend(LlamaOptions(model_path(config), n_ctx=config.n_ctx, n_threads=config.threads or None))


def model_path(config: "Config") -> Path:
    """The GGUF file the local backend runs: the config's (a path, or a known model's key such as
    "1.5b"), or the embedded default."""
    from ..model_file import default_model_path, resolve_model

    return resolve_model(config.model) if config.model else default_model_path()
