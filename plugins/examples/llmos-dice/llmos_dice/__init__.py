"""An example external llmos device: dice rolls. Copy this folder to start your own plugin."""

from __future__ import annotations

import random

from llmos.kernel.devices import Device, DeviceError, Example

device = Device("dice", version="1.0.0", description="Fair dice rolls.")


@device.call(examples=[Example("Roll two six-sided dice for me.", {"count": 2, "sides": 6})])
def roll(count: int = 1, sides: int = 6) -> dict:
    """Roll dice and return each result and their total.

    Args:
        count: How many dice, 1 to 100.
        sides: Sides of each die, 2 to 1000.
    """
    if not 1 <= count <= 100 or not 2 <= sides <= 1000:
        raise DeviceError("count must be 1-100 and sides 2-1000")
    rolls = [random.randint(1, sides) for _ in range(count)]
    return {"rolls": rolls, "total": sum(rolls)}
