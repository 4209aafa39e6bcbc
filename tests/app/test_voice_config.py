"""The voice parts follow the configuration; flags given to `llmos voice` win over it."""

from __future__ import annotations

from llmos.app.voice_config import speech_to_text, text_to_speech, voice_options
from llmos.kernel.config import Config
from llmos.peripherals.vad import Endpointer


def test_config_sets_wake_phrase_end_of_utterance_whisper_and_voice():
    config = Config(voice_wake_phrase=" hey computer ", vad_end_silence_s=0.8, stt_model="base",
                    tts_rate_wpm=140, tts_voice="en-us")
    options = voice_options(config)
    assert options.wake_phrase == "hey computer"
    assert options.vad.end_silence_s == 0.8
    assert Endpointer(options.vad)._end_frames == 40  # 0.8 s of 20 ms frames
    assert speech_to_text(config).model_name.value == "base"
    tts = text_to_speech(config)
    try:
        assert tts.options.rate_wpm == 140 and tts.options.voice == "en-us"
    finally:
        tts.close()


def test_flags_win_and_an_empty_wake_flag_answers_everything():
    config = Config(voice_wake_phrase="hey computer", stt_model="base")
    assert voice_options(config, "ok llmos").wake_phrase == "ok llmos"
    assert voice_options(config, "").wake_phrase is None
    assert speech_to_text(config, "tiny.en").model_name.value == "tiny.en"
    assert voice_options(None).wake_phrase is None and voice_options(None).vad.end_silence_s == 0.45
