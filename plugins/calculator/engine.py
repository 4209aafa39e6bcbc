"""Safe, exact arithmetic for the calculator plugin (standard library only).

The input is never given to eval/exec/compile: a tokenizer turns it into
tokens, a recursive-descent parser builds a small tree and an evaluator walks
it.  Numbers stay exact ``Fraction`` values; only irrational functions
(sqrt(2), sin, ln, pi, ...) give floats.

Grammar, lowest to highest precedence::

    expr    := term (('+' | '-') term)*            a + b%  means a * (1 + b/100)
    term    := unary (('*' | '/' | '//' | '%' | 'mod' | 'of') unary)*
    unary   := ('-' | '+' | '√' | '∛') unary | power
    power   := postfix ('^' unary)?                 right-associative; -2^2 = -4
    postfix := primary ('!' | '%')*                 5! = 120, 50% = 0.5
    primary := NUMBER | CONSTANT | NAME '(' [expr (',' expr)*] ')' | '(' expr ')'

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

__all__ = ["CalculatorError", "NotReadable", "Result", "evaluate"]

Number = Union[Fraction, float]

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
WORD_OPS = MappingProxyType({"x": "*", "times": "*", "multiplied": "*", "plus": "+",
                             "minus": "-", "over": "/", "divided": "/", "mod": "mod", "of": "of"})
SYMBOL_NAMES = MappingProxyType({"π": "pi", "τ": "tau"})
CONSTANTS = MappingProxyType({"pi": math.pi, "e": math.e, "tau": math.tau})


class CalculatorError(ValueError):
    """The expression could not be evaluated; the message says why, in one line."""


class NotReadable(CalculatorError):
    """The expression is not written in the grammar (as opposed to a value it cannot compute,
    such as 1/0): the device adds how to write it."""


@dataclass(frozen=True)
class Result:
    value: Number
    exact: bool
    text: str


class Token(NamedTuple):
    kind: str        # 'num', 'name', 'op', '(', ')', ',' or 'end'
    value: object    # Fraction for 'num', lower-case name, canonical operator
    pos: int         # 0-based index into the expression
    text: str        # as written


# Tree nodes. Chain is a flat left-associative run (a + b - c), so long sums stay shallow.
Num = NamedTuple("Num", [("value", object)])
Chain = NamedTuple("Chain", [("first", object), ("rest", tuple)])   # rest: ((op, node), ...)
Unary = NamedTuple("Unary", [("op", str), ("operand", object)])
Pow = NamedTuple("Pow", [("base", object), ("exponent", object)])
Postfix = NamedTuple("Postfix", [("op", str), ("operand", object)])
Call = NamedTuple("Call", [("name", str), ("args", tuple)])


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
            kind = "op" if word in WORD_OPS else "name"
            tokens.append(Token(kind, WORD_OPS.get(word, word), start, text[start:i]))
            continue
        if ch in SYMBOL_NAMES:
            tokens.append(Token("name", SYMBOL_NAMES[ch], start, ch))
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


# ------------------------------------------------------------------ parser
def _describe(tok: Token) -> str:
    return "end of expression" if tok.kind == "end" else (
        f"number {tok.text}" if tok.kind == "num" else repr(tok.text))


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens, self.i, self.depth = tokens, 0, 0

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
        return self.chain(self.unary, ("*", "/", "//", "%", "mod", "of"))

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
        while self.at_op("!") or (self.at_op("%") and not self.starts_operand(self.peek(1))):
            self.enter()
            node = Postfix(self.next().value, node)
        self.depth = depth
        return node

    @staticmethod
    def starts_operand(tok: Token) -> bool:   # decides between "17 % 5" (modulo) and "5 %" (percent)
        return tok.kind in ("num", "name", "(") or (tok.kind == "op" and tok.value in ("√", "∛"))

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


# ------------------------------------------------------------------ arithmetic
def _too_large(log10_digits: float) -> CalculatorError:
    about = f"{round(10 ** log10_digits):,}" if log10_digits < 6 else f"10^{int(log10_digits)}"
    return CalculatorError(f"result too large (about {about} digits; "
                           f"the limit is {MAX_DIGITS:,} digits)")


def _check(value: object) -> Number:
    """Normalise int -> Fraction and refuse non-finite floats and oversized fractions."""
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


def _binary(op: str, a: Number, b: Number) -> Number:
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

    def eval(self, node: object) -> Number:
        if time.monotonic() >= self.deadline:
            raise CalculatorError("took too long")
        return _check(self._eval(node))

    def _eval(self, node: object) -> Number:
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Chain):
            acc = self.eval(node.first)
            for op, operand in node.rest:
                if op in ("+", "-") and isinstance(operand, Postfix) and operand.op == "%":
                    share = self.eval(operand.operand) / 100          # 200 + 10% = 220
                    acc = _check(acc * (1 + share if op == "+" else 1 - share))
                else:
                    acc = _check(_binary(op, acc, self.eval(operand)))
            return acc
        if isinstance(node, Unary):
            return UNARY[node.op](self.eval(node.operand))
        if isinstance(node, Pow):
            return _power(self.eval(node.base), self.eval(node.exponent))
        if isinstance(node, Postfix):
            value = self.eval(node.operand)
            return _factorial(value) if node.op == "!" else value / 100
        if isinstance(node, Call):
            return FUNCTIONS[node.name][2](*(self.eval(arg) for arg in node.args))
        raise CalculatorError("internal error: unknown expression node")


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
            tree = _Parser(_tokenize(expression)).parse()
        except CalculatorError as exc:
            raise NotReadable(str(exc)) from None
        value = _Evaluator(deadline).eval(tree)
        return Result(value, isinstance(value, Fraction), _format(value))
    except CalculatorError:
        raise
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("number too large for floating-point math") from None
    except RecursionError:
        raise CalculatorError("expression is nested too deeply") from None
    except (ValueError, ArithmeticError, TypeError) as exc:
        raise CalculatorError(f"math error: {exc}") from None
