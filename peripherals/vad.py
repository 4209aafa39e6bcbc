"""Voice activity detection and end-pointing: where an utterance starts and where it ends.

A frame (20 ms at 16 kHz) counts as voiced when WebRTC's VAD (a GMM over sub-band energies,
``webrtcvad``) says speech *and* its spectrum is not flat (white noise that fools the VAD is
flat; speech has formants) *and* some of its energy lies in the speech band 250-4000 Hz (mains
hum does not) *and* it is above a floor of -55 dBFS. An utterance whose voiced frames keep one
steady level (a fan, a motor) is discarded: speech rises and falls with its syllables. The :class:`Endpointer`
turns voiced frames into events: :class:`SpeechStarted` once enough of the recent frames are
voiced (the barge-in trigger), :class:`SpeechEnded` with the utterance (pre-roll included) after
a stretch of silence, or :class:`SpeechDiscarded` when what was heard was too short to be speech.

Between the two, :class:`SpeechPaused` comes after a shorter silence (``pause_s``) with the audio
the utterance will have if the silence goes on: the same samples :class:`SpeechEnded` will carry
(both keep the same short tail of silence), so a listener may start transcribing early and use
the result when the end comes with no more speech (the two have the same start and length).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from .audio import SPEECH_RATE, Audio


@dataclass(frozen=True)
class VadOptions:
    frame_ms: int = 20  # webrtcvad takes 10, 20 or 30 ms
    aggressiveness: int = 3  # 0 (lenient) .. 3 (strict)
    start_window: int = 5  # speech starts when ``start_voiced`` of the last ``start_window`` frames are voiced
    start_voiced: int = 4
    end_silence_s: float = 0.45  # this much unvoiced audio ends the utterance
    pause_s: float = 0.2  # this much unvoiced audio is a pause: SpeechPaused (0 = never)
    preroll_s: float = 0.25  # audio kept from before the start
    min_speech_s: float = 0.25  # shorter voiced runs are discarded (clicks, coughs)
    max_utterance_s: float = 20.0
    floor_dbfs: float = -55.0
    max_flatness: float = 0.35  # spectral flatness above this is noise, not a voice
    min_band_fraction: float = 0.1  # share of a frame's energy in 250-4000 Hz
    min_level_variation: float = 0.15  # std/mean of the voiced frames' levels

    @property
    def frame_samples(self) -> int:
        return SPEECH_RATE * self.frame_ms // 1000


@dataclass(frozen=True)
class SpeechStarted:
    at_s: float  # stream time of the first voiced frame


@dataclass(frozen=True)
class SpeechEnded:
    audio: Audio
    started_s: float
    ended_s: float  # stream time of the last voiced frame
    voiced_s: float


@dataclass(frozen=True)
class SpeechPaused:
    """The user paused: ``audio`` is the utterance as :class:`SpeechEnded` will carry it if the
    silence lasts (not checked for length or steadiness yet: the end may still discard it)."""

    audio: Audio
    started_s: float
    ended_s: float  # stream time of the last voiced frame


@dataclass(frozen=True)
class SpeechDiscarded:
    voiced_s: float


VadEvent = SpeechStarted | SpeechPaused | SpeechEnded | SpeechDiscarded


def _flatness(power: np.ndarray) -> float:
    """Geometric over arithmetic mean of a power spectrum (0 = tonal, 1 = white noise)."""
    return float(np.exp(np.mean(np.log(power))) / np.mean(power))


class VoiceDetector:
    """Is one frame voiced? webrtcvad, with a flatness and a level gate."""

    def __init__(self, options: VadOptions | None = None) -> None:
        import webrtcvad

        self.options = options or VadOptions()
        self._vad = webrtcvad.Vad(self.options.aggressiveness)
        self._floor = 10 ** (self.options.floor_dbfs / 20)

    def is_voiced(self, frame: np.ndarray) -> bool:
        if float(np.sqrt(np.mean(np.square(frame)))) < self._floor:
            return False
        pcm = (np.clip(frame, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        if not self._vad.is_speech(pcm, SPEECH_RATE):
            return False
        power = np.abs(np.fft.rfft(frame * np.hanning(len(frame)))) ** 2 + 1e-12
        hz = np.fft.rfftfreq(len(frame), 1 / SPEECH_RATE)
        if power[(hz >= 250) & (hz <= 4000)].sum() / power.sum() < self.options.min_band_fraction:
            return False
        return _flatness(power) <= self.options.max_flatness


@dataclass
class _Utterance:
    started_s: float
    frames: list[np.ndarray] = field(default_factory=list)
    voiced: int = 0
    levels: list[float] = field(default_factory=list)  # RMS of each voiced frame
    silent_run: int = 0
    last_voiced_s: float = 0.0


class Endpointer:
    """Feeds 16 kHz frames of ``options.frame_samples``; returns the events each frame causes."""

    def __init__(self, options: VadOptions | None = None, detector: VoiceDetector | None = None) -> None:
        self.options = options or VadOptions()
        self.detector = detector or VoiceDetector(self.options)
        frame_s = self.options.frame_ms / 1000
        self._frame_s = frame_s
        self._recent: collections.deque[bool] = collections.deque(maxlen=self.options.start_window)
        self._preroll: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(1, int(self.options.preroll_s / frame_s)) + self.options.start_window)
        self._end_frames = max(1, int(round(self.options.end_silence_s / frame_s)))
        self._tail_frames = int(0.15 / frame_s)  # the silence kept after the last voiced frame
        # a pause is at least the tail long: then its audio is the audio the end will carry
        pause = max(int(round(self.options.pause_s / frame_s)), self._tail_frames)
        self._pause_frames = pause if 0 < self.options.pause_s and pause < self._end_frames else 0
        self._max_frames = int(self.options.max_utterance_s / frame_s)
        self._current: _Utterance | None = None
        self._t = 0.0  # stream time at the start of the next frame

    @property
    def in_speech(self) -> bool:
        return self._current is not None

    def reset(self) -> None:
        self._recent.clear()
        self._preroll.clear()
        self._current = None

    def feed(self, frame: np.ndarray) -> list[VadEvent]:
        voiced = self.detector.is_voiced(frame)
        start, self._t = self._t, self._t + self._frame_s
        events: list[VadEvent] = []
        cur = self._current
        if cur is None:
            self._preroll.append(frame)
            self._recent.append(voiced)
            if sum(self._recent) >= self.options.start_voiced:
                first = start - (len(self._recent) - 1 - list(self._recent).index(True)) * self._frame_s
                cur = self._current = _Utterance(first, list(self._preroll), voiced=sum(self._recent),
                                                 last_voiced_s=start + self._frame_s)
                self._preroll.clear()
                events.append(SpeechStarted(first))
            return events
        cur.frames.append(frame)
        if voiced:
            cur.voiced += 1
            cur.levels.append(float(np.sqrt(np.mean(np.square(frame)))))
            cur.silent_run = 0
            cur.last_voiced_s = start + self._frame_s
        else:
            cur.silent_run += 1
        if cur.silent_run >= self._end_frames or len(cur.frames) >= self._max_frames:
            events.append(self._close(cur))
        elif self._pause_frames and cur.silent_run == self._pause_frames:
            events.append(SpeechPaused(self._audio(cur), cur.started_s, cur.last_voiced_s))
        return events

    def flush(self) -> list[VadEvent]:
        """End of stream: close the utterance in progress."""
        return [self._close(self._current)] if self._current is not None else []

    def _close(self, cur: _Utterance) -> VadEvent:
        self._current = None
        self._recent.clear()
        voiced_s = cur.voiced * self._frame_s
        if voiced_s < self.options.min_speech_s:
            return SpeechDiscarded(voiced_s)
        levels = np.array(cur.levels) if cur.levels else np.ones(1)
        if levels.std() / max(levels.mean(), 1e-9) < self.options.min_level_variation:
            return SpeechDiscarded(voiced_s)  # one steady sound: a machine, not a voice
        return SpeechEnded(self._audio(cur), cur.started_s, cur.last_voiced_s, voiced_s)

    def _audio(self, cur: _Utterance) -> Audio:
        """The utterance up to its last voiced frame and a short tail of silence."""
        keep = len(cur.frames) - max(0, cur.silent_run - self._tail_frames)
        return Audio(np.concatenate(cur.frames[:keep]).astype(np.float32), SPEECH_RATE)


def frames(audio: Audio, frame_samples: int) -> list[np.ndarray]:
    """``audio`` at 16 kHz cut into whole frames (the last one padded with silence)."""
    x = audio.resampled(SPEECH_RATE).samples
    pad = (-len(x)) % frame_samples
    if pad:
        x = np.concatenate([x, np.zeros(pad, dtype=np.float32)])
    return list(x.reshape(-1, frame_samples))


def find_speech(audio: Audio, options: VadOptions | None = None) -> list[SpeechEnded]:
    """Every utterance in a recording (for files: ``llmos voice --input``)."""
    ep = Endpointer(options)
    found: list[SpeechEnded] = []
    for frame in frames(audio, ep.options.frame_samples):
        found += [e for e in ep.feed(frame) if isinstance(e, SpeechEnded)]
    found += [e for e in ep.flush() if isinstance(e, SpeechEnded)]
    return found
