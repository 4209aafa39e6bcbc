"""The desktop shell on the real embedded model (slow on this CPU: one window, a few short turns).

The tests share one window and kernel and run in order, like one user session: a calculator
question (streamed, with its card), a long reply stopped midway while the task manager shows it,
regenerate and switch back, edit the first message into a branch and switch back, reopen the
conversation from the sidebar.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.needs import installed

installed("PySide6")

from PySide6.QtCore import Qt  # noqa: E402
from pytestqt.exceptions import TimeoutError as QtTimeoutError  # noqa: E402

from llmos.app.boot import attach_journal  # noqa: E402
from llmos.app.chat_view import SyscallCard  # noqa: E402
from llmos.app.dialogs import DialogService  # noqa: E402
from llmos.app.window import ChatWindow  # noqa: E402
from llmos.kernel import events  # noqa: E402
from llmos.kernel.syscalls.claims import HOLD_CHARS  # noqa: E402
from llmos.kernel.loop import Kernel  # noqa: E402
from llmos.kernel.registry import DeviceRegistry  # noqa: E402
from llmos.kernel.turn import TurnOptions  # noqa: E402

from .shell_helpers import SCREENSHOTS, answers, send, text_of  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.model]

TURN_MS = 300_000


@pytest.fixture(scope="module")
def session(qapp, real_backend, tmp_path_factory) -> Iterator[dict]:
    dialogs = DialogService()
    kernel = Kernel(real_backend, DeviceRegistry.from_entry_points(), TurnOptions(max_answer_tokens=64),
                    consent=dialogs.consent)
    journal = attach_journal(kernel, Path(tmp_path_factory.mktemp("shell-real")) / "journal.sqlite3")
    produced: list[str] = []  # every answer token, counted on the kernel thread as it is made
    kernel.bus.subscribe(lambda e: produced.append(e.text) if isinstance(e, events.Token) else None)
    kernel.start()
    window = ChatWindow(kernel, dialogs=dialogs)
    try:
        window.resize(1100, 760)
        window.show()
        tokens: list[str] = []
        window.bridge.token.connect(lambda pid, text: tokens.append(text))
        yield {"window": window, "tokens": tokens, "produced": produced}
    finally:
        window.close()
        kernel.shutdown(close_backend=False)  # joins the kernel thread: the model is free again
        journal.close()
        window.deleteLater()


def wait(qtbot, window: ChatWindow, condition, what: str) -> None:
    try:
        qtbot.waitUntil(condition, timeout=TURN_MS)
    except QtTimeoutError:
        raise AssertionError(f"waited for {what}\n--- window ---\n{text_of(window)}\n--- status ---\n"
                             f"{window.status_label.text()}") from None


def idle(window: ChatWindow) -> bool:
    return not window.busy and window.pid is not None


def test_real_model_streams_an_answer_with_a_calculator_card(qtbot, session) -> None:
    window, tokens = session["window"], session["tokens"]
    wait(qtbot, window, lambda: window.pid is not None, "the model to load")
    send(qtbot, window, "What is 1234 * 5678?")
    wait(qtbot, window, lambda: idle(window) and bool(answers(window)), "the answer")
    cards = [w for w in window.view.items if isinstance(w, SyscallCard)]
    assert cards and cards[0].device == "calculator" and cards[0].ok, text_of(window)
    assert "7006652" in answers(window)[-1].replace(",", "")
    assert tokens and "7006652" in "".join(tokens).replace(",", "")  # the answer came through the stream
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(SCREENSHOTS / "real_model.png"), "PNG")


def test_real_model_stop_mid_reply_while_the_task_manager_shows_it(qtbot, session) -> None:
    window, tokens, produced = session["window"], session["tokens"], session["produced"]
    before = len(tokens)
    finished: list[events.TurnFinished] = []
    window.kernel.bus.subscribe(lambda e: finished.append(e) if isinstance(e, events.TurnFinished) else None)
    send(qtbot, window, "Write a long story about a dragon who learns to cook.")
    wait(qtbot, window, lambda: len(tokens) >= before + 3, "the reply to start")
    manager = window.show_task_manager()
    manager.refresh()
    row = manager.table.column(0).index(str(window.pid))
    assert manager.table.item(row, 2).text() in ("running", "ready")
    at_stop = len(produced)  # the kernel's count: the window may still be showing queued tokens
    qtbot.mouseClick(window.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.busy, timeout=60_000)
    assert "(stopped)" in text_of(window)
    wait(qtbot, window, lambda: bool(finished), "the kernel to end the stopped turn")
    assert finished[-1].stopped
    # the turn checks for a stop after every token: one may have been under way when Stop came,
    # and the claim check shows each piece once HOLD_CHARS more have come, so what it held back
    # when Stop came is shown after it: at most that tail and two tokens, not the rest of a story
    after = "".join(produced[at_stop:])
    assert len(after) <= HOLD_CHARS + 2 * 16, f"the reply went on after Stop: {after!r}"

    def shown_idle() -> bool:  # the window is free at once; the kernel ends the turn at its next token
        manager.refresh()
        return manager.table.item(manager.table.column(0).index(str(window.pid)), 2).text() == "idle"

    qtbot.waitUntil(shown_idle, timeout=60_000)
    manager.close()


def test_real_model_regenerate_then_switch_back(qtbot, session) -> None:
    window = session["window"]
    shown = text_of(window)
    first = window.conversation
    window.view.bubbles()[-1].regen_button.click()
    wait(qtbot, window, lambda: idle(window) and window.conversation != first, "the regenerated answer")
    last = window.view.bubbles()[-1]
    assert last.role == "assistant" and last.branch_label.text() == "2/2"
    assert "(stopped)" not in text_of(window)
    last.branch_prev.click()
    wait(qtbot, window, lambda: idle(window) and window.conversation == first, "the first branch")
    assert text_of(window) == "\n".join(line for line in shown.split("\n") if line != "(stopped)")


def test_real_model_edit_to_a_branch_and_switch_back(qtbot, session) -> None:
    window = session["window"]
    original = window.conversation
    first_user = window.view.bubbles()[0]
    first_user.edit_button.click()
    window.input.clear()
    send(qtbot, window, "What is 12 * 12?")
    wait(qtbot, window, lambda: idle(window) and window.conversation != original and bool(answers(window)),
         "the edited branch's answer")
    assert "144" in text_of(window) and "1234 * 5678" not in text_of(window)
    edited = window.view.bubbles()[0]
    assert edited.branch_label.text() == "2/2"
    edited.branch_prev.click()
    wait(qtbot, window, lambda: idle(window) and "1234 * 5678" in text_of(window), "the original branch")
    assert "7006652" in text_of(window).replace(",", "")


def test_real_model_reopen_a_conversation_from_the_sidebar(qtbot, session) -> None:
    window = session["window"]
    root = window.journal.root(window.conversation)
    window.open_conversation(root, latest=True)  # what reopening shows: the tree's latest branch
    latest = window.journal.latest_leaf(root)
    wait(qtbot, window, lambda: idle(window) and window.conversation == latest, "the latest branch")
    shown = text_of(window)
    qtbot.keyClick(window.input, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    wait(qtbot, window, lambda: idle(window) and window.conversation != latest, "a new conversation")
    assert text_of(window) == ""
    item = window.sidebar.list.item(window.sidebar.ids().index(root))
    qtbot.mouseClick(window.sidebar.list.viewport(), Qt.MouseButton.LeftButton,
                     pos=window.sidebar.list.visualItemRect(item).center())
    wait(qtbot, window, lambda: idle(window) and window.conversation == latest, "the reopened conversation")
    assert text_of(window) == shown
