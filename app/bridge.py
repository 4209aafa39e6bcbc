"""The one object through which the Qt UI hears and drives the kernel.

The kernel emits events on its own thread. :class:`KernelBridge` subscribes to ``kernel.bus`` and
hands every event over to the GUI thread through ONE explicitly queued connection
(``_incoming`` -> ``_dispatch``); only ``_dispatch``, running on the GUI thread, emits the public
signals. So every public signal is emitted on the GUI thread, whatever a receiver is (a slot, a
lambda, a test's callback), and events arrive in the order the kernel emitted them.

The actions never block the GUI thread: ``submit`` and ``stop`` only put a request on the
kernel's queue; ``spawn`` (which waits for the kernel thread) runs on a worker thread and reports
back with the ``spawned`` signal. Failures come back as signals too, never as exceptions.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, Qt, Signal, Slot

from llmos.kernel import events
from llmos.kernel.backends.base import BackendError
from llmos.kernel.loop import Kernel
from llmos.kernel.process import Priority, TurnResult

log = logging.getLogger(__name__)


# --- what the bridge reports besides kernel events (results of its own actions) -------------


@dataclass(frozen=True)
class Spawned:
    pid: int
    name: str


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
    # results of the bridge's own actions
    spawned = Signal(int, str)  # pid, name
    turn_failed = Signal(int, str, object)  # pid, error, the turn's Future
    action_failed = Signal(str, str)  # action, error

    _incoming = Signal(object)  # kernel/worker thread -> GUI thread, queued

    def __init__(self, kernel: Kernel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        app = QCoreApplication.instance()
        if app is not None and self.thread() != app.thread():
            self.moveToThread(app.thread())  # the receiving end of the crossing is the GUI thread
        self.kernel = kernel
        self.backend_state = "loading"  # loading, ready or failed
        self.load_error: str | None = None
        self._closed = False
        self._workers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmos-bridge")
        self._incoming.connect(self._dispatch, Qt.ConnectionType.QueuedConnection)
        self._unsubscribe = kernel.bus.subscribe(self._post)
        self._post_current_backend_state()

    @property
    def model_name(self) -> str:
        return str(self.kernel.backend.model)

    # --- actions (GUI thread; none of them blocks) ---------------------------------------------

    def spawn(self, name: str = "chat", priority: Priority = Priority.CHAT) -> "Future[int]":
        """Create a process off the GUI thread; ``spawned(pid, name)`` or ``action_failed`` follow."""

        def work() -> int:
            try:
                pid = self.kernel.spawn(name, priority)
            except Exception as exc:
                log.exception("spawn %r failed", name)
                self._post(ActionFailed("spawn", _describe(exc)))
                raise
            self._post(Spawned(pid, name))
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

    def close(self) -> None:
        """Stop listening to the kernel (the kernel itself is left running)."""
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        self._workers.shutdown(wait=False, cancel_futures=True)

    # --- the thread crossing -----------------------------------------------------------------

    def _post(self, item: object) -> None:
        """Any thread: hand ``item`` to the GUI thread."""
        if self._closed:
            return
        try:
            self._incoming.emit(item)
        except RuntimeError:  # the C++ object is gone (the window was destroyed)
            self._closed = True

    def _post_current_backend_state(self) -> None:
        """The kernel may have loaded before we subscribed: tell the UI (duplicates are dropped)."""
        backend = self.kernel.backend
        try:
            self.kernel.wait_ready(0)
        except TimeoutError:
            return
        except BackendError as exc:
            self._post(events.BackendFailed(backend.name, backend.model, str(exc)))
            return
        self._post(events.BackendReady(backend.name, backend.model, 0.0))

    @Slot(object)
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
            if self.backend_state != "loading":
                return
            self.backend_state = "ready"
            self.backend_ready.emit(item)
        elif isinstance(item, events.BackendFailed):
            if self.backend_state != "loading":
                return
            self.backend_state, self.load_error = "failed", item.error
            self.backend_failed.emit(item.error)
        elif isinstance(item, Spawned):
            self.spawned.emit(item.pid, item.name)
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
