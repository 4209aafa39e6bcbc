"""The desktop shell on a scripted model: conversations, branches, the OS made visible, dialogs.

Fast (pytest-qt, offscreen); the same behaviours on the real model are in test_window_real.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.needs import installed

installed("PySide6")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: E402

from llmos.app.branches import variants  # noqa: E402
from llmos.app.chat_view import SyscallCard  # noqa: E402
from llmos.app.dialogs import DialogService  # noqa: E402
from llmos.app.settings import SettingsDialog, to_toml  # noqa: E402
from llmos.app.theme import apply_theme, current_theme  # noqa: E402
from llmos.kernel import events  # noqa: E402
from llmos.kernel.backends.scripted import ScriptedBackend  # noqa: E402
from llmos.kernel.config import Config, load_config  # noqa: E402
from llmos.kernel.grants import GrantStore  # noqa: E402
from llmos.kernel.loop import Kernel  # noqa: E402
from llmos.kernel.process import Message  # noqa: E402
from llmos.kernel.registry import DeviceRegistry  # noqa: E402
from llmos.kernel.syscalls.dispatch import ConsentRequest, GrantPolicy  # noqa: E402
from llmos.kernel.turn import TurnOptions  # noqa: E402

from .shell_helpers import (  # noqa: E402
    Shell, answers, broken_device, picture_device, registry_with, send, text_of,
    untrusted_and_writer_devices, wait_idle,
)

pytestmark = pytest.mark.gui

MARKDOWN = ("ANSWER: Here is **bold**, a list and code:\n\n- one\n- two\n\n```python\nprint('hi')\n```\n\n"
            "| a | b |\n|---|---|\n| 1 | 2 |")


@pytest.fixture()
def shell(qtbot, tmp_path: Path) -> Iterator[Shell]:
    s = Shell(qtbot, tmp_path)
    yield s
    s.close()


def test_an_answer_streams_in_before_it_is_complete(qtbot, shell: Shell) -> None:
    words = " ".join(f"word{i}" for i in range(40))
    window = shell.open(ScriptedBackend([f"ANSWER: {words} END"], delay_per_token=0.02),
                        options=TurnOptions(slice_tokens=4))
    seen: list[str] = []
    window.bridge.token.connect(lambda pid, text: seen.append(text))
    send(qtbot, window, "Count")
    qtbot.waitUntil(lambda: "word5" in text_of(window), timeout=5000)
    assert window.busy and "END" not in text_of(window)  # shown while it is still being written
    wait_idle(qtbot, window)
    assert len(seen) > 30 and answers(window)[-1].endswith("END")


def test_markdown_answers_render_as_rich_text(qtbot, shell: Shell) -> None:
    window = shell.open(ScriptedBackend([MARKDOWN]))
    send(qtbot, window, "Show me markdown")
    qtbot.waitUntil(lambda: bool(answers(window)) and "| 1 | 2 |" in answers(window)[-1], timeout=5000)
    wait_idle(qtbot, window)
    bubble = [b for b in window.view.bubbles() if b.role == "assistant"][-1]
    assert "```python" in bubble.text and "- one" in bubble.text  # the text as written (copy, export)
    html = bubble.body.text()  # what is shown: rendered
    assert "<table" in html and "<li" in html and "font-weight" in html and "**" not in html
    assert current_theme().code in html.lower()  # the code block on its tinted background


def test_copy_puts_the_message_on_the_clipboard(qtbot, shell: Shell) -> None:
    window = shell.open(ScriptedBackend(["ANSWER: Copy me, please."]))
    send(qtbot, window, "hello")
    qtbot.waitUntil(lambda: "Copy me" in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    bubble = [b for b in window.view.bubbles() if b.role == "assistant"][-1]
    qtbot.mouseClick(bubble.copy_button, Qt.MouseButton.LeftButton)
    assert QApplication.clipboard().text() == "Copy me, please."


def test_a_system_call_is_an_expandable_card(qtbot, shell: Shell) -> None:
    window = shell.open(ScriptedBackend(['CALL calculator.evaluate {"expression": "6*7"}', "ANSWER: 42."]))
    send(qtbot, window, "What is 6*7?")
    qtbot.waitUntil(lambda: "42." in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    cards = [w for w in window.view.items if isinstance(w, SyscallCard)]
    assert len(cards) == 1
    card = cards[0]
    assert (card.device, card.call, card.ok, card.trusted) == ("calculator", "evaluate", True, True)
    assert card.badge.text() == "trusted" and card.time_label.text().endswith(("ms", " s"))
    assert not card.expanded
    qtbot.mouseClick(card.toggle, Qt.MouseButton.LeftButton)
    assert card.expanded and '"expression": "6*7"' in card.details.toPlainText()
    assert "result:\n42" in card.details.toPlainText()


def test_a_failing_device_is_shown_and_the_chat_goes_on(qtbot, shell: Shell) -> None:
    window = shell.open(ScriptedBackend(['CALL flaky.explode {"what": "toaster"}', "ANSWER: Sorry, it failed.",
                                         "ANSWER: still here"]), registry=registry_with(broken_device()))
    send(qtbot, window, "Explode the toaster")
    qtbot.waitUntil(lambda: "Sorry, it failed." in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    card = next(w for w in window.view.items if isinstance(w, SyscallCard))
    assert card.ok is False and card.badge.text() == "failed" and "toaster is on fire" in card.summary()
    send(qtbot, window, "Are you there?")
    qtbot.waitUntil(lambda: "still here" in text_of(window), timeout=5000)


def test_an_image_result_appears_inline(qtbot, shell: Shell, tmp_path: Path) -> None:
    picture = tmp_path / "cat.png"
    image = QImage(64, 48, QImage.Format.Format_RGB32)
    image.fill(0x3366CC)
    assert image.save(str(picture))
    window = shell.open(ScriptedBackend(['CALL painter.paint {"subject": "a cat"}', "ANSWER: Here is your cat."]),
                        registry=registry_with(picture_device(picture)))
    send(qtbot, window, "Paint a cat")
    qtbot.waitUntil(lambda: "your cat" in text_of(window), timeout=5000)
    card = next(w for w in window.view.items if isinstance(w, SyscallCard))
    assert card.image.isVisibleTo(window) and card.image.pixmap().width() == 64


def test_regenerate_makes_a_branch_and_the_switcher_goes_back(qtbot, shell: Shell) -> None:
    window = shell.open(ScriptedBackend(["ANSWER: First answer.", "ANSWER: Second answer."]))
    send(qtbot, window, "Say something")
    qtbot.waitUntil(lambda: "First answer." in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    first = window.conversation
    last = [b for b in window.view.bubbles() if b.role == "assistant"][-1]
    assert last.regen_button.isVisible()
    qtbot.mouseClick(last.regen_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Second answer." in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    assert window.conversation != first and "First answer." not in text_of(window)
    assert text_of(window).count("Say something") == 1
    answer = [b for b in window.view.bubbles() if b.role == "assistant"][-1]
    assert answer.variant is not None and (answer.variant.position, answer.variant.total) == (2, 2)
    assert answer.branch_label.text() == "2/2"
    qtbot.mouseClick(answer.branch_prev, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "First answer." in text_of(window) and window.pid is not None, timeout=5000)
    assert window.conversation == first and "Second answer." not in text_of(window)
    assert window.journal.parent(window.journal.family(first)[1]) == first


def test_edit_an_earlier_message_branches_and_switching_back_restores(qtbot, shell: Shell) -> None:
    window = shell.open(ScriptedBackend(["ANSWER: Paris.", "ANSWER: It rains.", "ANSWER: Rome."]))
    send(qtbot, window, "Capital of France?")
    qtbot.waitUntil(lambda: "Paris." in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    send(qtbot, window, "Weather?")
    qtbot.waitUntil(lambda: "It rains." in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    before = text_of(window)
    original = window.conversation
    first_user = window.view.bubbles()[0]
    assert first_user.role == "user" and first_user.index == 0
    qtbot.mouseClick(first_user.edit_button, Qt.MouseButton.LeftButton)
    assert window.input.toPlainText() == "Capital of France?" and window.edit_banner.isVisible()
    window.input.clear()
    send(qtbot, window, "Capital of Italy?")
    qtbot.waitUntil(lambda: "Rome." in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    text = text_of(window)
    assert "Capital of Italy?" in text and "Paris." not in text and "Weather?" not in text
    edited = window.view.bubbles()[0]
    assert edited.variant is not None and edited.branch_label.text() == "2/2"
    assert [m.content for m in window.journal.messages(window.conversation)] == ["Capital of Italy?", "Rome."]
    qtbot.mouseClick(edited.branch_prev, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.conversation == original and window.pid is not None, timeout=5000)
    assert text_of(window).replace("\n", "") == before.replace("\n", "")
    assert window.view.bubbles()[0].branch_label.text() == "1/2"


def test_escape_cancels_an_edit(qtbot, shell: Shell) -> None:
    window = shell.open(ScriptedBackend(["ANSWER: ok"]))
    send(qtbot, window, "hello")
    qtbot.waitUntil(lambda: "ok" in answers(window)[-1:] and not window.busy if answers(window) else False, timeout=5000)
    window.start_edit(0, "hello")
    assert window.edit_banner.isVisible()
    qtbot.keyClick(window.input, Qt.Key.Key_Escape)
    assert not window.edit_banner.isVisible() and window.input.toPlainText() == ""


def test_sidebar_lists_searches_and_reopens_exactly(qtbot, shell: Shell) -> None:
    window = shell.open(ScriptedBackend([
        'CALL calculator.evaluate {"expression": "2+2"}', "ANSWER: **Four**.", "ANSWER: Blue whales."]))
    send(qtbot, window, "What is 2+2?")
    qtbot.waitUntil(lambda: "Four" in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    shown = text_of(window)
    first = window.conversation
    qtbot.keyClick(window.input, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.pid is not None and window.conversation != first, timeout=5000)
    assert text_of(window) == ""
    send(qtbot, window, "Largest animal?")
    qtbot.waitUntil(lambda: "Blue whales." in text_of(window), timeout=5000)
    wait_idle(qtbot, window)
    assert window.sidebar.titles() == ["Largest animal?", "What is 2+2?"]
    qtbot.keyClick(window.input, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    assert window.sidebar.search.hasFocus() or QApplication.focusWidget() is window.sidebar.search
    qtbot.keyClicks(window.sidebar.search, "whale")
    qtbot.waitUntil(lambda: window.sidebar.titles() == ["Largest animal?"], timeout=2000)  # message text matches
    window.sidebar.search.clear()
    qtbot.waitUntil(lambda: len(window.sidebar.titles()) == 2, timeout=2000)
    item = window.sidebar.list.item(window.sidebar.ids().index(first))
    rect = window.sidebar.list.visualItemRect(item)
    qtbot.mouseClick(window.sidebar.list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: window.conversation == first and window.pid is not None, timeout=5000)
    assert text_of(window) == shown
    card = next(w for w in window.view.items if isinstance(w, SyscallCard))
    assert card.ok and card.result == "4"


def test_rename_and_delete_ask_first(qtbot, shell: Shell) -> None:
    window = shell.open(ScriptedBackend(["ANSWER: one", "ANSWER: two"]))
    send(qtbot, window, "first chat")
    qtbot.waitUntil(lambda: "one" in text_of(window) and not window.busy, timeout=5000)
    window.new_conversation()
    qtbot.waitUntil(lambda: window.pid is not None, timeout=5000)
    send(qtbot, window, "second chat")
    qtbot.waitUntil(lambda: "two" in text_of(window) and not window.busy, timeout=5000)
    sidebar = window.sidebar
    sidebar.list.setCurrentRow(1)
    sidebar.rename_selected("My renamed chat")
    assert "My renamed chat" in sidebar.titles()
    sidebar.list.setCurrentRow(sidebar.titles().index("My renamed chat"))
    box = sidebar.delete_selected()
    assert box is not None and box.isVisible() and "My renamed chat" in box.text()
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Cancel), Qt.MouseButton.LeftButton)
    assert "My renamed chat" in sidebar.titles()  # cancel keeps it
    sidebar.list.setCurrentRow(sidebar.titles().index("My renamed chat"))
    box = sidebar.delete_selected()
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Yes), Qt.MouseButton.LeftButton)
    assert sidebar.titles() == ["second chat"]
    assert [c["title"] for c in window.journal.trees()] == ["second chat"]


def test_export_markdown_and_json(qtbot, shell: Shell, tmp_path: Path) -> None:
    window = shell.open(ScriptedBackend(["ANSWER: Exported answer."]))
    send(qtbot, window, "Export me")
    qtbot.waitUntil(lambda: "Exported answer." in text_of(window) and not window.busy, timeout=5000)
    md = window.export("md", tmp_path / "c.md")
    js = window.export("json", tmp_path / "c.json")
    assert md is not None and "Exported answer." in md.read_text() and md.read_text().startswith("# Export me")
    data = json.loads(js.read_text())
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]


def _consent_window(shell: Shell):
    return shell.open(
        ScriptedBackend(['CALL web.fetch {"url": "http://example.test"}', 'CALL notes.write {"text": "hi"}',
                         "ANSWER: Done."]),
        registry=registry_with(*untrusted_and_writer_devices()),
        policy=lambda dialogs: GrantPolicy(grant_all=True))


@pytest.mark.parametrize("allow", [True, False], ids=["allow", "deny"])
def test_the_consent_dialog_allows_and_denies(qtbot, shell: Shell, allow: bool) -> None:
    window = _consent_window(shell)
    send(qtbot, window, "Read the page and act on it")
    qtbot.waitUntil(lambda: window.dialogs.current is not None, timeout=5000)
    dialog = window.dialogs.current
    assert "notes.write" in dialog.windowTitle() + dialog.findChildren(type(window.status_label))[0].text()
    assert dialog.no_button.isDefault()
    qtbot.mouseClick(dialog.yes_button if allow else dialog.no_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Done." in text_of(window), timeout=5000)
    cards = [w for w in window.view.items if isinstance(w, SyscallCard)]
    assert [c.call for c in cards] == ["fetch", "write"]
    assert cards[0].badge.text() == "untrusted"
    if allow:
        assert cards[1].ok and cards[1].result == "wrote 2 characters"
    else:
        assert not cards[1].ok and "consent refused" in cards[1].error


def test_closing_the_window_answers_a_waiting_consent_no(qtbot, shell: Shell) -> None:
    window = _consent_window(shell)
    answers_seen: list[bool] = []
    request = ConsentRequest("notes", "write", {"text": "x"}, "test")
    worker = threading.Thread(target=lambda: answers_seen.append(window.dialogs.consent(request)))
    worker.start()
    qtbot.waitUntil(lambda: window.dialogs.current is not None, timeout=5000)
    window.close()
    worker.join(5)
    assert answers_seen == [False]


def test_the_dialog_service_never_blocks_the_gui_thread(qtbot, caplog) -> None:
    service = DialogService()
    with caplog.at_level(logging.ERROR, logger="llmos.app.dialogs"):
        assert service.consent(ConsentRequest("notes", "write", {}, "test")) is False  # no window: no
    # answered at once on the GUI thread, not after a wait for an answer that cannot come
    assert any("asked for on the GUI thread" in r.getMessage() for r in caplog.records)


def test_a_permission_is_asked_granted_remembered_and_revoked(qtbot, shell: Shell, tmp_path: Path) -> None:
    store = GrantStore(tmp_path / "grants.json")
    window = shell.open(
        ScriptedBackend(['CALL notes.write {"text": "hello"}', "ANSWER: Noted.",
                         'CALL notes.write {"text": "again"}', "ANSWER: Refused."]),
        registry=registry_with(*untrusted_and_writer_devices()),
        policy=lambda dialogs: GrantPolicy(store=store, ask=dialogs.ask_permission))
    send(qtbot, window, "Write a note")
    qtbot.waitUntil(lambda: window.dialogs.current is not None, timeout=5000)
    assert "files.write" in window.dialogs.current.findChildren(type(window.status_label))[0].text()
    qtbot.mouseClick(window.dialogs.current.yes_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Noted." in text_of(window) and not window.busy, timeout=5000)
    assert store.all() == {"notes": ["files.write"]}
    manager = window.show_device_manager()
    names = manager.table.column(0)
    row = names.index("notes")
    assert manager.table.item(row, 4).text() == "files.write" and manager.table.item(row, 5).text() == "ready"
    manager.table.selectRow(row)
    qtbot.mouseClick(manager.revoke_button, Qt.MouseButton.LeftButton)
    assert store.all() == {}
    assert manager.table.item(names.index("notes"), 5).text() == "asks for files.write"
    send(qtbot, window, "Write another")
    qtbot.waitUntil(lambda: window.dialogs.current is not None, timeout=5000)  # asked again after revoke
    qtbot.mouseClick(window.dialogs.current.no_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Refused." in text_of(window), timeout=5000)
    card = [w for w in window.view.items if isinstance(w, SyscallCard)][-1]
    assert not card.ok and "permission denied" in card.error


def test_the_task_manager_shows_a_running_process_and_kills_it(qtbot, shell: Shell) -> None:
    words = " ".join(f"w{i}" for i in range(400))
    window = shell.open(ScriptedBackend([f"ANSWER: {words}"], delay_per_token=0.03),
                        options=TurnOptions(slice_tokens=4))
    send(qtbot, window, "Talk")
    qtbot.waitUntil(lambda: "w3" in text_of(window), timeout=5000)
    manager = window.show_task_manager()
    qtbot.waitUntil(lambda: str(window.pid) in manager.table.column(0), timeout=2000)
    row = manager.table.column(0).index(str(window.pid))
    qtbot.waitUntil(lambda: manager.table.item(row, 2).text() in ("running", "ready"), timeout=2000)
    assert manager.table.item(row, 1).text() == "chat" and manager.table.item(row, 3).text() == "chat"
    qtbot.waitUntil(lambda: int(manager.table.item(row, 5).text() or 0) > 0, timeout=3000)  # tokens so far
    manager.table.selectRow(row)
    qtbot.mouseClick(manager.kill_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.busy, timeout=5000)
    qtbot.waitUntil(lambda: manager.table.item(row, 2).text() == "done", timeout=3000)
    assert "w300" not in text_of(window)


def test_the_ram_gauge_and_inspector_show_the_context_window(qtbot, shell: Shell) -> None:
    window = shell.open(ScriptedBackend(["ANSWER: Resident."]))
    send(qtbot, window, "What is in RAM?")
    qtbot.waitUntil(lambda: "Resident." in text_of(window) and not window.busy, timeout=5000)
    qtbot.waitUntil(lambda: window.ram_gauge.report is not None and window.ram_gauge.report.tokens > 0, timeout=5000)
    report = window.ram_gauge.report
    assert window.ram_gauge.label.text().startswith("RAM ") and window.ram_gauge.bar.value() == report.tokens
    inspector = window.show_ram_inspector()
    qtbot.waitUntil(lambda: inspector.report is not None, timeout=5000)
    kinds = inspector.pages.column(1)
    assert kinds[0] == "boot" and "user" in kinds and "answer" in kinds
    assert inspector.pages.item(kinds.index("user"), 7).text() == "What is in RAM?"


def test_paging_out_is_shown_in_the_inspector(qtbot, shell: Shell) -> None:
    long = " ".join(["filler"] * 200)
    window = shell.open(ScriptedBackend([f"ANSWER: {long}", f"ANSWER: {long}", "ANSWER: short"]),
                        options=TurnOptions(ram_tokens=700))
    for question in ("one", "two", "three"):
        send(qtbot, window, question)
        qtbot.waitUntil(lambda: not window.busy, timeout=5000)
    qtbot.waitUntil(lambda: "paged out of RAM" in text_of(window), timeout=5000)
    inspector = window.show_ram_inspector()
    qtbot.waitUntil(lambda: inspector.report is not None and inspector.paging.rowCount() > 0, timeout=5000)
    assert inspector.paging.item(0, 1).text() == "out" and "budget" in inspector.paging.item(0, 2).text()


def test_settings_refuse_a_bad_model_file_and_switch_to_a_good_one(qtbot, shell: Shell, tmp_path: Path,
                                                                   monkeypatch) -> None:
    config_path = tmp_path / "config.toml"
    monkeypatch.setenv("LLMOS_CONFIG", str(config_path))
    built: list[Config] = []

    def factory(config: Config) -> Kernel:
        built.append(config)
        backend = ScriptedBackend(["ANSWER: from the new model"])
        backend.model = Path(config.model).name
        return Kernel(backend, DeviceRegistry.from_entry_points())

    window = shell.open(ScriptedBackend(["ANSWER: old"]), config=Config(), kernel_factory=factory)
    dialog = window.show_settings()
    assert isinstance(dialog, SettingsDialog)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all, just text")
    dialog.model.setText(str(bad))
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert dialog.isVisible() and "not a GGUF model file" in dialog.model_status.text()
    assert not config_path.exists() and built == []
    good = tmp_path / "tiny.gguf"
    good.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (1).to_bytes(8, "little") + (0).to_bytes(8, "little"))
    dialog.model.setText(str(good))
    dialog.n_ctx.setValue(4096)
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()
    saved = load_config(config_path, env={})
    assert saved.model == str(good) and saved.n_ctx == 4096
    qtbot.waitUntil(lambda: window.bridge.model_name == "tiny.gguf" and window.pid is not None, timeout=10000)
    assert window.model_badge.text() == "tiny.gguf"
    send(qtbot, window, "hi")
    qtbot.waitUntil(lambda: "from the new model" in text_of(window), timeout=5000)


def test_a_model_switch_leaves_no_mcp_server_of_the_old_kernel_behind(qtbot, shell: Shell, tmp_path: Path) -> None:
    installed("mcp")
    from llmos.app.boot import build_registry
    from tests.mcp_processes import notes_server, running

    old_server, old_spec = notes_server(tmp_path / "mcp", "old")
    new_server, new_spec = notes_server(tmp_path / "mcp", "new")
    data = str(tmp_path / "data")
    at_build: list[tuple[int, int]] = []

    def factory(config: Config) -> Kernel:
        kernel = Kernel(ScriptedBackend(["ANSWER: from the new model"]), build_registry(config, start=False))
        at_build.append((running(old_spec), running(new_spec)))
        return kernel

    old_registry = build_registry(Config(data_dir=data, mcp={"servers": {"old": old_server}}))
    window = shell.open(ScriptedBackend(["ANSWER: old"]), registry=old_registry, config=Config(),
                        kernel_factory=factory)
    qtbot.waitUntil(lambda: window.pid is not None, timeout=10000)
    assert running(old_spec) == 1 and "old" in [d.name for d in window.kernel.registry.devices()]
    old_kernel = window.kernel
    window.switch_kernel(Config(data_dir=data, mcp={"servers": {"new": new_server}}))
    qtbot.waitUntil(lambda: window.kernel is not old_kernel and window.pid is not None, timeout=20000)
    # built without its devices; the old kernel's servers ended before the new ones started
    assert at_build == [(1, 0)]
    assert running(old_spec) == 0 and running(new_spec) == 1
    assert "new" in [d.name for d in window.kernel.registry.devices()]
    window.kernel.shutdown(timeout=10)
    assert running(new_spec) == 0


def test_voice_settings_are_saved_and_the_next_voice_mode_uses_them(qtbot, shell: Shell, tmp_path: Path,
                                                                     monkeypatch) -> None:
    from PySide6.QtWidgets import QComboBox

    from llmos.app.voice_config import voice_options

    config_path = tmp_path / "config.toml"
    monkeypatch.setenv("LLMOS_CONFIG", str(config_path))
    window = shell.open(ScriptedBackend(["ANSWER: ok"]), config=Config())
    dialog = window.show_settings()
    editors = dialog.voice_editors
    assert isinstance(editors["stt_model"], QComboBox)
    assert editors["vad_end_silence_s"].maximum() == 5.0  # the range the config accepts
    editors["voice_wake_phrase"].setText("hey computer")
    editors["stt_model"].setCurrentText("base")
    editors["vad_end_silence_s"].setValue(0.8)
    editors["tts_rate_wpm"].setValue(150)
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()
    saved = load_config(config_path, env={})
    assert (saved.voice_wake_phrase, saved.stt_model, saved.vad_end_silence_s, saved.tts_rate_wpm) == (
        "hey computer", "base", 0.8, 150)
    options = voice_options(window.config)  # what the next voice mode is built from
    assert options.wake_phrase == "hey computer" and options.vad.end_silence_s == 0.8


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_settings_serve_the_windows_kernel_to_other_programs(qtbot, shell: Shell, tmp_path: Path,
                                                             monkeypatch) -> None:
    import httpx
    import openai

    monkeypatch.setenv("LLMOS_CONFIG", str(tmp_path / "config.toml"))

    def factory(config: Config) -> Kernel:
        return Kernel(ScriptedBackend(responder=lambda prompt: "from the new kernel"), DeviceRegistry())

    window = shell.open(ScriptedBackend(responder=lambda prompt: "from the window's kernel"), config=Config(),
                        kernel_factory=factory)
    qtbot.waitUntil(lambda: window.pid is not None, timeout=10000)
    assert window.server.url is None and not window.serve_label.isVisible()
    dialog = window.show_settings()
    dialog.serve_host.setText("0.0.0.0")  # a public address without a key is refused, nothing saved
    dialog.serve_enabled.setChecked(True)
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert dialog.isVisible() and "without an API key" in dialog.error.text()
    port = _free_port()
    dialog.serve_host.setText("127.0.0.1")
    dialog.serve_port.setValue(port)
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()
    url = f"http://127.0.0.1:{port}/v1"
    assert window.server.url == url and window.serve_label.isVisible() and url in window.serve_label.text()
    assert load_config(tmp_path / "config.toml", env={}).serve_enabled

    created: list[events.ProcessCreated] = []
    window.kernel.bus.subscribe(lambda e: created.append(e) if isinstance(e, events.ProcessCreated) else None)
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=30)
    ask = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}
    assert client.chat.completions.create(**ask).choices[0].message.content == "from the window's kernel"
    assert [(e.name.split()[0], e.priority) for e in created] == [("api", "api")]  # a process of the window's kernel

    old = window.kernel  # a model switch moves the server to the new kernel
    window.switch_kernel(dataclasses.replace(window.config, n_ctx=4096))
    qtbot.waitUntil(lambda: window.kernel is not old and window.server.url == url, timeout=20000)
    assert client.chat.completions.create(**ask).choices[0].message.content == "from the new kernel"

    dialog = window.show_settings()
    dialog.serve_enabled.setChecked(False)
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert window.server.url is None and not window.serve_label.isVisible()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/models", timeout=5)


def test_toml_writer_round_trips_the_config() -> None:
    import tomllib

    data = {"model": "/m/x.gguf", "n_ctx": 4096, "grants": ["network"],
            "mcp": {"servers": {"fs": {"command": "npx", "args": ["-y", "srv"], "env": {"A": "1"}}}}}
    assert tomllib.loads(to_toml(data)) == data


def test_branch_variants_find_every_fork() -> None:
    u, a = (lambda t: Message("user", t)), (lambda t: Message("assistant", t))
    family = {"root": [u("q1"), a("x"), u("q2"), a("y")], "edit": [u("q1"), a("x"), u("q2'"), a("z")],
              "regen": [u("q1"), a("x2")]}
    found = variants("root", family, ["root", "edit", "regen"])
    assert sorted(found) == [1, 2]
    assert (found[1].position, found[1].total, found[1].next) == (1, 2, "regen")
    assert (found[2].position, found[2].total, found[2].next) == (1, 2, "edit")
    assert variants("edit", family, ["root", "edit", "regen"])[2].previous == "root"


def test_dark_and_light_follow_the_palette(qtbot, shell: Shell, qapp) -> None:
    window = shell.open(ScriptedBackend(["ANSWER: ok"]))
    try:
        apply_theme(qapp, dark=True)
        assert current_theme().dark
        qtbot.waitUntil(lambda: current_theme().window in window.view.widget().styleSheet(), timeout=2000)
        apply_theme(qapp, dark=False)
        assert not current_theme().dark
        qtbot.waitUntil(lambda: current_theme().window in window.view.widget().styleSheet(), timeout=2000)
    finally:
        apply_theme(qapp, dark=False)


def test_an_unanswered_question_times_out_as_no_and_its_dialog_goes(qtbot, shell: Shell) -> None:
    window = _consent_window(shell)
    window.dialogs.timeout_s = 0.6
    answers_seen: list[bool] = []
    request = ConsentRequest("notes", "write", {"text": "x"}, "test")
    worker = threading.Thread(target=lambda: answers_seen.append(window.dialogs.consent(request)))
    worker.start()
    qtbot.waitUntil(lambda: window.dialogs.current is not None, timeout=5000)
    qtbot.waitUntil(lambda: bool(answers_seen), timeout=5000)
    assert answers_seen == [False]
    qtbot.waitUntil(lambda: window.dialogs.current is None, timeout=3000)


def test_stop_is_at_once_even_within_a_long_slice(qtbot, shell: Shell) -> None:
    words = " ".join(f"word{i}" for i in range(400))
    window = shell.open(ScriptedBackend([f"ANSWER: {words} THE-END"], delay_per_token=0.03),
                        options=TurnOptions(slice_tokens=1000))  # one slice would be the whole answer
    send(qtbot, window, "Talk for a long time")
    qtbot.waitUntil(lambda: "word3" in text_of(window), timeout=5000)
    finished: list[events.TurnFinished] = []
    window.kernel.bus.subscribe(lambda e: finished.append(e) if isinstance(e, events.TurnFinished) else None)
    qtbot.keyClick(window.input, Qt.Key.Key_Escape)  # how soon: bench shell_stop_ms
    qtbot.waitUntil(lambda: not window.busy, timeout=30_000)  # only a hang fails here
    qtbot.waitUntil(lambda: bool(finished), timeout=30_000)
    [turn] = finished
    assert turn.stopped and "THE-END" not in turn.answer  # stopped within its one long slice
    assert "(stopped)" in text_of(window) and "THE-END" not in text_of(window)


def test_the_window_shows_before_the_kernel_is_built_then_adopts_it(qtbot, tmp_path: Path) -> None:
    from llmos.app.boot import attach_journal
    from llmos.app.window import ChatWindow

    built: list[Kernel] = []
    go_on = threading.Event()

    def factory(config: Config) -> Kernel:
        go_on.wait(30)  # imports and devices take a while: until the test has looked at the window
        kernel = Kernel(ScriptedBackend(["ANSWER: built behind the window"]), DeviceRegistry.from_entry_points())
        attach_journal(kernel, tmp_path / "journal.sqlite3")
        built.append(kernel)
        return kernel

    window = ChatWindow(None, config=Config(), kernel_factory=factory)
    qtbot.addWidget(window)
    window.show()
    try:
        window.start_kernel()
        assert window.kernel is None and window.status_label.text().startswith("Loading model")
        send(qtbot, window, "hello")  # typed before the kernel exists
        assert window.kernel is None
        go_on.set()
        qtbot.waitUntil(lambda: "built behind the window" in text_of(window), timeout=10000)
        assert window.kernel is built[0] and window.sidebar.isVisible()
        qtbot.waitUntil(lambda: window.sidebar.titles() == ["hello"], timeout=5000)
    finally:
        go_on.set()
        window.close()
        for kernel in built:
            kernel.shutdown(timeout=10)
            kernel.journal.close()


def test_a_kernel_that_cannot_be_built_is_shown_in_the_window(qtbot) -> None:
    from llmos.app.window import ChatWindow
    from llmos.memory.journal import JournalError

    def factory(config: Config) -> Kernel:
        raise JournalError("journal /x/journal.sqlite3 is not a usable SQLite database")

    window = ChatWindow(None, config=Config(), kernel_factory=factory)
    qtbot.addWidget(window)
    window.show()
    window.start_kernel()
    qtbot.waitUntil(lambda: "not a usable SQLite database" in text_of(window), timeout=5000)
    assert "llmos cannot start" in window.status_label.text() and not window.send_button.isEnabled()
    window.close()


def test_a_streaming_reply_renders_only_its_growing_paragraph() -> None:
    from llmos.app.chat_view import settled_prefix

    assert settled_prefix("one\n\ntwo") == 5
    assert settled_prefix("one\n\n```\ncode\n\nmore") == 5  # a blank line inside a fence is no cut
    assert settled_prefix("one\n\n```\ncode\n\n```\n\nafter") == len("one\n\n```\ncode\n\n```\n\n")
    assert settled_prefix("still the first paragraph") == 0


def test_streamed_paragraphs_settle_and_the_finished_message_is_one_piece(qtbot, shell: Shell) -> None:
    paragraphs = [" ".join(f"p{n}w{i}" for i in range(12)) for n in range(6)]
    window = shell.open(ScriptedBackend(["ANSWER: " + "\n\n".join(paragraphs)], delay_per_token=0.01),
                        options=TurnOptions(slice_tokens=4))
    send(qtbot, window, "Write paragraphs")
    qtbot.waitUntil(lambda: window.view._live is not None and len(window.view._live._settled) >= 2, timeout=5000)
    live = window.view._live
    assert "p0w0" in live._settled[0].text() and "p0w0" not in live.body.text()
    wait_idle(qtbot, window)
    bubble = [b for b in window.view.bubbles() if b.role == "assistant"][-1]
    assert bubble._settled == [] and all(p.split()[0] in bubble.body.text() for p in paragraphs)
