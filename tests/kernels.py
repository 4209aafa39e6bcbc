"""Kernels for the tests on the shared real model: ready in time or a clear failure, always shut down.

A kernel that is not ready (the model's load and the decision calibration, minutes on a loaded
2-core machine) fails its test with one line saying so, instead of hanging or leaking: the kernel is
shut down, its thread joined, in a ``finally``. The model is shared by the whole run, so a kernel
thread left decoding would share it with the next test's kernel, and a ``LlamaCppBackend`` closed
while a kernel thread decodes crashes the process: kernels are always shut down before the backend
is closed (``close_backend=False`` here; the session fixture closes it last). ``PauseAtToken`` holds
a reply mid-way for a test, whatever the speed of the machine.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

READY_S = 900.0  # the first kernel of a run calibrates the device decision: minutes on a busy machine


def wait_ready(kernel: Any, seconds: float = READY_S) -> None:
    """``kernel.wait_ready``; when the model is not ready, the kernel is shut down and the test
    fails with one clear line."""
    from llmos.kernel.backends.base import BackendError

    try:
        kernel.wait_ready(seconds)
        return
    except TimeoutError:
        why = (f"the kernel on {kernel.backend.model} was not ready within {seconds:g} s "
               "(the model's load and the device-decision calibration); it was shut down")
    except BackendError as exc:
        why = f"the model did not load: {exc}"
    kernel.shutdown(close_backend=False)
    pytest.fail(why, pytrace=False)


@contextmanager
def started(kernel: Any, ready_s: float = READY_S) -> Iterator[Any]:
    """Start ``kernel`` (built, with its observers and journal attached), wait until it is ready,
    and shut it down when the block ends, however it ends; the backend stays loaded."""
    kernel.start()
    wait_ready(kernel, ready_s)
    try:
        yield kernel
    finally:
        kernel.shutdown(close_backend=False)


class PauseAtToken:
    """An observer that holds the kernel thread at ``pid``'s ``n``-th answer token until the test
    has done what it does mid-reply (``resume``): mid-reply whatever the machine's speed."""

    def __init__(self, pid: int, n: int = 1) -> None:
        self.pid, self.n, self.seen = pid, n, 0
        self.reached, self.resume = threading.Event(), threading.Event()

    def __call__(self, event: Any) -> None:
        from llmos.kernel import events

        if isinstance(event, events.Token) and event.pid == self.pid:
            self.seen += 1
            if self.seen == self.n:
                self.reached.set()
                assert self.resume.wait(10), "the test never resumed the kernel"


def shut_down_kernels_on(backend: Any) -> int:
    """Shut down every kernel still running on ``backend`` (a test that leaked one): before the
    backend is closed, no kernel thread may be using it. Returns how many there were."""
    from llmos.kernel.loop import Kernel

    # by type, not isinstance: gc also holds dead weak proxies, which raise when asked their class
    leaked = [k for k in gc.get_objects() if issubclass(type(k), Kernel) and _uses(k, backend)
              and k._thread is not None and k._thread.is_alive()]
    for kernel in leaked:
        kernel.shutdown(close_backend=False)
    return len(leaked)


def _uses(kernel: Any, backend: Any) -> bool:
    inner = kernel.backend
    while inner is not None:  # a wrapper (tests/plugins/conftest.py's RecordingBackend) counts too
        if inner is backend:
            return True
        inner = inner.__dict__.get("inner")
    return False
