"""The scheduler: which ready process runs the model next.

Strict priority between levels (voice > chat > api > background) and round-robin within a level: a
process that used its slice goes to the back of its level's queue. Slices are measured in
tokens; the kernel asks again at every slice boundary, which is where preemption happens.
"""

from __future__ import annotations

from collections import deque

from .process import Process, ProcessState


class Scheduler:
    def __init__(self, slice_tokens: int = 32) -> None:
        if slice_tokens < 1:
            raise ValueError("a time slice is at least one token")
        self.slice_tokens = slice_tokens
        self._queue: deque[int] = deque()  # pids in arrival / round-robin order

    def make_ready(self, proc: Process) -> None:
        """Put ``proc`` at the back of the run queue (it must be READY)."""
        if proc.pid in self._queue:
            self._queue.remove(proc.pid)
        self._queue.append(proc.pid)

    def forget(self, proc: Process) -> None:
        if proc.pid in self._queue:
            self._queue.remove(proc.pid)

    def pick(self, procs: dict[int, Process]) -> Process | None:
        """The first READY process of the highest priority present, in queue order."""
        best: Process | None = None
        for pid in self._queue:
            proc = procs.get(pid)
            if proc is None or proc.state is not ProcessState.READY:
                continue
            if best is None or proc.priority > best.priority:
                best = proc
        return best

    def should_preempt(self, running: Process, procs: dict[int, Process]) -> bool:
        """At a slice boundary: is someone of higher or equal priority waiting?"""
        for pid in self._queue:
            proc = procs.get(pid)
            if proc is not None and proc is not running and proc.state is ProcessState.READY:
                if proc.priority >= running.priority:
                    return True
        return False
