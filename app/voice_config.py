"""The voice parts as the configuration sets them (``voice_*``, ``stt_*``, ``vad_*``, ``tts_*`` keys).

``llmos voice`` and the desktop's voice mode build their loop from the same config, so a wake
phrase or a slower speaking rate set once (config file, ``LLMOS_<KEY>``, or Settings) holds in both.
Command-line flags, where given, win.
"""

from __future__ import annotations

from typing import Any

from llmos.app.voice import VoiceOptions
from llmos.kernel.config import Config
from llmos.peripherals.vad import VadOptions


def voice_options(config: Config | None, wake_phrase: str | None = None) -> VoiceOptions:
    config = config or Config()
    wake = wake_phrase if wake_phrase is not None else config.voice_wake_phrase
    return VoiceOptions(wake_phrase=wake.strip() or None,
                        vad=VadOptions(end_silence_s=config.vad_end_silence_s))


def speech_to_text(config: Config | None, model: str | None = None) -> Any:
    from llmos.peripherals.stt import SpeechToText
    from llmos.peripherals.whisper_weights import WhisperModel

    return SpeechToText(WhisperModel(model or (config or Config()).stt_model))


def text_to_speech(config: Config | None) -> Any:
    from llmos.peripherals.tts import TextToSpeech, TtsOptions

    config = config or Config()
    return TextToSpeech(TtsOptions(rate_wpm=config.tts_rate_wpm, voice=config.tts_voice or None))
