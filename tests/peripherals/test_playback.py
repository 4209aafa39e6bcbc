"""Playback stops mid-sentence; a missing output device is a clear error."""

from __future__ import annotations

import time

import numpy as np
import pytest

from llmos.peripherals.audio import Audio
from llmos.peripherals.playback import Player, RecordingSink, SoundDeviceSink, SpeakerError


def _clip(seconds: float, rate: int = 22_050) -> Audio:
    t = np.arange(int(rate * seconds)) / rate
    return Audio((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate)


def played_at_least(sink: RecordingSink, seconds: float, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while sink.audio().seconds < seconds:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_stop_silences_a_clip_mid_way_and_drops_the_queue():
    """How soon it stops is a figure (bench: playback_stop_ms); here, that it does, mid-clip."""
    sink = RecordingSink(realtime=True)
    player = Player(sink)
    try:
        player.enqueue(_clip(2.0))
        player.enqueue(_clip(2.0))  # queued: must be dropped by stop
        assert played_at_least(sink, 0.3), "nothing was played"
        player.stop()
        assert player.wait_idle(30.0)  # the player thread has left the clip and the queue
        played = sink.audio().seconds
        player.enqueue(_clip(0.1))  # and it plays the next clip after a stop
        assert player.wait_idle(30.0)
    finally:
        player.close()
    assert 0.3 <= played < 2.0  # stopped mid-sentence; the second clip never started
    assert sink.audio().seconds == pytest.approx(played + 0.1, abs=1 / sink.rate)


def test_clips_play_in_order_and_completely():
    sink = RecordingSink(rate=16_000)
    player = Player(sink)
    try:
        player.enqueue(Audio(np.full(1600, 0.1, dtype=np.float32), 16_000))
        player.enqueue(Audio(np.full(800, 0.2, dtype=np.float32), 16_000))
        assert player.wait_idle(5.0)
    finally:
        player.close()
    out = sink.audio().samples
    assert len(out) == 2400 and np.allclose(out[:1600], 0.1) and np.allclose(out[1600:], 0.2)
    assert player.first_block_at is not None


def test_no_output_device_is_a_clear_one_line_error():
    with pytest.raises(SpeakerError) as info:
        SoundDeviceSink(device=9999)
    assert str(info.value).startswith("no audio output") and "\n" not in str(info.value)
