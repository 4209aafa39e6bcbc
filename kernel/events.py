"""Typed events: everything the kernel does is told to observers as one of these.

The kernel never calls the UI. Observers (the CLI, the Qt bridge, the journal, a tracer) subscribe
to an :class:`EventBus`; the kernel emits from its own thread, so an observer that touches a GUI
must hand the event over to its own thread (the Qt bridge does this with queued signals).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .paging import PageDirection
from .process import ProcessState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Base of all kernel events. ``at`` is a ``time.monotonic()`` stamp."""

    at: float = field(default_factory=time.monotonic, kw_only=True)


@dataclass(frozen=True)
class BackendLoading(Event):
    backend: str
    model: str


@dataclass(frozen=True)
class BackendReady(Event):
    backend: str
    model: str
    seconds: float


@dataclass(frozen=True)
class BackendFailed(Event):
    backend: str
    model: str
    error: str


@dataclass(frozen=True)
class ProcessCreated(Event):
    pid: int
    name: str
    priority: str
    conversation: str = ""  # stable id of the conversation the process carries (for the journal)
    resumed: bool = False


@dataclass(frozen=True)
class MessageAppended(Event):
    """A message entered a process's conversation (user, assistant answer or call, tool result)."""

    pid: int
    conversation: str
    role: str
    content: str
    call: str | None = None
    trusted: bool = True


@dataclass(frozen=True)
class ProcessStateChanged(Event):
    pid: int
    old: ProcessState
    new: ProcessState
    reason: str = ""


@dataclass(frozen=True)
class PriorityChanged(Event):
    """A process moved to another scheduling level (voice mode taking over a chat process)."""

    pid: int
    old: str
    new: str


@dataclass(frozen=True)
class ContextSwitched(Event):
    """The model's context now holds ``pid``'s tokens. ``method``: prefix, snapshot or prefill."""

    pid: int
    previous: int | None
    method: str
    reused_tokens: int
    evaluated_tokens: int
    seconds: float


@dataclass(frozen=True)
class Token(Event):
    pid: int
    text: str


@dataclass(frozen=True)
class SyscallDecided(Event):
    """Whether the model calls a device this round; ``margin`` is log P(call) - log P(answer)."""

    pid: int
    call: str | None
    margin: float
    threshold: float


@dataclass(frozen=True)
class SyscallStarted(Event):
    pid: int
    call_id: int
    device: str
    call: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class SyscallFinished(Event):
    pid: int
    call_id: int
    device: str
    call: str
    arguments: dict[str, Any]
    result: Any
    ok: bool
    seconds: float
    trusted: bool
    error: str | None = None


@dataclass(frozen=True)
class Paged(Event):
    """Pages left the context window ("out", written to disk) or came back ("in", recalled)."""

    pid: int
    direction: PageDirection
    reason: str
    messages: int
    tokens_before: int = 0
    tokens_after: int = 0
    summaries: tuple[str, ...] = ()


@dataclass(frozen=True)
class RamSnapshot(Event):
    """A process's context window after a spawn or a turn (a ``paging.RamReport``), for the
    journal: ``llmos memory ram`` runs in another OS process than the chat."""

    pid: int
    report: Any


@dataclass(frozen=True)
class TurnFinished(Event):
    pid: int
    answer: str
    stopped: bool
    timings: dict[str, float]


@dataclass(frozen=True)
class ProcessFailed(Event):
    pid: int
    error: str


Observer = Callable[[Event], None]


class EventBus:
    """Fan-out of events to observers. An observer that raises is logged and kept."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []
        self._lock = threading.Lock()

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Add ``observer``; returns a function that removes it again."""
        with self._lock:
            self._observers.append(observer)

        def unsubscribe() -> None:
            with self._lock:
                if observer in self._observers:
                    self._observers.remove(observer)

        return unsubscribe

    def emit(self, event: Event) -> None:
        with self._lock:
            observers = list(self._observers)
        for observer in observers:
            try:
                observer(event)
            except Exception:  # an observer's bug must not stop the kernel
                log.exception("event observer %r failed on %s", observer, type(event).__name__)
