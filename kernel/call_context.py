"""What one device call knows about itself: its process, deadline and cancellation (plugin API).

Re-exported by :mod:`llmos.kernel.devices`; see :class:`CallContext`. A call that cannot be
cancelled (a subprocess, a request to a server) is abandoned when its deadline passes: the model
is told it failed, and a side effect the call has not yet committed (:meth:`CallContext.commit`)
never happens.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
import contextlib
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class DeviceError(Exception):
    """Raised by a device call for an expected failure; the message goes to the model as is."""


class Cancelled(DeviceError):
    """The call was cancelled (its deadline passed, the user stopped the turn, the OS shut down):
    raised by :meth:`CallContext.commit` and :meth:`CallContext.check` instead of acting."""


@dataclass(frozen=True)
class Caller:
    """What a device call may know about the process that made it (:func:`caller`).

    ``tainted``: the process has read untrusted content, so what the call is given may come from
    it; ``sources``: where that content came from (a page's address, ``mcp:<server>``). A device
    that stores what it is given keeps these with it (the memory device does).
    """

    tainted: bool = False
    sources: tuple[str, ...] = ()


@dataclass(eq=False)
class CallContext:
    """One device call: who made it, the device instance's folder, settings and state, the
    deadline, and a cancel event that a timeout, the user's stop or the OS's shutdown sets.

    A call gets it by declaring a parameter typed ``CallContext`` (left out of the schema the
    model sees), or from :func:`current_call` anywhere below the call. ``pid`` and
    ``conversation`` are None outside a kernel process (`llmos devices call`, tests).

    Before a side effect (writing a file, storing, sending, playing), a device enters
    ``with context.commit():``: it raises :class:`Cancelled` once the call was cancelled, so no
    side effect starts after the model was told the call failed. A cancel never waits for a block
    in progress (a store that hangs must not stop the watchdog, the user's Stop or a shutdown):
    the call is then reported as cancelled while committing (:attr:`committing`), its side effect
    perhaps done. ``on_cancel(fn)`` runs ``fn`` when the call is cancelled (kill a subprocess,
    cancel a request).
    """

    pid: int | None = None
    conversation: str | None = None
    data_dir: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    deadline: float = math.inf  # time.monotonic() by which the call must answer
    state: Any = None  # what the device's setup returned for this device instance
    caller: Caller = Caller()
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _reason: str = field(default="", init=False)
    _on_cancel: list[Callable[[], Any]] = field(default_factory=list, init=False, repr=False)
    _finished: bool = field(default=False, init=False)
    _committing: int = field(default=0, init=False)
    _cancelled_committing: bool = field(default=False, init=False)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    @property
    def reason(self) -> str:
        """Why the call was cancelled ("" while it is not)."""
        return self._reason

    def state_as(self, kind: type[T]) -> T:
        """``state``, checked to be a ``kind`` (a DeviceError when the device was not started)."""
        if not isinstance(self.state, kind):
            raise DeviceError("the device was not started (it has no state)")
        return self.state

    def remaining(self) -> float:
        """Seconds left before the deadline (0 once it passed; inf without one)."""
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise :class:`Cancelled` if the call was cancelled (a point to give up at)."""
        if self.cancelled:
            raise Cancelled(f"cancelled: {self._reason}")

    @contextmanager
    def commit(self) -> Iterator[None]:
        """``with context.commit(): <side effect>``: refuses (:class:`Cancelled`) once cancelled.
        Keep the block to the side effect itself: a cancel arriving meanwhile does not wait for
        it, and the call is reported as cancelled while committing."""
        with self._lock:
            self.check()
            self._committing += 1
        try:
            yield
        finally:
            with self._lock:
                self._committing -= 1

    @property
    def committing(self) -> bool:
        """The call was cancelled inside a :meth:`commit` block: its side effect may have happened."""
        return self._cancelled_committing

    def on_cancel(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` when the call is cancelled (at once if it already was)."""
        with self._lock:
            if not self.cancelled:
                self._on_cancel.append(callback)
                return
        _run(callback)

    # --- the OS's side ----------------------------------------------------------------------

    def cancel(self, reason: str) -> bool:
        """Cancel the call unless it has finished; True when this cancelled it. Never waits: a
        :meth:`commit` block in progress goes on (:attr:`committing` says so), none starts after."""
        with self._lock:
            if self._finished or self.cancelled:
                return False
            self._reason = reason
            self._cancelled_committing = self._committing > 0
            self.cancel_event.set()
            callbacks, self._on_cancel = self._on_cancel, []
        for callback in callbacks:
            _run(callback)
        return True

    @property
    def finished(self) -> bool:
        """The call's answer was taken (it can no longer be cancelled)."""
        return self._finished

    def finish(self) -> bool:
        """The call has answered: True unless it was cancelled first (then its answer is dropped)."""
        with self._lock:
            if self.cancelled:
                return False
            self._finished = True
            return True


def _run(callback: Callable[[], Any]) -> None:
    try:
        callback()
    except Exception:  # a device's clean-up must not break the cancellation
        log.exception("a cancel callback failed")


_CALL: ContextVar[CallContext | None] = ContextVar("llmos_device_call", default=None)


def current_call() -> CallContext:
    """Inside a device call: its :class:`CallContext`; outside one, a context never cancelled."""
    return _CALL.get() or CallContext()


def commit() -> "contextlib.AbstractContextManager[None]":
    """``with devices.commit(): <side effect>``: the current call's :meth:`CallContext.commit`."""
    return current_call().commit()


def caller() -> Caller:
    """Inside a device call: the calling process's taint and sources (untainted outside a call)."""
    return current_call().caller


def enter_call(context: CallContext) -> None:
    """The OS's side: make ``context`` the current call of this (worker) thread."""
    _CALL.set(context)
