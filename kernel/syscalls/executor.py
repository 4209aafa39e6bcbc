"""Where device calls run: a bounded pool of worker threads per device, and one watchdog.

Workers are daemon threads, at most ``workers`` per device, made as calls need them: a call that
hangs holds one worker, never the kernel, and never the interpreter's exit. A call queued behind
busy workers waits its turn; its deadline counts from when it was made.

The watchdog keeps the deadlines in a heap and sleeps until the nearest one: at a deadline it
cancels the call (:meth:`CallContext.cancel`, so side effects it has not committed never happen)
and runs the call's ``on_timeout``. A deadline may move later (the user answering a question).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable

from ..call_context import CallContext

log = logging.getLogger(__name__)

WORKERS_PER_DEVICE = 4


class DeviceExecutor:
    """At most ``workers`` daemon threads running one device's calls, in order of arrival."""

    def __init__(self, name: str, workers: int = WORKERS_PER_DEVICE) -> None:
        self.name = name
        self.workers = workers
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the device {self.name!r} has stopped")
            if self._idle:
                self._idle -= 1  # an idle worker takes it
            elif len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, name=f"device-{self.name}-{len(self._threads) + 1}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # the dispatcher's jobs catch their own; this is a last resort
                log.exception("device %s: a call's job failed", self.name)
            with self._lock:
                self._idle += 1

    def close(self) -> None:
        """No new calls; idle workers end, busy ones when their call returns (never waited for)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            count = len(self._threads)
        for _ in range(count):
            self._jobs.put(None)


class Watchdog:
    """One thread that cancels calls at their deadlines (``CallContext.deadline``, which may move)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, CallContext, Callable[[], None]]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, context: CallContext, on_timeout: Callable[[], None]) -> None:
        """At ``context.deadline``, unless the call has answered: cancel it and ``on_timeout()``."""
        with self._wake:
            if self._closed:
                return
            heapq.heappush(self._heap, (context.deadline, next(self._order), context, on_timeout))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="device-watchdog", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            try:
                if not self._next():
                    return
            except Exception:  # the only thing that times calls out must outlive any one of them
                log.exception("the device watchdog hit an error; it goes on")

    def _next(self) -> bool:
        """Wait for the nearest deadline and handle it; False once closed."""
        with self._wake:
            while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                wait = None if not self._heap else self._heap[0][0] - time.monotonic()
                self._wake.wait(None if wait is None else min(wait, threading.TIMEOUT_MAX))
            if self._closed:
                return False
            _, _, context, on_timeout = heapq.heappop(self._heap)
            if context.deadline > time.monotonic():  # it moved later: wait for the new one
                heapq.heappush(self._heap, (context.deadline, next(self._order), context, on_timeout))
                return True
        if context.finished:
            return True
        context.cancel("its deadline passed")  # False when it was cancelled before: answer anyway
        try:
            on_timeout()
        except Exception:
            log.exception("a call's timeout handler failed")
        return True

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._heap.clear()
            self._wake.notify()
