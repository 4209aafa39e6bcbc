"""Screenshots of the main window in its main states, light and dark, for people to look at.

Written to tests/artifacts/screenshots/ (CI keeps the folder as artifacts). Each test asserts the
picture is not blank and shows what the state is about.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.needs import installed

installed("PySide6")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from llmos.app.chat_view import SyscallCard  # noqa: E402
from llmos.app.theme import apply_theme  # noqa: E402
from llmos.kernel.backends.scripted import ScriptedBackend  # noqa: E402
from llmos.kernel.config import Config  # noqa: E402
from llmos.kernel.syscalls.dispatch import GrantPolicy  # noqa: E402

from .shell_helpers import (  # noqa: E402
    SCREENSHOTS, GatedLoadBackend, Shell, registry_with, send, text_of, untrusted_and_writer_devices, wait_idle,
)

pytestmark = pytest.mark.gui

STORY = ("ANSWER: Here is a plan for **Saturday**:\n\n1. Walk to the market\n2. Cook *risotto*\n"
         "3. Read in the park\n\n| time | what |\n|---|---|\n| 09:00 | market |\n| 12:30 | lunch |\n\n"
         "```python\ntotal = 12.5 * 3\nprint(total)\n```")


@pytest.fixture()
def shell(qtbot, tmp_path: Path, qapp) -> Iterator[Shell]:
    s = Shell(qtbot, tmp_path)
    yield s
    s.close()
    apply_theme(qapp, dark=False)


def shoot(widget: QWidget, name: str) -> QImage:
    for _ in range(3):  # let pending layouts settle, as they would before the next frame
        QApplication.sendPostedEvents()
        QApplication.processEvents()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    assert widget.grab().save(str(path), "PNG")
    image = QImage(str(path))
    assert image.width() >= 300 and image.height() >= 150
    colors = {image.pixel(x, y) for x in range(0, image.width(), 5) for y in range(0, image.height(), 5)}
    assert len(colors) > 8, f"{name}.png looks blank"
    return image


def busy_conversation(qtbot, shell: Shell, dark: bool, qapp):
    apply_theme(qapp, dark=dark)
    window = shell.open(ScriptedBackend([
        "ANSWER: Sure: the Louvre, the Musée d'Orsay and the Rodin museum.",
        'CALL calculator.evaluate {"expression": "17.5% of 2480"}', "ANSWER: 17.5% of 2480 is **434**.",
        STORY, "ANSWER: A quieter plan: sleep in, then a long *brunch*.",
    ]), config=Config())
    window.resize(1180, 820)
    send(qtbot, window, "Which museums in Paris are worth a visit?")
    qtbot.waitUntil(lambda: "Rodin" in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    window.new_conversation()
    qtbot.waitUntil(lambda: window.pid is not None, timeout=5000)
    send(qtbot, window, "What is 17.5% of 2480?")
    qtbot.waitUntil(lambda: "434" in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    send(qtbot, window, "Plan my Saturday, with a table and some code")
    qtbot.waitUntil(lambda: "risotto" in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    window.regenerate()
    qtbot.waitUntil(lambda: "brunch" in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    window.view.bubbles()[-1].branch_prev.click()  # back to the first version: the switcher shows 1/2
    qtbot.waitUntil(lambda: "risotto" in text_of(window) and window.pid is not None, timeout=5000)
    card = next(w for w in window.view.items if isinstance(w, SyscallCard))
    card.set_expanded(True)
    window.input.setPlainText("And on Sunday?")
    # what the picture must show, waited for: the sidebar's two conversations, the branch switcher
    qtbot.waitUntil(lambda: len(window.sidebar.titles()) == 2
                    and window.view.bubbles()[-1].branch_label.text() == "1/2", timeout=5000)
    return window


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_screenshot_conversation(qtbot, shell: Shell, qapp, dark: bool) -> None:
    window = busy_conversation(qtbot, shell, dark, qapp)
    assert window.view.bubbles()[-1].branch_label.text() == "1/2"
    assert len(window.sidebar.titles()) == 2
    image = shoot(window, f"conversation_{'dark' if dark else 'light'}")
    chat = window.view.mapTo(window, window.view.rect().topLeft())  # the chat background, top left
    background = image.pixelColor(chat.x() + 4, chat.y() + 4)
    assert (background.lightness() < 100) == dark, background.name()


def test_screenshot_loading_and_typing(qtbot, shell: Shell) -> None:
    backend = GatedLoadBackend(["ANSWER: ready"])
    window = shell.open(backend, start=False)
    window.kernel.start()
    try:
        window.resize(1000, 640)
        window.input.setPlainText("Typed while the model loads…")
        assert window.status_label.text().startswith("Loading model") and window.progress.isVisible()
        shoot(window, "loading")
    finally:
        backend.finish_loading()


def test_screenshot_model_failed(qtbot, shell: Shell) -> None:
    window = shell.open(ScriptedBackend(fail_load="model file not found: /models/missing.gguf"))
    window.resize(1000, 640)
    qtbot.waitUntil(lambda: "missing.gguf" in text_of(window), timeout=5000)
    shoot(window, "model_failed")


def test_screenshot_consent_dialog(qtbot, shell: Shell) -> None:
    window = shell.open(
        ScriptedBackend(['CALL web.fetch {"url": "http://example.test"}',
                         'CALL notes.write {"text": "buy milk"}', "ANSWER: Done."]),
        registry=registry_with(*untrusted_and_writer_devices()), policy=lambda d: GrantPolicy(grant_all=True))
    send(qtbot, window, "Read the page and note what it says")
    qtbot.waitUntil(lambda: window.dialogs.current is not None, timeout=5000)
    dialog = window.dialogs.current
    qtbot.waitExposed(dialog)
    shoot(dialog, "consent_dialog")
    shoot(window, "consent_waiting")
    dialog.no_button.click()
    qtbot.waitUntil(lambda: "Done." in text_of(window), timeout=5000)


def test_screenshot_inspectors(qtbot, shell: Shell) -> None:
    window = shell.open(ScriptedBackend(['CALL calculator.evaluate {"expression": "2**10"}', "ANSWER: 1024."]),
                        config=Config())
    send(qtbot, window, "What is 2**10?")
    qtbot.waitUntil(lambda: "1024." in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    tasks = window.show_task_manager()
    qtbot.waitUntil(lambda: tasks.table.rowCount() >= 1, timeout=2000)
    shoot(tasks, "task_manager")
    ram = window.show_ram_inspector()
    qtbot.waitUntil(lambda: ram.report is not None, timeout=5000)
    shoot(ram, "ram_inspector")
    devices = window.show_device_manager()
    assert "calculator" in devices.table.column(0)
    shoot(devices, "device_manager")
    settings = window.show_settings()
    assert settings is not None
    qtbot.waitUntil(settings.isVisible, timeout=2000)
    shoot(settings, "settings")
    settings.reject()
    qtbot.keyClick(window.input, Qt.Key.Key_Escape)
