"""Packages that ``make test`` installs are required, not optional: missing, the tests fail.

``pytest.importorskip`` would turn a broken set-up into a green run with skips; ``installed``
makes it one clear failure that says what is missing and how it gets installed.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest


def installed(module: str, *, attribute: str | None = None) -> ModuleType:
    """Import ``module`` (and check it has ``attribute``), or fail the test run saying why."""
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"{module} is not installed ({exc}): `make test` installs it (pyproject.toml's "
                    "dependencies and extras)", pytrace=False)
    if attribute is not None and not hasattr(imported, attribute):
        version = getattr(imported, "__version__", "an unknown version")
        pytest.fail(f"{module} ({version}) has no {attribute}: `make test` installs the pinned version",
                    pytrace=False)
    return imported
