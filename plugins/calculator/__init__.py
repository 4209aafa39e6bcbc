"""The calculator device: exact arithmetic, safely (a parser, never eval)."""

from __future__ import annotations

from llmos.kernel.devices import Device, DeviceError, Example, one_line

from .engine import CalculatorError, NotReadable, evaluate as _evaluate
from .words import HINT, normalise

device = Device(
    "calculator",
    version="1.0.0",
    description="Exact arithmetic: integers, decimals, fractions, percentages, powers, roots, functions.",
)

QUOTE_CHARS = 80  # how much of a refused expression its error page repeats


def refusal(expression: str, written: str, exc: CalculatorError) -> str:
    """The error page of an expression the grammar cannot read: what, where, and how to write it
    (one line, so a model retrying sees the fix next to the fault)."""
    quoted = one_line(written, QUOTE_CHARS)
    read_as = f" (read as {quoted!r})" if written.strip() != expression.strip() else ""
    return f"cannot read {one_line(expression, QUOTE_CHARS)!r}{read_as}: {exc}; {HINT}"


@device.call(examples=[Example("What is 12.5% of 340?", {"expression": "12.5% of 340"})], timeout_s=2.0)
def evaluate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly and return the number.

    Args:
        expression: Arithmetic expression, e.g. '12*(3+4)/5', '17.5% of 2480' or 'sqrt(2)'.
    """
    written = normalise(expression)
    try:
        return _evaluate(written).text
    except NotReadable as exc:
        raise DeviceError(refusal(expression, written, exc)) from None
    except CalculatorError as exc:
        raise DeviceError(str(exc)) from None
