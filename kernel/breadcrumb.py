"""What the process is doing in native code right now, kept where its supervisor can read it
after a crash.

``llmos`` runs the command line in a child process (``app/supervisor.py``). Before the fork the
supervisor maps one page of anonymous shared memory; the child :func:`attach`-es it, and the
kernel notes each native activity in it (loading model X with engine path Y, decoding for
process P, compiling the grammar of call C), with the likely cause if that activity crashes.
When the child dies of a signal the page still holds the last note: the supervisor turns it
into its one line. A note is a memcpy into that page (no system call, no file); when nothing is
attached (``python -m llmos.app.cli``, the tests' in-process kernels) it is one global check.

Usage::

    with breadcrumb.activity("decoding for process 3", cause="...", native="llama.cpp"):
        ...  # the previous note comes back afterwards
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIZE = 4096  # one page: the supervisor maps it before forking the child
_region: Any = None  # the shared mmap, once attached
_lock = threading.Lock()
_state: dict[str, str] = {"doing": "", "cause": "", "native": "", "crash_log": ""}


def attach(region: Any) -> None:
    """Write every note into ``region`` (an mmap of at least SIZE bytes shared with the supervisor)."""
    global _region
    _region = region
    _write()


def attached() -> bool:
    return _region is not None


def _write() -> None:
    data = json.dumps(_state, ensure_ascii=False).encode("utf-8")[: SIZE - 1]
    _region[: len(data) + 1] = data + b"\0"


def note(doing: str, cause: str = "", native: str = "") -> None:
    """Record what is being done now, the likely cause should it crash, and which native library
    does the work (``"llama.cpp"``, or empty when not known)."""
    if _region is None:
        return
    with _lock:
        if (_state["doing"], _state["cause"], _state["native"]) != (doing, cause, native):
            _state.update(doing=doing, cause=cause, native=native)
            _write()


def set_crash_log(path: str) -> None:
    """The file the native stack goes to if the process crashes (faulthandler)."""
    if _region is None:
        return
    with _lock:
        _state["crash_log"] = path
        _write()


@contextmanager
def activity(doing: str, cause: str = "", native: str = "") -> Iterator[None]:
    """:func:`note` for the duration of a block; the note before it comes back afterwards."""
    if _region is None:
        yield
        return
    with _lock:
        before = (_state["doing"], _state["cause"], _state["native"])
    note(doing, cause, native)
    try:
        yield
    finally:
        note(*before)


def read(region: Any) -> dict[str, str]:
    """The last note written into ``region`` (empty fields when there is none or it is torn)."""
    raw = bytes(region[:SIZE]).split(b"\0", 1)[0]
    try:
        found = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        found = {}
    if not isinstance(found, dict):
        found = {}
    return {key: str(found.get(key, "")) for key in _state}
