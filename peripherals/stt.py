"""Speech to text: openai-whisper on local weights (tiny.en by default, base optional).

The weights are the checkpoints ``tools/install_whisper.py`` converts at set-up
(:mod:`llmos.peripherals.whisper_weights`); nothing is downloaded. Audio goes in as a 16 kHz
float32 array, so whisper never calls ffmpeg. An utterance (at most 30 s) is decoded in one
window; whisper's own ``no_speech_prob`` and ``avg_logprob`` tell noise from speech.

Short windows: whisper's encoder always reads a 30 s window, so a 3 s utterance would cost as
much as 30 s. Like whisper.cpp's ``audio_ctx``, the encoder here reads only the utterance plus
``pad_s`` of silence (its positional embedding cut to that length): several times faster on
short utterances, with the same transcripts on the test speech. ``short_window=False`` turns it off.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .audio import SPEECH_RATE, Audio
from .numbers import spoken_numbers
from .whisper_weights import WeightsError, WhisperModel, weights_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transcript:
    text: str  # what was heard, spoken numbers in digits (numbers.spoken_numbers)
    seconds: float  # time spent transcribing
    audio_seconds: float
    no_speech_prob: float
    avg_logprob: float
    heard: str = ""  # whisper's own text, before the numbers were rewritten

    @property
    def is_speech(self) -> bool:
        """Words were heard (whisper's own test for silence, as in ``whisper.transcribe``)."""
        if not re.search(r"\w", self.text):
            return False
        return not (self.no_speech_prob > 0.6 and self.avg_logprob < -1.0)

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.audio_seconds if self.audio_seconds else 0.0


class SpeechToText:
    """One whisper model, loaded on first use; ``transcribe`` is safe from any thread (serialised)."""

    def __init__(self, model: WhisperModel = WhisperModel.TINY_EN, models_dir: Path | None = None,
                 short_window: bool = True, pad_s: float = 1.5, threads: int = 1) -> None:
        if models_dir is None:
            from llmos.kernel.model_file import models_dir as default_models_dir

            models_dir = default_models_dir()
        self.model_name = model
        self.path = weights_path(models_dir, model)
        self.short_window = short_window
        self.pad_s = pad_s
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._model is not None:
            return
        if not self.path.is_file():
            raise WeightsError(f"whisper {self.model_name.value} weights are missing at {self.path}: "
                               "run `make setup` (tools/install_whisper.py converts them)")
        import torch
        import whisper

        # One thread by default: next to llama.cpp's threads on 2 cores, two OpenMP threads ran
        # whisper 5-10x slower than one (they spin against each other); one is plenty for tiny.en.
        torch.set_num_threads(self.threads)
        started = time.monotonic()
        self._model = whisper.load_model(str(self.path), device="cpu")
        _allow_short_windows(self._model.encoder)
        log.info("whisper %s loaded in %.2f s", self.model_name.value, time.monotonic() - started)

    def transcribe(self, audio: Audio) -> Transcript:
        import whisper

        samples = audio.resampled(SPEECH_RATE).samples.astype(np.float32)
        with self._lock:
            self._load_locked()
            started = time.monotonic()
            if len(samples) > whisper.audio.N_SAMPLES:
                result = whisper.transcribe(self._model, samples, language="en", fp16=False, temperature=0.0,
                                            condition_on_previous_text=False)
                segments = result.get("segments") or [{}]
                text = result["text"]
                no_speech = float(min(s.get("no_speech_prob", 0.0) for s in segments))
                logprob = float(max(s.get("avg_logprob", 0.0) for s in segments))
            else:
                window = whisper.audio.N_SAMPLES
                if self.short_window:  # a whole number of seconds: utterance + padding
                    window = min(window, SPEECH_RATE * int(np.ceil(len(samples) / SPEECH_RATE + self.pad_s)))
                mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(samples, window), self._model.dims.n_mels)
                # speech runs at most ~5 tokens a second: a longer output is whisper looping
                limit = int(12 + 6 * len(samples) / SPEECH_RATE)
                options = whisper.DecodingOptions(language="en", fp16=False, without_timestamps=True,
                                                  temperature=0.0, sample_len=limit)
                decoded = whisper.decode(self._model, mel, options)
                text, no_speech, logprob = decoded.text, decoded.no_speech_prob, decoded.avg_logprob
            seconds = time.monotonic() - started
        heard = text.strip()
        return Transcript(spoken_numbers(heard), seconds, len(samples) / SPEECH_RATE, float(no_speech),
                          float(logprob), heard)


def _allow_short_windows(encoder: Any) -> None:
    """Let whisper's AudioEncoder read fewer than 3000 mel frames (its forward, less the assert)."""
    import torch.nn.functional as F

    def forward(x: Any) -> Any:
        x = F.gelu(encoder.conv1(x))
        x = F.gelu(encoder.conv2(x))
        x = x.permute(0, 2, 1)
        x = (x + encoder.positional_embedding[: x.shape[1]]).to(x.dtype)
        for block in encoder.blocks:
            x = block(x)
        return encoder.ln_post(x)

    encoder.forward = forward
