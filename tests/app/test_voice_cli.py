"""`llmos voice`: bad input is refused in one line before the model loads; one turn from a file."""

from __future__ import annotations

import json
import re

import pytest

from llmos.app import cli, voice_cli
from llmos.kernel.config import load_config
from llmos.peripherals.audio import Audio, read_wav, write_wav


@pytest.mark.parametrize("content,message", [(b"", "empty"), (b"RIFF\x10\x00\x00\x00WAVEjunkjunk", "cut short"),
                                             (b"ID3 an mp3, not a wav", "not a WAV")])
def test_a_broken_or_empty_wav_is_refused(tmp_path, capsys, content, message):
    path = tmp_path / "question.wav"
    path.write_bytes(content)
    assert cli.main(["voice", "--input", str(path), "--json"]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and str(path) in err and len(err.splitlines()) == 1


def test_silence_is_refused_as_no_speech(tmp_path, capsys):
    write_wav(tmp_path / "quiet.wav", Audio.silence(3.0))
    assert cli.main(["voice", "--input", str(tmp_path / "quiet.wav")]) == 1
    assert "no speech heard" in capsys.readouterr().err


def test_no_microphone_is_a_clear_message(capsys, monkeypatch):
    from llmos.peripherals.microphone import MicrophoneError, SoundDeviceMicrophone

    try:
        SoundDeviceMicrophone().close()
    except MicrophoneError:
        pass  # this machine has no sound card: the real path
    else:  # a machine with a microphone: PortAudio is made to find none, as on a machine without
        import sounddevice

        def no_input(*args, **kwargs):
            raise sounddevice.PortAudioError("Error querying device -1")

        monkeypatch.setattr(sounddevice, "query_devices", no_input)
    assert cli.main(["voice"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llmos: no microphone") and "llmos chat" in err


class _Borrowed:
    """A kernel on the shared test model that the CLI may shut down without closing the model."""

    def __init__(self, kernel) -> None:
        self._kernel = kernel

    def __getattr__(self, name):
        return getattr(self._kernel, name)

    def shutdown(self, *args, **kwargs) -> None:
        self._kernel.shutdown(close_backend=False)


@pytest.mark.model
@pytest.mark.timeout(1800)
def test_one_turn_from_a_wav_writes_the_spoken_reply_and_prints_json(tmp_path, capsys, real_backend, spoken,
                                                                       whisper_stt):
    from llmos.kernel.loop import Kernel
    from llmos.kernel.registry import DeviceRegistry

    from tests.kernels import wait_ready

    # a 44.1 kHz question: any common rate is accepted
    question = read_wav(spoken("what is seventeen times twenty four")).resampled(44_100)
    path = tmp_path / "question.wav"
    write_wav(path, question)
    reply = tmp_path / "reply.wav"
    args = cli._parser().parse_args(["voice", "--input", str(path), "--output", str(reply), "--json"])

    def start_kernel(config, grant_all):
        kernel = Kernel(real_backend, DeviceRegistry.from_entry_points()).start()
        wait_ready(kernel)  # or it is shut down and the test fails in one line
        return _Borrowed(kernel)

    assert voice_cli.run(args, load_config(None), start_kernel) == 0
    out = json.loads(capsys.readouterr().out)
    assert "17" in out["transcript"] and "408" in out["answer"]
    assert any(c["device"] == "calculator" and c["result"] == "408" for c in out["syscalls"])
    assert {"stt_s", "kernel_ttft_s", "speech_end_to_first_audio_s"} <= set(out["timings"])
    audio = read_wav(reply)
    heard = whisper_stt.transcribe(audio).text
    # espeak-ng says "four hundred and eight"; whisper writes "408" or "4 hundred and 8", and the
    # transcript has its spoken numbers in digits
    assert audio.rms() > 0.01 and re.search(r"\b408\b", heard), heard


def test_resume_continues_a_journaled_conversation_by_voice(tmp_path, capsys, spoken):
    from llmos.app.boot import attach_journal, journal_path
    from llmos.kernel.backends.scripted import ScriptedBackend
    from llmos.kernel.config import Config
    from llmos.kernel.loop import Kernel
    from llmos.kernel.registry import DeviceRegistry
    from llmos.memory.journal import Journal
    from tests.memory.test_journal import calculator_conversation

    config = Config(data_dir=str(tmp_path))
    cid = calculator_conversation(journal_path(config))
    backend = ScriptedBackend(["ANSWER: You asked about 1234 times 5678."])
    journals = []

    def start_kernel(config, grant_all):
        kernel = Kernel(backend, DeviceRegistry.from_entry_points())
        journals.append(attach_journal(kernel, journal_path(config)))
        kernel.start()
        kernel.wait_ready(10)
        return kernel

    write_wav(tmp_path / "q.wav", read_wav(spoken("what did I ask you before")))
    args = cli._parser().parse_args(["voice", "--input", str(tmp_path / "q.wav"), "--json", "--resume", cid[:8]])
    assert voice_cli.run(args, config, start_kernel) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["conversation"] == cid and out["answer"] == "You asked about 1234 times 5678."
    assert "1234 * 5678" in backend.history[-1]  # the earlier turn was in the model's context
    journals[0].close()
    journal = Journal(journal_path(config))
    try:
        roles = [m.role for m in journal.messages(cid)]
    finally:
        journal.close()
    assert roles[-2:] == ["user", "assistant"] and len(roles) == 6  # the spoken turn joined it


def test_resume_of_an_unknown_conversation_is_one_line(tmp_path, capsys, spoken):
    write_wav(tmp_path / "q.wav", read_wav(spoken("hello there")))
    assert cli.main(["--data-dir", str(tmp_path), "voice", "--input", str(tmp_path / "q.wav"),
                     "--resume", "0000nope"]) == 1
    err = capsys.readouterr().err
    assert "no conversation '0000nope'" in err and "Traceback" not in err
