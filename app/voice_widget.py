"""The voice mode control for the desktop window: a toggle (button and Ctrl+Shift+V), the state
(listening, hearing, thinking, speaking), an input level meter, and signals for the transcript
and the answer so the window shows them in the conversation like typed messages.

It drives the same Qt-free :class:`~llmos.app.voice.VoiceLoop` as ``llmos voice``. Voice events
arrive on the loop's threads and hop to the GUI thread through one queued signal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from llmos.app.voice import (AnswerText, BargeIn, Heard, Ignored, InputLevel, StateChanged, TurnDone,
                             VoiceError, VoiceEvent, VoiceLoop, VoiceState)
from llmos.peripherals.audio import AudioError
from llmos.peripherals.microphone import AudioSource

log = logging.getLogger(__name__)

SHORTCUT = "Ctrl+Shift+V"
_LABELS = {
    VoiceState.OFF: "Voice off",
    VoiceState.LISTENING: "Listening…",
    VoiceState.HEARING: "Hearing you…",
    VoiceState.THINKING: "Thinking…",
    VoiceState.SPEAKING: "Speaking…",
}


class VoiceWidget(QWidget):
    """``make_loop()`` builds the voice loop (once, on first use); ``make_source()`` opens the
    microphone (or a file source) each time voice mode is switched on. Either may raise
    AudioError: the message is shown and voice mode stays off; the rest of the window works."""

    transcript = Signal(str)  # what the user said (a turn starts)
    answer = Signal(str)  # a sentence of the answer, as it is spoken
    turn_done = Signal(object)  # TurnDone
    state_changed = Signal(str)  # VoiceState.value
    failed = Signal(str)
    _event = Signal(object)  # voice events, queued onto the GUI thread

    def __init__(self, make_loop: Callable[[], VoiceLoop], make_source: Callable[[], AudioSource],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._make_loop = make_loop
        self._make_source = make_source
        self.loop: VoiceLoop | None = None
        self.state = VoiceState.OFF
        self.peak_level = 0
        self.button = QPushButton("Voice")
        self.button.setCheckable(True)
        self.button.setShortcut(QKeySequence(SHORTCUT))
        self.button.setToolTip(f"Hands-free voice mode ({SHORTCUT})")
        self.state_label = QLabel(_LABELS[VoiceState.OFF])
        self.state_label.setMinimumWidth(110)
        self.level = QProgressBar()
        self.level.setRange(0, 100)
        self.level.setTextVisible(False)
        self.level.setMaximumWidth(90)
        self.level.setMaximumHeight(12)
        self.level.setToolTip("Microphone level")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.button)
        layout.addWidget(self.state_label)
        layout.addWidget(self.level)
        self.button.toggled.connect(self.on_toggled)
        self._event.connect(self.on_voice_event, Qt.ConnectionType.QueuedConnection)

    @Slot(bool)
    def on_toggled(self, on: bool) -> None:
        if on:
            self.start()
        elif self.loop is not None and self.state is not VoiceState.OFF:
            self.loop.stop()

    def start(self) -> None:
        try:
            if self.loop is None:
                self.loop = self._make_loop()
                self.loop.subscribe(self._event.emit)  # from the loop's threads
            source = self._make_source()
            self.loop.start(source)
        except (AudioError, RuntimeError) as exc:
            self._fail(str(exc))

    def _fail(self, message: str) -> None:
        self.state_label.setText("Voice unavailable")
        self.state_label.setToolTip(message)
        self.failed.emit(message)
        self.button.blockSignals(True)
        self.button.setChecked(False)
        self.button.blockSignals(False)

    @Slot(object)
    def on_voice_event(self, event: VoiceEvent) -> None:
        if isinstance(event, StateChanged):
            self.state = event.state
            self.state_label.setText(_LABELS[event.state])
            self.state_changed.emit(event.state.value)
            if event.state is VoiceState.OFF:
                self.level.setValue(0)
                self.button.blockSignals(True)
                self.button.setChecked(False)
                self.button.blockSignals(False)
        elif isinstance(event, InputLevel):
            value = int(max(0.0, min(100.0, (event.dbfs + 60.0) * 100.0 / 60.0)))
            self.peak_level = max(self.peak_level, value)
            self.level.setValue(value)
        elif isinstance(event, Heard):
            self.transcript.emit(event.text)
        elif isinstance(event, AnswerText):
            self.answer.emit(event.text)
        elif isinstance(event, TurnDone):
            self.turn_done.emit(event)
        elif isinstance(event, VoiceError):
            self.failed.emit(event.message)
        elif isinstance(event, (Ignored, BargeIn)):
            self.state_label.setToolTip(getattr(event, "reason", "interrupted"))

    def shutdown(self) -> None:
        if self.loop is not None:
            self.loop.close()
            self.loop = None


def default_voice_loop(kernel: Any, config: Any = None, pid: int | None = None) -> VoiceLoop:
    """The voice loop on ``kernel`` as ``config`` sets it (whisper model, wake phrase, end of
    utterance, speaking rate: app/voice_config.py), with the default speaker (replies are shown
    only, when there is no audio output); its turns go to process ``pid`` when given."""
    from llmos.app.voice_config import speech_to_text, text_to_speech, voice_options
    from llmos.peripherals.playback import RecordingSink, SoundDeviceSink, SpeakerError

    try:
        sink: Any = SoundDeviceSink()
    except SpeakerError as exc:
        log.warning("%s: voice replies are shown as text only", exc)
        sink = RecordingSink()
    return VoiceLoop(kernel, speech_to_text(config), text_to_speech(config), sink, voice_options(config), pid=pid)


def default_source() -> AudioSource:
    from llmos.peripherals.microphone import SoundDeviceMicrophone

    return SoundDeviceMicrophone()
