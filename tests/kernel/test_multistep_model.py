"""Multi-step problems on the real embedded model: a unit conversion is one calculator call in the
calculator's own language ("4 weeks in seconds"), and the answer states its exact result. The
problem is from the tuning set (bench/data/multistep_tuning.json), not the judged one."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.model


def test_a_conversion_through_several_units_is_one_exact_call(real_kernel):
    result = real_kernel.ask("How many seconds are in 4 weeks?").result(300)
    calls = [s for s in result.syscalls if s["device"] == "calculator" and s["ok"]]
    assert calls, f"no calculator call that succeeded: {result.syscalls}"
    assert calls[-1]["result"] == "2419200 seconds", calls
    assert "2419200" in result.answer.replace(",", ""), result.answer
