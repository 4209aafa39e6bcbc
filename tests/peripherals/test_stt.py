"""whisper on converted local weights, on real speech; noise is not speech."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from llmos.peripherals.audio import Audio, read_wav
from llmos.peripherals.stt import SpeechToText
from llmos.peripherals.whisper_weights import WeightsError, WhisperModel, read_ctranslate2


def test_tiny_en_transcribes_spoken_arithmetic(whisper_stt, spoken):
    transcript = whisper_stt.transcribe(read_wav(spoken("what is seventeen times twenty four")))
    text = transcript.text.lower()
    assert ("17" in text or "seventeen" in text) and ("24" in text or "twenty-four" in text or "twenty four" in text)
    assert transcript.is_speech
    assert transcript.audio_seconds > 1.5 and transcript.seconds > 0


def test_short_window_gives_the_same_words_as_the_full_window(whisper_stt, spoken):
    audio = read_wav(spoken("please remember that the meeting is on tuesday"))
    short = whisper_stt.transcribe(audio).text
    whisper_stt.short_window = False
    try:
        full = whisper_stt.transcribe(audio).text
    finally:
        whisper_stt.short_window = True
    assert short.lower().strip(" .") == full.lower().strip(" .")
    assert "tuesday" in short.lower()


def test_noise_is_not_speech(whisper_stt):
    rng = np.random.default_rng(3)
    noise = Audio((rng.standard_normal(16_000 * 2) * 0.2).astype(np.float32), 16_000)
    assert not whisper_stt.transcribe(noise).is_speech


def test_base_model_also_loads_and_transcribes(spoken):
    stt = SpeechToText(WhisperModel.BASE)
    text = stt.transcribe(read_wav(spoken("good morning"))).text.lower()
    assert "morning" in text


def test_missing_weights_are_named(tmp_path):
    stt = SpeechToText(models_dir=tmp_path)
    with pytest.raises(WeightsError, match="make setup"):
        stt.load()


def test_converter_refuses_a_file_that_is_not_ctranslate2():
    with pytest.raises(WeightsError, match="binary version"):
        read_ctranslate2(io.BytesIO(struct.pack("<I", 3) + b"\0" * 16))
    with pytest.raises(WeightsError, match="ends early"):
        read_ctranslate2(io.BytesIO(b"\x06\x00"))
