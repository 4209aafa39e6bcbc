"""The speech device, called as the kernel calls it: real pyttsx3 and whisper."""

from __future__ import annotations

from llmos.kernel.testing import call_device
from llmos.peripherals.audio import read_wav
from llmos.plugins.speech import device

GRANTS = ["microphone", "speaker"]


def test_manifest_declares_permissions_side_effects_and_examples():
    manifest = device.manifest()
    assert set(manifest["permissions"]) == {"microphone", "speaker"}
    calls = {c["name"]: c for c in manifest["calls"]}
    assert set(calls) == {"speech.speak", "speech.listen"}
    assert calls["speech.speak"]["side_effects"] is True  # (a device holding `speaker`: listen too)
    assert device.calls["speak"].side_effects and device.calls["speak"].examples and device.calls["listen"].examples
    assert calls["speech.listen"]["parameters"]["properties"]["seconds"]["maximum"] == 30


def test_speak_renders_speech_that_whisper_understands(tmp_path, whisper_stt):
    out = tmp_path / "said.wav"
    result = call_device(device, "speak", {"text": "Good morning, the meeting is at nine."}, grants=GRANTS,
                         settings={"output": str(out)})
    assert result.ok, result.error
    audio = read_wav(out)
    assert audio.seconds > 1.0 and audio.rms() > 0.02
    assert "morning" in whisper_stt.transcribe(audio).text.lower()


def test_listen_transcribes_what_was_said_as_untrusted(spoken):
    result = call_device(device, "listen", {"seconds": 5}, grants=GRANTS,
                         settings={"input": str(spoken("what is seventeen times twenty four"))})
    assert result.ok, result.error
    assert "17" in result.value and result.trusted is False


def test_listen_to_silence_hears_nothing(tmp_path):
    from llmos.peripherals.audio import Audio, write_wav

    write_wav(tmp_path / "quiet.wav", Audio.silence(2.0))
    result = call_device(device, "listen", {"seconds": 2}, grants=GRANTS, settings={"input": str(tmp_path / "quiet.wav")})
    assert result.ok and result.value == "(nothing was said)"


def test_without_grants_or_devices_the_errors_are_clear(tmp_path):
    refused = call_device(device, "speak", {"text": "hello"})
    assert not refused.ok and "permission" in refused.error and "speaker" in refused.error
    # this machine has no sound card; the first line says so (on a machine with one, it speaks)
    spoke = call_device(device, "speak", {"text": "hello"}, grants=GRANTS)
    assert spoke.ok or spoke.error.startswith("no audio output")
    empty = call_device(device, "speak", {"text": "  "}, grants=GRANTS)
    assert not empty.ok and "empty" in empty.error
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not a wav")
    bad = call_device(device, "listen", {"seconds": 2}, grants=GRANTS, settings={"input": str(broken)})
    assert not bad.ok and "not a WAV" in bad.error
    too_long = call_device(device, "listen", {"seconds": 99}, grants=GRANTS)
    assert not too_long.ok
