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
from typing import AbstractSet, Final, NoReturn, Optional, Union

from .errors import INVALID_ORDER, ExchangeError
from .memo import remember
from .numbers import parse_ticks
from .order import BUY, FOK, GTC, IOC, LIMIT, MARKET, SELL, Order

MAX_CLIENT: Final = 64
MAX_REQUEST: Final = 128
MAX_ORDER_ID: Final = 20
SYMBOL: Final = re.compile(r"[A-Z0-9]{2,12}")

_COMMON: Final = frozenset({"action", "client", "request"})
_SUBMIT_REQUIRED: Final = _COMMON | {"symbol", "side", "type", "quantity"}
_SUBMIT_ALLOWED: Final = _SUBMIT_REQUIRED | {"price", "tif", "post_only"}
_CANCEL_REQUIRED: Final = _COMMON | {"order_id"}
_AMEND_ALLOWED: Final = _CANCEL_REQUIRED | {"price", "quantity"}
SIDES: Final = {"buy": BUY, "sell": SELL}
TIFS: Final = {"gtc": GTC, "ioc": IOC, "fok": FOK}


class Cancel:
    """Cancel the unfilled rest of one of the client's orders.

    Plain classes rather than named tuples: compiled, their fields are C
    struct members, a named tuple's are looked up by name.
    """

    __slots__ = ("client", "order_id")

    def __init__(self, client: str, order_id: str) -> None:
        self.client = client
        self.order_id = order_id


class Amend:
    """New total ``quantity`` and/or new ``price`` (``None`` = unchanged)."""

    __slots__ = ("client", "order_id", "price", "quantity")

    def __init__(self, client: str, order_id: str, price: Optional[int], quantity: Optional[int]) -> None:
        self.client = client
        self.order_id = order_id
        self.price = price
        self.quantity = quantity


Command = Union[Order, Cancel, Amend]


def parse_command(command: object) -> Command:
    """The typed form of ``command``, or :class:`ExchangeError` saying why not.

    A submit becomes a new :class:`Order` without an id (0): the exchange
    numbers it once it is accepted.
    """
    if type(command) is not dict:
        _invalid("command must be a JSON object")
    action = command.get("action")
    if type(action) is str:
        if action == "submit":
            return _submit(command)
        if action == "cancel":
            return _cancel(command)
        if action == "amend":
            return _amend(command)
    _invalid("action must be one of submit, cancel, amend")


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
    request = command.get("request", _MISSING)
    client = command.get("client", _MISSING)
    symbol = command.get("symbol", _MISSING)
    side_text = command.get("side", _MISSING)
    kind = command.get("type", _MISSING)
    quantity_text = command.get("quantity", _MISSING)
    price_text = command.get("price", _MISSING)
    tif_text = command.get("tif", _MISSING)
    post_only = command.get("post_only", _MISSING)
    found = len(_SUBMIT_REQUIRED) + (price_text is not _MISSING) + (tif_text is not _MISSING) + (post_only is not _MISSING)
    if (len(command) != found or request is _MISSING or client is _MISSING or symbol is _MISSING
            or side_text is _MISSING or kind is _MISSING or quantity_text is _MISSING):
        _check_fields(command, _SUBMIT_REQUIRED, _SUBMIT_ALLOWED)
    name = _client(request, client)
    symbol_name = _symbol(symbol)
    if symbol_name is None:
        _invalid("symbol must match [A-Z0-9]{2,12}")
    side = SIDES.get(side_text) if type(side_text) is str else None  # the constant: sides compare by identity
    if side is None:
        _invalid("side must be buy or sell")
    if type(kind) is not str:
        _invalid("type must be limit or market")
    quantity = parse_ticks(quantity_text, "quantity")
    if post_only is _MISSING:
        post_only = False
    elif type(post_only) is not bool:
        _invalid("post_only must be true or false")
    price: Optional[int]
    if kind == LIMIT:
        if price_text is _MISSING or price_text is None:
            _invalid("a limit order needs a price")
        price = parse_ticks(price_text, "price")
        tif = _tif(tif_text, GTC)
        if post_only and tif is not GTC:
            _invalid("post_only needs tif gtc")
    elif kind == MARKET:
        if price_text is not _MISSING and price_text is not None:
            _invalid("a market order takes no price")
        tif = _tif(tif_text, IOC)
        if tif is GTC:
            _invalid("a market order never rests: tif must be ioc or fok")
        if post_only:
            _invalid("a market order cannot be post_only")
        price = None
    else:
        _invalid("type must be limit or market")
    return Order(0, name, symbol_name, side, price, quantity, tif, post_only)


def _cancel(command: dict) -> Cancel:
    request = command.get("request", _MISSING)
    client = command.get("client", _MISSING)
    order_id = command.get("order_id", _MISSING)
    if len(command) != len(_CANCEL_REQUIRED) or request is _MISSING or client is _MISSING or order_id is _MISSING:
        _check_fields(command, _CANCEL_REQUIRED, _CANCEL_REQUIRED)
    return Cancel(_client(request, client), _order_id(order_id))


def _amend(command: dict) -> Amend:
    _check_fields(command, _CANCEL_REQUIRED, _AMEND_ALLOWED)
    client = _client(command["request"], command["client"])
    order_id = _order_id(command["order_id"])
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


#: What ``dict.get`` returns for an absent field: the common case checks the
#: fields it fetches anyway, and only a command with a field too many or too
#: few pays for :func:`_check_fields`, which says which.
_MISSING: Final = object()


def _check_fields(command: dict, required: AbstractSet[str], allowed: AbstractSet[str]) -> None:
    keys = command.keys()
    if not keys <= allowed:
        unknown = sorted(repr(key)[:40] for key in keys - allowed if type(key) is str)
        _invalid(f"unknown fields: {', '.join(unknown)}" if unknown else "field names must be strings")
    if not required <= keys:
        _invalid(f"missing fields: {', '.join(sorted(required - keys))}")


def _client(request: object, client: object) -> str:
    """The client (interned), after checking it and the request id."""
    if _not_text(request, MAX_REQUEST):
        _invalid(f"request must be a printable string of 1 to {MAX_REQUEST} characters")
    if type(client) is not str:
        _invalid(f"client must be a printable string of 1 to {MAX_CLIENT} characters")
    name = _CLIENTS.get(client)
    if name is None:
        if _not_text(client, MAX_CLIENT):
            _invalid(f"client must be a printable string of 1 to {MAX_CLIENT} characters")
        name = remember(_CLIENTS, client, sys.intern(client))
    return name


_CLIENTS: Final[dict[str, str]] = {}  # valid client names seen, interned (see .memo)


def _order_id(order_id: object) -> str:
    if type(order_id) is not str or _not_text(order_id, MAX_ORDER_ID):
        _invalid(f"order_id must be a printable string of 1 to {MAX_ORDER_ID} characters")
    return order_id


def _not_text(value: object, longest: int) -> bool:
    return type(value) is not str or not 0 < len(value) <= longest or not value.isprintable()


def is_symbol(value: object) -> bool:
    """Is ``value`` a string matching ``[A-Z0-9]{2,12}``?"""
    return _symbol(value) is not None


def _symbol(value: object) -> Optional[str]:
    """``value`` interned if it is a symbol, else None.

    Every order holds its symbol, and a command parsed from JSON brings a
    new string each time: interned, a million resting orders share one
    instead of holding 56 bytes each, as restored ones already do.
    """
    if type(value) is not str:
        return None
    name = _SYMBOLS.get(value)
    if name is None and len(value) <= 12 and SYMBOL.fullmatch(value) is not None:
        name = remember(_SYMBOLS, value, sys.intern(value))
    return name


_SYMBOLS: Final[dict[str, str]] = {}  # valid symbols seen, interned (see .memo)


def _tif(value: object, default: str) -> str:
    """The tif constant of ``value`` (``default`` when the field is absent)."""
    tif = TIFS.get(value) if type(value) is str else default if value is _MISSING else None
    if tif is None:
        _invalid(f"tif must be one of {', '.join(TIFS)}")
    return tif


def _invalid(reason: str) -> NoReturn:
    raise ExchangeError(INVALID_ORDER, reason)
