"""Safe, exact arithmetic for the calculator plugin (standard library only).

The input is never given to eval/exec/compile: a tokenizer turns it into
tokens, a recursive-descent parser builds a small tree and an evaluator walks
it.  Numbers stay exact ``Fraction`` values; only irrational functions
(sqrt(2), sin, ln, pi, ...) give floats.

Grammar, lowest to highest precedence::

    input   := expr (('in' | 'into' | 'to' | 'as') term)?    5 weeks in minutes (a conversion)
    expr    := term (('+' | '-') term)*            a + b%  means a * (1 + b/100)
    term    := unary (('*' | '/' | '//' | '%' | 'mod' | 'of') unary)*
    unary   := ('-' | '+' | '√' | '∛') unary | power
    power   := postfix ('^' unary)?                 right-associative; -2^2 = -4
    postfix := primary ('!' | '%' | UNIT)*          5! = 120, 50% = 0.5, 4 weeks
    primary := NUMBER | CONSTANT | UNIT | NAME '(' [expr (',' expr)*] ')' | '(' expr ')'

Units (``units.py``: time, length, mass, volume, area, data; ``square``/``cubic``, ``m^2``,
``cm³``) make quantities: ``3 hours and 40 minutes``, ``88 km per hour * 3.5 hours``. ``and`` is
``+`` and ``per`` is ``/``. An unknown word right after a number, unit or another such word is a
label and is left out (``14 trays * 24 rolls`` is 336; ``Result.labels`` lists them). Scale words
multiply (``3 million``, ``$5k``); words that would change the number (``out of``, ``half``,
``degrees``) are refused, never dropped.

Spellings: ``**`` = ``^``; ``× x · times multiplied by`` = ``*``;
``÷ over divided by`` = ``/``; ``− minus`` = ``-``; ``plus`` = ``+``.
``%`` is modulo when an operand follows it (``17 % 5``), otherwise percent;
modulo follows Python (the result has the sign of the divisor).

Numbers: ``1_000``, ``1.5e3``; a leading ``$ € £`` is ignored.  A comma
followed by exactly three digits is a thousands separator (``18,400``) except
directly inside a function call's parentheses, where a comma always separates
arguments: ``max(1,234, 5)`` is max(1, 234, 5) = 234.

Limits: 10,000 characters, nesting depth 64, literals of 1,000 digits, exact
results of 10,000 digits (powers are estimated *before* computing),
factorial(n) for n <= 3000, plus the ``timeout_s`` safety net.
"""
from __future__ import annotations

import decimal
import math
import operator
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Callable, NamedTuple, Union

from . import units
from .units import Quantity, Unit, UnitError

__all__ = ["CalculatorError", "NotReadable", "Result", "evaluate"]

Number = Union[Fraction, float]
Value = Union[Fraction, float, Quantity]

MAX_LENGTH = 10_000
MAX_DEPTH = 64
MAX_LITERAL_DIGITS = 1_000
MAX_DIGITS = 10_000
MAX_BITS = int(MAX_DIGITS / math.log10(2)) + 1
MAX_FACTORIAL = 3_000
MAX_DISPLAY_DIGITS = 1_000
DIGITS = tuple("0123456789")          # a tuple, so that "" is not in it
SYMBOL_OPS = MappingProxyType({"+": "+", "-": "-", "−": "-", "*": "*", "×": "*", "·": "*",
                               "∙": "*", "/": "/", "÷": "/", "^": "^", "%": "%", "!": "!",
                               "√": "√", "∛": "∛"})
WORD_OPS = MappingProxyType({"x": "*", "times": "*", "multiplied": "*", "plus": "+", "and": "+",
                             "minus": "-", "over": "/", "divided": "/", "per": "/", "mod": "mod", "of": "of"})
CONVERT = frozenset({"in", "into"})          # "5 weeks in minutes"; "to" and "as" before a unit too
SHAPES = MappingProxyType({"square": units.square, "sq": units.square, "cubic": units.cubic})
SYMBOL_NAMES = MappingProxyType({"π": "pi", "τ": "tau"})
CONSTANTS = MappingProxyType({"pi": math.pi, "e": math.e, "tau": math.tau})


class CalculatorError(ValueError):
    """The expression could not be evaluated; the message says why, in one line."""


class NotReadable(CalculatorError):
    """The expression is not written in the grammar (as opposed to a value it cannot compute,
    such as 1/0): the device adds how to write it."""


@dataclass(frozen=True)
class Result:
    value: Number    # in the unit shown, for a quantity
    exact: bool
    text: str        # "50400", or with a unit "50400 minutes"
    labels: tuple[str, ...] = ()   # words read as labels and left out ("14 trays * 24 rolls")
    unit: str = ""


class Token(NamedTuple):
    kind: str        # 'num', 'name', 'op', 'unit', 'label', 'in', '(', ')', ',' or 'end'
    value: object    # Fraction for 'num', lower-case name, canonical operator, Unit
    pos: int         # 0-based index into the expression
    text: str        # as written


# Tree nodes. Chain is a flat left-associative run (a + b - c), so long sums stay shallow.
Num = NamedTuple("Num", [("value", object)])
Chain = NamedTuple("Chain", [("first", object), ("rest", tuple)])   # rest: ((op, node), ...)
Unary = NamedTuple("Unary", [("op", str), ("operand", object)])
Pow = NamedTuple("Pow", [("base", object), ("exponent", object)])
Postfix = NamedTuple("Postfix", [("op", str), ("operand", object)])
Call = NamedTuple("Call", [("name", str), ("args", tuple)])
UnitOf = NamedTuple("UnitOf", [("operand", object), ("unit", Unit)])   # 4 weeks; a unit alone is 1 of it
Convert = NamedTuple("Convert", [("operand", object), ("target", object), ("text", str)])


# ------------------------------------------------------------------ tokenizer
_NUMBER = r"(?:\.([0-9](?:_?[0-9])*)?)?(?:[eE]([+-]?[0-9]+))?"       # fraction, exponent
NUMBER = re.compile(r"([0-9](?:_?[0-9])*)?" + _NUMBER)
GROUPED_NUMBER = re.compile(r"([0-9](?:_?[0-9])*(?:,[0-9]{3}(?![0-9_]))*)?" + _NUMBER)   # 18,400
WORD = re.compile(r"([A-Za-z]+)([0-9]*)")
BY = re.compile(r"\s*by(?![A-Za-z])", re.IGNORECASE)


def _read_number(text: str, i: int, groups: bool) -> tuple[Fraction, int]:
    match = (GROUPED_NUMBER if groups else NUMBER).match(text, i)
    whole, frac, exponent = (part or "" for part in match.groups())
    whole, frac = whole.replace(",", "").replace("_", ""), frac.replace("_", "")
    if len(exponent) > 7 or abs(int(exponent or "0")) > MAX_DIGITS:
        raise CalculatorError(f"number at position {i + 1} is too large")
    if len(whole) + len(frac) > MAX_LITERAL_DIGITS:
        raise CalculatorError(f"number at position {i + 1} has too many digits "
                              f"(limit is {MAX_LITERAL_DIGITS:,})")
    scale, mantissa = int(exponent or "0") - len(frac), int(whole + frac or "0")
    value = Fraction(mantissa * 10 ** scale) if scale >= 0 else Fraction(mantissa, 10 ** -scale)
    return value, match.end()


def _tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    calls: list[bool] = []       # per open '(': does it open a function call?
    i, n = 0, len(text)
    while i < n:
        ch, start = text[i], i
        if ch.isspace() or (ch in "$€£" and text[i + 1:i + 2] in DIGITS + (".",)):
            i += 1
            continue
        if ch in DIGITS or (ch == "." and text[i + 1:i + 2] in DIGITS):
            value, i = _read_number(text, i, groups=not (calls and calls[-1]))
            tokens.append(Token("num", value, start, text[start:i]))
            continue
        if ch.isascii() and ch.isalpha():
            match = WORD.match(text, i)
            word = match.group().lower()
            if word not in FUNCTIONS:                       # keep digits only for log2, log10
                word = match.group(1).lower()
            i += len(word)
            if word in ("multiplied", "divided"):
                by = BY.match(text, i)
                if not by:
                    raise CalculatorError(f"expected 'by' after '{word}' at position {start + 1}")
                i = by.end()
            tokens.extend(_word_tokens(word, text, start, i, tokens, inside_call=bool(calls) and calls[-1]))
            if tokens[-1].kind == "shape":                     # "square metres": one unit
                unit_match = _NEXT_WORD.match(text, i)
                unit = units.lookup(unit_match.group(1)) if unit_match else None
                shaped = SHAPES[word](unit) if unit is not None else None
                if shaped is None:
                    raise CalculatorError(f"expected a length unit after '{word}' at position {start + 1}")
                i = unit_match.end(1)
                tokens[-1] = Token("unit", shaped, start, text[start:i])
            continue
        if ch in SYMBOL_NAMES:
            tokens.append(Token("name", SYMBOL_NAMES[ch], start, ch))
        elif ch in "²³":                                       # m², cm³
            tokens += [Token("op", "^", start, ch), Token("num", Fraction("²³".index(ch) + 2), start, ch)]
        elif text.startswith("**", i) or text.startswith("//", i):
            tokens.append(Token("op", "^" if ch == "*" else "//", start, text[i:i + 2]))
            i += 1
        elif ch in SYMBOL_OPS:
            tokens.append(Token("op", SYMBOL_OPS[ch], start, ch))
        elif ch in "(),":
            if ch == "(":
                calls.append(bool(tokens) and tokens[-1].kind == "name")
            elif ch == ")" and calls:
                calls.pop()
            tokens.append(Token(ch, ch, start, ch))
        elif ch == "=" and not text[i + 1:].strip():
            break                                                # a trailing "=" is harmless
        else:
            raise CalculatorError(f"unexpected character {ch!r} at position {i + 1}")
        i += 1
    tokens.append(Token("end", None, n, ""))
    return tokens


# Words that change a number's value: never labels. A scale multiplies ("3 million", "$5k"); the
# others are refused, with what to write instead, rather than dropped ("5 out of 10" is not 50).
SCALES = MappingProxyType({"hundred": 100, "thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9, "trillion": 10 ** 12,
                           "dozen": 12, "k": 10 ** 3, "bn": 10 ** 9})
CASED_SCALES = MappingProxyType({"K": 10 ** 3, "M": 10 ** 6, "B": 10 ** 9})  # $1.2M; a lower-case m is metres
NOT_LABELS = frozenset({"out", "pct", "half", "halves", "quarter", "quarters", "third", "thirds", "degree",
                        "degrees", "deg", "rad", "radians", "leap", "sq", "square", "cubic",
                        "percent", "squared", "cubed", "power", "root"})


def _word_tokens(word: str, text: str, start: int, end: int, before: list[Token], inside_call: bool) -> list[Token]:
    """A word's tokens: see :func:`_word_token`; a scale after a number is ``* 1000000``."""
    written = text[start:end]
    after_number = bool(before) and before[-1].kind == "num"
    scale = CASED_SCALES.get(written) if written in CASED_SCALES else SCALES.get(word)
    if after_number and scale is not None:
        return [Token("op", "*", start, written), Token("num", Fraction(scale), start, written)]
    return [_word_token(word, text, start, end, before, inside_call)]


def _word_token(word: str, text: str, start: int, end: int, before: list[Token], inside_call: bool = False) -> Token:
    """A word's token: an operator, a unit, a conversion ("in"), a function's or constant's name,
    or a label: an unknown word right after a number, unit or label ("14 trays", "400 metre
    track"), left out of the arithmetic (never inside a function's parentheses, and never a word
    of :data:`NOT_LABELS`, which would change the number)."""
    written = text[start:end]
    after_value = bool(before) and before[-1].kind in ("num", "unit", "label") and not inside_call
    if word == "per" and after_value and _label_follows(text, end):      # "$3 per pen": one label
        return Token("label", word, start, written)
    if word in WORD_OPS:
        return Token("op", WORD_OPS[word], start, written)
    if word in CONVERT or (word in ("to", "as") and _unit_follows(text, end)):
        return Token("in", word, start, written)
    if word in SHAPES and _unit_follows(text, end):
        return Token("shape", word, start, written)
    if word in units.VAGUE:
        raise CalculatorError(units.VAGUE[word])
    unit = units.lookup(written)
    calls_it = word in FUNCTIONS and text[end:].lstrip().startswith("(")    # min(1, 2), but 5 min
    if unit is not None and not calls_it and word not in CONSTANTS:
        return Token("unit", unit, start, written)
    if word in NOT_LABELS and after_value:
        raise CalculatorError(f"'{written}' changes the number, so it is not left out as a label: write it "
                              "with operators (a/b for 'a out of b', a*pi/180 for degrees)")
    if word not in FUNCTIONS and word not in CONSTANTS and after_value:
        return Token("label", word, start, written)
    return Token("name", word, start, written)


_NEXT_WORD = re.compile(r"\s*([A-Za-z]+)")  # the word after a position, spaces skipped


def _unit_follows(text: str, end: int) -> bool:
    match = _NEXT_WORD.match(text, end)
    if not match:
        return False
    word = match.group(1)
    return units.lookup(word) is not None or (word.lower() in SHAPES and _unit_follows(text, match.end(1)))


def _label_follows(text: str, end: int) -> bool:
    """Is the next word one a label would be (no unit, operator, function or constant)?"""
    match = _NEXT_WORD.match(text, end)
    if not match:
        return False
    word = match.group(1).lower()
    return not (units.lookup(match.group(1)) or word in WORD_OPS or word in FUNCTIONS or word in CONSTANTS
                or word in SHAPES or word in CONVERT)


# ------------------------------------------------------------------ parser
def _describe(tok: Token) -> str:
    return "end of expression" if tok.kind == "end" else (
        f"number {tok.text}" if tok.kind == "num" else repr(tok.text))


class _Parser:
    def __init__(self, tokens: list[Token], source: str = "") -> None:
        self.source = source
        self.labels = tuple(t.text for t in tokens if t.kind == "label")
        self.tokens, self.i, self.depth = [t for t in tokens if t.kind != "label"], 0, 0

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        self.i += 1
        return self.tokens[min(self.i - 1, len(self.tokens) - 1)]

    def at_op(self, *ops: str) -> bool:
        return self.peek().kind == "op" and self.peek().value in ops

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CalculatorError(f"expression is nested too deeply (limit is {MAX_DEPTH} levels)")

    def parse(self) -> object:
        if self.peek().kind == "end":
            raise CalculatorError("empty expression")
        node, tok = self.expr(), self.peek()
        if tok.kind == "in":                                      # 5 weeks in minutes
            self.next()
            first = self.peek()
            if first.kind != "unit":
                raise CalculatorError(f"expected a unit after '{tok.text}' at position {tok.pos + 1}")
            target = self.term()
            last = self.tokens[self.i - 1]
            node = Convert(node, target, self.source[first.pos:last.pos + len(last.text)])
            tok = self.peek()
        if tok.kind == ")":
            raise CalculatorError(f"unbalanced parentheses: unexpected ')' at position {tok.pos + 1}")
        if tok.kind != "end":
            raise CalculatorError(f"unexpected {_describe(tok)} at position {tok.pos + 1}")
        return node

    def chain(self, operand: Callable[[], object], ops: tuple[str, ...]) -> object:
        first, rest = operand(), []
        while self.at_op(*ops):
            rest.append((self.next().value, operand()))
        return Chain(first, tuple(rest)) if rest else first

    def expr(self) -> object:
        return self.chain(self.term, ("+", "-"))

    def term(self) -> object:
        node = self.chain(self.unary, ("*", "/", "//", "%", "mod", "of"))
        if isinstance(node, Chain) and node.rest and node.rest[-1][0] == "/" and isinstance(node.rest[-1][1], UnitOf) \
                and isinstance(node.rest[-1][1].operand, Num) and not _has_unit(Chain(node.first, node.rest[:-1])):
            # "1/2 hour", "3/4 mile", "10 / 4 km": the unit is the fraction's, not the divisor's
            *rest, (_, last) = node.rest
            return UnitOf(Chain(node.first, (*rest, ("/", last.operand))), last.unit)
        return node

    def unary(self) -> object:
        self.enter()
        prefix = self.at_op("-", "+", "√", "∛")
        node = Unary(self.next().value, self.unary()) if prefix else self.power()
        self.depth -= 1
        return node

    def power(self) -> object:
        base = self.postfix()
        return Pow(base, self.unary()) if self.at_op("^") and self.next() else base

    def postfix(self) -> object:
        node, depth = self.primary(), self.depth
        while self.at_op("!") or self.peek().kind == "unit" or (
                self.at_op("%") and not self.starts_operand(self.peek(1))):
            self.enter()
            if self.peek().kind == "unit":                         # 4 weeks, 3.5 km, 5 m^2
                unit = self.next().value
                if self.at_op("^") and self.peek(1).kind == "num" and self.peek(1).value in (2, 3):
                    self.next()
                    unit = unit.power(int(self.next().value))
                node = UnitOf(node, unit)
            else:
                node = Postfix(self.next().value, node)
        self.depth = depth
        return node

    @staticmethod
    def starts_operand(tok: Token) -> bool:   # decides between "17 % 5" (modulo) and "5 %" (percent)
        return tok.kind in ("num", "name", "unit", "(") or (tok.kind == "op" and tok.value in ("√", "∛"))

    def close(self, opening: Token) -> None:
        tok = self.next()
        if tok.kind == "end":
            raise CalculatorError(f"unbalanced parentheses: missing ')' at position {tok.pos + 1} "
                                  f"(to close '(' at position {opening.pos + 1})")
        if tok.kind != ")":
            raise CalculatorError(f"unexpected {_describe(tok)} at position {tok.pos + 1} (expected ')')")

    def primary(self) -> object:
        tok = self.next()
        if tok.kind == "num":
            return Num(tok.value)
        if tok.kind == "unit":                                     # "km/h": 1 km per 1 hour
            return UnitOf(Num(Fraction(1)), tok.value)
        if tok.kind == "(":
            node = self.expr()
            self.close(tok)
            return node
        if tok.kind == "name" and self.peek().kind == "(":
            if tok.value not in FUNCTIONS:
                raise CalculatorError(f"unknown function '{tok.value}'")
            opening, args = self.next(), []
            if self.peek().kind != ")":
                args.append(self.expr())
                while self.peek().kind == "," and self.next():
                    args.append(self.expr())
            self.close(opening)
            low, high, _ = FUNCTIONS[tok.value]
            if not low <= len(args) <= high:
                want = str(low) if low == high else f"{low} or {high}" if high < 99 else f"at least {low}"
                noun = "argument" if want.endswith("1") else "arguments"
                raise CalculatorError(f"{tok.value}() takes {want} {noun}, got {len(args)}")
            return Call(tok.value, tuple(args))
        if tok.kind == "name":
            if tok.value in CONSTANTS:
                return Num(CONSTANTS[tok.value])
            if tok.value in FUNCTIONS:
                raise CalculatorError(f"function '{tok.value}' needs parentheses, e.g. {tok.value}(2)")
            raise CalculatorError(f"unknown name '{tok.value}'")
        if tok.kind == "end":
            raise CalculatorError("unexpected end of expression (a number is missing)")
        raise CalculatorError(f"unexpected {_describe(tok)} at position {tok.pos + 1}")


def _has_unit(node: object) -> bool:
    if isinstance(node, UnitOf):
        return True
    if isinstance(node, tuple):
        return any(_has_unit(part) for part in node)
    return False


# ------------------------------------------------------------------ arithmetic
def _too_large(log10_digits: float) -> CalculatorError:
    about = f"{round(10 ** log10_digits):,}" if log10_digits < 6 else f"10^{int(log10_digits)}"
    return CalculatorError(f"result too large (about {about} digits; "
                           f"the limit is {MAX_DIGITS:,} digits)")


def _check(value: object) -> Value:
    """Normalise int -> Fraction and refuse non-finite floats and oversized fractions."""
    if isinstance(value, Quantity):
        return Quantity(_check(value.value), value.dims, value.units) if value.dims != units.NONE else _check(value.value)
    if isinstance(value, int):
        value = Fraction(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("result is not a finite number")
    if isinstance(value, Fraction):
        bits = max(value.numerator.bit_length(), value.denominator.bit_length())
        if bits > MAX_BITS:
            raise _too_large(math.log10(bits * math.log10(2)))
    elif not isinstance(value, float):
        raise CalculatorError("result is not a real number")
    return value


def _as_int(x: Number, what: str) -> int:
    if isinstance(x, float) and x.is_integer():
        return int(x)
    if isinstance(x, Fraction) and x.denominator == 1:
        return x.numerator
    raise CalculatorError(f"{what} must be a whole number")


def _iroot(n: int, k: int) -> int | None:
    """Exact k-th root of n >= 0 (Newton's method on integers), or None."""
    if n < 2:
        return n
    if k >= n.bit_length():                  # 1 < root < 2
        return None
    if k == 2:
        x = math.isqrt(n)
        return x if x * x == n else None
    x = 1 << -(-n.bit_length() // k)         # an upper bound of the root
    while True:
        y = ((k - 1) * x + n // x ** (k - 1)) // k
        if y >= x:
            return x if x ** k == n else None
        x = y


def _exact_root(x: Fraction, k: int) -> Fraction | None:
    if x < 0 and k % 2 == 0:
        return None
    num, den = _iroot(abs(x.numerator), k), _iroot(x.denominator, k)
    return None if num is None or den is None else Fraction(num, den) * (-1 if x < 0 else 1)


def _int_power(a: Fraction, n: int) -> Fraction:
    if a == 0 and n < 0:
        raise CalculatorError("division by zero (0 raised to a negative power)")
    if n == 0 or a in (0, 1):
        return Fraction(1) if n == 0 else a
    if a == -1:
        return Fraction(-1 if n % 2 else 1)
    log10_digits = math.log10(abs(n)) + math.log10(math.log10(max(abs(a.numerator), a.denominator)))
    if log10_digits > math.log10(MAX_DIGITS):            # guard before computing
        raise _too_large(log10_digits)
    return a ** n


def _power(a: Number, b: Number) -> Number:
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        if b.denominator == 1:
            return _int_power(a, b.numerator)
        root = _exact_root(a, b.denominator)             # 4^0.5 = 2, (-8)^(1/3) = -2
        if root is not None:
            return _int_power(root, b.numerator)
    fa, fb = float(a), float(b)
    if fa == 0 and fb < 0:
        raise CalculatorError("division by zero (0 raised to a negative power)")
    if fa < 0 and not fb.is_integer():
        if isinstance(b, Fraction) and b.denominator % 2:                # real odd root
            return math.pow(-fa, fb) * (-1 if b.numerator % 2 else 1)
        raise CalculatorError("a negative number raised to a fractional power is not a real number")
    return math.pow(fa, fb)


def _binary(op: str, a: Value, b: Value) -> Value:
    if isinstance(a, Quantity) or isinstance(b, Quantity):
        return units.combine(op, a, b)
    if op in ("/", "//", "%", "mod") and b == 0:
        raise CalculatorError("division by zero")
    return BINARY[op](a, b)


def _factorial(x: Number) -> Fraction:
    if not (isinstance(x, Fraction) and x.denominator == 1 and x >= 0):
        raise CalculatorError("factorial is only defined for non-negative whole numbers")
    if x > MAX_FACTORIAL:
        raise CalculatorError(f"factorial argument too large (the limit is {MAX_FACTORIAL:,})")
    return Fraction(math.factorial(x.numerator))


def _sqrt(x: Number) -> Number:
    if x < 0:
        raise CalculatorError("sqrt of a negative number is not a real number")
    exact = _exact_root(x, 2) if isinstance(x, Fraction) else None
    return exact if exact is not None else math.sqrt(x)


def _root(x: Number, n: Number = Fraction(3)) -> Number:
    k = _as_int(n, "root degree")
    if k == 0 or (x < 0 and k % 2 == 0):
        raise CalculatorError("root degree must not be zero" if k == 0 else
                              "even root of a negative number is not a real number")
    if k < 0:
        return _binary("/", Fraction(1), _root(x, Fraction(-k)))
    exact = _exact_root(x, k) if isinstance(x, Fraction) else None
    return exact if exact is not None else math.copysign(abs(float(x)) ** (1 / k), x)


def _round(x: Number, digits: Number = Fraction(0)) -> Number:
    n = _as_int(digits, "round() digits")
    if abs(n) > 1000:
        raise CalculatorError("round() digits must be between -1000 and 1000")
    exact, scale = Fraction(x), Fraction(10) ** n
    rounded = math.floor(abs(exact) * scale + Fraction(1, 2)) / scale * (-1 if exact < 0 else 1)
    return rounded if isinstance(x, Fraction) else float(rounded)       # halves away from zero


def _ln(x: Number) -> Number:
    if x <= 0:
        raise CalculatorError("logarithm is only defined for positive numbers")
    if x == 1:
        return Fraction(0)
    if isinstance(x, Fraction):                # math.log takes huge ints; float(x) could overflow
        return math.log(x.numerator) - math.log(x.denominator)
    return math.log(x)


def _log(x: Number, base: Number = Fraction(10)) -> Number:
    if base <= 0 or base == 1:
        raise CalculatorError("logarithm base must be positive and not 1")
    ratio = _ln(x) / _ln(base)
    if isinstance(x, Fraction) and isinstance(base, Fraction) and (
            abs(ratio) * max(base.numerator.bit_length(), base.denominator.bit_length()) < 2 * MAX_BITS):
        if base ** round(ratio) == x:          # exact: log(1000) = 3, log(8, 2) = 3
            return Fraction(round(ratio))
    return ratio


def _real(fn: Callable[[float], float], name: str = "", low: float = -math.inf,
          high: float = math.inf, snap: bool = False) -> Callable[[Number], float]:
    """Wrap a float function with a domain check; snap=True turns sin(pi)'s 1e-16 into 0."""
    def apply(x: Number) -> float:
        if not low <= x <= high:
            raise CalculatorError(f"{name} is only defined for values from {low:g} to {high:g}")
        y = fn(float(x))
        return 0.0 if snap and abs(y) < 1e-15 and abs(x) > 1e-8 else y
    return apply


def _whole(fn: Callable[..., int], name: str) -> Callable[..., Fraction]:
    def apply(*args: Number) -> Fraction:
        if not all(isinstance(a, Fraction) and a.denominator == 1 for a in args):
            raise CalculatorError(f"{name}() needs whole numbers")
        return Fraction(fn(*(a.numerator for a in args)))
    return apply


def _rounding(fn: Callable[[Number], int]) -> Callable[[Number], Number]:
    return lambda x: Fraction(fn(x)) if isinstance(x, Fraction) else float(fn(x))


BINARY = MappingProxyType({"+": operator.add, "-": operator.sub, "*": operator.mul, "of": operator.mul,
                           "/": operator.truediv, "//": operator.floordiv, "%": operator.mod,
                           "mod": operator.mod})
UNARY = MappingProxyType({"-": operator.neg, "+": operator.pos, "√": _sqrt, "∛": _root})
# The only callables reachable from user input: name -> (min args, max args, implementation).
FUNCTIONS: MappingProxyType[str, tuple[int, int, Callable[..., Number]]] = MappingProxyType({
    "abs": (1, 1, abs), "round": (1, 2, _round), "pow": (2, 2, _power), "min": (1, 99, min), "max": (1, 99, max),
    "floor": (1, 1, _rounding(math.floor)), "ceil": (1, 1, _rounding(math.ceil)),
    "sqrt": (1, 1, _sqrt), "cbrt": (1, 1, _root), "root": (2, 2, _root),
    "exp": (1, 1, _real(math.exp)), "ln": (1, 1, _ln), "log": (1, 2, _log),
    "log2": (1, 1, lambda x: _log(x, Fraction(2))), "log10": (1, 1, _log),
    "sin": (1, 1, _real(math.sin, snap=True)), "cos": (1, 1, _real(math.cos, snap=True)),
    "tan": (1, 1, _real(math.tan, snap=True)), "atan": (1, 1, _real(math.atan)),
    "asin": (1, 1, _real(math.asin, "asin", -1, 1)), "acos": (1, 1, _real(math.acos, "acos", -1, 1)),
    "factorial": (1, 1, _factorial), "gcd": (1, 99, _whole(math.gcd, "gcd")),
    "lcm": (1, 99, _whole(math.lcm, "lcm")),
})


class _Evaluator:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def eval(self, node: object) -> Value:
        if time.monotonic() >= self.deadline:
            raise CalculatorError("took too long")
        try:
            return _check(self._eval(node))
        except UnitError as exc:
            raise CalculatorError(str(exc)) from None

    def number(self, node: object, what: str) -> Number:
        """A value that must be a plain number (a power's exponent, a function's argument)."""
        value = self.eval(node)
        if isinstance(value, Quantity):
            raise CalculatorError(f"{what} takes a plain number, not {units.describe(value.dims)}")
        return value

    def _eval(self, node: object) -> Value:
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Chain):
            acc = self.eval(node.first)
            for op, operand in node.rest:
                if op in ("+", "-") and isinstance(operand, Postfix) and operand.op == "%":
                    share = self.number(operand.operand, "a percentage") / 100          # 200 + 10% = 220
                    acc = _check(_times(acc, 1 + share if op == "+" else 1 - share))
                else:
                    acc = _check(_binary(op, acc, self.eval(operand)))
            return acc
        if isinstance(node, UnitOf):
            return _times(self.eval(node.operand), Quantity.of(Fraction(1), node.unit))
        if isinstance(node, Convert):
            value = self.eval(node.operand)
            target = self.eval(node.target)
            if not isinstance(target, Quantity) or not isinstance(value, Quantity):
                what = units.describe(target.dims) if isinstance(target, Quantity) else "a plain number"
                raise CalculatorError(f"cannot convert a plain number to {node.text} ({what})")
            unit = Unit(node.text, Fraction(target.value), target.dims)
            value.value_in(unit)  # refuses a conversion across kinds (km in hours)
            return Quantity(value.value, value.dims, (unit,))
        if isinstance(node, Unary):
            value = self.eval(node.operand)
            if isinstance(value, Quantity):
                if node.op not in ("-", "+"):
                    raise CalculatorError(f"a root takes a plain number, not {units.describe(value.dims)}")
                return Quantity(-value.value if node.op == "-" else value.value, value.dims, value.units)
            return UNARY[node.op](value)
        if isinstance(node, Pow):
            base, exponent = self.eval(node.base), self.number(node.exponent, "a power")
            if isinstance(base, Quantity):
                if not (isinstance(exponent, Fraction) and exponent.denominator == 1):
                    raise CalculatorError("a quantity with units can only be raised to a whole power")
                n = exponent.numerator
                dims = units.everyday(tuple(d * n for d in base.dims))  # first: km^1000000 is refused
                return Quantity(_power(base.value, exponent), dims, base.units)
            return _power(base, exponent)
        if isinstance(node, Postfix):
            value = self.eval(node.operand)
            if node.op == "!":
                return _factorial(self.number(node.operand, "factorial"))
            return _times(value, Fraction(1, 100))
        if isinstance(node, Call):
            args = [self.eval(arg) for arg in node.args]
            if any(isinstance(a, Quantity) for a in args):
                return _quantity_call(node.name, args)
            return FUNCTIONS[node.name][2](*args)
        raise CalculatorError("internal error: unknown expression node")


def _times(a: Value, b: Value) -> Value:
    return units.combine("*", a, b) if isinstance(a, Quantity) or isinstance(b, Quantity) else a * b


def _quantity_call(name: str, args: list[Value]) -> Value:
    """The functions that mean something for a quantity: abs, min, max, and rounding in the unit
    it is shown in (round(2 km / 3, 1) is 0.7 km)."""
    first = args[0]
    if name in ("abs", "min", "max"):
        if not all(isinstance(a, Quantity) and a.dims == first.dims for a in args):  # type: ignore[union-attr]
            raise CalculatorError(f"{name}() needs quantities of one kind")
        if name == "abs":
            return Quantity(abs(first.value), first.dims, first.units)  # type: ignore[union-attr]
        pick = min if name == "min" else max
        chosen = pick(args, key=lambda a: a.value)  # type: ignore[union-attr]
        return Quantity(chosen.value, first.dims, sum((a.units for a in args), ()))  # type: ignore[union-attr]
    if name in ("round", "floor", "ceil") and isinstance(first, Quantity) and not any(
            isinstance(a, Quantity) for a in args[1:]):
        unit = first.display_unit()
        shown = FUNCTIONS[name][2](first.value_in(unit), *args[1:])
        return Quantity.of(shown, unit)
    raise CalculatorError(f"{name}() takes plain numbers, not quantities with units")


# ------------------------------------------------------------------ display
def _digit_count(n: int) -> int:
    count = int((n.bit_length() - 1) * math.log10(2)) + 1 if n else 1
    while 10 ** count <= n:
        count += 1
    return count


def _format_int(n: int) -> str:
    sign, n = "-" if n < 0 else "", abs(n)
    count = _digit_count(n)
    if count <= MAX_DISPLAY_DIGITS:
        return sign + str(n)
    lead = str(n // 10 ** (count - 12))                 # str() of huge ints is limited by Python
    mantissa = (lead[0] + "." + lead[1:]).rstrip("0").rstrip(".")
    return f"{sign}{mantissa}e+{count - 1} (integer with {count:,} digits)"


def _approx(value: Fraction) -> str:
    with decimal.localcontext() as ctx:
        ctx.prec = 10
        quotient = decimal.Decimal(value.numerator) / value.denominator
    mantissa, e, exponent = format(quotient, "g").partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return mantissa + e + exponent


def _format(value: Number) -> str:
    if isinstance(value, float):
        text = format(value, ".12g")
        return "0" if text == "-0" else text
    num, den = value.numerator, value.denominator
    if den == 1:
        return _format_int(num)
    twos = (den & -den).bit_length() - 1
    rest, fives = den >> twos, 0
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    places = max(twos, fives)
    if rest == 1 and places <= 20:                     # terminating decimal, shown exactly
        scaled = abs(num) * 10 ** places // den
        if _digit_count(scaled) <= MAX_DISPLAY_DIGITS:
            digits = str(scaled).rjust(places + 1, "0")
            return ("-" if num < 0 else "") + digits[:-places] + "." + digits[-places:]
    if _digit_count(abs(num)) + _digit_count(den) <= 40:
        return f"{num}/{den} (≈ {_approx(value)})"
    return f"≈ {_approx(value)}"


def evaluate(expression: str, *, timeout_s: float = 1.0) -> Result:
    """Evaluate ``expression``; raise CalculatorError with a readable reason on failure."""
    if not isinstance(expression, str):
        raise CalculatorError("expression must be text")
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"expression is too long ({len(expression):,} characters; "
                              f"the limit is {MAX_LENGTH:,})")
    deadline = time.monotonic() + timeout_s
    try:
        try:
            parser = _Parser(_tokenize(expression), expression)
            tree = parser.parse()
        except CalculatorError as exc:
            raise NotReadable(str(exc)) from None
        value = _Evaluator(deadline).eval(tree)
        if isinstance(value, Quantity):
            unit = value.display_unit()
            shown = _check(value.value_in(unit))
            name = units.singular(unit.name) if shown == 1 else unit.name          # 1 second
            return Result(shown, isinstance(shown, Fraction), f"{_format(shown)} {name}", parser.labels, name)
        return Result(value, isinstance(value, Fraction), _format(value), parser.labels)
    except CalculatorError:
        raise
    except UnitError as exc:
        raise CalculatorError(str(exc)) from None
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("number too large for floating-point math") from None
    except RecursionError:
        raise CalculatorError("expression is nested too deeply") from None
    except (ValueError, ArithmeticError, TypeError) as exc:
        raise CalculatorError(f"math error: {exc}") from None
