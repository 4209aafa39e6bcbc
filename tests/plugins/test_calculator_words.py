"""The calculator's phrasings (plugins/calculator/words.py): each one through the device call, the
way a model or a person writes it, and the error page of what is still refused."""
from __future__ import annotations

import ast
import inspect

import pytest

from llmos.kernel.devices import DeviceError
from llmos.plugins.calculator import evaluate, words
from llmos.plugins.calculator.engine import evaluate as engine_evaluate
from llmos.plugins.calculator.words import HINT, normalise


def refused(expression: str) -> str:
    with pytest.raises(DeviceError) as info:
        evaluate(expression)
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize("expression, text", [
    # powers
    ("12 squared", "144"), ("1234 squared", "1522756"), ("(3+4) squared", "49"), ("3 + 4 squared", "19"),
    ("3 cubed", "27"), ("1.5 cubed", "3.375"), ("2 to the power of 10", "1024"),
    ("5 to the power of 3", "125"), ("2 to the power 10", "1024"), ("2 raised to the power of 8", "256"),
    ("2 raised to 8", "256"), ("2 to the 10th power", "1024"), ("3 to the third power", "27"),
    ("10 to the power of -2", "0.01"), ("2 Squared", "4"),
    # roots
    ("the square root of 144", "12"), ("square root of 2.25", "1.5"), ("the cube root of 27", "3"),
    ("sqrt 16", "4"), ("sqrt of 81", "9"), ("the 4th root of 16", "2"), ("math.sqrt(16)", "4"),
    ("the square root of 9 + 16", "19"), ("the square root of (9 + 16)", "5"),
    # rounding
    ("3.14159 rounded to 2 decimals", "3.14"), ("round 3.14159 to 2 decimal places", "3.14"),
    ("22/7 rounded to two decimal places", "3.14"), ("10/3 to 3 decimal places", "3.333"),
    ("22/7, rounded to 1 decimal place", "3.1"), ("22/7 to the nearest hundredth", "3.14"),
    ("22/7 rounded to the nearest whole number", "3"), ("7.5 rounded", "8"), ("round 2.5", "3"),
    ("round to 2 decimal places: 22/7", "3.14"), ("1,234.567 rounded to two decimals", "1234.57"),
    ("2 to the power of 0.5 rounded to 3 decimal places", "1.414"), ("round(22/7, 2)", "3.14"),
    # percentages
    ("15 percent of 80", "12"), ("15% of 80", "12"), ("12.5 per cent of 340", "42.5"),
    ("10 percent of 1,250", "125"), ("200 plus 10 percent", "220"),
    # the grammar's own words, through the device
    ("3 times 4", "12"), ("6 multiplied by 7", "42"), ("10 divided by 4", "2.5"), ("3 plus 4", "7"),
    ("9 minus 2", "7"), ("122 x 46", "5612"), ("233 X 85", "19805"), ("1,234 + 1", "1235"),
    ("1,234,567 * 2", "2469134"), ("pow(2, 10)", "1024"),
    # what is around an expression
    ("2+2?", "4"), ("2+2 =", "4"), ("2+2=?", "4"), ("What is 122 x 46?", "5612"),
    ("calculate 5*7*24*60", "50400"), ("what's 12 squared?", "144"),
])
def test_phrasings_are_computed(expression: str, text: str) -> None:
    assert evaluate(expression) == text


@pytest.mark.parametrize("expression, written", [
    ("12 squared", "12 ^2"), ("2 to the power of 10", "2 ^ 10"), ("the square root of 144", "√ 144"),
    ("3.14159 rounded to 2 decimals", "round((3.14159), 2)"), ("15 percent of 80", "15 % of 80"),
    ("22/7 to the nearest whole number", "round((22/7))"), ("what is 2+2?", "2+2"),
])
def test_phrasings_become_the_grammar_s_spelling(expression: str, written: str) -> None:
    assert normalise(expression) == written


@pytest.mark.parametrize("expression", [
    "1234 * 5678", "17.5% of 2480", "sqrt(2)", "round(2.675, 2)", "max(1,234, 5)", "2^10", "5!",
    "17 % 5", "3 multiplied by 4", "(1,234)", "$1,200", "log(8, 2)", "12*(3+4)/5",
])
def test_expressions_in_the_grammar_are_left_as_written(expression: str) -> None:
    assert normalise(expression) == expression


def test_rounding_in_the_middle_of_an_expression_is_not_guessed() -> None:
    # Only a phrase that ends the expression (or "round" that begins it) rounds the whole of it.
    assert "cannot read" in refused("3.14159 rounded to 2 decimals plus 1")


@pytest.mark.parametrize("expression", ["apples times 12", "5 weeks in", "what percentage of 80 is 20",
                                        "2 to the power of", "the square root of"])
def test_what_is_still_refused_says_how_to_write_it(expression: str) -> None:
    message = refused(expression)
    assert message.startswith(f"cannot read {expression!r}")
    assert message.endswith(HINT)
    assert "a**2" in message and "round(a, 2)" in message


@pytest.mark.parametrize("copied", [HINT, "a**2", "sqrt(a)", "round(a, 2)", "p% of a", HINT.partition(": ")[2]])
def test_the_hint_copied_as_the_expression_is_refused_not_computed(copied: str) -> None:
    # A small model copies what its error page shows: a copied hint must not become a number.
    assert refused(copied).startswith("cannot read")


def test_the_error_page_shows_what_the_words_were_read_as() -> None:
    message = refused("what is 12 apples 5?")
    assert "(read as '12 apples 5')" in message
    assert "unexpected number 5 at position 11" in message          # the position in what was read


def test_a_value_that_cannot_be_computed_gets_no_writing_hint() -> None:
    # 1/0 is written right: telling the model how to write it would send it round in circles.
    assert refused("1 divided by 0") == "division by zero"
    assert HINT not in refused("the square root of -4")


def test_a_long_refused_expression_is_quoted_short() -> None:
    message = refused("12 apples " + "and pears " * 200)
    assert len(message) < 400


def test_normalising_keeps_the_engine_s_answer() -> None:
    # The same numbers in words and in the grammar give the same exact result.
    for spoken, written in [("7 squared times 3", "7^2*3"), ("the cube root of 64 plus 1", "∛64+1"),
                            ("15 percent of 80 divided by 4", "15% of 80 / 4")]:
        assert evaluate(spoken) == engine_evaluate(written).text


def test_words_module_has_no_dynamic_code_execution() -> None:
    tree = ast.parse(inspect.getsource(words))
    called = {node.func.id for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not called & {"eval", "exec", "compile", "__import__", "getattr", "literal_eval"}
