"""Microphone capture: sources that deliver 16 kHz mono frames.

- :class:`SoundDeviceMicrophone`: the default input device through sounddevice (PortAudio).
- :class:`StreamSource`: audio pushed in by code, delivered frame by frame, in real time or as
  fast as it is read; silence when nothing is pushed. A simulated microphone for tests, the
  benchmark and files (:func:`file_source`).

Every source has ``read() -> frame | None`` (None: the stream has ended) and ``close()``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from .audio import SPEECH_RATE, Audio, AudioError, read_wav

log = logging.getLogger(__name__)


class MicrophoneError(AudioError):
    """No usable microphone (one line that says why)."""


class AudioSource(Protocol):
    frame_samples: int

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


class StreamSource:
    """Frames of pushed audio; silence in between; ends after :meth:`end` once drained.

    ``realtime=True`` paces ``read`` at the frame rate (a microphone's clock); otherwise frames
    come as fast as they are read, and an empty, unended stream waits for a push.
    """

    def __init__(self, frame_samples: int = 320, realtime: bool = True) -> None:
        self.frame_samples = frame_samples
        self.realtime = realtime
        self._buffer = np.zeros(0, dtype=np.float32)
        self._lock = threading.Condition()
        self._ended = False
        self._next_at: float | None = None
        self.position_s = 0.0  # stream time of the next frame
        self.started_at: float | None = None  # monotonic time of the first read (stream time 0)
        self.pushed_at_s: list[float] = []  # stream time at which each push starts to be heard

    def push(self, audio: Audio) -> float:
        """Queue ``audio`` after what is queued; returns the stream time at which it starts."""
        samples = audio.resampled(SPEECH_RATE).samples.astype(np.float32)
        with self._lock:
            starts = self.position_s + len(self._buffer) / SPEECH_RATE
            self._buffer = np.concatenate([self._buffer, samples])
            self.pushed_at_s.append(starts)
            self._lock.notify_all()
        return starts

    def end(self) -> None:
        with self._lock:
            self._ended = True
            self._lock.notify_all()

    def read(self) -> np.ndarray | None:
        n = self.frame_samples
        if self.realtime:
            now = time.monotonic()
            if self._next_at is None:
                self._next_at = self.started_at = now
            delay = self._next_at - now
            if delay > 0:
                time.sleep(delay)
            self._next_at += n / SPEECH_RATE
        with self._lock:
            while not self.realtime and len(self._buffer) == 0 and not self._ended:
                self._lock.wait(0.5)
            if len(self._buffer) == 0 and self._ended:
                return None
            frame = self._buffer[:n]
            self._buffer = self._buffer[n:]
            self.position_s += n / SPEECH_RATE
        if len(frame) < n:
            frame = np.concatenate([frame, np.zeros(n - len(frame), dtype=np.float32)])
        return frame

    def close(self) -> None:
        self.end()
        with self._lock:
            self._buffer = np.zeros(0, dtype=np.float32)


def file_source(path_or_audio: Path | Audio, frame_samples: int = 320, realtime: bool = False,
                trailing_silence_s: float = 1.0) -> StreamSource:
    """A source that plays a WAV file (or audio) once, then ``trailing_silence_s`` of silence, then ends."""
    audio = path_or_audio if isinstance(path_or_audio, Audio) else read_wav(Path(path_or_audio))
    source = StreamSource(frame_samples, realtime)
    source.push(audio + Audio.silence(trailing_silence_s))
    source.end()
    return source


class SoundDeviceMicrophone:
    """The default (or a named) input device, captured by a PortAudio callback into a queue."""

    def __init__(self, frame_samples: int = 320, device: int | str | None = None) -> None:
        self.frame_samples = frame_samples
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=500)
        self._rest = np.zeros(0, dtype=np.float32)
        self._closed = False
        try:
            import sounddevice as sd
        except OSError as exc:  # libportaudio2 is missing
            raise MicrophoneError(f"no microphone: PortAudio is not available ({exc})") from None
        try:
            info = sd.query_devices(device, "input")
            self._rate = 16_000
            try:
                sd.check_input_settings(device=device, samplerate=self._rate, channels=1, dtype="float32")
            except Exception:
                self._rate = int(info["default_samplerate"])
            self._stream = sd.InputStream(device=device, samplerate=self._rate, channels=1, dtype="float32",
                                          blocksize=int(frame_samples * self._rate / SPEECH_RATE),
                                          callback=self._callback)
            self._stream.start()
        except Exception as exc:  # sounddevice.PortAudioError, ValueError: no such device
            raise MicrophoneError(f"no microphone: {_reason(exc)}") from None

    def _callback(self, indata: np.ndarray, frames: int, time_info: object, status: object) -> None:
        if status:
            log.debug("microphone: %s", status)
        try:
            self._queue.put_nowait(indata[:, 0].copy())
        except queue.Full:
            log.warning("microphone: frames dropped (the reader is too slow)")

    def read(self) -> np.ndarray | None:
        while len(self._rest) < self.frame_samples:
            if self._closed:
                return None
            try:
                block = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if self._rate != SPEECH_RATE:
                block = Audio(block, self._rate).resampled(SPEECH_RATE).samples
            self._rest = np.concatenate([self._rest, block])
        frame, self._rest = self._rest[:self.frame_samples], self._rest[self.frame_samples:]
        return frame

    def close(self) -> None:
        self._closed = True
        try:
            self._stream.close()
        except Exception:  # already gone
            pass


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "-9996" in text or "Invalid device" in text or "No input device" in text or "querying device" in text:
        return "no audio input device is available"
    return text.splitlines()[0]

