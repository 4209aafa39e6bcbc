"""Asking the user from any thread: the consent and permission dialogs.

The kernel asks from its own threads (consent on a device worker, a permission on the kernel
thread or a worker). :class:`DialogService` is the one thread-safe way to ask: the caller's
request crosses to the GUI thread through the bridge (``KernelBridge.post``), a window-modal
dialog opens there, and the caller blocks until the user answers. With the window closing (or no
window yet), the answer is no. The GUI thread itself must never ask: it would wait on itself.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PySide6.QtCore import QThread, Qt, QTimer
from PySide6.QtWidgets import (
    QApplication, QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget,
)

from llmos.app.bridge import DialogRequest, KernelBridge
if TYPE_CHECKING:
    from llmos.kernel.devices import Permission
    from llmos.kernel.syscalls.dispatch import ConsentRequest

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Ask(DialogRequest):
    done: threading.Event = field(default_factory=threading.Event, init=False)
    answer: bool = field(default=False, init=False)

    def settle(self, answer: bool) -> None:
        if not self.done.is_set():
            self.answer = answer
            self.done.set()


@dataclass(eq=False)
class ConsentAsk(_Ask):
    request: "ConsentRequest" = field(default=None)  # type: ignore[assignment]


@dataclass(eq=False)
class PermissionAsk(_Ask):
    device: str = ""
    permissions: "tuple[Permission, ...]" = ()
    description: str = ""


class AskDialog(QDialog):
    """A yes/no question about a device, with the details in a monospace box; No is the default."""

    def __init__(self, title: str, headline: str, why: str, details: str, yes: str, no: str,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setMinimumWidth(460)
        head = QLabel(headline)
        head.setWordWrap(True)
        font = head.font()
        font.setPointSize(font.pointSize() + 2)
        font.setBold(True)
        head.setFont(font)
        reason = QLabel(why)
        reason.setWordWrap(True)
        box = QPlainTextEdit(details)
        box.setReadOnly(True)
        box.setMaximumHeight(140)
        box.setStyleSheet("font-family: monospace;")
        buttons = QDialogButtonBox()
        self.yes_button = QPushButton(yes)
        self.no_button = QPushButton(no)
        buttons.addButton(self.no_button, QDialogButtonBox.ButtonRole.RejectRole)
        buttons.addButton(self.yes_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.no_button.setDefault(True)
        self.no_button.setAutoDefault(True)
        self.yes_button.setAutoDefault(False)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(18, 16, 18, 14)
        layout.setSpacing(10)
        layout.addWidget(head)
        layout.addWidget(reason)
        layout.addWidget(box)
        layout.addWidget(buttons)
        self.no_button.setFocus()


def consent_dialog(request: "ConsentRequest", parent: QWidget | None) -> AskDialog:
    args = json.dumps(request.arguments, ensure_ascii=False, indent=2, default=str)
    details = "\n".join(request.details())  # what data would leave, and to where
    return AskDialog(
        "llmos: allow this call?",
        f"Allow {request.device}.{request.call}?",
        f"This call needs your consent: {request.reason}. Content from outside may try to make "
        "the model do things you did not ask for, or send your data away. Allow it only if you asked for this.",
        (f"{details}\n\n" if details else "") + f"{request.device}.{request.call}({args})",
        "Allow once", "Deny", parent)


def permission_dialog(ask: PermissionAsk, parent: QWidget | None) -> AskDialog:
    names = ", ".join(p.value for p in ask.permissions)
    return AskDialog(
        "llmos: grant a permission?",
        f"The device “{ask.device}” needs: {names}",
        "A device can use only the permissions you grant. Yes is remembered (revoke it in "
        "Devices); No holds for this run.",
        f"{ask.device}: {ask.description}\npermissions: {names}", "Grant", "Deny", parent)


class DialogService:
    """Thread-safe questions to the user. ``consent`` and ``ask_permission`` have the shapes
    ``build_kernel(consent=..., ask=...)`` takes; ``timeout_s`` bounds a wait (None = none)."""

    def __init__(self, timeout_s: float | None = None) -> None:
        self.timeout_s = timeout_s
        self._bridge: KernelBridge | None = None
        self._parent: QWidget | None = None
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._pending: set[_Ask] = set()
        self._queue: deque[_Ask] = deque()  # GUI thread: waiting for the dialog in front
        self.current: AskDialog | None = None  # the dialog on screen (GUI thread)

    # --- wiring (GUI thread) -------------------------------------------------------------------

    def attach(self, bridge: KernelBridge, parent: QWidget | None = None) -> None:
        """Show requests that come through ``bridge``, over ``parent``."""
        self._bridge, self._parent = bridge, parent
        self._closing.clear()
        bridge.dialog_requested.connect(self._show)

    def close(self) -> None:
        """The window is closing: every question, open or waiting, is answered no."""
        self._closing.set()
        with self._lock:
            pending = list(self._pending)
        for ask in pending:
            ask.settle(False)
        self._queue.clear()
        if self.current is not None:
            self.current.reject()

    # --- asking (any thread but the GUI's) -----------------------------------------------------

    def consent(self, request: "ConsentRequest") -> bool:
        from llmos.kernel.syscalls.dispatch import CONSENT_TIMEOUT_S

        ask = ConsentAsk()
        ask.request = request
        # past this the kernel gives up on the call anyway: the dialog goes, the answer is no
        return self._ask(ask, CONSENT_TIMEOUT_S)

    def ask_permission(self, device: str, permissions: "list[Permission]", description: str) -> bool:
        ask = PermissionAsk()
        ask.device, ask.permissions, ask.description = device, tuple(permissions), description
        return self._ask(ask)

    def _ask(self, ask: _Ask, timeout_s: float | None = None) -> bool:
        app = QApplication.instance()
        if app is not None and QThread.currentThread() == app.thread():
            log.error("a dialog was asked for on the GUI thread; answering no")
            return False
        bridge = self._bridge
        limit = min(t for t in (timeout_s, self.timeout_s, float("inf")) if t is not None)
        if bridge is None or self._closing.is_set():
            return False
        with self._lock:
            self._pending.add(ask)
        try:
            if not bridge.post(ask):
                return False
            waited = 0.0
            while not ask.done.wait(0.2):
                waited += 0.2
                if self._closing.is_set() or bridge.closed:
                    return False
                if waited >= limit:
                    log.warning("no answer from the user in %.0f s; answering no", limit)
                    return False
            return ask.answer
        finally:
            with self._lock:
                self._pending.discard(ask)
            ask.settle(False)

    # --- showing (GUI thread) ------------------------------------------------------------------

    def _show(self, ask: object) -> None:
        if not isinstance(ask, _Ask) or ask.done.is_set():
            return
        self._queue.append(ask)
        if self.current is None:
            self._next()

    def _next(self) -> None:
        while self._queue:
            ask = self._queue.popleft()
            if ask.done.is_set():
                continue
            if isinstance(ask, ConsentAsk):
                dialog = consent_dialog(ask.request, self._parent)
            elif isinstance(ask, PermissionAsk):
                dialog = permission_dialog(ask, self._parent)
            else:
                ask.settle(False)
                continue
            dialog.setWindowModality(Qt.WindowModality.WindowModal)
            dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

            def finished(result: int, ask: _Ask = ask) -> None:
                ask.settle(int(result) == QDialog.DialogCode.Accepted.value)
                self.current = None
                self._next()

            dialog.finished.connect(finished)
            watch = QTimer(dialog)  # answered elsewhere (a timeout, the window closing): the dialog goes
            watch.setInterval(300)
            watch.timeout.connect(lambda dialog=dialog, ask=ask: dialog.reject() if ask.done.is_set() else None)
            watch.start()
            self.current = dialog
            dialog.open()
            return
