"""The calculator's units: quantities, conversions with "in", labels, and what it refuses.

The phrasings are the ones the embedded model wrote for multi-step problems (issue 13, item 2):
"4 weeks in seconds", "3 hours and 40 minutes", "7.2 kilometres + 350 metres", "6 notebooks * 4
dollars + 9 pencils * 2 dollars".
"""

from __future__ import annotations

import pytest

from llmos.kernel.devices import DeviceError
from llmos.plugins.calculator import evaluate as device_evaluate
from llmos.plugins.calculator.engine import CalculatorError, NotReadable, evaluate


@pytest.mark.parametrize("expression, shown", [
    ("5 weeks in minutes", "50400 minutes"),
    ("3 days to seconds", "259200 seconds"),
    ("4.5 km in cm", "450000 cm"),
    ("7 minutes in milliseconds", "420000 milliseconds"),
    ("2 hours and 15 minutes in seconds", "8100 seconds"),
    ("2 weeks + 3 days in hours", "408 hours"),
    ("1 mile in km", "1.609344 km"),
    ("3.2 kilograms plus 450 grams", "3650 grams"),       # no target: the smallest unit written
    ("7.2 kilometres + 350 metres", "7550 metres"),
    ("88 km per hour * 3.5 hours + 40 km", "348 kilometres"),
    ("100 km / 2 h", "50 kilometres/hour"),
    ("60 km/h in m/s", "50/3 (≈ 16.66666667) m/s"),
    ("5 m^2", "5 square metres"),
    ("12 cm³", "12 cubic centimetres"),
    ("(5 m)^2", "25 square metres"),
    ("3 m * 4 m in square feet", "6250000/48387 (≈ 129.166925) square feet"),
    ("10000 square metres in hectares", "1 hectare"),
    ("1 GiB in MB", "1073.741824 MB"),
    ("2 litres in ml", "2000 ml"),
    ("12.5% of 340 km", "42.5 kilometres"),
    ("200 km + 10%", "220 kilometres"),
    ("round(2 km / 3, 1)", "0.7 kilometres"),              # rounded in the unit shown
    ("-3 km", "-3 kilometres"),
    ("5 min", "5 minutes"),
    ("a year of 365 days in minutes".replace("a year of ", ""), "525600 minutes"),
    ("1 year in days", "365 days"),
])
def test_quantities_and_conversions(expression: str, shown: str) -> None:
    assert evaluate(expression).text == shown


@pytest.mark.parametrize("expression, shown", [
    ("3 million * 2", "6000000"), ("2 thousand + 5", "2005"), ("4 hundred and 8", "408"), ("2 dozen * 3", "72"),
    ("$5k * 12", "60000"), ("$1.2M / 4", "300000"),            # scales multiply; "M" is a million, "m" metres
    ("5 m", "5 metres"), ("1/2 hour in minutes", "30 minutes"), ("10 / 4 km", "2.5 kilometres"),
    ("3/4 mile in m", "1207.008 m"), ("1 s", "1 second"), ("1 hrs", "1 hour"),
])
def test_scales_fractions_of_units_and_one_of_a_unit(expression: str, shown: str) -> None:
    assert evaluate(expression).text == shown


@pytest.mark.parametrize("expression", ["5 out of 10", "5 pct of 200", "1 leap year in days", "100 half",
                                        "10 sq", "sin(30 degrees)", "min(3 apples, 4)"])
def test_words_that_would_change_the_number_are_never_labels(expression: str) -> None:
    with pytest.raises(NotReadable):
        evaluate(expression)


@pytest.mark.parametrize("expression", ["(0 km)^1000000", "(0.001 km)^10000000", "(1 h/3600)^-1000", "km*km*km*km"])
def test_units_past_the_third_power_are_refused_before_any_work(expression: str) -> None:
    with pytest.raises(CalculatorError) as info:
        evaluate(expression, timeout_s=1.0)
    assert "power above 3" in str(info.value)


def test_a_ratio_of_like_quantities_is_a_plain_number() -> None:
    result = evaluate("5 km / 500 m")
    assert result.text == "10" and result.unit == ""


def test_function_names_that_are_units_still_call() -> None:
    assert evaluate("min(3, 4)").text == "3"       # min( is the function, 5 min the unit
    assert evaluate("max(2 km, 300 m)").text == "2000 metres"


@pytest.mark.parametrize("expression, error", [
    ("3 km + 2 hours", "cannot add a time to a length"),
    ("5 kg - 3", "cannot subtract a plain number from a mass (give the number its unit)"),
    ("4 weeks * 7 days", "multiplies a time by a time"),      # the model's conversion, refused, not 196
    ("5 km in hours", "cannot convert a length to hours"),
    ("5 in minutes", "cannot convert a plain number to minutes"),
    ("sqrt(16 m)", "plain numbers"),
    ("2 ^ 3 km", "plain number"),
    ("3 km!", "plain number"),
])
def test_quantities_that_mean_nothing_are_refused_with_why(expression: str, error: str) -> None:
    with pytest.raises(CalculatorError) as info:
        evaluate(expression)
    assert error in str(info.value)


@pytest.mark.parametrize("word", ["months", "celsius"])
def test_units_without_a_fixed_size_say_what_to_write(word: str) -> None:
    with pytest.raises(NotReadable) as info:
        evaluate(f"3 {word} in days")
    assert "write" in str(info.value)


def test_words_after_numbers_are_labels_and_reported() -> None:
    result = evaluate("6 notebooks * 4 dollars + 9 pencils * 2 dollars")
    assert result.text == "42"
    assert result.labels == ("notebooks", "dollars", "pencils", "dollars")
    assert device_evaluate("14 trays * 24 rolls - 290 rolls") == "46"  # the result is the number alone


@pytest.mark.parametrize("expression, value", [
    ("14 pens * $3 per pen", "42"),                       # "per" and an unknown word: one label
    ("45 pages per minute * 130 minutes", "5850"),        # per a unit: a rate, times a time
    ("88 km per hour * 2 hours", "176 kilometres"),
    ("100 per 4", "25"),                                  # per a number: division
])
def test_per_is_a_rate_or_part_of_a_label(expression: str, value: str) -> None:
    assert device_evaluate(expression) == value


@pytest.mark.parametrize("expression", ["apples * 3", "12 apples 5", "4 laps of a 400 metre track"])
def test_a_word_that_is_not_after_a_number_is_still_refused(expression: str) -> None:
    with pytest.raises(DeviceError) as info:
        device_evaluate(expression)
    assert str(info.value).startswith("cannot read")


def test_plain_arithmetic_is_unchanged() -> None:
    assert evaluate("17 % 5").text == "2"
    assert evaluate("2^10").text == "1024"
    assert evaluate("3 and 4").text == "7"
    assert evaluate("100 per 4").text == "25"
    assert evaluate("12.5% of 340").text == "42.5"
