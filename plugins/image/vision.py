"""Describing an image with a multimodal GGUF and its projector (llama-cpp-python's chat handlers).

Settings (``[devices.image]`` in the config)::

    vision_model = "/models/llava-v1.5-7b-Q4_K_M.gguf"   # the language part
    vision_projector = "/models/llava-v1.5-7b-mmproj.gguf" # the image encoder (mmproj)
    vision_handler = "llava15"                            # which prompt format (see HANDLERS)
    vision_n_ctx = 4096

Nothing is configured by default: then ``describe`` says so. The model loads on the first
``describe`` (seconds, and its own memory beside the kernel's model) and stays loaded.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos.kernel.devices import DeviceError

log = logging.getLogger(__name__)

# vision_handler -> the class in llama_cpp.llama_chat_format (llama-cpp-python 0.3.36)
HANDLERS = {
    "llava15": "Llava15ChatHandler",
    "llava16": "Llava16ChatHandler",
    "moondream": "MoondreamChatHandler",
    "nanollava": "NanoLlavaChatHandler",
    "minicpmv26": "MiniCPMv26ChatHandler",
    "qwen25vl": "Qwen25VLChatHandler",
    "obsidian": "ObsidianChatHandler",
    "llama3visionalpha": "Llama3VisionAlphaChatHandler",
    "gemma4": "Gemma4ChatHandler",
}
NOT_CONFIGURED = ("vision is not configured: set vision_model (a multimodal GGUF) and vision_projector "
                  "(its mmproj GGUF) under [devices.image] in the config")
MAX_EDGE = 1024  # the image is shrunk to this before encoding (the projector works at ~336-896 px)


@dataclass(frozen=True)
class VisionSettings:
    model: Path
    projector: Path
    handler: str = "llava15"
    n_ctx: int = 4096

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "VisionSettings":
        """The configured vision model; DeviceError naming what is missing or wrong."""
        model, projector = settings.get("vision_model"), settings.get("vision_projector")
        if not model or not projector:
            raise DeviceError(NOT_CONFIGURED)
        handler = str(settings.get("vision_handler", "llava15")).lower()
        if handler not in HANDLERS:
            raise DeviceError(f"unknown vision_handler {handler!r} (one of: {', '.join(HANDLERS)})")
        found = cls(Path(str(model)).expanduser(), Path(str(projector)).expanduser(), handler,
                    int(settings.get("vision_n_ctx", 4096)))
        for what, path in (("vision_model", found.model), ("vision_projector", found.projector)):
            if not path.is_file():
                raise DeviceError(f"{what} {path} does not exist")
            with path.open("rb") as f:
                if f.read(4) != b"GGUF":
                    raise DeviceError(f"{what} {path} is not a GGUF file")
        return found


def data_uri(image: Any) -> str:
    """A PIL image as a PNG data: URI, shrunk to MAX_EDGE (what the chat handler reads)."""
    copy = image.convert("RGB")
    copy.thumbnail((MAX_EDGE, MAX_EDGE))
    buffer = io.BytesIO()
    copy.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class Vision:
    """One loaded multimodal model, used by one describe at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: tuple[VisionSettings, Any] | None = None

    def _model(self, settings: VisionSettings) -> Any:
        if self._loaded is not None and self._loaded[0] == settings:
            return self._loaded[1]
        try:
            from llama_cpp import Llama, llama_chat_format
        except ImportError as exc:
            raise DeviceError(f"describe needs llama-cpp-python ({exc})") from None
        handler_class = getattr(llama_chat_format, HANDLERS[settings.handler], None)
        if handler_class is None:
            raise DeviceError(f"this llama-cpp-python has no {HANDLERS[settings.handler]}")
        log.info("loading the vision model %s with %s", settings.model, settings.projector)
        try:
            handler = handler_class(clip_model_path=str(settings.projector), verbose=False)
            llm = Llama(model_path=str(settings.model), chat_handler=handler, n_ctx=settings.n_ctx, verbose=False)
        except Exception as exc:
            raise DeviceError(f"could not load the vision model {settings.model.name}: {exc}") from None
        self._loaded = (settings, llm)
        return llm

    def describe(self, settings: VisionSettings, image: Any, question: str, max_tokens: int = 256) -> str:
        with self._lock:
            llm = self._model(settings)
            reply = llm.create_chat_completion(
                messages=[{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": data_uri(image)}},
                    {"type": "text", "text": question},
                ]}],
                max_tokens=max_tokens, temperature=0.0,
            )
        return str(reply["choices"][0]["message"]["content"] or "").strip()
