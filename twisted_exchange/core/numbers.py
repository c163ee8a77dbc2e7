"""Exact decimal amounts as integer ticks.

Prices and quantities cross the wire as plain decimal strings (``"100.5"``)
and live in memory as integers scaled by 10^8 ("ticks"), so arithmetic is
exact and as fast as Python integers get.  Accepted input: ASCII digits with
an optional fraction of 1 to 8 digits (no sign, exponent, spaces, NaN or
infinity), strictly positive and at most 10^12.  Output is canonical: no
exponent, no trailing zeros, no trailing dot (``"100.5"``, ``"2"``).
"""
from __future__ import annotations

from typing import Final

from .errors import INVALID_ORDER, ExchangeError
from .memo import remember

DECIMALS: Final = 8
SCALE: Final = 10**DECIMALS
MAX_UNITS: Final = 10**12
MAX_TICKS: Final = MAX_UNITS * SCALE
_MAX_TEXT: Final = 32
_FRACTION_SCALE: Final = [10 ** (DECIMALS - digits) for digits in range(DECIMALS + 1)]
# Caches (see .memo); constants are Final, which mypyc compiles to C constants, not module lookups.
_TICKS: Final[dict[str, int]] = {}  # valid text -> ticks
_TEXTS: Final[dict[int, str]] = {}  # ticks -> canonical text


def parse_ticks(value: object, field: str) -> int:
    """The ticks of a decimal string, or :class:`ExchangeError` saying why not."""
    if type(value) is not str:
        raise ExchangeError(INVALID_ORDER, f"{field} must be a decimal string")
    ticks = _TICKS.get(value)
    if ticks is not None:
        return ticks
    if len(value) > _MAX_TEXT:
        raise ExchangeError(INVALID_ORDER, f"{field} is too long")
    try:
        return remember(_TICKS, value, _ticks(value))
    except ValueError as error:
        raise ExchangeError(INVALID_ORDER, f"{field} {error}") from None


def _ticks(value: str) -> int:
    whole, dot, fraction = value.partition(".")
    if not (
        value.isascii()
        and whole.isdigit()
        and (not dot or (len(fraction) <= DECIMALS and fraction.isdigit()))
    ):
        raise ValueError(f"must be a plain decimal with at most {DECIMALS} decimal places, got {value!r}")
    ticks = int(whole) * SCALE
    if dot:
        ticks += int(fraction) * _FRACTION_SCALE[len(fraction)]
    if not 0 < ticks <= MAX_TICKS:
        raise ValueError(f"must be greater than 0 and at most {MAX_UNITS}")
    return ticks


def format_ticks(ticks: int) -> str:
    """The canonical decimal string of ``ticks`` (``150000000`` -> ``"1.5"``)."""
    if not ticks:
        return "0"  # the commonest amount (nothing filled, nothing cancelled), and no lookup
    text = _TEXTS.get(ticks)
    if text is not None:
        return text
    whole, fraction = divmod(ticks, SCALE)
    return remember(_TEXTS, ticks, f"{whole}.{fraction:08d}".rstrip("0") if fraction else str(whole))
