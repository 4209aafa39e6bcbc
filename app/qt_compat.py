"""A guard against a PySide6 build fault that aborts the app on Python 3.11.

PySide6 6.12 ships stable-ABI (abi3) wheels built with Python 3.12+ headers, where None, True and
False are immortal (PEP 683) and ``Py_RETURN_NONE``/``Py_RETURN_TRUE`` no longer take a
reference. Run on Python 3.11, every call from Qt into Python (a slot, a timer, a virtual like
``keyPressEvent``) and every queued Python signal gives back a reference to None or True that it
never took; after a few thousand kernel events one of them reaches zero and the interpreter
aborts (``Fatal Python error: none_dealloc`` / ``bool_dealloc``). Measured: one reference of
None lost per Qt call that returns nothing (``processEvents``, ``setText``, a timer's slot...),
one of True per queued signal (tests/app/test_qt_compat.py): a streaming reply loses tens of
thousands a second.

:func:`guard_singletons` does on 3.11 what 3.12 does by design: it gives those singletons a
reference count no drift can exhaust (2**60 more: a million lost a second would take 36,000
years). It is idempotent and does nothing on 3.12+ or on another Python implementation.
"""

from __future__ import annotations

import ctypes
import sys

RESERVE = 1 << 60
_SINGLETONS = (None, True, False, NotImplemented, Ellipsis)
_done = False


def needed() -> bool:
    return sys.implementation.name == "cpython" and sys.version_info < (3, 12)


def guard_singletons() -> bool:
    """Make None, True, False (and friends) effectively immortal on CPython < 3.12; True if done."""
    global _done
    if _done or not needed():
        return _done
    for obj in _SINGLETONS:
        ctypes.c_ssize_t.from_address(id(obj)).value += RESERVE  # ob_refcnt is a PyObject's first field
    _done = True
    return True
