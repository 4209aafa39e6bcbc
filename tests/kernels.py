"""Kernels for the tests on the shared real model: ready in time or a clear failure, always shut down.

A kernel that is not ready (the model's load and the decision calibration, minutes on a loaded
2-core machine) fails its test with one line saying so, instead of hanging or leaking: the kernel is
shut down, its thread joined, in a ``finally``. The model is shared by the whole run, so a kernel
thread left decoding would share it with the next test's kernel, and a ``LlamaCppBackend`` closed
while a kernel thread decodes crashes the process: kernels are always shut down before the backend
is closed (``close_backend=False`` here; the session fixture closes it last).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

READY_S = 900.0  # the first kernel of a run calibrates the device decision: minutes on a busy machine


def wait_ready(kernel: Any, seconds: float = READY_S) -> None:
    """``kernel.wait_ready``, failing the test with one clear line when the model is not ready."""
    from llmos.kernel.backends.base import BackendError

    try:
        kernel.wait_ready(seconds)
    except TimeoutError:
        pytest.fail(f"the kernel on {kernel.backend.model} was not ready within {seconds:g} s "
                    "(the model's load and the device-decision calibration); it is shut down", pytrace=False)
    except BackendError as exc:
        pytest.fail(f"the model did not load: {exc}", pytrace=False)


@contextmanager
def started(kernel: Any, ready_s: float = READY_S) -> Iterator[Any]:
    """Start ``kernel`` (built, with its observers and journal attached), wait until it is ready,
    and shut it down when the block ends, however it ends; the backend stays loaded."""
    kernel.start()
    try:
        wait_ready(kernel, ready_s)
        yield kernel
    finally:
        kernel.shutdown(close_backend=False)


def shut_down_kernels_on(backend: Any) -> int:
    """Shut down every kernel still running on ``backend`` (a test that leaked one): before the
    backend is closed, no kernel thread may be using it. Returns how many there were."""
    from llmos.kernel.loop import Kernel

    leaked = [k for k in gc.get_objects() if isinstance(k, Kernel) and _uses(k, backend)
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
