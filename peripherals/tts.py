"""Text to speech: pyttsx3 on espeak-ng, rendered to audio (never played by pyttsx3 itself).

pyttsx3's engine is not thread-safe and its ``say`` plays through ``aplay`` on its own; llmos
renders each sentence to a WAV with ``save_to_file`` on one worker thread that owns the engine,
and plays the samples through :mod:`llmos.peripherals.playback` (stoppable mid-sentence).
A fresh engine per request avoids pyttsx3 2.99's bug where a later call overwrote a saved file.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .audio import Audio, AudioError, read_wav

log = logging.getLogger(__name__)


class SpeechSynthesisError(AudioError):
    """Text could not be turned into speech (one line)."""


@dataclass(frozen=True)
class TtsOptions:
    rate_wpm: int = 180
    voice: str | None = None  # a pyttsx3 voice id; None: espeak-ng's default (English)
    volume: float = 1.0


class TextToSpeech:
    def __init__(self, options: TtsOptions | None = None) -> None:
        self.options = options or TtsOptions()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmos-tts")
        self._dir = Path(tempfile.mkdtemp(prefix="llmos-tts-"))
        self._count = 0
        self._lock = threading.Lock()

    def synthesize(self, text: str) -> Audio:
        """The spoken ``text`` (22.05 kHz mono). Raises SpeechSynthesisError."""
        return self.synthesize_async(text).result()

    def synthesize_async(self, text: str) -> "Future[Audio]":
        with self._lock:
            self._count += 1
            path = self._dir / f"say-{self._count}.wav"
        return self._pool.submit(self._render, text, path)

    def _render(self, text: str, path: Path) -> Audio:
        if not text.strip():
            raise SpeechSynthesisError("nothing to say")
        try:
            import pyttsx3
            import pyttsx3.drivers.espeak as espeak_driver

            # the driver print()s "Audio saved to ..." on stdout, which would corrupt `--json`
            # output: send its prints (that module's only) to the log instead
            espeak_driver.print = lambda *args, **kwargs: log.debug(" ".join(map(str, args)))  # type: ignore[attr-defined]
            started = time.monotonic()
            engine = pyttsx3.init("espeak")
            engine.setProperty("rate", self.options.rate_wpm)
            engine.setProperty("volume", self.options.volume)
            if self.options.voice:
                engine.setProperty("voice", self.options.voice)
            engine.save_to_file(text, str(path))
            engine.runAndWait()
            engine.stop()
        except Exception as exc:  # no espeak-ng library, a driver error
            raise SpeechSynthesisError(f"text to speech failed: {exc} (is espeak-ng installed?)") from None
        try:
            audio = read_wav(path)
        except AudioError as exc:
            raise SpeechSynthesisError(f"text to speech wrote no audio: {exc}") from None
        finally:
            path.unlink(missing_ok=True)
        log.debug("tts: %d chars -> %.2f s of audio in %.3f s", len(text), audio.seconds, time.monotonic() - started)
        return audio

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
