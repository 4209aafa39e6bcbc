"""The desktop window, driven like a user would (pytest-qt, offscreen)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.needs import installed

installed("PySide6")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402

from llmos.app.window import ChatWindow  # noqa: E402
from llmos.kernel import events  # noqa: E402
from llmos.kernel.backends.base import BackendError  # noqa: E402
from llmos.kernel.backends.scripted import ScriptedBackend  # noqa: E402
from llmos.kernel.loop import Kernel  # noqa: E402
from llmos.kernel.registry import DeviceRegistry  # noqa: E402
from llmos.kernel.turn import TurnOptions  # noqa: E402

from .shell_helpers import GatedLoadBackend  # noqa: E402

pytestmark = pytest.mark.gui

CALC_2_PLUS_2 = ['CALL calculator.evaluate {"expression": "2+2"}', "ANSWER: It is 4."]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"

OpenWindow = Callable[..., ChatWindow]


class BrokenScoringBackend(ScriptedBackend):
    """A model that fails in the middle of a turn."""

    def score(self, pid: int, prompt: str, continuations: list[str]) -> list[float]:
        raise BackendError("the context is full (8192 tokens)")


@pytest.fixture()
def open_window(qtbot) -> Iterator[OpenWindow]:
    """Open a ChatWindow on a kernel over ``backend``; everything is closed after the test."""
    opened: list[tuple[ChatWindow, Kernel, bool]] = []

    def open_(backend, *, options: TurnOptions | None = None, start_first: bool = True,
              close_backend: bool = True) -> ChatWindow:
        kernel = Kernel(backend, DeviceRegistry.from_entry_points(), options)
        if start_first:
            kernel.start()
        window = ChatWindow(kernel)
        qtbot.addWidget(window)
        opened.append((window, kernel, close_backend))
        window.show()
        qtbot.waitExposed(window)
        if not start_first:
            kernel.start()
        return window

    yield open_
    for window, kernel, close_backend in opened:
        window.close()  # stops a running turn
        # A shared real model must be idle before the session closes it: wait for the turn's slice.
        kernel.shutdown(timeout=10.0 if close_backend else 120.0, close_backend=close_backend)


def type_and_send(qtbot, window: ChatWindow, text: str) -> None:
    qtbot.keyClicks(window.input, text)
    qtbot.keyClick(window.input, Qt.Key.Key_Return)


def transcript(window: ChatWindow) -> str:
    return window.view.plain_text()


def wait_idle(qtbot, window: ChatWindow, timeout: int = 5000) -> None:
    qtbot.waitUntil(lambda: not window.busy, timeout=timeout)


def test_enter_sends_and_the_answer_streams_in(qtbot, open_window: OpenWindow) -> None:
    window = open_window(ScriptedBackend(["ANSWER: Hello from the scripted model."]))
    assert window.windowTitle() == "llmos"
    type_and_send(qtbot, window, "Say hello")
    qtbot.waitUntil(lambda: "Hello from the scripted model." in transcript(window), timeout=5000)
    wait_idle(qtbot, window)
    assert "Say hello" in transcript(window)
    assert window.input.toPlainText() == ""
    assert window.status_label.text().startswith("Ready: scripted")


def test_shift_enter_is_a_newline_not_a_send(qtbot, open_window: OpenWindow) -> None:
    window = open_window(ScriptedBackend(["ANSWER: ok"]))
    qtbot.keyClicks(window.input, "line one")
    qtbot.keyClick(window.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(window.input, "line two")
    assert window.input.toPlainText() == "line one\nline two"
    assert not window.busy
    qtbot.mouseClick(window.send_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "ok" in transcript(window).split("llmos")[-1], timeout=5000)
    assert "line one\nline two" in transcript(window)


def test_a_calculator_call_shows_one_syscall_line(qtbot, open_window: OpenWindow) -> None:
    window = open_window(ScriptedBackend(list(CALC_2_PLUS_2)))
    type_and_send(qtbot, window, "What is 2+2?")
    qtbot.waitUntil(lambda: "It is 4." in transcript(window), timeout=5000)
    wait_idle(qtbot, window)
    lines = [line for line in transcript(window).splitlines() if "calculator.evaluate" in line]
    assert len(lines) == 1, transcript(window)
    assert '{"expression": "2+2"}' in lines[0]
    assert "→ 4 · " in lines[0] and lines[0].endswith(("ms", " s"))


def test_kernel_events_reach_slots_on_the_gui_thread(qtbot, open_window: OpenWindow) -> None:
    window = open_window(ScriptedBackend(list(CALC_2_PLUS_2)))
    threads: set[int] = set()
    window.bridge.token.connect(lambda pid, text: threads.add(threading.get_ident()))
    window.bridge.event.connect(lambda event: threads.add(threading.get_ident()))
    type_and_send(qtbot, window, "What is 2+2?")
    qtbot.waitUntil(lambda: "It is 4." in transcript(window), timeout=5000)
    assert threads == {threading.main_thread().ident}


def test_stop_ends_a_slow_reply_early(qtbot, open_window: OpenWindow) -> None:
    words = " ".join(f"word{i}" for i in range(200))
    window = open_window(ScriptedBackend([f"ANSWER: {words} THE-END"], delay_per_token=0.05),
                         options=TurnOptions(slice_tokens=4))
    type_and_send(qtbot, window, "Talk for a long time")
    qtbot.waitUntil(lambda: "word3" in transcript(window), timeout=5000)
    assert window.stop_button.isEnabled()
    finished: list[events.TurnFinished] = []
    window.kernel.bus.subscribe(lambda e: finished.append(e) if isinstance(e, events.TurnFinished) else None)
    qtbot.mouseClick(window.stop_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window, timeout=30_000)  # how soon: bench shell_stop_ms; only a hang fails here
    qtbot.waitUntil(lambda: bool(finished), timeout=30_000)
    assert finished[0].stopped and "THE-END" not in finished[0].answer
    text = transcript(window)
    assert "THE-END" not in text and "(stopped)" in text
    assert not window.stop_button.isEnabled() and window.send_button.isEnabled()


def test_escape_stops_too(qtbot, open_window: OpenWindow) -> None:
    words = " ".join(f"word{i}" for i in range(200))
    window = open_window(ScriptedBackend([f"ANSWER: {words} THE-END"], delay_per_token=0.05),
                         options=TurnOptions(slice_tokens=4))
    type_and_send(qtbot, window, "Talk for a long time")
    qtbot.waitUntil(lambda: "word3" in transcript(window), timeout=5000)
    qtbot.keyClick(window.input, Qt.Key.Key_Escape)
    wait_idle(qtbot, window, timeout=5000)
    assert "THE-END" not in transcript(window) and "(stopped)" in transcript(window)


def test_backend_failure_is_shown_not_raised(qtbot, open_window: OpenWindow) -> None:
    window = open_window(ScriptedBackend(fail_load="model file not found: /x.gguf"))
    qtbot.waitUntil(lambda: "model file not found: /x.gguf" in transcript(window), timeout=5000)
    assert "model file not found: /x.gguf" in window.status_label.text()
    assert not window.send_button.isEnabled()
    type_and_send(qtbot, window, "hello?")
    assert "Cannot send" in transcript(window)
    assert not window.busy


def test_a_failed_turn_is_shown_once_and_the_chat_goes_on(qtbot, open_window: OpenWindow) -> None:
    window = open_window(BrokenScoringBackend(["ANSWER: never"]))
    # the future's failure (turn_failed) arrives after ProcessFailed: it must not be shown again
    with qtbot.waitSignal(window.bridge.turn_failed, timeout=5000):
        type_and_send(qtbot, window, "hello")
    qtbot.waitUntil(lambda: "the context is full" in transcript(window), timeout=5000)
    wait_idle(qtbot, window)
    assert transcript(window).count("the context is full") == 1
    assert window.send_button.isEnabled() and window.status_label.text().startswith("Ready")


def test_the_window_shows_at_once_and_sends_when_the_model_is_ready(qtbot, open_window: OpenWindow) -> None:
    backend = GatedLoadBackend(["ANSWER: Loaded and answering."])
    window = open_window(backend, start_first=False)
    assert window.status_label.text().startswith("Loading model")
    assert window.progress.isVisible()
    type_and_send(qtbot, window, "typed while loading")
    assert "typed while loading" in transcript(window) and window.busy
    backend.finish_loading()
    qtbot.waitUntil(lambda: "Loaded and answering." in transcript(window), timeout=5000)
    wait_idle(qtbot, window)
    assert window.status_label.text().startswith("Ready: scripted")
    assert not window.progress.isVisible()


def test_screenshot_of_a_scripted_exchange(qtbot, open_window: OpenWindow) -> None:
    window = open_window(ScriptedBackend(
        ['CALL calculator.evaluate {"expression": "17.5% of 2480"}', "ANSWER: 17.5% of 2480 is 434."]
    ))
    window.resize(820, 600)
    type_and_send(qtbot, window, "What is 17.5% of 2480?")
    qtbot.waitUntil(lambda: "is 434." in transcript(window), timeout=5000)
    wait_idle(qtbot, window)
    window.input.setPlainText("And a draft of the next question…")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / "main_window.png"
    assert window.grab().save(str(path), "PNG")
    assert path.is_file() and path.stat().st_size > 1000
    image = QImage(str(path))
    assert image.width() >= 400 and image.height() >= 300
    colors = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colors) > 10, "the screenshot looks blank"
