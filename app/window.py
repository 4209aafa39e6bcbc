"""The desktop window: conversations with the kernel, and the OS at work made visible.

The window hears the kernel only through :class:`~llmos.app.bridge.KernelBridge` (Qt signals on
the GUI thread) and never blocks: it shows at once while the model loads, and a message typed
meanwhile is sent when the model is ready. Its parts live in their own modules: the chat view
(``chat_view``), the sidebar (``sidebar``), the RAM gauge, RAM inspector and task manager
(``inspectors``), the device manager (``device_manager``), the consent and permission dialogs
(``dialogs``), settings (``settings``) and the colours (``theme``).

A conversation is a tree kept by the journal: Edit and Regenerate make a branch (a new journal
conversation that copies the messages before the turn) and a new process spawned with that
history; the branch switcher opens another branch the same way.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication, QFileDialog, QHBoxLayout, QLabel, QMainWindow, QPlainTextEdit, QProgressBar,
    QPushButton, QSizePolicy, QSplitter, QToolBar, QVBoxLayout, QWidget,
)

from llmos.app import branches
from llmos.app.bridge import BackendState, KernelBridge
from llmos.app.chat_view import ChatView, duration
from llmos.app.device_manager import DeviceManager
from llmos.app.dialogs import DialogService
from llmos.app.inspectors import RamGauge, RamInspector, TaskManager
from llmos.app.server.desktop import DesktopServer
from llmos.app.server.http import ServeError
from llmos.app.settings import SettingsDialog, needs_new_kernel
from llmos.app.sidebar import Sidebar
from llmos.app.theme import BASE_POINT_SIZE, apply_theme, current_theme
from llmos.kernel import events
from llmos.kernel.config import Config
from llmos.kernel.process import Message, Priority, TurnResult
from llmos.memory.journal import Journal, JournalError

if TYPE_CHECKING:  # imported by whoever builds the kernel: the window shows before that
    from llmos.kernel.loop import Kernel

log = logging.getLogger(__name__)

KernelFactory = Callable[[Config], "Kernel"]


def model_label(model: str) -> str:
    """A short name for the model: the file name of a GGUF path, else the name itself."""
    return model.replace("\\", "/").rsplit("/", 1)[-1] if model.endswith(".gguf") else model


def configured_model(config: Config | None) -> str:
    """What the config says the model is (shown before the kernel exists)."""
    if config is None:
        return "the model"
    if config.backend == "openai":
        return config.remote_model or config.base_url
    from llmos.kernel.model_file import default_model_path

    return config.model or str(default_model_path())


class MessageInput(QPlainTextEdit):
    """The input box: Enter sends, Shift+Enter starts a new line; Esc, Ctrl+N and Ctrl+K go on to
    the window."""

    submitted = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt API)
        key, mods = event.key(), event.modifiers()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if mods & Qt.KeyboardModifier.ShiftModifier:
                self.insertPlainText("\n")
            else:
                self.submitted.emit()
            return
        if key == Qt.Key.Key_Escape or (mods & Qt.KeyboardModifier.ControlModifier and key in (Qt.Key.Key_N, Qt.Key.Key_K)):
            event.ignore()
            return
        super().keyPressEvent(event)


class ChatWindow(QMainWindow):
    """Conversations on ``kernel``; the kernel may be loading, ready, failed, or not started.

    ``journal`` (default: the kernel's, see ``app/boot.py``) gives the sidebar, branches and
    export; ``dialogs`` answers the kernel's consent and permission questions; ``config`` and
    ``kernel_factory`` let settings switch the model (a new kernel). ``kernel`` None: the window
    shows first and :meth:`start_kernel` builds the kernel on a worker thread."""

    def __init__(self, kernel: "Kernel | None", parent: QWidget | None = None, *, journal: Journal | None = None,
                 dialogs: DialogService | None = None, config: Config | None = None,
                 kernel_factory: KernelFactory | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("llmos")
        self.resize(1100, 720)
        self.kernel = kernel
        self.journal = journal if journal is not None else getattr(kernel, "journal", None)
        self.dialogs = dialogs or DialogService()
        self.config = config
        self.kernel_factory = kernel_factory
        self.pid: int | None = None
        self.conversation: str | None = None
        self.messages: list[Message] = []  # the current conversation, as journaled
        self._spawning: str | None = None  # the conversation a spawn is under way for ("" = new)
        self._pending: str | None = None  # a message waiting for the model or the process
        self._future: Future[TurnResult] | None = None  # the running turn
        self._edit_index: int | None = None  # editing this user message (a branch on send)
        self._after_turn: Callable[[], None] | None = None  # a switch that waits for the turn
        self._switching = False
        self._windows: dict[str, QWidget] = {}
        self._built: Kernel | None = None  # built by start_kernel, maybe not adopted yet
        self.server = DesktopServer()  # Settings' "serve to other programs", on this window's kernel
        self._build()
        self.sidebar.setVisible(self.journal is not None or kernel_factory is not None)
        self.bridge = self._make_bridge(kernel)
        self._set_status(f"Loading model {model_label(self.bridge.model_name)} …", busy=True)
        self._update_actions()

    # --- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        self.view = ChatView()
        self.input = MessageInput()
        self.input.setPlaceholderText("Message llmos…  (Enter sends, Shift+Enter new line)")
        font = self.input.font()
        font.setPointSize(BASE_POINT_SIZE + 1)
        self.input.setFont(font)
        self.input.setFixedHeight(self.input.fontMetrics().lineSpacing() * 3 + 18)
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the reply (Esc)")
        self.edit_banner = QLabel("")
        self.edit_banner.setVisible(False)
        self.edit_banner.setObjectName("banner")
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(self.input, 1)
        row.addLayout(buttons)
        chat = QWidget()
        layout = QVBoxLayout(chat)
        layout.setContentsMargins(0, 0, 10, 8)
        layout.setSpacing(6)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.edit_banner)
        layout.addLayout(row)
        self.sidebar = Sidebar(self.journal)
        self.sidebar.setVisible(self.journal is not None)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(chat)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([250, 850])
        self.setCentralWidget(self.splitter)
        self._build_toolbar()
        self.status_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # busy indicator
        self.progress.setMaximumWidth(140)
        self.progress.setMaximumHeight(14)
        self.progress.setTextVisible(False)
        self.ram_gauge = RamGauge()
        self.serve_label = QLabel()
        self.serve_label.setVisible(False)
        self.serve_label.setToolTip("Other programs use this model through an OpenAI-compatible API (Settings)")
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.serve_label)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.ram_gauge)
        self.input.submitted.connect(self.send)
        self.send_button.clicked.connect(self.send)
        self.stop_button.clicked.connect(self.stop)
        self.view.edit_requested.connect(self.start_edit)
        self.view.regenerate_requested.connect(self.regenerate)
        self.view.branch_selected.connect(lambda cid: self.open_conversation(cid, latest=False))
        self.sidebar.open_requested.connect(lambda cid: self.open_conversation(cid, latest=True))
        self.sidebar.new_requested.connect(self.new_conversation)
        self.sidebar.deleted.connect(self._on_deleted)
        self.sidebar.renamed.connect(lambda *_: self._update_title())
        self.sidebar.failed.connect(lambda error: self._set_status(error, error=True))
        self._build_voice()
        self._restyle()
        self.input.setFocus()

    def _build_toolbar(self) -> None:
        bar = QToolBar("llmos")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        self.toolbar = bar

        def action(text: str, slot: Callable[[], object], shortcut: str | None = None, tip: str = "") -> QAction:
            act = QAction(text, self)
            if shortcut:
                act.setShortcut(QKeySequence(shortcut))
            act.setToolTip(f"{tip or text} ({shortcut})" if shortcut else (tip or text))
            act.triggered.connect(lambda _checked=False: slot())
            bar.addAction(act)
            return act

        self.new_action = action("New", self.new_conversation, "Ctrl+N", "New conversation")
        self.search_action = action("Search", self.focus_search, "Ctrl+K", "Search conversations")
        bar.addSeparator()
        self.export_md_action = action("Export .md", lambda: self.export("md"), tip="Export as Markdown")
        self.export_json_action = action("Export .json", lambda: self.export("json"), tip="Export as JSON")
        bar.addSeparator()
        self.tasks_action = action("Tasks", self.show_task_manager, tip="Task manager: the processes")
        self.ram_action = action("RAM", self.show_ram_inspector, tip="RAM inspector: the context window")
        self.devices_action = action("Devices", self.show_device_manager, tip="Devices, permissions, grants")
        self.settings_action = action("Settings", self.show_settings, tip="Model, context, voice, data directory")
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        bar.addWidget(spacer)
        # The voice widget (app/voice_widget.py) goes here: set_voice_widget(widget).
        self.voice_slot = QWidget()
        self.voice_slot.setObjectName("voice_slot")
        QHBoxLayout(self.voice_slot).setContentsMargins(0, 0, 6, 0)
        bar.addWidget(self.voice_slot)
        self.model_badge = QLabel("")
        self.model_badge.setObjectName("model_badge")
        bar.addWidget(self.model_badge)

    def _build_voice(self) -> None:
        """Hands-free voice mode (app/voice_widget.py): its loop is made on the kernel in use when
        the user turns it on, and its turns are turns of the conversation on screen (the same
        process, raised to the voice level while voice mode is on): journaled with it, in its
        context, shown as they happen like typed ones."""
        from llmos.app.voice_widget import VoiceWidget, default_source, default_voice_loop

        self.voice_loop_factory = default_voice_loop  # (kernel, config, pid) -> VoiceLoop

        def make_loop():  # noqa: ANN202
            if self.kernel is None:
                raise RuntimeError("the model is still loading: try voice mode again in a moment")
            if self.pid is None:
                raise RuntimeError("the conversation is still starting: try voice mode again in a moment")
            return self.voice_loop_factory(self.kernel, self.config, self.pid)

        self._voice_turn = False  # a spoken turn is under way: show its answer as it streams
        self.voice = VoiceWidget(make_loop, default_source)
        self.voice.transcript.connect(self._on_voice_heard)
        self.voice.turn_done.connect(self._on_voice_done)
        self.voice.failed.connect(lambda message: self.view.add_note(f"Voice: {message}", error=True))
        self.set_voice_widget(self.voice)

    def _on_voice_heard(self, text: str) -> None:
        self.view.add_message("user", text)  # journaled as the process appends it (on_message_appended)
        self._voice_turn = True
        self._set_status("Thinking …", busy=True)

    def _on_voice_done(self, done: Any) -> None:
        self._voice_turn = False
        if self.view.streaming:  # stopped before its answer was journaled
            self.view.end_reply()
        if done.stopped:
            self.view.add_note("(interrupted)")
        self._ready_status()

    def set_voice_widget(self, widget: QWidget) -> None:
        """Put the voice mode's widget in its toolbar slot."""
        layout = self.voice_slot.layout()
        while layout.count():
            old = layout.takeAt(0).widget()
            if old is not None:
                old.setParent(None)
        layout.addWidget(widget)

    def _restyle(self) -> None:
        theme = current_theme()
        self.edit_banner.setStyleSheet(f"color: {theme.accent}; padding: 2px 4px;")
        self.model_badge.setStyleSheet(f"color: {theme.dim}; padding: 0 10px;")
        self.input.setStyleSheet(f"QPlainTextEdit {{ border: 1px solid {theme.card_border}; border-radius: 8px;"
                                 f" padding: 6px; }} QPlainTextEdit:focus {{ border-color: {theme.accent}; }}")
        self.sidebar.list.setStyleSheet(
            f"QListWidget {{ border: none; background: transparent; }}"
            f"QListWidget::item {{ padding: 6px 6px; border-radius: 6px; }}"
            f"QListWidget::item:selected {{ background: {theme.user_bubble}; color: {theme.text}; }}")

    def changeEvent(self, event) -> None:  # noqa: N802, ANN001 (Qt API)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._restyle()
        super().changeEvent(event)

    # --- the bridge ----------------------------------------------------------------------------

    def _make_bridge(self, kernel: "Kernel | None") -> KernelBridge:
        bridge = KernelBridge(kernel, self, model_name=configured_model(self.config))
        bridge.backend_ready.connect(self.on_backend_ready)
        bridge.backend_failed.connect(self.on_backend_failed)
        bridge.spawned.connect(self.on_spawned)
        bridge.token.connect(self.on_token)
        bridge.message_appended.connect(self.on_message_appended)
        bridge.syscall_started.connect(self.on_syscall_started)
        bridge.syscall_finished.connect(self.on_syscall_finished)
        bridge.turn_finished.connect(self.on_turn_finished)
        bridge.process_failed.connect(self.on_process_failed)
        bridge.turn_failed.connect(self.on_turn_failed)
        bridge.action_failed.connect(self.on_action_failed)
        bridge.paged.connect(self.on_paged)
        self.dialogs.attach(bridge, self)
        self.model_badge.setText(model_label(bridge.model_name))
        return bridge

    # --- state -------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A message is in flight: waiting to be sent, or being answered."""
        return self._pending is not None or self._future is not None

    def _set_status(self, text: str, *, busy: bool = False, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet(f"color: {current_theme().error};" if error else "")
        self.progress.setVisible(busy)

    def _ready_status(self, extra: str = "") -> None:
        if self.bridge.backend_state is BackendState.READY and not self._switching:
            self._set_status(f"Ready: {model_label(self.bridge.model_name)}{extra}")

    def _update_actions(self) -> None:
        failed = self.bridge.backend_state is BackendState.FAILED or self._switching
        self.send_button.setEnabled(not self.busy and not failed)
        self.stop_button.setEnabled(self.busy or self._edit_index is not None)
        self.stop_button.setText("Cancel edit" if self._edit_index is not None and not self.busy else "Stop")
        has_journal = self.journal is not None and self.conversation is not None
        self.view.set_editing_enabled(has_journal and not self.busy)
        self.view.set_regenerate_on_last_answer(has_journal and not self.busy)
        for act in (self.export_md_action, self.export_json_action):
            act.setEnabled(has_journal and bool(self.messages))

    def _update_title(self) -> None:
        title = ""
        if self.journal is not None and self.conversation is not None:
            try:
                title = self.journal.conversation(self.conversation)["title"]
            except JournalError:
                title = ""
        self.setWindowTitle(f"llmos — {title}" if title else "llmos")

    def _end_turn(self) -> None:
        self._future = None
        self.view.end_reply()
        self._update_actions()
        self._refresh_tree()
        self.refresh_ram()
        if self._after_turn is not None:
            then, self._after_turn = self._after_turn, None
            then()

    # --- conversations -----------------------------------------------------------------------

    def _spawn(self, conversation: str | None, history: list[Message] | None = None) -> None:
        """Retire the current process and spawn one for ``conversation`` (None = a new one)."""
        if self.kernel is None:  # still being built: on_backend_ready spawns
            return
        if self.pid is not None:
            self.bridge.kill(self.pid)
        self.pid = None
        self._spawning = conversation or ""
        self.ram_gauge.show_report(None)
        self.bridge.spawn("chat", Priority.CHAT, history=history, conversation=conversation)

    def _when_idle(self, then: Callable[[], None]) -> bool:
        """Run ``then`` now, or after the running turn (which is stopped). True if it ran now."""
        if self._future is not None:
            self._after_turn = then
            if self.pid is not None:
                self.bridge.stop(self.pid)
            self._set_status("Stopping the reply first …", busy=True)
            return False
        self._pending = None
        then()
        return True

    @Slot()
    def new_conversation(self) -> None:
        def go() -> None:
            self.cancel_edit()
            self.conversation, self.messages = None, []
            self.view.clear()
            self.sidebar.select(None)
            self._update_title()
            if self.bridge.backend_state is not BackendState.FAILED:
                self._spawn(None)
            self._update_actions()
            self.input.setFocus()

        self._when_idle(go)

    def open_conversation(self, cid: str, *, latest: bool = True) -> None:
        """Show a journaled conversation exactly as it was and continue it (``latest``: the tree's
        most recently active branch)."""
        if self.journal is None:
            return

        def go() -> None:
            try:
                target = self.journal.latest_leaf(cid) if latest else self.journal.resolve(cid)
                messages = self.journal.messages(target)
                calls = self.journal.syscalls(target)
            except JournalError as exc:
                self._set_status(str(exc), error=True)
                return
            self.cancel_edit()
            self.conversation, self.messages = target, messages
            self._render_history(messages, calls)
            self.sidebar.select(self.journal.root(target))
            self._update_title()
            self._refresh_tree()
            if self.bridge.backend_state is not BackendState.FAILED:
                self._spawn(target, messages)
            self._update_actions()

        self._when_idle(go)

    def _render_history(self, messages: list[Message], calls: list[dict]) -> None:
        self.view.clear()
        queue = list(calls)
        card = None
        for index, message in enumerate(messages):
            if message.role == "user":
                self.view.add_message("user", message.content, index)
            elif message.role == "assistant" and message.call:
                record = queue.pop(0) if queue else None
                device, _, call = message.call.partition(".")
                arguments = record["arguments"] if record else message.content
                card = self.view.add_card((-1, index), device, call, arguments)
                if record is not None:
                    card.finish(record["result"], record["ok"], record["seconds"], record["trusted"], record["error"])
            elif message.role == "tool":
                if card is not None and card.ok is None:  # no journaled record: the result page
                    card.finish(message.content, True, 0.0, message.trusted, None)
                card = None
            elif message.role == "assistant":
                self.view.add_message("assistant", message.content, index)
            elif message.role == "system":
                self.view.add_note("↺ recalled from long-term memory for this turn")

    def _refresh_tree(self) -> None:
        """The branch switchers of the current conversation, and the sidebar."""
        if self.journal is None or self.conversation is None:
            return
        try:
            family = self.journal.family(self.conversation)
            found = branches.variants(self.conversation, {cid: self.journal.messages(cid) for cid in family}, family)
        except JournalError as exc:
            log.warning("cannot read the conversation tree: %s", exc)
            return
        self.view.set_variants(found)
        self.sidebar.current_root = family[0]
        self.sidebar.refresh()
        self._update_title()

    def _on_deleted(self, root: str) -> None:
        if self.conversation is not None and self.journal is not None:
            try:
                self.journal.resolve(self.conversation)
            except JournalError:  # the open conversation was deleted
                self.new_conversation()

    @Slot()
    def focus_search(self) -> None:
        if self.journal is None:
            return
        self.sidebar.setVisible(True)
        self.sidebar.search.setFocus()
        self.sidebar.search.selectAll()

    # --- edit, regenerate ----------------------------------------------------------------------

    def start_edit(self, index: int | None, text: str) -> None:
        if index is None or self.busy or self.journal is None:
            return
        self._edit_index = index
        self.input.setPlainText(text)
        self.input.setFocus()
        self.input.moveCursor(self.input.textCursor().MoveOperation.End)
        self.edit_banner.setText("✎ Editing an earlier message: Enter sends it as a new branch · Esc cancels")
        self.edit_banner.setVisible(True)
        self._update_actions()

    def cancel_edit(self) -> None:
        if self._edit_index is None:
            return
        self._edit_index = None
        self.edit_banner.setVisible(False)
        self.input.clear()
        self._update_actions()

    def _branch_and_send(self, keep: int, text: str) -> None:
        assert self.journal is not None and self.conversation is not None
        try:
            new = self.journal.branch(self.conversation, keep)
        except JournalError as exc:
            self._set_status(f"Cannot make a branch: {exc}", error=True)
            return
        self._edit_index = None
        self.edit_banner.setVisible(False)
        self.conversation, self.messages = new, self.journal.messages(new)
        self._render_history(self.messages, self.journal.syscalls(new))
        self._refresh_tree()
        self._spawn(new, self.messages)
        self.view.add_message("user", text)
        self._pending = text
        self._pump()
        self._update_actions()

    @Slot()
    def regenerate(self) -> None:
        if self.busy or self.journal is None or self.conversation is None:
            return
        user = branches.last_user_index(self.messages)
        if user is None:
            return
        self._branch_and_send(branches.turn_start(self.messages, user), self.messages[user].content)

    # --- sending -------------------------------------------------------------------------------

    @Slot()
    def send(self) -> None:
        text = self.input.toPlainText().strip()
        if not text or self.busy or self._switching:
            return
        if self.bridge.backend_state is BackendState.FAILED:
            self.view.add_note(f"Cannot send: the model is not available ({self.bridge.load_error}).", error=True)
            return
        self.input.clear()
        if self._edit_index is not None and self.conversation is not None:
            self._branch_and_send(branches.turn_start(self.messages, self._edit_index), text)
            return
        self.view.add_message("user", text)
        self._pending = text
        self._pump()
        self._update_actions()

    def _pump(self) -> None:
        """Send the pending message once the model is ready and the process exists."""
        if self._pending is None:
            return
        if self.bridge.backend_state is not BackendState.READY:
            self._set_status(f"Loading model {model_label(self.bridge.model_name)} … "
                             "(your message is sent when it is ready)", busy=True)
            return
        if self.pid is None:
            self._set_status("Starting the chat …", busy=True)
            return
        text, self._pending = self._pending, None
        self._future = self.bridge.submit(self.pid, text)
        self._set_status("Thinking …", busy=True)
        self._update_actions()

    @Slot()
    def stop(self) -> None:
        if self._pending is not None:  # not sent yet: just drop it
            self._pending = None
            self.view.add_note("(not sent)")
            if self.bridge.backend_state is BackendState.LOADING:
                self._set_status(f"Loading model {model_label(self.bridge.model_name)} …", busy=True)
            self._ready_status()
            self._update_actions()
        elif self._future is not None and self.pid is not None:
            self.bridge.stop(self.pid)
            self._set_status("Stopping …", busy=True)
        elif self._edit_index is not None:
            self.cancel_edit()

    # --- kernel events (GUI thread) ----------------------------------------------------------

    @Slot(object)
    def on_backend_ready(self, event: events.BackendReady) -> None:
        took = f" (loaded in {event.seconds:.1f} s)" if event.seconds > 0 else ""
        self._ready_status(took)
        log.info("backend ready: %s", event.model)
        self.sync_server()
        if self.pid is None and self._spawning is None:
            self._spawn(self.conversation, self.messages if self.conversation else None)

    @Slot(str)
    def on_backend_failed(self, error: str) -> None:
        self._set_status(f"The model could not be loaded: {error}", error=True)
        self.view.add_note(f"The model could not be loaded: {error}. Choose another model in Settings.", error=True)
        if self._pending is not None:
            self._pending = None
            self.view.add_note("(your message was not sent)")
        self._update_actions()

    @Slot(int, str, str)
    def on_spawned(self, pid: int, name: str, conversation: str) -> None:
        wanted = self._spawning
        if wanted is None or (wanted and wanted != conversation):  # a spawn the user moved away from
            self.bridge.kill(pid)
            return
        self._spawning = None
        self.pid = pid
        self.conversation = conversation or self.conversation
        if self.voice.loop is not None:  # voice mode follows the conversation on screen
            self.voice.loop.use_process(pid)
        log.info("chat process %d (%s) for conversation %s", pid, name, conversation[:12])
        self._pump()
        self._update_actions()
        self.refresh_ram()

    @Slot(object)
    def on_message_appended(self, event: events.MessageAppended) -> None:
        if event.pid != self.pid or self.pid is None:
            return
        index = len(self.messages)
        self.messages.append(Message(event.role, event.content, event.call, event.trusted))
        if event.role == "user":
            pending = [b for b in self.view.bubbles() if b.role == "user" and b.index is None]
            if pending:
                pending[-1].index = index
        elif event.role == "assistant" and not event.call:
            self.view.end_reply(event.content, index)
        elif event.role == "system":
            self.view.add_note("↺ recalled from long-term memory for this turn")

    @Slot(int, str)
    def on_token(self, pid: int, text: str) -> None:
        if pid == self.pid and (self._future is not None or self._voice_turn):
            self.view.append_reply(text)

    @Slot(object)
    def on_syscall_started(self, event: events.SyscallStarted) -> None:
        if event.pid == self.pid:
            self.view.add_card((event.pid, event.call_id), event.device, event.call, event.arguments)
            self._set_status(f"Calling {event.device}.{event.call} …", busy=True)

    @Slot(object)
    def on_syscall_finished(self, event: events.SyscallFinished) -> None:
        if event.pid == self.pid:
            self.view.finish_card(event)
            if event.ok:
                self._set_status("Thinking …", busy=True)
            else:
                self._set_status(f"{event.device}.{event.call} failed: {event.error}", busy=True, error=True)

    @Slot(object)
    def on_paged(self, event: events.Paged) -> None:
        if event.pid == self.pid and event.direction == "out":
            self.view.add_note(f"⇣ {event.messages} older messages paged out of RAM to long-term memory "
                               f"({event.tokens_before:,} → {event.tokens_after:,} tokens)")

    @Slot(object)
    def on_turn_finished(self, event: events.TurnFinished) -> None:
        if event.pid != self.pid or self._future is None:
            return
        streamed = self.view.streaming
        if not event.answer and not event.stopped and not streamed:
            self.view.add_note("(no answer)")
        if event.stopped:
            self.view.add_note("(stopped)")
        seconds = event.timings.get("total_s")
        self._end_turn()
        self._ready_status(f" · last reply {duration(seconds)}" if isinstance(seconds, (int, float)) else "")

    @Slot(int, str)
    def on_process_failed(self, pid: int, error: str) -> None:
        if pid != self.pid:
            return
        self.view.add_note(f"Error: {error}", error=True)
        self._end_turn()
        self._ready_status()

    @Slot(int, str, object)
    def on_turn_failed(self, pid: int, error: str, future: object) -> None:
        if future is not self._future:  # already reported by on_process_failed
            return
        self.view.add_note(f"Error: {error}", error=True)
        self._end_turn()
        self._ready_status()

    @Slot(str, str)
    def on_action_failed(self, action: str, error: str) -> None:
        self.view.add_note(f"Error ({action}): {error}", error=True)
        self._set_status(f"Error: {error}", error=True)
        if action == "spawn":
            self._spawning = None
            self._pending = None
        self._update_actions()

    # --- the OS made visible -------------------------------------------------------------------

    def refresh_ram(self) -> None:
        if self.pid is None:
            return
        pid = self.pid

        def done(report, error) -> None:  # noqa: ANN001
            if pid == self.pid:
                self.ram_gauge.show_report(report)
            inspector = self._windows.get("ram")
            if inspector is not None and inspector.isVisible() and pid == self.pid:
                inspector.show_report(report, error)  # type: ignore[attr-defined]

        self.bridge.ram(pid, done)

    def _window(self, name: str, make: Callable[[], QWidget]) -> QWidget:
        widget = self._windows.get(name)
        if widget is None:
            widget = make()
            self._windows[name] = widget
        widget.show()
        widget.raise_()
        return widget

    def show_task_manager(self) -> TaskManager:
        manager = self._window("tasks", lambda: TaskManager(self.bridge, self))
        assert isinstance(manager, TaskManager)
        if self.pid is not None:
            manager.select_pid(self.pid)
        return manager

    def show_ram_inspector(self) -> RamInspector:
        inspector = self._window("ram", lambda: RamInspector(self.bridge, lambda: self.pid, self))
        assert isinstance(inspector, RamInspector)
        inspector.refresh()
        return inspector

    def show_device_manager(self) -> DeviceManager:
        manager = self._window("devices", lambda: DeviceManager(self.bridge.kernel, self))
        assert isinstance(manager, DeviceManager)
        manager.refresh()
        return manager

    def show_settings(self) -> SettingsDialog | None:
        if self.config is None:
            self._set_status("Settings need the app's configuration (start llmos with `make run`).", error=True)
            return None
        dialog = SettingsDialog(self.config, self)
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        dialog.accepted.connect(lambda: self.apply_settings(dialog.result_config))
        self._windows["settings"] = dialog
        dialog.open()
        return dialog

    def apply_settings(self, new: Config | None) -> None:
        if new is None or self.config is None:
            return
        old, self.config = self.config, new
        if needs_new_kernel(old, new):
            self.switch_kernel(new)  # the server follows when the new model is ready
        else:
            self._set_status("Settings saved.")
            self.sync_server()

    def sync_server(self) -> None:
        """Serve (or stop serving) this window's kernel to other programs, as Settings say."""
        ready = self.bridge.backend_state is BackendState.READY and not self._switching
        try:
            line = self.server.sync(self.config, self.kernel if ready else None)
        except ServeError as exc:
            self._set_status(f"Cannot serve to other programs: {exc}", error=True)
            line = None
        url = self.server.url
        self.serve_label.setText(f"API: {url}" if url else "")
        self.serve_label.setVisible(url is not None)
        if line:
            self._set_status(line)

    def start_kernel(self) -> None:
        """Build the kernel for ``config`` on a worker thread (the window is already shown), then
        adopt it; a failure is shown in the window."""
        assert self.kernel_factory is not None and self.config is not None
        factory, config = self.kernel_factory, self.config

        def work() -> "Kernel":
            self._built = factory(config)
            return self._built.start()

        def done(new: "Kernel | None", error: str | None) -> None:
            if new is None:
                self.bridge.backend_state = BackendState.FAILED
                self.bridge.load_error = error
                self.on_backend_failed(f"llmos cannot start: {error}")
                return
            self.adopt_kernel(new)

        self.bridge.run(work, done)

    def adopt_kernel(self, new: "Kernel") -> None:
        """Drive ``new`` from now on: a new bridge, its journal, the conversation reopened."""
        self.bridge.close()
        self.voice.shutdown()  # its loop drove the old kernel; the next toggle makes one on the new
        for widget in self._windows.values():
            widget.close()
        self._windows.clear()
        old_journal, self.kernel = self.journal, new
        self.journal = getattr(new, "journal", None) or self.journal
        if old_journal is not None and old_journal is not self.journal:
            old_journal.close()
        self.sidebar.journal = self.journal
        self.sidebar.setVisible(self.journal is not None)
        self.sidebar.refresh()
        self.pid, self._spawning, self._future = None, None, None
        self.bridge = self._make_bridge(new)
        self._set_status(f"Loading model {model_label(self.bridge.model_name)} …", busy=True)
        try:  # the same conversation, if the (maybe new) data directory has it
            known = self.conversation is not None and self.journal is not None and \
                bool(self.journal.resolve(self.conversation))
        except JournalError:
            known = False
        if known:
            self.open_conversation(self.conversation, latest=False)  # type: ignore[arg-type]
        elif self.conversation is not None:
            self.new_conversation()
        self._update_actions()

    def switch_kernel(self, config: Config) -> None:
        """Shut the kernel down and start one for ``config`` (on a worker thread, with progress)."""
        if self.kernel_factory is None or self.kernel is None:
            self._set_status("Settings saved; restart llmos to use them.")
            return
        factory, old = self.kernel_factory, self.kernel

        def work() -> "Kernel":
            new = factory(config)  # a bad config fails here, and the old kernel goes on
            # built, not started: it holds no devices yet. The old kernel's devices stop first
            # (its MCP server processes end, its memory store closes), then the new ones start.
            old.shutdown(timeout=30.0)
            return new.start()

        def done(new: "Kernel | None", error: str | None) -> None:
            self._switching = False
            if new is None:
                self.view.add_note(f"Cannot switch the model: {error}", error=True)
                self._set_status(f"Cannot switch the model: {error}", error=True)
                self._update_actions()
                self.sync_server()  # the old kernel runs on: serve it again if Settings say so
                return
            self.adopt_kernel(new)

        def go() -> None:
            self._switching = True
            self.sync_server()  # off while the kernel changes
            self._set_status(f"Switching to {model_label(config.model or config.remote_model or config.backend)} …",
                             busy=True)
            self._update_actions()
            self.bridge.run(work, done)

        self._when_idle(go)

    # --- export ----------------------------------------------------------------------------------

    def export(self, fmt: str, path: str | Path | None = None) -> Path | None:
        """Write the conversation as Markdown (``md``) or JSON; without ``path``, ask where."""
        if self.journal is None or self.conversation is None:
            return None
        if path is None:
            suffix = "md" if fmt == "md" else "json"
            chosen, _ = QFileDialog.getSaveFileName(self, "Export conversation", f"conversation.{suffix}",
                                                    "Markdown (*.md)" if fmt == "md" else "JSON (*.json)")
            if not chosen:
                return None
            path = chosen
        target = Path(path)
        try:
            target.write_text(self.journal.export(self.conversation, fmt), encoding="utf-8")
        except (JournalError, OSError) as exc:
            self._set_status(f"Cannot export: {exc}", error=True)
            return None
        self._set_status(f"Exported to {target}")
        return target

    # --- Qt ----------------------------------------------------------------------------------

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt API)
        key, ctrl = event.key(), bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
        if key == Qt.Key.Key_Escape:
            self.stop()
            return
        if ctrl and key == Qt.Key.Key_N:
            self.new_conversation()
            return
        if ctrl and key == Qt.Key.Key_K:
            self.focus_search()
            return
        super().keyPressEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt API)
        self.dialogs.close()
        if self._future is not None and self.pid is not None:
            self.bridge.stop(self.pid)
        for widget in self._windows.values():
            widget.close()
        self.voice.shutdown()
        self.server.stop()
        self.bridge.close()
        super().closeEvent(event)


def run_window(config: Config, grant_all: bool = False) -> int:
    """The desktop app: the window shows at once; the kernel is built and the model loaded behind it."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("llmos")
    apply_theme(app)
    font = app.font()
    font.setPointSize(max(font.pointSize(), BASE_POINT_SIZE - 1))
    app.setFont(font)
    dialogs = DialogService()

    def factory(cfg: Config) -> "Kernel":
        from llmos.app.boot import build_kernel  # the heavy imports, off the GUI thread

        return build_kernel(cfg, grant_all=grant_all, consent=dialogs.consent, ask=dialogs.ask_permission)

    window = ChatWindow(None, dialogs=dialogs, config=config, kernel_factory=factory)
    window.show()
    window.start_kernel()
    _quit_on_sigint(app, window)
    try:
        return app.exec()
    finally:
        window.bridge.close()
        for kernel in {id(k): k for k in (window.kernel, window._built) if k is not None}.values():
            kernel.shutdown()


def _quit_on_sigint(app: QApplication, window: QMainWindow) -> None:
    """Ctrl-C in the terminal closes the window (Python only sees signals while it runs code)."""
    signal.signal(signal.SIGINT, lambda *_: window.close())
    timer = QTimer(app)
    timer.timeout.connect(lambda: None)
    timer.start(250)
