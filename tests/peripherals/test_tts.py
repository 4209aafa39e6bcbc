"""pyttsx3 on espeak-ng renders speech that whisper understands."""

from __future__ import annotations

import pytest

from llmos.peripherals.tts import SpeechSynthesisError, TextToSpeech


def test_speech_is_rendered_and_understood(whisper_stt):
    tts = TextToSpeech()
    try:
        audio = tts.synthesize("Seventeen times twenty four is 408.")
        again = tts.synthesize_async("Second sentence.").result(30)
    finally:
        tts.close()
    assert audio.rate == 22_050 and audio.seconds > 1.0 and audio.rms() > 0.02
    assert again.seconds > 0.3  # a second request on the same worker is not lost or overwritten
    assert "408" in whisper_stt.transcribe(audio).text


def test_empty_text_is_refused():
    tts = TextToSpeech()
    try:
        with pytest.raises(SpeechSynthesisError, match="nothing to say"):
            tts.synthesize("   ")
    finally:
        tts.close()
