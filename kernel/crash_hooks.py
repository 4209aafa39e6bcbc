"""Test-only crash points: make this process die of a signal at a named place, as a native crash
would, so the supervisor's line, the crash log and the journal can be tested anywhere.

``LLMOS_TEST_CRASH=POINT[:N][@SIG][,...]``: the N-th time (default 1) the code reaches
``reach(POINT)`` the process raises SIG (default SEGV; ABRT, ILL, BUS, FPE, KILL, ...) on itself.
Points: ``start`` (the command line, once its config is read), ``load`` (a model load, before
llama.cpp reads the file), ``decode`` (each generated token), ``grammar`` (compiling the grammar
of a call's arguments). Unset, :func:`reach` is one dict lookup.

    LLMOS_TEST_CRASH=decode:3@SEGV llmos ask "hi"    # dies on the third token, like llama.cpp would
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "LLMOS_TEST_CRASH"
POINTS = ("start", "load", "decode", "grammar")


class CrashSpecError(ValueError):
    """LLMOS_TEST_CRASH does not parse."""


def parse(spec: str) -> dict[str, list[int]]:
    """``"decode:3@SEGV,load"`` -> ``{"decode": [3, SIGSEGV, 0], "load": [1, SIGSEGV, 0]}``
    (the last number counts how many times the point was reached)."""
    plan: dict[str, list[int]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, sig = item.partition("@")
        point, _, nth = point.partition(":")
        if point not in POINTS:
            raise CrashSpecError(f"{ENV}: unknown point {point!r} (one of: {', '.join(POINTS)})")
        name = "SIG" + (sig or "SEGV").upper().removeprefix("SIG")
        number = getattr(signal, name, None)
        if not isinstance(number, signal.Signals):
            raise CrashSpecError(f"{ENV}: unknown signal {sig!r}")
        if nth and not (nth.isdigit() and int(nth) >= 1):
            raise CrashSpecError(f"{ENV}: {nth!r} is not a count (1, 2, ...)")
        plan[point] = [int(nth or 1), int(number), 0]
    return plan


def _plan() -> dict[str, list[int]]:
    try:
        return parse(os.environ.get(ENV, ""))
    except CrashSpecError as exc:
        print(f"llmos: {exc}; no crash point is armed", file=sys.stderr)
        return {}


_PLAN = _plan()


def reach(point: str) -> None:
    """Die here if LLMOS_TEST_CRASH says so (see the module's doc)."""
    step = _PLAN.get(point)
    if step is None:
        return
    step[2] += 1
    if step[2] == step[0]:
        signal.raise_signal(step[1])
