"""End-pointing on real speech (espeak-ng); silence and noise make no utterance."""

from __future__ import annotations

import numpy as np

from llmos.peripherals.audio import Audio, read_wav
from tests.peripherals.fixtures import trimmed
from llmos.peripherals.vad import (
    Endpointer, SpeechEnded, SpeechPaused, SpeechStarted, VadOptions, find_speech, frames,
)


def test_one_sentence_between_silences_is_one_utterance(spoken):
    speech = read_wav(spoken("what is seventeen times twenty four"))
    found = find_speech(Audio.silence(1.0, speech.rate) + speech + Audio.silence(1.0, speech.rate))
    assert len(found) == 1
    utterance = found[0]
    assert 0.8 <= utterance.started_s <= 1.2
    assert abs((utterance.ended_s - utterance.started_s) - speech.seconds) < 0.6
    assert utterance.audio.seconds >= speech.seconds * 0.8  # the words are all in it (pre-roll too)


def test_two_sentences_with_a_pause_are_two_utterances(spoken):
    a = read_wav(spoken("good morning"))
    b = read_wav(spoken("what time is it"))
    found = find_speech(a + Audio.silence(1.2, a.rate) + b + Audio.silence(1.0, a.rate))
    assert len(found) == 2


def test_speech_start_is_reported_within_a_tenth_of_a_second(spoken):
    speech = read_wav(spoken("hello computer"))
    audio = Audio.silence(0.5) + speech
    ep = Endpointer()
    for i, frame in enumerate(frames(audio, ep.options.frame_samples)):
        events = [e for e in ep.feed(frame) if isinstance(e, SpeechStarted)]
        if events:
            heard_at = (i + 1) * ep.options.frame_ms / 1000
            break
    else:
        raise AssertionError("speech was never detected")
    assert 0.45 <= events[0].at_s <= 0.65
    assert heard_at - 0.5 < 0.2


def _events(audio: Audio, options: VadOptions | None = None) -> list:
    ep = Endpointer(options)
    found: list = []
    for frame in frames(audio, ep.options.frame_samples):
        found += ep.feed(frame)
    return found + ep.flush()


def test_a_pause_before_the_end_carries_the_audio_the_end_will_carry(spoken):
    """Early transcription relies on it: same start, same samples."""
    speech = read_wav(spoken("what is the capital of france"))
    found = _events(Audio.silence(0.5, speech.rate) + speech + Audio.silence(1.0, speech.rate))
    kinds = [type(e) for e in found]
    assert kinds.count(SpeechEnded) == 1
    paused = [e for e in found if isinstance(e, SpeechPaused)]
    assert paused, kinds
    ended = next(e for e in found if isinstance(e, SpeechEnded))
    last = paused[-1]
    assert kinds.index(SpeechPaused) < kinds.index(SpeechEnded)
    assert last.started_s == ended.started_s
    assert np.array_equal(last.audio.samples, ended.audio.samples)


def test_speech_after_a_pause_makes_the_end_differ_from_the_pause(spoken):
    a = trimmed(read_wav(spoken("remind me")))
    b = trimmed(read_wav(spoken("to call my mother")))
    # 0.3 s between the phrases: a pause (0.2 s) but not an end (0.45 s)
    found = _events(Audio.silence(0.3, a.rate) + a + Audio.silence(0.3, a.rate) + b + Audio.silence(1.0, a.rate))
    ended = [e for e in found if isinstance(e, SpeechEnded)]
    assert len(ended) == 1
    first_pause = next(e for e in found if isinstance(e, SpeechPaused))
    assert len(first_pause.audio.samples) < len(ended[0].audio.samples)


def test_pauses_can_be_turned_off(spoken):
    speech = read_wav(spoken("good morning"))
    found = _events(speech + Audio.silence(1.0, speech.rate), VadOptions(pause_s=0))
    assert not [e for e in found if isinstance(e, SpeechPaused)]
    assert [e for e in found if isinstance(e, SpeechEnded)]


def test_silence_makes_no_utterance():
    assert find_speech(Audio.silence(5.0)) == []


def test_white_noise_and_hum_make_no_utterance():
    rng = np.random.default_rng(7)
    noise = Audio((rng.standard_normal(16_000 * 4) * 0.2).astype(np.float32), 16_000)
    t = np.arange(16_000 * 3) / 16_000
    hum = Audio((0.3 * np.sin(2 * np.pi * 50 * t)).astype(np.float32), 16_000)
    assert find_speech(noise) == []
    assert find_speech(hum) == []


def test_a_click_is_discarded():
    click = np.zeros(16_000, dtype=np.float32)
    click[8000:8100] = 0.9
    assert find_speech(Audio(click, 16_000)) == []


def test_steady_machine_noise_is_discarded():
    rng = np.random.default_rng(11)
    # band-limited noise at one steady level (a fan): not flat, in the speech band, but steady
    noise = rng.standard_normal(16_000 * 3)
    fan = np.convolve(noise, np.hanning(9) / np.hanning(9).sum(), mode="same")
    fan = Audio((0.3 * fan / np.abs(fan).max()).astype(np.float32), 16_000)
    assert find_speech(fan) == []
