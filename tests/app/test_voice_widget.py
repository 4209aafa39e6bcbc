"""The voice toggle in the desktop app (offscreen), driving the voice loop from a file source."""

from __future__ import annotations

import pytest

from tests.needs import installed

installed("PySide6")

from llmos.app.voice import VoiceLoop  # noqa: E402
from llmos.kernel import events  # noqa: E402
from llmos.app.voice_widget import VoiceWidget  # noqa: E402
from llmos.peripherals.audio import AudioError  # noqa: E402
from llmos.peripherals.microphone import MicrophoneError, file_source  # noqa: E402
from llmos.peripherals.playback import RecordingSink  # noqa: E402
from llmos.peripherals.tts import TextToSpeech  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.mark.model
@pytest.mark.timeout(1800)
def test_voice_toggle_runs_a_spoken_turn_into_the_window(qtbot, voice_kernel, whisper_stt, spoken):
    from llmos.app.window import ChatWindow

    tts = TextToSpeech()
    sink = RecordingSink()
    window = ChatWindow(voice_kernel)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.pid is not None, timeout=600_000)
    # the window's own voice widget and loop, with a file instead of the microphone
    made: list[VoiceLoop] = []
    window.voice_loop_factory = lambda kernel, config, pid: made.append(
        VoiceLoop(kernel, whisper_stt, tts, sink, pid=pid)) or made[-1]
    window.voice._make_source = lambda: file_source(spoken("what is seventeen times twenty four"))
    priorities: list[str] = []
    unsubscribe = voice_kernel.bus.subscribe(
        lambda e: priorities.append(e.new) if isinstance(e, events.PriorityChanged) and e.pid == window.pid else None)
    widget: VoiceWidget = window.voice
    states: list[str] = []
    widget.state_changed.connect(states.append)
    heard: list[str] = []
    widget.transcript.connect(heard.append)
    assert widget.button.shortcut().toString() == "Ctrl+Shift+V"
    with qtbot.waitSignal(widget.turn_done, timeout=1_500_000) as done:
        widget.button.click()
    qtbot.waitUntil(lambda: not widget.button.isChecked(), timeout=30_000)  # the file ended: voice mode off
    try:
        assert "408" in done.args[0].answer
        assert heard and "17" in heard[0]
        assert states[:4] == ["listening", "hearing", "thinking", "speaking"] and states[-1] == "off"
        assert widget.peak_level > 30  # the meter moved
        text = window.view.plain_text()
        assert "17" in text and "408" in text  # shown in the conversation like typed messages
        answers = [b for b in window.view.bubbles() if b.role == "assistant"]
        assert len(answers) == 1 and "408" in answers[0].text  # once, not also from the voice loop
        assert "calculator.evaluate" in text  # its system call shown as a card, like a typed turn's
        assert sink.audio().rms() > 0.01
        # a turn of the conversation on screen: the same process, in its messages (as journaled)
        assert made[0].pid == window.pid
        roles = [m.role for m in window.messages if not m.call and m.role in ("user", "assistant")]
        assert roles[-2:] == ["user", "assistant"] and "408" in window.messages[-1].content
        qtbot.waitUntil(lambda: priorities[-2:] == ["voice", "chat"], timeout=10_000)  # and back
    finally:
        unsubscribe()
        widget.shutdown()
        tts.close()


def test_no_microphone_is_shown_and_the_toggle_turns_back_off(qtbot):
    def no_microphone():
        raise MicrophoneError("no microphone: no audio input device is available")

    class Loop:
        def subscribe(self, observer):
            return lambda: None

        def start(self, source):
            raise AssertionError("must not start without a source")

    widget = VoiceWidget(lambda: Loop(), no_microphone)
    qtbot.addWidget(widget)
    failures: list[str] = []
    widget.failed.connect(failures.append)
    widget.button.click()
    assert failures == ["no microphone: no audio input device is available"]
    assert not widget.button.isChecked() and widget.state_label.text() == "Voice unavailable"
    assert isinstance(MicrophoneError("x"), AudioError)
