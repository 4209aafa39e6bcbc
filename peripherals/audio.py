"""Audio as data: mono float32 samples at a known rate, read from and written to WAV files.

``read_wav`` accepts any common WAV: PCM 8/16/24/32-bit, IEEE float 32/64-bit, WAVE_FORMAT_EXTENSIBLE,
any channel count (mixed down to mono) and any sample rate (``Audio.resampled`` converts). A file
that is not a WAV, is cut short or holds no samples raises :class:`AudioError` with one line.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPEECH_RATE = 16_000  # what the VAD and whisper want

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


class AudioError(Exception):
    """Audio that cannot be used: a broken, empty or unsupported file, or a missing device."""


@dataclass(frozen=True)
class Audio:
    """Mono samples in [-1, 1] (float32) at ``rate`` Hz."""

    samples: np.ndarray
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate if self.rate else 0.0

    def resampled(self, rate: int) -> "Audio":
        """The same sound at ``rate`` Hz (band-limited linear interpolation; good for speech)."""
        if rate == self.rate or len(self.samples) == 0:
            return Audio(self.samples, rate)
        x = self.samples
        if rate < self.rate:  # low-pass first, so high frequencies do not fold into speech
            width = max(1, int(round(self.rate / rate)))
            if width > 1:
                kernel = np.hanning(2 * width + 1).astype(np.float32)
                x = np.convolve(x, kernel / kernel.sum(), mode="same")
        n = int(round(len(x) * rate / self.rate))
        positions = np.arange(n, dtype=np.float64) * (self.rate / rate)
        out = np.interp(positions, np.arange(len(x)), x).astype(np.float32)
        return Audio(out, rate)

    def rms(self) -> float:
        return float(np.sqrt(np.mean(np.square(self.samples)))) if len(self.samples) else 0.0

    def to_int16(self) -> np.ndarray:
        return (np.clip(self.samples, -1.0, 1.0) * 32767.0).astype("<i2")

    @staticmethod
    def silence(seconds: float, rate: int = SPEECH_RATE) -> "Audio":
        return Audio(np.zeros(int(seconds * rate), dtype=np.float32), rate)

    def __add__(self, other: "Audio") -> "Audio":
        other = other.resampled(self.rate)
        return Audio(np.concatenate([self.samples, other.samples]), self.rate)


def read_wav(path: Path) -> Audio:
    """The audio in a WAV file, mono, at the file's own rate. Raises AudioError (one line)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AudioError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return parse_wav(data)
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from None


def parse_wav(data: bytes) -> Audio:
    if len(data) == 0:
        raise AudioError("the file is empty")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError("not a WAV file (no RIFF/WAVE header)")
    fmt: tuple[int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8:pos + 8 + size]
        if chunk == b"fmt ":
            if len(body) < 16:
                raise AudioError("its format chunk is cut short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]  # the sub-format GUID starts with the tag
            fmt = (tag, channels, rate, bits)
        elif chunk == b"data":
            if fmt is None:
                raise AudioError("its data comes before its format chunk")
            return _decode(body, *fmt)
        pos += 8 + size + (size & 1)
    raise AudioError("no audio data chunk" if fmt else "no format chunk (the file is cut short or broken)")


def _decode(body: bytes, tag: int, channels: int, rate: int, bits: int) -> Audio:
    if channels < 1 or rate < 1000 or rate > 384_000:
        raise AudioError(f"implausible format ({channels} channels at {rate} Hz)")
    width = bits // 8
    frame = width * channels
    if frame == 0:
        raise AudioError(f"unsupported sample size ({bits} bits)")
    usable = len(body) - len(body) % frame
    if usable == 0:
        raise AudioError("it holds no audio samples")
    raw = body[:usable]
    if tag == _PCM and bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == _PCM and bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif tag == _PCM and bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif tag == _PCM and bits == 32:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    elif tag == _FLOAT and bits in (32, 64):
        x = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float32)
        x = np.nan_to_num(np.clip(x, -1.0, 1.0))
    else:
        raise AudioError(f"unsupported WAV encoding (format tag {tag}, {bits} bits)")
    x = x.reshape(-1, channels).mean(axis=1).astype(np.float32)
    return Audio(x, rate)


def wav_bytes(audio: Audio) -> bytes:
    """16-bit PCM mono WAV."""
    pcm = audio.to_int16().tobytes()
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, _PCM, 1,
                         audio.rate, audio.rate * 2, 2, 16, b"data", len(pcm))
    return header + pcm


def write_wav(path: Path, audio: Audio) -> None:
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(wav_bytes(audio))
    partial.replace(path)
