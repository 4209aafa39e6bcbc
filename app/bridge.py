"""The one object through which the Qt UI hears and drives the kernel.

The kernel emits events on its own thread. :class:`KernelBridge` subscribes to ``kernel.bus`` and
hands every event over to the GUI thread through ONE explicitly queued connection
(``_incoming`` -> ``_drain``); only ``_drain``, running on the GUI thread, emits the public
signals. Items wait in a buffer and one queued wake-up carries them all, so a fast stream of
tokens costs the GUI thread one crossing per batch, and adjacent tokens of one process come out
as one ``token`` signal. So every public signal is emitted on the GUI thread, whatever a receiver is (a slot, a
lambda, a test's callback), and events arrive in the order the kernel emitted them.

The actions never block the GUI thread: ``submit``, ``stop`` and ``kill`` only put a request on
the kernel's queue; ``spawn`` and ``ram`` (which wait for the kernel thread) run on a worker thread
and report back with a signal or a callback called on the GUI thread (``run`` does this for any
blocking work). Failures come back as signals too, never as exceptions.

Other threads that need the user (the consent and permission dialogs) also come in through the
bridge: ``post`` hands any object to the GUI thread, where ``dialog_requested`` carries it on.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QCoreApplication, QObject, Qt, Signal, Slot

from llmos.kernel import events
from llmos.kernel.backends.base import BackendError
from llmos.kernel.process import Message, Priority, TurnResult

if TYPE_CHECKING:  # the kernel is imported by whoever builds it (the window shows before that)
    from llmos.kernel.loop import Kernel
    from llmos.kernel.paging import RamReport

log = logging.getLogger(__name__)


class BackendState(Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


# --- what the bridge reports besides kernel events (results of its own actions) -------------


@dataclass(frozen=True)
class Spawned:
    pid: int
    name: str
    conversation: str


@dataclass(frozen=True)
class WorkDone:
    """The outcome of :meth:`KernelBridge.run`: ``callback(value, error)`` on the GUI thread."""

    callback: Callable[[Any, str | None], None]
    value: Any
    error: str | None


class DialogRequest:
    """Marker base of requests for the user (see ``app/dialogs.py``); the bridge carries them."""


@dataclass(frozen=True)
class ActionFailed:
    action: str
    error: str


@dataclass(frozen=True)
class TurnRejected:
    """A submitted turn whose future failed (the process failed, ended, or the model is missing)."""

    pid: int
    error: str
    future: "Future[TurnResult]"


class KernelBridge(QObject):
    """Kernel events as Qt signals on the GUI thread, and the kernel actions the UI needs."""

    event = Signal(object)  # every kernel event, after the typed signal below
    backend_loading = Signal(object)  # events.BackendLoading
    backend_ready = Signal(object)  # events.BackendReady (once)
    backend_failed = Signal(str)  # the load error (once)
    process_created = Signal(object)  # events.ProcessCreated
    process_state_changed = Signal(object)  # events.ProcessStateChanged
    token = Signal(int, str)  # pid, text
    syscall_started = Signal(object)  # events.SyscallStarted
    syscall_finished = Signal(object)  # events.SyscallFinished
    turn_finished = Signal(object)  # events.TurnFinished
    process_failed = Signal(int, str)  # pid, error
    message_appended = Signal(object)  # events.MessageAppended
    paged = Signal(object)  # events.Paged
    # results of the bridge's own actions
    spawned = Signal(int, str, str)  # pid, name, conversation
    dialog_requested = Signal(object)  # a DialogRequest from a non-GUI thread
    turn_failed = Signal(int, str, object)  # pid, error, the turn's Future
    action_failed = Signal(str, str)  # action, error

    _incoming = Signal(object)  # kernel/worker thread -> GUI thread, queued

    def __init__(self, kernel: "Kernel | None", parent: QObject | None = None, *, model_name: str = "") -> None:
        """``kernel`` None: a bridge to a kernel still being built (no events, backend loading)."""
        super().__init__(parent)
        app = QCoreApplication.instance()
        if app is not None and self.thread() != app.thread():
            self.moveToThread(app.thread())  # the receiving end of the crossing is the GUI thread
        self.kernel = kernel
        self._model_name = model_name
        self.backend_state = BackendState.LOADING
        self.load_error: str | None = None
        self._closed = False
        self._workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="llmos-bridge")
        self._buffer: list[object] = []  # items for the GUI thread, in order
        self._buffer_lock = threading.Lock()
        self._wake_pending = False
        self._incoming.connect(self._drain, Qt.ConnectionType.QueuedConnection)
        self._unsubscribe: Callable[[], None] = lambda: None
        if kernel is not None:
            self._unsubscribe = kernel.bus.subscribe(self._post)
            self._post_current_backend_state()

    @property
    def model_name(self) -> str:
        return str(self.kernel.backend.model) if self.kernel is not None else self._model_name

    # --- actions (GUI thread; none of them blocks) ---------------------------------------------

    def spawn(self, name: str = "chat", priority: Priority = Priority.CHAT, *,
              history: list[Message] | None = None, conversation: str | None = None) -> "Future[int]":
        """Create a process off the GUI thread (``history``/``conversation`` resume one);
        ``spawned(pid, name, conversation)`` or ``action_failed`` follow."""

        def work() -> int:
            try:
                pid = self.kernel.spawn(name, priority, history=history, conversation=conversation)
                info = next((p for p in self.kernel.processes() if p["pid"] == pid), {})
            except Exception as exc:
                log.exception("spawn %r failed", name)
                self._post(ActionFailed("spawn", _describe(exc)))
                raise
            self._post(Spawned(pid, name, str(info.get("conversation") or conversation or "")))
            return pid

        return self._workers.submit(work)

    def submit(self, pid: int, text: str) -> "Future[TurnResult]":
        """Queue a turn; a failed turn also comes back as ``turn_failed(pid, error, future)``."""
        future = self.kernel.submit(pid, text)

        def done(f: "Future[TurnResult]") -> None:
            exc = f.exception() if not f.cancelled() else None
            if exc is not None:
                self._post(TurnRejected(pid, _describe(exc), f))

        future.add_done_callback(done)
        return future

    def stop(self, pid: int) -> None:
        self.kernel.stop(pid)

    def kill(self, pid: int) -> None:
        self.kernel.kill(pid)

    def run(self, work: Callable[[], Any], callback: Callable[[Any, str | None], None]) -> None:
        """Run blocking ``work`` on a worker thread; ``callback(value, error)`` on the GUI thread."""

        def job() -> None:
            try:
                value, error = work(), None
            except Exception as exc:
                value, error = None, _describe(exc)
                log.warning("background work failed: %s", error)
            self._post(WorkDone(callback, value, error))

        if self._closed:
            callback(None, "the window is closing")
            return
        self._workers.submit(job)

    def ram(self, pid: int, callback: "Callable[[RamReport | None, str | None], None]") -> None:
        """A RAM report of ``pid`` (asked on a worker: the kernel answers between slices)."""
        self.run(lambda: self.kernel.ram(pid, timeout=30.0), callback)

    def post(self, item: object) -> bool:
        """Any thread: hand ``item`` (a DialogRequest) to the GUI thread; False once closed."""
        if self._closed:
            return False
        self._post(item)
        return not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop listening to the kernel (the kernel itself is left running)."""
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        self._workers.shutdown(wait=False, cancel_futures=True)

    # --- the thread crossing -----------------------------------------------------------------

    def _post(self, item: object) -> None:
        """Any thread: hand ``item`` to the GUI thread (one wake-up per batch)."""
        if self._closed:
            return
        with self._buffer_lock:
            self._buffer.append(item)
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            self._incoming.emit(None)
        except RuntimeError:  # the C++ object is gone (the window was destroyed)
            self._closed = True

    @Slot(object)
    def _drain(self, _wake: object = None) -> None:
        """GUI thread: dispatch every buffered item in order, adjacent tokens of a process joined."""
        with self._buffer_lock:
            items, self._buffer, self._wake_pending = self._buffer, [], False
        merged: list[Any] = []
        for item in items:
            last = merged[-1] if merged else None
            if isinstance(item, events.Token) and isinstance(last, events.Token) and last.pid == item.pid:
                merged[-1] = events.Token(item.pid, last.text + item.text, at=last.at)
            else:
                merged.append(item)
        for item in merged:
            if self._closed:
                return
            self._dispatch(item)

    def _post_current_backend_state(self) -> None:
        """The kernel may have loaded before we subscribed: tell the UI (duplicates are dropped)."""
        assert self.kernel is not None
        backend = self.kernel.backend
        try:
            self.kernel.wait_ready(0)
        except TimeoutError:
            return
        except BackendError as exc:
            self._post(events.BackendFailed(backend.name, backend.model, str(exc)))
            return
        self._post(events.BackendReady(backend.name, backend.model, 0.0))

    def _dispatch(self, item: Any) -> None:
        """GUI thread: emit the typed signal for ``item``, then ``event``."""
        if self._closed:
            return
        if isinstance(item, events.Token):
            self.token.emit(item.pid, item.text)
        elif isinstance(item, events.SyscallStarted):
            self.syscall_started.emit(item)
        elif isinstance(item, events.SyscallFinished):
            self.syscall_finished.emit(item)
        elif isinstance(item, events.TurnFinished):
            self.turn_finished.emit(item)
        elif isinstance(item, events.ProcessFailed):
            self.process_failed.emit(item.pid, item.error)
        elif isinstance(item, events.ProcessStateChanged):
            self.process_state_changed.emit(item)
        elif isinstance(item, events.ProcessCreated):
            self.process_created.emit(item)
        elif isinstance(item, events.BackendLoading):
            self.backend_loading.emit(item)
        elif isinstance(item, events.BackendReady):
            if self.backend_state is not BackendState.LOADING:
                return
            self.backend_state = BackendState.READY
            self.backend_ready.emit(item)
        elif isinstance(item, events.BackendFailed):
            if self.backend_state is not BackendState.LOADING:
                return
            self.backend_state, self.load_error = BackendState.FAILED, item.error
            self.backend_failed.emit(item.error)
        elif isinstance(item, events.MessageAppended):
            self.message_appended.emit(item)
        elif isinstance(item, events.Paged):
            self.paged.emit(item)
        elif isinstance(item, Spawned):
            self.spawned.emit(item.pid, item.name, item.conversation)
            return
        elif isinstance(item, WorkDone):
            try:
                item.callback(item.value, item.error)
            except Exception:
                log.exception("a background work callback failed")
            return
        elif isinstance(item, DialogRequest):
            self.dialog_requested.emit(item)
            return
        elif isinstance(item, TurnRejected):
            self.turn_failed.emit(item.pid, item.error, item.future)
            return
        elif isinstance(item, ActionFailed):
            self.action_failed.emit(item.action, item.error)
            return
        self.event.emit(item)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__
