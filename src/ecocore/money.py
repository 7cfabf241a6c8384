"""Money and hours as exact integers: micro-dollars and micro-hours.

JSON carries money as a decimal string with 6 places ("29.940000") and hours as
a number or decimal string; nothing here ever goes through a float.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MICRO = 1_000_000
# No amount of dollars or hours ecolink deals in comes near 10**30; past that (or
# below 10**-30) a value is refused before any arithmetic, which could overflow the
# decimal context ("1e999999" * 10**6) or build an integer of a million digits.
MAX_MAGNITUDE = 30


class MoneyError(ValueError):
    pass


def parse_decimal(value: object) -> Decimal:
    """Parse a JSON number or decimal string exactly (floats via their repr)."""
    if isinstance(value, bool):
        raise MoneyError("not a number")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise MoneyError("not a finite number")
        return Decimal(repr(value))
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 40:
            raise MoneyError("not a decimal number")
        try:
            d = Decimal(text)
        except InvalidOperation as exc:
            raise MoneyError("not a decimal number") from exc
        if not d.is_finite():
            raise MoneyError("not a finite number")
        return d
    raise MoneyError("not a number")


def _in_range(d: Decimal) -> Decimal:
    if d and not -MAX_MAGNITUDE <= d.adjusted() <= MAX_MAGNITUDE:
        raise MoneyError("out of range")
    return d


def _to_micros(value: object) -> int:
    d = _in_range(parse_decimal(value))
    try:
        micros = d * MICRO
        if micros != micros.to_integral_value():
            raise MoneyError("more than 6 decimal places")
        return int(micros)
    except ArithmeticError:  # decimal's Overflow and friends
        raise MoneyError("out of range") from None


def usd_to_micros(value: object) -> int:
    """Dollars (number or string) to integer micro-dollars; more than 6 places is an error."""
    return _to_micros(value)


def hours_to_micro_hours(value: object) -> int:
    """Hours (number or string) to integer micro-hours; finer than a micro-hour is an error."""
    return _to_micros(value)


def format_usd(micros: int) -> str:
    """Integer micro-dollars to the API's string form: "-12.500000"."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICRO)
    return f"{sign}{whole}.{frac:06d}"


def format_hours(micro_hours: int) -> str:
    d = Decimal(micro_hours) / MICRO
    return format(d.normalize(), "f") if d else "0"


def mul_div_ceil(a: int, b: int, div: int) -> int:
    """ceil(a*b/div) for non-negative integers (holds round up)."""
    return -((-(a * b)) // div)
