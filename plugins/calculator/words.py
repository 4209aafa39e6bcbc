"""Phrasings people and models write, rewritten into the calculator's grammar before it parses.

Asked "12 squared" or "2 to the power of 10", the 1.5B model called the calculator with the words
in the expression, the calculator refused them, and the model answered with the refusal (issue
13). The engine stays a strict parser; this module only rewrites a fixed list of phrasings, each
into the spelling the grammar already has (``engine.py``'s docstring), and leaves everything
else as written, so what it does not know is still refused, with :data:`HINT`:

==========================================  =================================
``12 squared``, ``3 cubed``                 ``12^2``, ``3^3``
``2 to the power of 10``, ``2 raised to 10``,
``2 to the 10th power``                     ``2^10``
``the square root of 144``, ``sqrt 144``    ``√144`` (``∛`` for cube roots)
``the 4th root of 16``                      ``root(16, 4)``
``15 percent of 80``                        ``15% of 80``
``X rounded to 2 decimals``,
``round X to two decimal places``,
``X to the nearest hundredth``              ``round((X), 2)``
``X rounded to the nearest whole number``   ``round((X))``
``math.sqrt(2)``, ``math.pi``               ``sqrt(2)``, ``pi``
``what is 2+2?``, ``calculate 2+2 =``       ``2+2``
==========================================  =================================

"times", "multiplied by", "divided by", "plus", "minus", "x" between numbers and thousands
separators are the grammar's own spellings already. Rounding applies to the whole expression
(the phrase ends it, or "round" begins it); a rounding phrase anywhere else is left alone, and
refused.
"""

from __future__ import annotations

import re

__all__ = ["HINT", "normalise"]

# The line a refused expression's error page ends with: how to write what was meant. Letters, not
# numbers: shown "powers as 1234**2", the embedded 0.5B model sent "1234**2" for "2 to the power
# of 10" (a wrong result that succeeds), and "5*7*24*60" for every unit question after an example
# of it. Copied, these placeholders are refused again (tests/plugins/test_calculator_words.py).
HINT = ("write it with numbers and operators only: powers as a**2, roots as sqrt(a), "
        "rounding as round(a, 2), percentages as p% of a")

_COUNTS = {"zero": 0, "no": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
           "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_ORDINALS = {"second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
             "ninth": 9, "tenth": 10}
_PLACES = {"unit": 0, "one": 0, "integer": 0, "whole number": 0, "tenth": 1, "hundredth": 2,
           "thousandth": 3}
_COUNT = rf"(\d+|{'|'.join(_COUNTS)})"
_ORDINAL = rf"(?:(\d+)(?:st|nd|rd|th)|({'|'.join(_ORDINALS)}))"

_FILLER = re.compile(r"^\s*(?:please\s+)?(?:what\s+is|what's|whats|how\s+much\s+is|calculate|compute|"
                     r"evaluate|work\s+out)\b\s*:?\s*", re.IGNORECASE)
_TRAILER = re.compile(r"[\s?=]+$")
_DECIMALS = re.compile(rf"^(?:round\s+)?(.+?)\s*,?\s+(?:(?:is\s+)?(?:rounded|round)(?:\s+off)?\s+)?to\s+"
                       rf"{_COUNT}\s+(?:decimal(?:\s+place)?s?|dp|d\.p\.|places?|digits?(?:\s+after\s+the\s+"
                       rf"(?:decimal\s+)?point)?)$", re.IGNORECASE)
_NEAREST = re.compile(rf"^(?:round\s+)?(.+?)\s*,?\s+(?:(?:rounded|round)(?:\s+off)?\s+)?to\s+the\s+nearest\s+"
                      rf"({'|'.join(sorted(_PLACES, key=len, reverse=True))})$", re.IGNORECASE)
_ROUNDED = re.compile(r"^(.+?)\s*,?\s+rounded$", re.IGNORECASE)
_ROUND_ALONE = re.compile(r"^round\s+([^(\s].*)$", re.IGNORECASE)
_ROUND_LEADING = re.compile(rf"^round\s+(?:off\s+)?to\s+{_COUNT}\s+(?:decimal(?:\s+place)?s?|places?)\s*:?\s*(.+)$",
                            re.IGNORECASE)

_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p, re.IGNORECASE), r) for p, r in (
    (r"\bmath\.(?=[a-z])", ""),                                   # math.sqrt(2), math.pow(2, 10)
    (r"\bsquared\b", "^2"),
    (r"\bcubed\b", "^3"),
    (r"\b(?:raised\s+)?to\s+the\s+power\s+of\b", "^"),
    (r"\b(?:raised\s+)?to\s+the\s+power\b", "^"),
    (r"\braised\s+to\b", "^"),
    (r"\bper\s*cent\b", "%"),
    (r"\b(?:the\s+)?square\s+root\s+of\b", "√"),
    (r"\b(?:the\s+)?square\s+root\b", "√"),
    (r"\b(?:the\s+)?cube\s+root\s+of\b", "∛"),
    (r"\b(?:the\s+)?cube\s+root\b", "∛"),
    (r"\bsqrt\s+of\b", "√"),
    (r"\bsqrt\s+(?=[\d.])", "√"),                                 # "sqrt 16" (the function wants parentheses)
    (r"\bcbrt\s+(?=[\d.])", "∛"),
))
_ORDINAL_POWER = re.compile(rf"\b(?:raised\s+)?to\s+the\s+{_ORDINAL}(?:\s+power)?\b", re.IGNORECASE)
_NTH_ROOT = re.compile(rf"\b(?:the\s+)?{_ORDINAL}\s+root\s+of\s+(\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)


def _count(word: str) -> int:
    return int(word) if word.isdigit() else _COUNTS[word.lower()]


def _ordinal(digits: str | None, word: str | None) -> int:
    return int(digits) if digits else _ORDINALS[(word or "").lower()]


def _rounding(text: str) -> tuple[str, str | None]:
    """(the expression, the round() digits) when a rounding phrase ends or begins ``text``."""
    if match := _ROUND_LEADING.match(text):
        return match.group(2), str(_count(match.group(1)))
    if match := _DECIMALS.match(text):
        return match.group(1), str(_count(match.group(2)))
    if match := _NEAREST.match(text):
        return match.group(1), str(_PLACES[" ".join(match.group(2).lower().split())])
    if match := _ROUNDED.match(text) or _ROUND_ALONE.match(text):
        return match.group(1), "0"
    return text, None


def _words(text: str) -> str:
    """The phrasings inside an expression: powers, roots, percent, Python's spellings."""
    text = _NTH_ROOT.sub(lambda m: f"root({m.group(3)}, {_ordinal(m.group(1), m.group(2))})", text)
    text = _ORDINAL_POWER.sub(lambda m: f"^{_ordinal(m.group(1), m.group(2))}", text)
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return text


def normalise(text: str) -> str:
    """``text`` with the phrasings above in the grammar's spelling; anything else unchanged."""
    if not isinstance(text, str):
        return text
    stripped = _TRAILER.sub("", _FILLER.sub("", text.strip()))
    expression, digits = _rounding(stripped)
    expression = _words(expression.strip())
    if digits is None:
        return expression
    return f"round(({expression}))" if digits == "0" else f"round(({expression}), {digits})"
