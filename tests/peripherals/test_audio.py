"""WAV in any common format, refused clearly when broken; resampling."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from llmos.peripherals.audio import Audio, AudioError, read_wav, write_wav


def _wav(samples: np.ndarray, rate: int, tag: int, bits: int, channels: int = 1, extensible: bool = False) -> bytes:
    """A WAV file of ``samples`` (frames x channels in [-1, 1]) in the given encoding."""
    x = samples.reshape(len(samples), -1) if len(samples) else samples.reshape(0, channels)
    if tag == 3:
        data = x.astype("<f4" if bits == 32 else "<f8").tobytes()
    elif bits == 8:
        data = (x * 127 + 128).astype(np.uint8).tobytes()
    elif bits == 24:
        v = (x * (2**23 - 1)).astype("<i4").reshape(-1)
        data = b"".join(int(i & 0xFFFFFF).to_bytes(3, "little") for i in v)
    else:
        data = (x * (2 ** (bits - 1) - 1)).astype({16: "<i2", 32: "<i4"}[bits]).tobytes()
    block = channels * bits // 8
    if extensible:
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0)
        fmt += struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"LIST" + struct.pack("<I", 4) + b"INFO"  # an extra chunk readers must skip
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def _tone(rate: int, hz: float = 440.0, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("tag,bits,extensible", [(1, 8, False), (1, 16, False), (1, 24, False), (1, 32, False),
                                                 (3, 32, False), (3, 64, False), (1, 16, True), (3, 32, True)])
def test_every_common_encoding_reads_back_the_same_samples(tmp_path, tag, bits, extensible):
    tone = _tone(8000)
    path = tmp_path / "tone.wav"
    path.write_bytes(_wav(tone, 8000, tag, bits, extensible=extensible))
    audio = read_wav(path)
    assert audio.rate == 8000 and len(audio.samples) == len(tone)
    assert np.max(np.abs(audio.samples - tone)) < (0.02 if bits == 8 else 1e-3)


def test_stereo_is_mixed_down_and_any_rate_resamples_to_16k(tmp_path):
    tone = _tone(44_100, 440.0, 1.0)
    stereo = np.stack([tone, tone], axis=1)
    path = tmp_path / "stereo.wav"
    path.write_bytes(_wav(stereo, 44_100, 1, 16, channels=2))
    audio = read_wav(path)
    assert audio.rate == 44_100 and abs(len(audio.samples) - 44_100) == 0
    at16 = audio.resampled(16_000)
    assert at16.rate == 16_000 and abs(len(at16.samples) - 16_000) <= 1
    spectrum = np.abs(np.fft.rfft(at16.samples))
    assert abs(np.argmax(spectrum) * 16_000 / len(at16.samples) - 440.0) < 2.0  # the same pitch


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"hello, this is not audio at all", "not a WAV"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00", "cut short"),
    (b"RIFF\x24\x00\x00\x00WAVE", "no format chunk"),
])
def test_broken_files_are_refused_with_one_line(tmp_path, content, message):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError) as info:
        read_wav(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


def test_a_wav_with_no_samples_is_refused(tmp_path):
    path = tmp_path / "empty-data.wav"
    path.write_bytes(_wav(np.zeros(0, dtype=np.float32), 16_000, 1, 16))
    with pytest.raises(AudioError, match="no audio samples"):
        read_wav(path)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(AudioError, match="cannot read"):
        read_wav(tmp_path / "nope.wav")


def test_write_then_read_round_trips(tmp_path):
    audio = Audio(_tone(22_050), 22_050)
    write_wav(tmp_path / "out.wav", audio)
    back = read_wav(tmp_path / "out.wav")
    assert back.rate == 22_050 and np.max(np.abs(back.samples - audio.samples)) < 1e-3
