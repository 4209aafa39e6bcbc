"""The desktop window: one chat with the kernel, its replies streamed, its system calls shown.

The window hears the kernel only through :class:`~llmos.app.bridge.KernelBridge` (Qt signals on
the GUI thread) and never blocks: it shows at once while the model loads, and a message typed
meanwhile is sent when the model is ready.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from concurrent.futures import Future
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import (
    QCloseEvent, QColor, QFont, QFontDatabase, QKeyEvent, QTextBlockFormat,
    QTextCharFormat, QTextCursor,
)
from PySide6.QtWidgets import (
    QApplication, QHBoxLayout, QLabel, QMainWindow, QMessageBox, QPlainTextEdit, QProgressBar,
    QPushButton, QTextBrowser, QVBoxLayout, QWidget,
)

from llmos.app.bridge import KernelBridge
from llmos.kernel import events
from llmos.kernel.config import Config
from llmos.kernel.loop import Kernel
from llmos.kernel.process import Priority, TurnResult

log = logging.getLogger(__name__)

BASE_POINT_SIZE = 11
_USER, _MODEL, _DIM, _ERROR = QColor("#1f5fbf"), QColor("#1b7f4b"), QColor("#6b6b6b"), QColor("#b3261e")


def model_label(model: str) -> str:
    """A short name for the model: the file name of a GGUF path, else the name itself."""
    return model.replace("\\", "/").rsplit("/", 1)[-1] if model.endswith(".gguf") else model


def _short(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration(seconds: float) -> str:
    if seconds < 0.001:
        return "<1 ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def syscall_line(event: events.SyscallStarted | events.SyscallFinished) -> str:
    """One compact line: ``⚙ device.call {args} → result · 3 ms`` (or ``✗ error``)."""
    head = f"⚙ {event.device}.{event.call} {_short(event.arguments, 120)}"
    if isinstance(event, events.SyscallStarted):
        return f"{head} …"
    outcome = f"→ {_short(event.result, 160)}" if event.ok else f"✗ {_short(event.error or 'failed', 160)}"
    trust = "" if event.trusted else " (untrusted)"
    return f"{head} {outcome}{trust} · {duration(event.seconds)}"


class Transcript(QTextBrowser):
    """The conversation as a document that grows at its end: messages, replies, system calls."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenExternalLinks(False)
        self.setPlaceholderText("Ask llmos anything. Enter sends, Shift+Enter starts a new line.")
        font = self.font()
        font.setPointSize(BASE_POINT_SIZE + 1)
        self.setFont(font)
        self.document().setDocumentMargin(12)
        self._syscall_blocks: dict[tuple[int, int], int] = {}
        self._reply_open = False

    # --- formats -----------------------------------------------------------------------------

    @staticmethod
    def _chars(color: QColor | None = None, *, bold: bool = False, mono: bool = False,
               italic: bool = False, scale: float = 1.0) -> QTextCharFormat:
        fmt = QTextCharFormat()
        if mono:
            fmt.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        fmt.setFontPointSize((BASE_POINT_SIZE + 1) * scale)
        if color is not None:
            fmt.setForeground(color)
        if bold:
            fmt.setFontWeight(QFont.Weight.Bold)
        fmt.setFontItalic(italic)
        return fmt

    def _add_block(self, text: str, chars: QTextCharFormat, top_margin: float = 2.0, indent: float = 0.0) -> int:
        """Append a paragraph; returns its block number."""
        scrollbar = self.verticalScrollBar()
        at_bottom = scrollbar.value() >= scrollbar.maximum() - 4
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        block = QTextBlockFormat()
        block.setTopMargin(top_margin)
        block.setLeftMargin(indent)
        if self.document().isEmpty():
            cursor.setBlockFormat(block)
            cursor.setBlockCharFormat(chars)
        else:
            cursor.insertBlock(block, chars)
        cursor.insertText(text, chars)
        self._reply_open = False
        if at_bottom:
            scrollbar.setValue(scrollbar.maximum())
        return cursor.blockNumber()

    # --- what the window adds ----------------------------------------------------------------

    def add_user(self, text: str) -> None:
        self._add_block("You", self._chars(_USER, bold=True, scale=0.85), top_margin=12)
        self._add_block(text, self._chars())

    def add_model_header(self) -> None:
        self._add_block("llmos", self._chars(_MODEL, bold=True, scale=0.85), top_margin=12)

    def append_reply(self, text: str) -> None:
        """Stream ``text`` into the reply paragraph (opened by the first piece)."""
        if not self._reply_open:
            text = text.lstrip()
            if not text:
                return
            self._add_block("", self._chars())
            self._reply_open = True
        scrollbar = self.verticalScrollBar()
        at_bottom = scrollbar.value() >= scrollbar.maximum() - 4
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text, self._chars())
        if at_bottom:
            scrollbar.setValue(scrollbar.maximum())

    def add_syscall(self, key: tuple[int, int], line: str) -> None:
        chars = self._chars(_DIM, mono=True, scale=0.85)
        self._syscall_blocks[key] = self._add_block(line, chars, top_margin=3, indent=10)

    def finish_syscall(self, key: tuple[int, int], line: str, ok: bool) -> None:
        chars = self._chars(_DIM if ok else _ERROR, mono=True, scale=0.85)
        number = self._syscall_blocks.pop(key, None)
        block = self.document().findBlockByNumber(number) if number is not None else None
        if block is None or not block.isValid():
            self.add_syscall(key, line)
            return
        cursor = QTextCursor(block)
        cursor.movePosition(QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor)
        cursor.insertText(line, chars)

    def add_note(self, text: str, *, error: bool = False) -> None:
        self._add_block(text, self._chars(_ERROR if error else _DIM, italic=not error, scale=0.9))


class MessageInput(QPlainTextEdit):
    """The input box: Enter sends, Shift+Enter starts a new line (Esc goes on to the window)."""

    submitted = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt API)
        key = event.key()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                self.insertPlainText("\n")
            else:
                self.submitted.emit()
            return
        super().keyPressEvent(event)


class ChatWindow(QMainWindow):
    """One chat process on ``kernel``; the kernel may be loading, ready, failed, or not started."""

    def __init__(self, kernel: Kernel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("llmos")
        self.resize(820, 600)
        self.kernel = kernel
        self.pid: int | None = None
        self._pending: str | None = None  # a message waiting for the model or the process
        self._future: Future[TurnResult] | None = None  # the running turn
        self._replied = False  # the current turn has its "llmos" header
        self._build()
        self.bridge = KernelBridge(kernel, self)
        self._connect()
        self._set_status(f"Loading model {model_label(self.bridge.model_name)} …", busy=True)
        self._update_actions()

    # --- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        self.transcript = Transcript()
        self.input = MessageInput()
        self.input.setPlaceholderText("Type a message…")
        font = self.input.font()
        font.setPointSize(BASE_POINT_SIZE + 1)
        self.input.setFont(font)
        self.input.setFixedHeight(self.input.fontMetrics().lineSpacing() * 3 + 16)
        self.send_button = QPushButton("Send")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the reply (Esc)")
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(self.input, 1)
        row.addLayout(buttons)
        layout = QVBoxLayout()
        layout.setContentsMargins(10, 10, 10, 6)
        layout.addWidget(self.transcript, 1)
        layout.addLayout(row)
        central = QWidget()
        central.setLayout(layout)
        self.setCentralWidget(central)
        self.status_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # busy indicator
        self.progress.setMaximumWidth(140)
        self.progress.setMaximumHeight(14)
        self.progress.setTextVisible(False)
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.progress)
        from llmos.app.voice_widget import VoiceWidget, default_loop_factory, default_source  # voice mode

        self.voice = VoiceWidget(default_loop_factory(self.kernel), default_source)
        self.statusBar().addPermanentWidget(self.voice)
        self.input.setFocus()

    def _connect(self) -> None:
        b = self.bridge
        b.backend_ready.connect(self.on_backend_ready)
        b.backend_failed.connect(self.on_backend_failed)
        b.spawned.connect(self.on_spawned)
        b.token.connect(self.on_token)
        b.syscall_started.connect(self.on_syscall_started)
        b.syscall_finished.connect(self.on_syscall_finished)
        b.turn_finished.connect(self.on_turn_finished)
        b.process_failed.connect(self.on_process_failed)
        b.turn_failed.connect(self.on_turn_failed)
        b.action_failed.connect(self.on_action_failed)
        self.input.submitted.connect(self.send)
        self.send_button.clicked.connect(self.send)
        self.stop_button.clicked.connect(self.stop)
        self.voice.transcript.connect(self.transcript.add_user)  # voice turns show like typed ones
        self.voice.turn_done.connect(lambda done: (self.transcript.add_model_header(),
                                                   self.transcript.append_reply(done.answer)))
        self.voice.failed.connect(lambda message: self.transcript.add_note(f"Voice: {message}", error=True))

    # --- state -------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A message is in flight: waiting to be sent, or being answered."""
        return self._pending is not None or self._future is not None

    def _set_status(self, text: str, *, busy: bool = False, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet(f"color: {_ERROR.name()};" if error else "")
        self.progress.setVisible(busy)

    def _ready_status(self, extra: str = "") -> None:
        if self.bridge.backend_state == "ready":
            self._set_status(f"Ready: {model_label(self.bridge.model_name)}{extra}")

    def _update_actions(self) -> None:
        failed = self.bridge.backend_state == "failed"
        self.send_button.setEnabled(not self.busy and not failed)
        self.stop_button.setEnabled(self.busy)

    def _end_turn(self) -> None:
        self._future = None
        self._replied = False
        self._update_actions()

    def _reply_header(self) -> None:
        if not self._replied:
            self.transcript.add_model_header()
            self._replied = True

    # --- actions -----------------------------------------------------------------------------

    @Slot()
    def send(self) -> None:
        text = self.input.toPlainText().strip()
        if not text or self.busy:
            return
        if self.bridge.backend_state == "failed":
            self.transcript.add_note(f"Cannot send: the model is not available ({self.bridge.load_error}).", error=True)
            return
        self.input.clear()
        self.transcript.add_user(text)
        self._pending = text
        self._pump()
        self._update_actions()

    def _pump(self) -> None:
        """Send the pending message once the model is ready and the process exists."""
        if self._pending is None:
            return
        if self.bridge.backend_state != "ready":
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
            self.transcript.add_note("(not sent)")
            if self.bridge.backend_state == "loading":
                self._set_status(f"Loading model {model_label(self.bridge.model_name)} …", busy=True)
            self._ready_status()
            self._update_actions()
        elif self._future is not None and self.pid is not None:
            self.bridge.stop(self.pid)
            self._set_status("Stopping …", busy=True)

    # --- kernel events (GUI thread) ----------------------------------------------------------

    @Slot(object)
    def on_backend_ready(self, event: events.BackendReady) -> None:
        took = f" (loaded in {event.seconds:.1f} s)" if event.seconds > 0 else ""
        self._ready_status(took)
        log.info("backend ready: %s", event.model)
        self.bridge.spawn("chat", Priority.CHAT)

    @Slot(str)
    def on_backend_failed(self, error: str) -> None:
        self._set_status(f"The model could not be loaded: {error}", error=True)
        self.transcript.add_note(f"The model could not be loaded: {error}", error=True)
        if self._pending is not None:
            self._pending = None
            self.transcript.add_note("(your message was not sent)")
        self._update_actions()

    @Slot(int, str)
    def on_spawned(self, pid: int, name: str) -> None:
        if self.pid is None:
            self.pid = pid
            log.info("chat process %d (%s)", pid, name)
            self._pump()

    @Slot(int, str)
    def on_token(self, pid: int, text: str) -> None:
        if pid == self.pid and self._future is not None:
            self._reply_header()
            self.transcript.append_reply(text)

    @Slot(object)
    def on_syscall_started(self, event: events.SyscallStarted) -> None:
        if event.pid == self.pid:
            self._reply_header()
            self.transcript.add_syscall((event.pid, event.call_id), syscall_line(event))
            self._set_status(f"Calling {event.device}.{event.call} …", busy=True)

    @Slot(object)
    def on_syscall_finished(self, event: events.SyscallFinished) -> None:
        if event.pid == self.pid:
            self._reply_header()
            self.transcript.finish_syscall((event.pid, event.call_id), syscall_line(event), event.ok)
            self._set_status("Thinking …", busy=True)

    @Slot(object)
    def on_turn_finished(self, event: events.TurnFinished) -> None:
        if event.pid != self.pid or self._future is None:
            return
        self._reply_header()
        if not event.answer and not event.stopped:
            self.transcript.add_note("(no answer)")
        if event.stopped:
            self.transcript.add_note("(stopped)")
        self._end_turn()
        seconds = event.timings.get("total_s")
        self._ready_status(f" · last reply {duration(seconds)}" if isinstance(seconds, (int, float)) else "")

    @Slot(int, str)
    def on_process_failed(self, pid: int, error: str) -> None:
        if pid != self.pid:
            return
        self.transcript.add_note(f"Error: {error}", error=True)
        self._end_turn()
        self._ready_status()

    @Slot(int, str, object)
    def on_turn_failed(self, pid: int, error: str, future: object) -> None:
        if future is not self._future:  # already reported by on_process_failed
            return
        self.transcript.add_note(f"Error: {error}", error=True)
        self._end_turn()
        self._ready_status()

    @Slot(str, str)
    def on_action_failed(self, action: str, error: str) -> None:
        self.transcript.add_note(f"Error ({action}): {error}", error=True)
        self._set_status(f"Error: {error}", error=True)
        if action == "spawn" and self._pending is not None:
            self._pending = None
        self._update_actions()

    # --- Qt ----------------------------------------------------------------------------------

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt API)
        if event.key() == Qt.Key.Key_Escape:
            self.stop()
            return
        super().keyPressEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt API)
        if self._future is not None and self.pid is not None:
            self.bridge.stop(self.pid)
        self.voice.shutdown()
        self.bridge.close()
        super().closeEvent(event)


def run_window(config: Config, grant_all: bool = False) -> int:
    """The desktop app: the window shows at once; the model loads on the kernel thread."""
    from llmos.app.boot import build_kernel

    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("llmos")
    font = app.font()
    font.setPointSize(max(font.pointSize(), BASE_POINT_SIZE - 1))
    app.setFont(font)
    try:
        kernel = build_kernel(config, grant_all=grant_all)
    except Exception as exc:  # a bad config or model path: say so, do not crash
        log.exception("cannot build the kernel")
        QMessageBox.critical(None, "llmos", f"llmos cannot start:\n{exc}")
        return 1
    window = ChatWindow(kernel)
    window.show()
    kernel.start()
    _quit_on_sigint(app, window)
    try:
        return app.exec()
    finally:
        window.bridge.close()
        kernel.shutdown()


def _quit_on_sigint(app: QApplication, window: QMainWindow) -> None:
    """Ctrl-C in the terminal closes the window (Python only sees signals while it runs code)."""
    signal.signal(signal.SIGINT, lambda *_: window.close())
    timer = QTimer(app)
    timer.timeout.connect(lambda: None)
    timer.start(250)

