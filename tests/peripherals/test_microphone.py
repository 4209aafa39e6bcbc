"""Sources: a simulated microphone on a real-time clock, files, and a missing device."""

from __future__ import annotations

import time

import numpy as np
import pytest

from llmos.peripherals.audio import Audio
from llmos.peripherals.microphone import MicrophoneError, SoundDeviceMicrophone, StreamSource, file_source


def test_stream_source_keeps_real_time_and_plays_pushed_audio_after_silence():
    source = StreamSource(320, realtime=True)
    started = time.monotonic()
    silent = [source.read() for _ in range(10)]  # 0.2 s
    at = source.push(Audio(np.full(640, 0.5, dtype=np.float32), 16_000))
    loud = [source.read() for _ in range(2)]
    source.end()
    assert source.read() is None
    elapsed = time.monotonic() - started
    assert all(not f.any() for f in silent) and all(np.allclose(f, 0.5) for f in loud)
    assert abs(at - 0.2) < 1e-6
    assert elapsed >= 0.2  # it kept real time (an upper bound would measure this machine's load)


def test_file_source_plays_the_file_then_silence_then_ends(spoken):
    source = file_source(spoken("hello"), trailing_silence_s=0.5)
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    audio = np.concatenate(frames)
    assert np.abs(audio[:-8000]).max() > 0.1 and not audio[-7000:].any()


def test_no_microphone_is_a_clear_one_line_error():
    with pytest.raises(MicrophoneError) as info:
        SoundDeviceMicrophone(device=9999)
    assert str(info.value).startswith("no microphone") and "\n" not in str(info.value)
