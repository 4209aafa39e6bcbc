"""The voice loop: real speech (espeak-ng) -> whisper -> kernel turn -> pyttsx3 reply.

The end-to-end tests run the real model; the scripted-backend tests check the loop's own logic
(barge-in ordering, wake phrase, silence) fast, on the same real audio path.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from llmos.app.voice import (BargeIn, Heard, Ignored, StateChanged, TurnDone, VoiceEvent, VoiceLoop,
                             VoiceOptions, VoiceState, spoken_reply)
from llmos.kernel.backends.scripted import ScriptedBackend
from llmos.kernel.loop import Kernel
from llmos.kernel.registry import DeviceRegistry
from llmos.peripherals.audio import Audio, read_wav
from llmos.peripherals.microphone import StreamSource, file_source
from llmos.peripherals.playback import RecordingSink
from llmos.peripherals.tts import TextToSpeech
from tests.peripherals.fixtures import trimmed


class Recorder:
    def __init__(self) -> None:
        self.events: list[VoiceEvent] = []
        self.lock = threading.Lock()

    def __call__(self, event: VoiceEvent) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: type) -> list:
        with self.lock:
            return [e for e in self.events if isinstance(e, kind)]

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return False


@pytest.fixture()
def tts():
    engine = TextToSpeech()
    yield engine
    engine.close()


def _loop(kernel, stt, tts, sink, **options) -> tuple[VoiceLoop, Recorder]:
    loop = VoiceLoop(kernel, stt, tts, sink, VoiceOptions(**options))
    recorder = Recorder()
    loop.subscribe(recorder)
    return loop, recorder


@pytest.fixture()
def scripted_kernel():
    backend = ScriptedBackend(delay_per_token=0.01)
    kernel = Kernel(backend, DeviceRegistry.from_entry_points()).start()
    kernel.wait_ready(10)
    yield kernel, backend
    kernel.shutdown()


# --- the real model -------------------------------------------------------------------------


# Real-model voice turns take seconds on an idle laptop, minutes on a shared, loaded 2-core box.
@pytest.mark.model
@pytest.mark.timeout(1800)
def test_spoken_arithmetic_is_calculated_and_answered_out_loud(voice_kernel, whisper_stt, tts, spoken):
    sink = RecordingSink()
    loop, seen = _loop(voice_kernel, whisper_stt, tts, sink)
    try:
        loop.run(file_source(spoken("what is seventeen times twenty four")))
    finally:
        loop.close()
    [done] = seen.of(TurnDone)
    assert "17" in done.transcript and "24" in done.transcript
    calls = [c for c in done.syscalls if c["device"] == "calculator" and c["ok"]]
    assert calls and calls[0]["result"] == "408"
    reply = sink.audio()
    assert reply.seconds > 0.5 and reply.rms() > 0.01  # not silent
    assert "408" in whisper_stt.transcribe(reply).text
    states = [e.state for e in seen.of(StateChanged)]
    assert states[:4] == [VoiceState.LISTENING, VoiceState.HEARING, VoiceState.THINKING, VoiceState.SPEAKING]
    assert states[-1] is VoiceState.OFF


@pytest.mark.model
@pytest.mark.timeout(1800)
def test_barge_in_stops_playback_and_the_new_utterance_is_answered(voice_kernel, whisper_stt, tts, spoken):
    sink = RecordingSink(realtime=True)
    loop, seen = _loop(voice_kernel, whisper_stt, tts, sink)
    mic = StreamSource(realtime=True)
    mic.push(Audio.silence(0.3) + read_wav(spoken("tell me a long story about a brave knight and a dragon")))
    loop.start(mic)
    try:
        assert seen.wait_for(lambda: loop.state is VoiceState.SPEAKING, 300), "the first reply was never spoken"
        assert seen.wait_for(lambda: sink.audio().seconds >= 0.2, 60), "nothing of the reply was heard"
        question = read_wav(spoken("what is seventeen times twenty four"))
        mic.push(question + Audio.silence(1.0))  # the user speaks over the reply
        assert seen.wait_for(lambda: seen.of(BargeIn), 10), "speaking over the reply did not interrupt it"
        played_at_barge_in = sink.audio().seconds
        assert seen.wait_for(lambda: len(seen.of(TurnDone)) == 2, 1200)
    finally:
        mic.end()
        loop.close()
    [barge] = seen.of(BargeIn)
    # the reply stopped while the user was still speaking (how soon: bench barge_in_ms)
    assert 0 <= barge.stopped_at - barge.speech_at < question.seconds
    first, second = seen.of(TurnDone)
    assert first.stopped  # the spoken answer (and the generation, if still running) was cut off
    assert [e.text for e in seen.of(Heard)][1].lower().startswith("what is")
    assert "408" in second.answer
    assert sink.audio().seconds > played_at_barge_in  # the second answer was spoken too
    info = {p["pid"]: p for p in voice_kernel.processes()}[loop.pid]
    assert info["priority"] == "voice"  # one process, the highest priority, for every voice turn


# --- fast: the scripted backend ---------------------------------------------------------------


def test_silence_and_noise_start_no_turn(scripted_kernel, whisper_stt, tts):
    kernel, backend = scripted_kernel
    rng = np.random.default_rng(5)
    noise = Audio((rng.standard_normal(16_000 * 2) * 0.2).astype(np.float32), 16_000)
    loop, seen = _loop(kernel, whisper_stt, tts, RecordingSink())
    try:
        loop.run(file_source(Audio.silence(2.0) + noise + Audio.silence(1.0)))
    finally:
        loop.close()
    assert seen.of(TurnDone) == [] and seen.of(Heard) == []
    assert backend.history == [] or all("Hello" not in h for h in backend.history)
    assert VoiceState.THINKING not in [e.state for e in seen.of(StateChanged)]


def test_wake_phrase_gates_turns(scripted_kernel, whisper_stt, tts, spoken):
    kernel, backend = scripted_kernel
    backend.enqueue("ANSWER: It is sunny today.")
    audio = (read_wav(spoken("what is the weather")) + Audio.silence(1.2, 22_050)
             + read_wav(spoken("hey computer, what is the weather")))
    sink = RecordingSink()
    loop, seen = _loop(kernel, whisper_stt, tts, sink, wake_phrase="hey computer")
    try:
        loop.run(file_source(audio))
    finally:
        loop.close()
    assert [e.reason for e in seen.of(Ignored)][0].startswith("no wake phrase")
    [heard] = seen.of(Heard)
    assert heard.text.lower().startswith("what is the weather")
    [done] = seen.of(TurnDone)
    assert done.answer == "It is sunny today." and sink.audio().seconds > 0.5


def test_barge_in_interrupts_a_scripted_reply_at_once(scripted_kernel, whisper_stt, tts, spoken):
    kernel, backend = scripted_kernel
    story = " ".join(["Once upon a time there was a knight who rode far away."] * 12)
    backend.enqueue(f"ANSWER: {story}", "ANSWER: Sure, stopping now.")
    sink = RecordingSink(realtime=True)
    loop, seen = _loop(kernel, whisper_stt, tts, sink)
    mic = StreamSource(realtime=True)
    mic.push(Audio.silence(0.2) + read_wav(spoken("tell me a story")))
    loop.start(mic)
    try:
        assert seen.wait_for(lambda: loop.state is VoiceState.SPEAKING, 60)
        assert seen.wait_for(lambda: sink.audio().seconds >= 0.5, 60), "nothing of the reply was heard"
        interruption = read_wav(spoken("stop please"))
        mic.push(interruption + Audio.silence(1.0))  # the user speaks over the reply
        assert seen.wait_for(lambda: seen.of(BargeIn), 10)
        played = sink.audio().seconds
        assert seen.wait_for(lambda: len(seen.of(TurnDone)) == 2, 60)
    finally:
        mic.end()
        loop.close()
    [barge] = seen.of(BargeIn)
    # the reply stopped while the user was still speaking (how soon: bench barge_in_ms)
    assert 0 <= barge.stopped_at - barge.speech_at < interruption.seconds
    first, second = seen.of(TurnDone)
    assert first.stopped and len(first.answer) < len(story)  # the generation was stopped too
    assert second.answer == "Sure, stopping now."
    assert played < 30


def test_a_bare_number_is_said_with_its_calculation():
    assert spoken_reply("408", True, ("17 * 24", "408")) == "17 times 24 is 408."
    assert spoken_reply("2**10 = 1024", False, None) == "2 to the power of 10 equals 1024"
    assert spoken_reply("It is 408.", True, ("17 * 24", "408")) == "It is 408."
    assert spoken_reply("**408**", True, None) == "408"


class CountingSTT:
    """The real whisper, counting what it is asked to transcribe."""

    def __init__(self, stt) -> None:
        self.stt = stt
        self.lengths: list[int] = []

    def load(self) -> None:
        self.stt.load()

    def transcribe(self, audio):
        self.lengths.append(len(audio.samples))
        return self.stt.transcribe(audio)


def test_whisper_starts_at_the_pause_and_the_turn_uses_that_transcript(scripted_kernel, whisper_stt, tts, spoken):
    kernel, backend = scripted_kernel
    backend.enqueue("ANSWER: Paris.")
    stt = CountingSTT(whisper_stt)
    loop, seen = _loop(kernel, stt, tts, RecordingSink())
    try:
        loop.run(file_source(Audio.silence(0.3) + read_wav(spoken("what is the capital of france"))
                             + Audio.silence(1.0)))
    finally:
        loop.close()
    [done] = seen.of(TurnDone)
    assert "capital" in done.transcript.lower()
    assert done.timings["stt_early"] == 1.0
    assert len(stt.lengths) == 1  # the early transcript was the turn's: whisper ran once


def test_speech_after_a_pause_is_transcribed_whole(scripted_kernel, whisper_stt, tts, spoken):
    kernel, backend = scripted_kernel
    backend.enqueue("ANSWER: I will.")
    stt = CountingSTT(whisper_stt)
    first, rest = trimmed(read_wav(spoken("remind me"))), trimmed(read_wav(spoken("to call my mother")))
    loop, seen = _loop(kernel, stt, tts, RecordingSink())
    try:
        loop.run(file_source(Audio.silence(0.3, first.rate) + first + Audio.silence(0.3, first.rate) + rest
                             + Audio.silence(1.0, first.rate)))
    finally:
        loop.close()
    [heard] = seen.of(Heard)
    assert "mother" in heard.text.lower()
    [done] = seen.of(TurnDone)
    assert done.timings["stt_early"] == 1.0  # the later pause's transcript, of the whole utterance
    assert max(stt.lengths) == stt.lengths[-1]  # the whole utterance was transcribed last


def test_a_given_chat_process_gets_the_voice_level_while_listening_and_back_after(scripted_kernel, whisper_stt, tts,
                                                                                  spoken):
    from llmos.kernel import events
    from llmos.kernel.process import Priority

    kernel, backend = scripted_kernel
    backend.enqueue("ANSWER: Hello there.")
    chat = kernel.spawn("chat", Priority.CHAT)
    other = kernel.spawn("chat", Priority.CHAT)
    changes: list[tuple[int, str]] = []
    unsubscribe = kernel.bus.subscribe(
        lambda e: changes.append((e.pid, e.new)) if isinstance(e, events.PriorityChanged) else None)
    loop = VoiceLoop(kernel, whisper_stt, tts, RecordingSink(), pid=chat)
    seen = Recorder()
    loop.subscribe(seen)
    mic = StreamSource()
    try:
        loop.start(mic)
        assert seen.wait_for(lambda: (chat, "voice") in changes, 5)
        loop.use_process(other)  # the window switched conversations
        assert seen.wait_for(lambda: changes[-2:] == [(chat, "chat"), (other, "voice")], 5)
        mic.push(read_wav(spoken("hello")) + Audio.silence(1.0))
        assert seen.wait_for(lambda: seen.of(TurnDone), 60)
    finally:
        mic.end()
        loop.close()
        unsubscribe()
    assert seen.wait_for(lambda: changes[-1] == (other, "chat"), 5)
    assert [p["priority"] for p in kernel.processes() if p["pid"] in (chat, other)] == ["chat", "chat"]
    assert loop.pid == other and seen.of(TurnDone)[0].answer == "Hello there."
