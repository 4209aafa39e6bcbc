"""Audio output that can be stopped mid-sentence.

A :class:`Player` plays queued clips on its own thread in 20 ms blocks into a sink, so
:meth:`Player.stop` takes effect within one block (plus the sink's own buffer, which
``abort`` drops). Sinks:

- :class:`SoundDeviceSink`: the default output device through sounddevice (PortAudio);
  :class:`SpeakerError` when there is none.
- :class:`RecordingSink`: keeps what was played (to write ``--output`` files, for tests and the
  benchmark); ``realtime=True`` consumes blocks at the speaker's pace, as a sound card would.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from .audio import Audio, AudioError, write_wav

log = logging.getLogger(__name__)

BLOCK_S = 0.02


class SpeakerError(AudioError):
    """No usable audio output (one line that says why)."""


class AudioSink(Protocol):
    rate: int

    def write(self, block: np.ndarray) -> None:
        """Play one block; returns when the sink can take the next one (real time for a device)."""

    def abort(self) -> None:
        """Drop whatever is buffered and not yet heard."""

    def close(self) -> None: ...


class RecordingSink:
    """Keeps every block written; ``realtime`` paces writes like a sound card."""

    def __init__(self, rate: int = 22_050, realtime: bool = False) -> None:
        self.rate = rate
        self.realtime = realtime
        self._blocks: list[np.ndarray] = []
        self._next_at: float | None = None
        self._lock = threading.Lock()

    def write(self, block: np.ndarray) -> None:
        if self.realtime:
            now = time.monotonic()
            with self._lock:  # abort() may reset the clock from another thread
                due = self._next_at if self._next_at is not None and self._next_at > now else now
                self._next_at = due + len(block) / self.rate
            time.sleep(max(0.0, due - now))
        with self._lock:
            self._blocks.append(block.copy())

    def abort(self) -> None:
        with self._lock:
            self._next_at = None

    def close(self) -> None:
        pass

    def audio(self) -> Audio:
        with self._lock:
            samples = np.concatenate(self._blocks) if self._blocks else np.zeros(0, dtype=np.float32)
        return Audio(samples.astype(np.float32), self.rate)

    def save(self, path: Path) -> None:
        write_wav(path, self.audio())


class SoundDeviceSink:
    """The default (or a named) output device."""

    def __init__(self, rate: int = 22_050, device: int | str | None = None) -> None:
        self.rate = rate
        try:
            import sounddevice as sd
        except OSError as exc:  # libportaudio2 is missing
            raise SpeakerError(f"no audio output: PortAudio is not available ({exc})") from None
        try:
            sd.check_output_settings(device=device, samplerate=rate, channels=1, dtype="float32")
            self._stream = sd.OutputStream(device=device, samplerate=rate, channels=1, dtype="float32",
                                           latency="low")
            self._stream.start()
        except Exception as exc:  # PortAudioError, ValueError: no device
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "-9996" in text or "Invalid device" in text or "No output device" in text or "querying" in text:
                text = "no audio output device is available"
            raise SpeakerError(f"no audio output: {text}") from None

    def write(self, block: np.ndarray) -> None:
        self._stream.write(block.reshape(-1, 1).astype(np.float32))

    def abort(self) -> None:
        try:
            self._stream.abort()
            self._stream.start()
        except Exception as exc:
            log.warning("audio output: %s", exc)

    def close(self) -> None:
        try:
            self._stream.close()
        except Exception:
            pass


class Player:
    """Plays queued clips in order on a thread; ``stop`` silences it at once and drops the queue."""

    def __init__(self, sink: AudioSink) -> None:
        self.sink = sink
        self._queue: queue.Queue[tuple[Audio, int] | None] = queue.Queue()
        self._generation = 0  # bumped by stop(): blocks of older clips are not played
        self._lock = threading.Lock()
        self._busy = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self.first_block_at: float | None = None  # monotonic time of the first block played
        self.stopped_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="llmos-player", daemon=True)
        self._thread.start()

    @property
    def playing(self) -> bool:
        return not self._idle.is_set()

    def enqueue(self, audio: Audio) -> None:
        with self._lock:
            self._pending += 1
            self._idle.clear()
            generation = self._generation
        self._queue.put((audio.resampled(self.sink.rate), generation))

    def stop(self) -> None:
        """Stop now: the block in progress is the last one heard; queued clips are dropped."""
        with self._lock:
            self._generation += 1
        self.sink.abort()
        deadline = time.monotonic() + 0.2
        while self._busy.is_set() and time.monotonic() < deadline:
            time.sleep(0.001)
        self.stopped_at = time.monotonic()

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._idle.wait(timeout)

    def close(self) -> None:
        self.stop()
        self._queue.put(None)
        self._thread.join(2.0)
        self.sink.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            audio, generation = item
            self._busy.set()
            try:
                self._play(audio, generation)
            except Exception:  # a sink that fails: log it, keep the thread for the next clip
                log.exception("audio output failed")
            finally:
                self._busy.clear()
                with self._lock:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.set()

    def _play(self, audio: Audio, generation: int) -> None:
        n = max(1, int(self.sink.rate * BLOCK_S))
        samples = audio.samples
        for start in range(0, len(samples), n):
            if self._generation != generation:
                return
            if self.first_block_at is None:
                self.first_block_at = time.monotonic()
            self.sink.write(samples[start:start + n])
