"""The calculator device: exact arithmetic, safely (a parser, never eval)."""

from __future__ import annotations

from llmos.kernel.devices import Device, DeviceError, Example

from .engine import CalculatorError, evaluate as _evaluate

device = Device(
    "calculator",
    version="1.0.0",
    description="Exact arithmetic: integers, decimals, fractions, percentages, powers, roots, functions.",
)


@device.call(examples=[Example("What is 12.5% of 340?", {"expression": "12.5% of 340"})], timeout_s=2.0)
def evaluate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly and return the number.

    Args:
        expression: Arithmetic expression, e.g. '12*(3+4)/5', '17.5% of 2480' or 'sqrt(2)'.
    """
    try:
        return _evaluate(expression).text
    except CalculatorError as exc:
        raise DeviceError(str(exc)) from None
