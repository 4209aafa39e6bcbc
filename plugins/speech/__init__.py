"""The speech device: ``speak(text)`` out loud (pyttsx3 on espeak-ng) and ``listen(seconds)``
through the microphone (whisper), backed by :mod:`llmos.peripherals`.

Settings (``DeviceContext.settings``): ``output`` -- ``"default"`` (the sound card) or a WAV path
to write instead; ``input`` -- ``"default"`` (the microphone) or a WAV file to hear instead;
``stt_model`` -- ``"tiny.en"`` (default) or ``"base"``. What ``listen`` hears is returned as
untrusted data: anyone in the room, or a loudspeaker, may be talking.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any

from llmos.kernel.devices import CallContext, Device, DeviceContext, DeviceError, Example, Untrusted

device = Device(
    "speech",
    version="1.0.0",
    description="Speak text out loud through the speakers, or listen to the microphone and transcribe.",
    permissions=["microphone", "speaker"],
)

MAX_LISTEN_S = 30


class Speech:
    """One device instance: its settings, and the voice and the ear once a call needs them."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self.settings = settings
        self._tts: Any = None
        self._stt: Any = None

    def tts(self) -> Any:
        with self.lock:
            if self._tts is None:
                from llmos.peripherals.tts import TextToSpeech

                self._tts = TextToSpeech()
            return self._tts

    def stt(self) -> Any:
        with self.lock:
            if self._stt is None:
                from llmos.peripherals.stt import SpeechToText
                from llmos.peripherals.whisper_weights import WhisperModel

                self._stt = SpeechToText(WhisperModel(self.settings.get("stt_model", "tiny.en")))
            return self._stt


@device.setup
def _setup(context: DeviceContext) -> Speech:
    return Speech(dict(context.settings))


@device.call(examples=[Example("Say good morning out loud.", {"text": "Good morning!"})],
             timeout_s=60.0, side_effects=True)
def speak(text: Annotated[str, {"maxLength": 2000}], context: CallContext) -> str:
    """Say a text out loud through the speakers.

    Args:
        text: What to say.
    """
    from llmos.peripherals.audio import AudioError, write_wav
    from llmos.peripherals.playback import Player, SoundDeviceSink

    if not text.strip():
        raise DeviceError("nothing to say: the text is empty")
    speech = context.state_as(Speech)
    try:
        audio = speech.tts().synthesize(text)
    except AudioError as exc:
        raise DeviceError(str(exc)) from None
    output = str(speech.settings.get("output", "default"))
    if output != "default":
        with context.commit():
            write_wav(Path(output), audio)
        return f"said {len(text.split())} words ({audio.seconds:.1f} s of speech, written to {output})"
    try:
        player = Player(SoundDeviceSink(audio.rate))
    except AudioError as exc:
        raise DeviceError(str(exc)) from None
    try:
        with context.commit():
            context.on_cancel(player.stop)  # a cancelled call goes quiet at once
            player.enqueue(audio)
        player.wait_idle(audio.seconds + 5.0)
    finally:
        player.close()
    return f"said {len(text.split())} words ({audio.seconds:.1f} s of speech)"


@device.call(examples=[Example("Listen to me for five seconds and write down what I say.", {"seconds": 5})],
             timeout_s=MAX_LISTEN_S + 30.0)
def listen(context: CallContext, seconds: Annotated[int, {"minimum": 1, "maximum": MAX_LISTEN_S}] = 5) -> Untrusted:
    """Record the microphone for some seconds and return what was said, as text.

    Args:
        seconds: How long to listen (1 to 30).
    """
    from llmos.peripherals.audio import Audio, AudioError, read_wav
    from llmos.peripherals.vad import find_speech

    speech = context.state_as(Speech)
    source = str(speech.settings.get("input", "default"))
    try:
        if source != "default":
            recording = read_wav(Path(source))
        else:
            recording = _record(seconds)
    except AudioError as exc:
        raise DeviceError(str(exc)) from None
    utterances = find_speech(recording + Audio.silence(1.0, recording.rate))
    if not utterances:
        return Untrusted("(nothing was said)", source="microphone")
    heard = utterances[0].audio
    for more in utterances[1:]:
        heard = heard + Audio.silence(0.3) + more.audio
    try:
        transcript = speech.stt().transcribe(heard)
    except Exception as exc:  # weights missing, whisper failing
        raise DeviceError(f"speech to text failed: {exc}") from None
    return Untrusted(transcript.text if transcript.is_speech else "(nothing was said)", source="microphone")


def _record(seconds: int) -> Any:
    import numpy as np

    from llmos.peripherals.audio import SPEECH_RATE, Audio
    from llmos.peripherals.microphone import SoundDeviceMicrophone

    mic = SoundDeviceMicrophone()
    frames: list[Any] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            frame = mic.read()
            if frame is None:
                break
            frames.append(frame)
    finally:
        mic.close()
    samples = np.concatenate(frames) if frames else np.zeros(0, dtype=np.float32)
    return Audio(samples.astype(np.float32), SPEECH_RATE)
