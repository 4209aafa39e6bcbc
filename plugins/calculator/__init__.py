"""The calculator device: exact arithmetic, safely (a parser, never eval)."""

from __future__ import annotations

from llmos.kernel.devices import Device, DeviceError, Example, one_line

from .engine import CalculatorError, NotReadable, evaluate as _evaluate
from .words import HINT, normalise

device = Device(
    "calculator",
    version="1.0.0",
    description="Exact arithmetic: integers, decimals, fractions, percentages, powers, roots, functions, units.",
)

QUOTE_CHARS = 80  # how much of a refused expression its error page repeats


def refusal(expression: str, written: str, exc: CalculatorError) -> str:
    """The error page of an expression the grammar cannot read: what, where, and how to write it
    (one line, so a model retrying sees the fix next to the fault)."""
    quoted = one_line(written, QUOTE_CHARS)
    read_as = f" (read as {quoted!r})" if written.strip() != expression.strip() else ""
    return f"cannot read {one_line(expression, QUOTE_CHARS)!r}{read_as}: {exc}; {HINT}"


# The first example is the one the boot prompt shows. A conversion, because asked "how many minutes
# are in 5 weeks?" after the percentage one the embedded model wrote "4 weeks * 7 days" or stopped
# half-way; after this one it wrote "N weeks in minutes" (docs/decisions.md, multi-step problems).
@device.call(examples=[Example("How many seconds are in 2 hours?", {"expression": "2 hours in seconds"}),
                       Example("What is 12.5% of 340?", {"expression": "12.5% of 340"})], timeout_s=2.0)
def evaluate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly and return the number.

    Args:
        expression: Arithmetic expression, e.g. '12*(3+4)/5', '17.5% of 2480', 'sqrt(2)' or '5 weeks in minutes'.
    """
    written = normalise(expression)
    try:
        result = _evaluate(written)
    except NotReadable as exc:
        raise DeviceError(refusal(expression, written, exc)) from None
    except CalculatorError as exc:
        raise DeviceError(str(exc)) from None
    # Labels ("14 trays * 24 rolls") are left out of the result: shown "46 (read trays, rolls as
    # labels)", the embedded model gave that whole line as its answer. The call's arguments,
    # which the user sees, hold the words.
    return result.text
