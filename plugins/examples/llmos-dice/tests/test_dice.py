from llmos.kernel.testing import call_device
from llmos_dice import device


def test_roll_returns_each_die_and_the_total():
    result = call_device(device, "roll", {"count": 3, "sides": 6})
    assert result.ok
    assert len(result.value["rolls"]) == 3 and all(1 <= r <= 6 for r in result.value["rolls"])
    assert result.value["total"] == sum(result.value["rolls"])


def test_bad_arguments_are_refused_before_the_device_runs():
    assert "invalid arguments" in call_device(device, "roll", {"count": "many"}).error
    assert call_device(device, "roll", {"count": 0}).error == "count must be 1-100 and sides 2-1000"
