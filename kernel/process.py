"""Processes: one line of work with its own context (a chat thread, a voice turn, a job)."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Generator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum, IntEnum, StrEnum
from typing import Any


class ProcessState(StrEnum):
    """A process's state; a str too, so an event's state compares and prints as its name."""

    NEW = "new"
    READY = "ready"  # has work and waits for the model
    RUNNING = "running"  # holds the model now
    WAITING = "waiting"  # waits for a device call
    IDLE = "idle"  # between turns: waits for the user
    DONE = "done"  # ended


class Priority(IntEnum):
    """Higher runs first: a voice turn preempts a chat reply, which preempts another program's
    request (``llmos serve``), which preempts a background job."""

    BACKGROUND = 0
    API = 1
    CHAT = 2
    VOICE = 3


@dataclass
class Message:
    """One entry of a process's conversation.

    ``role``: system, user, assistant or tool. An assistant message with ``call`` set is a system
    call (``call`` = "device.call", ``content`` = the JSON arguments); a tool message carries the
    result, ``trusted`` saying where it came from.
    """

    role: str
    content: str
    call: str | None = None
    trusted: bool = True


@dataclass
class TurnResult:
    answer: str
    syscalls: list[dict[str, Any]]
    stopped: bool
    timings: dict[str, float]
    pid: int


@dataclass
class Turn:
    """One user request to a process; ``future`` resolves to a :class:`TurnResult`."""

    text: str
    future: "Future[TurnResult]" = field(default_factory=Future)
    submitted_at: float = field(default_factory=time.monotonic)
    # another task than the OS's own turn: ``program(services, process)`` returns the task
    # (``llmos serve`` runs a client's raw completion this way); None runs ``turn.run_turn``
    program: Any = None


# What a process's task yields to the kernel after each bounded piece of work.
class Yield(Enum):
    SLICE = "slice"  # used up a time slice: the scheduler may preempt here


@dataclass(frozen=True)
class WaitFor:
    """Yielded by a task that waits for a device call; the kernel parks it as WAITING."""

    future: Future


Task = Generator[Any, Any, Any]


@dataclass
class Process:
    pid: int
    name: str
    priority: Priority
    messages: list[Message] = field(default_factory=list)
    state: ProcessState = ProcessState.NEW
    turns: list[Turn] = field(default_factory=list)  # pending, oldest first
    task: Task | None = None
    waiting_on: WaitFor | None = None
    resume_value: Any = None  # what the task is sent when it runs next (a device's result)
    stop_requested: bool = False
    kill_requested: bool = False
    # A hint from another thread: a process of higher priority became ready, so end this slice
    # at the next token instead of its last one (the scheduler still decides at the boundary).
    yield_requested: bool = False
    reap: bool = False  # leave the process table once ended (a finished API request)
    tokens_generated: int = 0
    model_seconds: float = 0.0
    created_at: float = field(default_factory=time.time)
    error: str | None = None
    conversation: str = field(default_factory=lambda: uuid.uuid4().hex)
    tainted: bool = False  # has read untrusted content: side-effect calls need consent
    contacted: set[str] = field(default_factory=set)  # network destinations (host:port) reached so far
    pinned: int = 0  # the first messages (boot prompt, examples) never leave the context window
    paging: list[Any] = field(default_factory=list)  # kernel.paging.PagingRecord, oldest first

    def info(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "name": self.name,
            "conversation": self.conversation,
            "priority": self.priority.name.lower(),
            "state": self.state.value,
            "messages": len(self.messages),
            "tokens_generated": self.tokens_generated,
            "model_seconds": round(self.model_seconds, 3),
            "tainted": self.tainted,
            "error": self.error,
        }


class ProcessTable:
    """The kernel's process table. Touched only on the kernel thread (reads elsewhere are snapshots)."""

    def __init__(self) -> None:
        self._procs: dict[int, Process] = {}
        self._pids: Iterator[int] = itertools.count(1)

    def spawn(self, name: str, priority: Priority, messages: list[Message] | None = None,
              conversation: str | None = None) -> Process:
        proc = Process(pid=next(self._pids), name=name, priority=priority, messages=list(messages or []))
        if conversation:
            proc.conversation = conversation
        self._procs[proc.pid] = proc
        return proc

    def get(self, pid: int) -> Process:
        try:
            return self._procs[pid]
        except KeyError:
            raise LookupError(f"no process {pid}") from None

    def remove(self, pid: int) -> None:
        self._procs.pop(pid, None)

    def __iter__(self) -> Iterator[Process]:
        return iter(list(self._procs.values()))

    def __len__(self) -> int:
        return len(self._procs)

    def in_state(self, *states: ProcessState) -> list[Process]:
        return [p for p in self._procs.values() if p.state in states]
