"""The desktop shell and the `llmos` command line: the only package that imports Qt."""

from llmos.app.qt_compat import guard_singletons as _guard_singletons

_guard_singletons()  # PySide6's abi3 build on Python 3.11: see app/qt_compat.py
