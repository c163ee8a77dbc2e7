"""Validation of commands: untrusted data in, typed commands out.

A command is a JSON object with an ``action`` (``submit``, ``cancel`` or
``amend``), a ``client`` and a ``request`` (both non-empty printable strings;
``request`` is for replication's retry dedupe and unused here).  Every field
is type-checked before it is used, unknown fields are refused, and every
failure raises :class:`ExchangeError` with code ``ERR_INVALID_ORDER``, so the
parser never raises anything else whatever it is given.  State-dependent
checks (unknown order, owner, closed) belong to the exchange.
"""
from __future__ import annotations

import re
import sys
from functools import lru_cache
from typing import AbstractSet, Callable, NamedTuple, NoReturn, Optional, Union

from .errors import INVALID_ORDER, ExchangeError
from .numbers import parse_ticks
from .order import BUY, FOK, GTC, IOC, LIMIT, MARKET, SELL, Order

MAX_CLIENT = 64
MAX_REQUEST = 128
MAX_ORDER_ID = 20
SYMBOL = re.compile(r"[A-Z0-9]{2,12}")

_COMMON = frozenset({"action", "client", "request"})
_SUBMIT_REQUIRED = _COMMON | {"symbol", "side", "type", "quantity"}
_SUBMIT_ALLOWED = _SUBMIT_REQUIRED | {"price", "tif", "post_only"}
_CANCEL_REQUIRED = _COMMON | {"order_id"}
_AMEND_ALLOWED = _CANCEL_REQUIRED | {"price", "quantity"}
SIDES = {"buy": BUY, "sell": SELL}
TIFS = {"gtc": GTC, "ioc": IOC, "fok": FOK}


class Cancel(NamedTuple):
    """Cancel the unfilled rest of one of the client's orders."""

    client: str
    order_id: str


class Amend(NamedTuple):
    """New total ``quantity`` and/or new ``price`` (``None`` = unchanged)."""

    client: str
    order_id: str
    price: Optional[int]
    quantity: Optional[int]


Command = Union[Order, Cancel, Amend]


def parse_command(command: object) -> Command:
    """The typed form of ``command``, or :class:`ExchangeError` saying why not.

    A submit becomes a new :class:`Order` without an id: the exchange numbers
    it once it is accepted.
    """
    if type(command) is not dict:
        _invalid("command must be a JSON object")
    action = command.get("action")
    parser: Optional[Callable[[dict], Command]] = _PARSERS.get(action) if type(action) is str else None
    if parser is None:
        _invalid("action must be one of submit, cancel, amend")
    return parser(command)


def canonical_command(command: object) -> dict:
    """A checked copy of ``command`` that is safe to replicate, or ExchangeError.

    The copy holds exactly the fields :func:`parse_command` accepted, and
    every value is a bounded printable string, a bool or None: whatever a
    client sent, the copy encodes as JSON and parses again on every peer.
    This is the one check a client command passes before it enters the log.
    """
    parse_command(command)
    assert type(command) is dict  # parse_command refuses anything else
    return dict(command)


def _submit(command: dict) -> Order:
    _check_fields(command, _SUBMIT_REQUIRED, _SUBMIT_ALLOWED)
    client = _client(command)
    symbol = command["symbol"]
    if not is_symbol(symbol):
        _invalid("symbol must match [A-Z0-9]{2,12}")
    text = command["side"]
    side = SIDES.get(text) if type(text) is str else None  # the constant: sides compare by identity
    if side is None:
        _invalid("side must be buy or sell")
    kind = command["type"]
    if type(kind) is not str:
        _invalid("type must be limit or market")
    quantity = parse_ticks(command["quantity"], "quantity")
    post_only = command.get("post_only", False)
    if type(post_only) is not bool:
        _invalid("post_only must be true or false")
    if kind == LIMIT:
        price = command.get("price")
        if price is None:
            _invalid("a limit order needs a price")
        price = parse_ticks(price, "price")
        tif = _choice(command, "tif", TIFS, GTC)
        if post_only and tif is not GTC:
            _invalid("post_only needs tif gtc")
    elif kind == MARKET:
        if command.get("price") is not None:
            _invalid("a market order takes no price")
        tif = _choice(command, "tif", TIFS, IOC)
        if tif is GTC:
            _invalid("a market order never rests: tif must be ioc or fok")
        if post_only:
            _invalid("a market order cannot be post_only")
        price = None
    else:
        _invalid("type must be limit or market")
    return Order("", client, symbol, side, price, quantity, tif, post_only)


def _cancel(command: dict) -> Cancel:
    _check_fields(command, _CANCEL_REQUIRED, _CANCEL_REQUIRED)
    return Cancel(_client(command), _order_id(command))


def _amend(command: dict) -> Amend:
    _check_fields(command, _CANCEL_REQUIRED, _AMEND_ALLOWED)
    client = _client(command)
    order_id = _order_id(command)
    price = command.get("price")
    quantity = command.get("quantity")
    if price is None and quantity is None:
        _invalid("amend needs a new price or quantity")
    return Amend(
        client,
        order_id,
        None if price is None else parse_ticks(price, "price"),
        None if quantity is None else parse_ticks(quantity, "quantity"),
    )


_PARSERS: dict[str, Callable[[dict], Command]] = {"submit": _submit, "cancel": _cancel, "amend": _amend}


def _check_fields(command: dict, required: AbstractSet[str], allowed: AbstractSet[str]) -> None:
    keys = command.keys()
    if not keys <= allowed:
        unknown = sorted(repr(key)[:40] for key in keys - allowed if type(key) is str)
        _invalid(f"unknown fields: {', '.join(unknown)}" if unknown else "field names must be strings")
    if not required <= keys:
        _invalid(f"missing fields: {', '.join(sorted(required - keys))}")


def _client(command: dict) -> str:
    """The client (interned), after checking it and the request id."""
    if _not_text(command["request"], MAX_REQUEST):
        _invalid(f"request must be a printable string of 1 to {MAX_REQUEST} characters")
    client = command["client"]
    name = _client_name(client) if type(client) is str else None
    if name is None:
        _invalid(f"client must be a printable string of 1 to {MAX_CLIENT} characters")
    return name


@lru_cache(maxsize=1 << 14)
def _client_name(text: str) -> Optional[str]:
    """``text`` interned if it is a valid client name, else None; cached: clients repeat."""
    return None if _not_text(text, MAX_CLIENT) else sys.intern(text)


def _order_id(command: dict) -> str:
    order_id = command["order_id"]
    if _not_text(order_id, MAX_ORDER_ID):
        _invalid(f"order_id must be a printable string of 1 to {MAX_ORDER_ID} characters")
    return order_id


def _not_text(value: object, longest: int) -> bool:
    return type(value) is not str or not 0 < len(value) <= longest or not value.isprintable()


def is_symbol(value: object) -> bool:
    """Is ``value`` a string matching ``[A-Z0-9]{2,12}``?"""
    return type(value) is str and len(value) <= 12 and _matches_symbol(value)


@lru_cache(maxsize=1024)
def _matches_symbol(text: str) -> bool:
    return SYMBOL.fullmatch(text) is not None  # cached: symbols repeat


def _choice(command: dict, field: str, choices: dict, default: object) -> str:
    value = command.get(field, default)
    if type(value) is not str or value not in choices:
        _invalid(f"{field} must be one of {', '.join(choices)}")
    return choices[value]


def _invalid(reason: str) -> NoReturn:
    raise ExchangeError(INVALID_ORDER, reason)
