"""Units for the calculator: quantities such as ``4 weeks``, ``7.2 km + 350 m`` or
``88 km per hour * 3.5 hours``, and conversions such as ``5 weeks in minutes``.

Asked "how many minutes are in 5 weeks?", the embedded model wrote the units into the expression
("4 weeks * 7 days", "3 hours and 40 minutes", "7.2 kilometres + 350 metres") and the calculator
refused every one (issue 13, item 2). A calculator people use reads them.

A :class:`Quantity` is an exact value in base units (metre, gram, second, byte) with the powers of
those dimensions, and the units it was written in, which choose how it is shown: in the target
unit of ``in``/``to``, else per dimension in the smallest unit the expression used ("3.2 kg + 450 g"
is shown as 3650 grams). Every factor is exact (an inch is 0.0254 m by definition); a year is 365
days, and a month has no fixed length, so it is refused with what to write instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Union

__all__ = ["Quantity", "Unit", "UNITS", "UnitError", "combine", "describe", "everyday", "lookup", "square", "cubic"]

Number = Union[Fraction, float]
DIMENSIONS = ("length", "mass", "time", "data")
Dims = tuple[int, int, int, int]
NONE: Dims = (0, 0, 0, 0)
MAX_POWER = 3  # cubic metres; per second squared is -2


class UnitError(ValueError):
    """A unit used in a way that has no meaning (adding metres to seconds); the engine turns it into
    a CalculatorError."""


@dataclass(frozen=True)
class Unit:
    name: str          # as shown: "minutes", "km/hour"
    factor: Fraction   # how many base units one of it is
    dims: Dims

    def __mul__(self, other: "Unit") -> "Unit":
        return Unit(f"{self.name}*{other.name}", self.factor * other.factor, _add(self.dims, other.dims))

    def __truediv__(self, other: "Unit") -> "Unit":
        return Unit(f"{self.name}/{singular(other.name)}", self.factor / other.factor, _add(self.dims, other.dims, -1))

    def power(self, n: int) -> "Unit":
        """The unit to the ``n``-th power: "square metres", "cubic centimetres", "seconds^2"."""
        if abs(n) > MAX_POWER:
            raise UnitError(f"units to a power above {MAX_POWER} have no meaning here")
        if n == 1:
            return self
        shape = {2: square, 3: cubic}.get(n)
        shaped = shape(self) if shape is not None else None
        return shaped or Unit(f"{self.name}^{n}", self.factor ** n, tuple(d * n for d in self.dims))  # type: ignore[arg-type]


_SINGULAR = {"feet": "foot", "inches": "inch"}


def singular(name: str) -> str:
    """"hour" for "hours", as after a slash (km/hour)."""
    if name in _SINGULAR:
        return _SINGULAR[name]
    return name[:-1] if name.endswith("s") and name.islower() and "/" not in name and name != "mph" else name


def _add(a: Dims, b: Dims, sign: int = 1) -> Dims:
    return tuple(x + sign * y for x, y in zip(a, b))  # type: ignore[return-value]


def _dims(**powers: int) -> Dims:
    return tuple(powers.get(d, 0) for d in DIMENSIONS)  # type: ignore[return-value]


F = Fraction
_L, _M, _T, _D = _dims(length=1), _dims(mass=1), _dims(time=1), _dims(data=1)
_TABLE: tuple[tuple[str, Fraction, Dims, tuple[str, ...]], ...] = (
    # shown name, factor to the base unit, dimension, the spellings read (lower case)
    ("milliseconds", F(1, 1000), _T, ("ms", "millisecond", "milliseconds", "msec")),
    ("seconds", F(1), _T, ("s", "sec", "secs", "second", "seconds")),
    ("minutes", F(60), _T, ("min", "mins", "minute", "minutes")),
    ("hours", F(3600), _T, ("h", "hr", "hrs", "hour", "hours")),
    ("days", F(86400), _T, ("day", "days")),
    ("weeks", F(7 * 86400), _T, ("wk", "wks", "week", "weeks")),
    ("fortnights", F(14 * 86400), _T, ("fortnight", "fortnights")),
    ("years", F(365 * 86400), _T, ("yr", "yrs", "year", "years")),
    ("millimetres", F(1, 1000), _L, ("mm", "millimetre", "millimetres", "millimeter", "millimeters")),
    ("centimetres", F(1, 100), _L, ("cm", "centimetre", "centimetres", "centimeter", "centimeters")),
    ("metres", F(1), _L, ("m", "metre", "metres", "meter", "meters")),
    ("kilometres", F(1000), _L, ("km", "kms", "kilometre", "kilometres", "kilometer", "kilometers")),
    ("inches", F(254, 10000), _L, ("inch", "inches")),
    ("feet", F(3048, 10000), _L, ("ft", "foot", "feet")),
    ("yards", F(9144, 10000), _L, ("yd", "yds", "yard", "yards")),
    ("miles", F(1609344, 1000), _L, ("mi", "mile", "miles")),
    ("milligrams", F(1, 1000), _M, ("mg", "milligram", "milligrams")),
    ("grams", F(1), _M, ("g", "gram", "grams", "gramme", "grammes")),
    ("kilograms", F(1000), _M, ("kg", "kgs", "kilo", "kilos", "kilogram", "kilograms")),
    ("tonnes", F(1000000), _M, ("tonne", "tonnes")),
    ("ounces", F(28349523125, 10 ** 9), _M, ("oz", "ounce", "ounces")),
    ("pounds", F(45359237, 10 ** 5), _M, ("lb", "lbs", "pound", "pounds")),
    ("millilitres", F(1, 10 ** 6), _dims(length=3), ("ml", "millilitre", "millilitres", "milliliter", "milliliters")),
    ("litres", F(1, 1000), _dims(length=3), ("l", "litre", "litres", "liter", "liters")),
    ("gallons", F(3785411784, 10 ** 12), _dims(length=3), ("gal", "gallon", "gallons")),
    ("hectares", F(10000), _dims(length=2), ("ha", "hectare", "hectares")),
    ("acres", F(40468564224, 10 ** 7), _dims(length=2), ("acre", "acres")),
    ("bytes", F(1), _D, ("byte", "bytes")),
    ("kilobytes", F(1000), _D, ("kb", "kilobyte", "kilobytes")),
    ("megabytes", F(10 ** 6), _D, ("mb", "megabyte", "megabytes")),
    ("gigabytes", F(10 ** 9), _D, ("gb", "gigabyte", "gigabytes")),
    ("terabytes", F(10 ** 12), _D, ("tb", "terabyte", "terabytes")),
    ("KiB", F(1024), _D, ("kib", "kibibyte", "kibibytes")),
    ("MiB", F(1024 ** 2), _D, ("mib", "mebibyte", "mebibytes")),
    ("GiB", F(1024 ** 3), _D, ("gib", "gibibyte", "gibibytes")),
    ("mph", F(1609344, 1000 * 3600), _dims(length=1, time=-1), ("mph",)),
    ("km/hour", F(1000, 3600), _dims(length=1, time=-1), ("kph", "kmh")),
)
UNITS: MappingProxyType[str, Unit] = MappingProxyType({
    spelling: Unit(name, factor, dims) for name, factor, dims, spellings in _TABLE for spelling in spellings})
# Words with no fixed size: refused with what to write instead (never read as a label).
VAGUE = MappingProxyType({
    "month": "a month has no fixed length: write it in days (30 or 31) or weeks",
    "months": "a month has no fixed length: write it in days (30 or 31) or weeks",
    "celsius": "temperatures are not converted: write the formula, e.g. (f - 32) * 5/9",
    "fahrenheit": "temperatures are not converted: write the formula, e.g. c * 9/5 + 32",
})


def lookup(word: str) -> Unit | None:
    """The unit ``word`` spells. A one-letter abbreviation counts only in lower case ("m" is
    metres, "M" is a million) except "L" for litres."""
    if len(word) == 1 and word not in ("L",) and not word.islower():
        return None
    return UNITS.get(word.lower())


def square(unit: Unit) -> Unit | None:
    """"square metres": a length unit squared (None for any other unit)."""
    return Unit(f"square {unit.name}", unit.factor ** 2, _dims(length=2)) if unit.dims == _L else None


def cubic(unit: Unit) -> Unit | None:
    return Unit(f"cubic {unit.name}", unit.factor ** 3, _dims(length=3)) if unit.dims == _L else None


@dataclass(frozen=True)
class Quantity:
    """``value`` base units of dimension ``dims``; ``units`` are those it was written in."""

    value: Number
    dims: Dims
    units: tuple[Unit, ...] = ()

    @staticmethod
    def of(value: Number, unit: Unit) -> "Quantity":
        return Quantity(value * unit.factor if isinstance(value, Fraction) else value * float(unit.factor),
                        unit.dims, (unit,))

    def plain(self) -> "Number | Quantity":
        """A plain number when no dimension is left (5 km / 500 m = 10)."""
        return self.value if self.dims == NONE else self

    def display_unit(self) -> Unit:
        """How it is shown without a target: a unit it was written in with exactly its dimension
        (the smallest), else one per dimension (the smallest written of each, else the base)."""
        exact = [u for u in self.units if u.dims == self.dims]
        if exact:
            return min(exact, key=lambda u: u.factor)
        above: list[Unit] = []
        below: list[Unit] = []
        for i, power in enumerate(self.dims):
            if power == 0:
                continue
            want = _dims(**{DIMENSIONS[i]: abs(power)})
            written = [u for u in self.units if u.dims == want]
            pure = [u for u in self.units if u.dims == _dims(**{DIMENSIONS[i]: 1})]
            base = min(pure, key=lambda u: u.factor) if pure else UNITS[("m", "g", "s", "byte")[i]]
            part = min(written, key=lambda u: u.factor) if written else base.power(abs(power))
            (above if power > 0 else below).append(part)
        shown = above[0] if above else Unit("1", F(1), NONE)
        for part in above[1:]:
            shown = shown * part
        for part in below:
            shown = shown / part
        return shown

    def value_in(self, unit: Unit) -> Number:
        if unit.dims != self.dims:
            raise UnitError(f"cannot convert {describe(self.dims)} to {unit.name} ({describe(unit.dims)})")
        return self.value / unit.factor if isinstance(self.value, Fraction) else self.value / float(unit.factor)


_KINDS = {(1, 0, 0, 0): "a length", (2, 0, 0, 0): "an area", (3, 0, 0, 0): "a volume", (0, 1, 0, 0): "a mass",
          (0, 0, 1, 0): "a time", (0, 0, 0, 1): "an amount of data", (1, 0, -1, 0): "a speed",
          (0, 0, -1, 0): "a rate"}


def describe(dims: Dims) -> str:
    """"a length", "a volume", "a speed", else the powers: "mass/length^3"."""
    if dims == NONE:
        return "a plain number"
    if dims in _KINDS:
        return _KINDS[dims]
    up = [DIMENSIONS[i] + (f"^{p}" if p > 1 else "") for i, p in enumerate(dims) if p > 0]
    down = [DIMENSIONS[i] + (f"^{-p}" if p < -1 else "") for i, p in enumerate(dims) if p < 0]
    text = "*".join(up) or "1"
    return f"{text}/{'*'.join(down)}" if down else text


def everyday(dims: Dims) -> Dims:
    """Refuse what has no everyday meaning: a time, mass or amount of data times another (a
    model's "4 weeks * 7 days" for a conversion), or any unit past the third power (which also
    keeps "(2 km)^1000000" from computing a million-digit unit); areas, volumes and rates are fine."""
    if any(abs(power) > MAX_POWER for power in dims):
        raise UnitError(f"units to a power above {MAX_POWER} have no meaning here")
    for i, power in enumerate(dims[1:], start=1):
        if power > 1:
            raise UnitError(f"that multiplies {describe(_dims(**{DIMENSIONS[i]: 1}))} by {describe(_dims(**{DIMENSIONS[i]: 1}))}; "
                            "to convert a quantity, write 'N weeks in days'")
    return dims


def combine(op: str, a: "Number | Quantity", b: "Number | Quantity") -> "Number | Quantity":
    """``a op b`` where at least one side is a Quantity; ``op`` is + - * / (the engine's values
    otherwise)."""
    qa = a if isinstance(a, Quantity) else Quantity(a, NONE)
    qb = b if isinstance(b, Quantity) else Quantity(b, NONE)
    units = qa.units + qb.units
    if op in ("+", "-"):
        if qa.dims != qb.dims:
            bare = " (give the number its unit)" if NONE in (qa.dims, qb.dims) else ""
            raise UnitError(f"cannot {'add' if op == '+' else 'subtract'} {describe(qb.dims)} "
                            f"{'to' if op == '+' else 'from'} {describe(qa.dims)}{bare}")
        value = qa.value + qb.value if op == "+" else qa.value - qb.value
        return Quantity(value, qa.dims, units).plain()
    if op in ("*", "of"):
        return Quantity(qa.value * qb.value, everyday(_add(qa.dims, qb.dims)), units).plain()
    if op == "/":
        if qb.value == 0:
            raise ZeroDivisionError
        return Quantity(qa.value / qb.value, everyday(_add(qa.dims, qb.dims, -1)), units).plain()
    raise UnitError(f"'{op}' needs plain numbers, not quantities with units")
