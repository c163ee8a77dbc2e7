"""The exchange: every book, every order still known, trades and counters.

:meth:`Exchange.apply` is the only way to change the state.  It parses and
checks a command completely before touching anything, so a refused command
changes nothing, and the same commands in the same order always give the
same replies and the same state (no clock, no randomness, no hash-order
dependence).  Memory is bounded by design: the last ``closed_orders_kept``
closed orders stay queryable (oldest forgotten first) and the last
``trades_kept`` trades per symbol are kept; both bounds are part of the state.
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections import deque
from itertools import islice
from typing import Any, Final, Optional

from .book import Book
from .commands import (
    SIDES, TIFS, Amend, Cancel, is_symbol, parse_command,
)
from .errors import (
    FOK_UNFILLABLE, INVALID_ORDER, INVALID_QUERY, INVALID_SNAPSHOT, NOT_OWNER, ORDER_CLOSED,
    POST_ONLY_WOULD_TAKE, UNKNOWN_ORDER, ExchangeError,
)
from .index import OrderIndex
from .native import mypyc_attr
from .numbers import format_ticks, parse_ticks
from .order import CANCELLED, FILLED, FOK, GTC, OPEN, PARTIALLY_FILLED, Order

SNAPSHOT_FORMAT: Final = 1
_STATUSES: Final = {status: status for status in (OPEN, PARTIALLY_FILLED, FILLED, CANCELLED)}
_EMPTY: Final = Book("")


@mypyc_attr(acyclic=True)
class Trade:
    """A kept trade (the last ``trades_kept`` of each symbol).

    A small class rather than a tuple: compiled, its amounts and ids are C
    integers, where a tuple would hold five int objects allocated per fill;
    it holds no container, so the cyclic collector need not track it.
    """

    __slots__ = ("id", "price", "quantity", "maker", "taker", "maker_client", "taker_client", "taker_side")

    def __init__(self, id: int, price: int, quantity: int, maker: int, taker: int,
                 maker_client: str, taker_client: str, taker_side: str) -> None:
        self.id = id
        self.price = price
        self.quantity = quantity
        self.maker = maker
        self.taker = taker
        self.maker_client = maker_client
        self.taker_client = taker_client
        self.taker_side = taker_side

    def fill(self, symbol: str) -> dict:
        """The public (wire) form of the trade."""
        return {
            "trade_id": str(self.id),
            "symbol": symbol,
            "price": format_ticks(self.price),
            "quantity": format_ticks(self.quantity),
            "maker_order": str(self.maker),
            "taker_order": str(self.taker),
            "maker_client": self.maker_client,
            "taker_client": self.taker_client,
            "taker_side": self.taker_side,
        }

    def row(self) -> list:
        """The snapshot's form: ``[id, price, quantity, maker, taker, maker_client, taker_client, taker_side]``."""
        return [str(self.id), format_ticks(self.price), format_ticks(self.quantity), str(self.maker),
                str(self.taker), self.maker_client, self.taker_client, self.taker_side]


class Exchange:
    """A deterministic matching engine for any number of symbols."""

    def __init__(self, *, closed_orders_kept: int = 10_000, trades_kept: int = 1_000) -> None:
        if closed_orders_kept < 0 or trades_kept < 0:
            raise ValueError("retention bounds must be >= 0")
        self._closed_orders_kept = closed_orders_kept
        self._trades_kept = trades_kept
        self._books: dict[str, Book] = {}
        self._orders = OrderIndex()
        self._closed: deque[Order] = deque()  # the orders themselves: no id to box, no extra object
        self._trades: dict[str, deque[Trade]] = {}
        self._last_order_id = 0
        self._last_trade_id = 0

    # -- commands ---------------------------------------------------------

    def apply(self, command: object) -> dict:
        """Apply one command; never raises.

        Returns ``{"ok": True, "order": {...}, "fills": [...]}`` or
        ``{"ok": False, "error": "ERR_<CODE>: <reason>"}`` (state unchanged).
        """
        try:
            parsed = parse_command(command)
        except ExchangeError as error:
            return _refused(error)
        if isinstance(parsed, Order):
            return self._submit(parsed)
        if isinstance(parsed, Cancel):
            return self._cancel(parsed)
        return self._amend(parsed)

    # The rules below return their refusals rather than raise them: a cancel
    # that lost the race to a fill is business as usual, and an exception
    # through compiled code costs microseconds (a traceback entry per frame).

    def _submit(self, order: Order) -> dict:
        book = self._books.get(order.symbol, _EMPTY)
        if order.post_only and book.crosses(order.side, order.price):
            return _refused(ExchangeError(POST_ONLY_WOULD_TAKE, "a post_only order would trade on arrival"))
        if order.tif is FOK and not book.fillable(order):
            return _refused(ExchangeError(FOK_UNFILLABLE, "a fok order cannot fill completely now"))
        self._last_order_id += 1
        order.id = self._last_order_id
        self._orders.add(order)
        return self._take(book, order)

    def _cancel(self, command: Cancel) -> dict:
        order = self._open_order(command.order_id, command.client)
        if not isinstance(order, Order):
            return _refused(order)
        self._books[order.symbol].take_out(order)
        self._close_cancelled(order)
        return {"ok": True, "order": order.to_dict(), "fills": []}

    def _amend(self, command: Amend) -> dict:
        order = self._open_order(command.order_id, command.client)
        if not isinstance(order, Order):
            return _refused(order)
        book = self._books[order.symbol]
        quantity = order.quantity if command.quantity is None else command.quantity
        if quantity <= order.filled:
            return _refused(ExchangeError(INVALID_ORDER, "quantity must exceed the filled quantity"))
        price = order.price if command.price is None else command.price
        if price != order.price:
            if order.post_only and book.crosses(order.side, price):
                return _refused(ExchangeError(POST_ONLY_WOULD_TAKE, "the new price would trade"))
            book.take_out(order)
            order.price = price
            order.quantity = quantity
            order.remaining = quantity - order.filled
            return self._take(book, order)
        if quantity < order.quantity:
            book.reduce(order, quantity - order.filled)
            order.quantity = quantity
        elif quantity > order.quantity:
            book.take_out(order)
            order.quantity = quantity
            order.remaining = quantity - order.filled
            book.rest(order)
        return {"ok": True, "order": order.to_dict(), "fills": []}

    def _open_order(self, order_id: str, client: str) -> Order | ExchangeError:
        """The open order ``order_id`` of ``client``, or why not."""
        order = self._orders.get(_number(order_id))
        if order is None:
            return ExchangeError(UNKNOWN_ORDER, f"no order {order_id!r}")
        if order.client != client:
            return ExchangeError(NOT_OWNER, f"order {order.id} belongs to another client")
        if not order.is_open:
            return ExchangeError(ORDER_CLOSED, f"order {order.id} is {order.status}")
        return order

    def _take(self, book: Book, order: Order) -> dict:
        """Match ``order`` as a taker, then rest or cancel what is left."""
        fills = []
        if book.crosses(order.side, order.price):
            for maker, quantity in book.match(order):
                if not quantity:  # self-trade prevention
                    self._close_cancelled(maker)
                    continue
                fills.append(self._trade(book.symbol, maker, order, quantity))
                if maker.remaining:
                    maker.status = PARTIALLY_FILLED
                else:
                    maker.status = FILLED
                    self._close(maker)
            order.settle()
        if not order.remaining:
            self._close(order)
        elif order.tif is GTC:
            if book is _EMPTY:  # a book is created by its first resting order
                book = self._books[order.symbol] = Book(order.symbol)
            book.rest(order)
        else:
            self._close_cancelled(order)
        return {"ok": True, "order": order.to_dict(), "fills": fills}

    def _trade(self, symbol: str, maker: Order, taker: Order, quantity: int) -> dict:
        self._last_trade_id += 1
        price = maker.price
        assert price is not None, "makers rest, so they have a price"
        trade = Trade(self._last_trade_id, price, quantity, maker.id, taker.id,
                      maker.client, taker.client, taker.side)
        trades = self._trades.get(symbol)
        if trades is None:
            trades = self._trades[symbol] = deque(maxlen=self._trades_kept)
        trades.append(trade)
        return trade.fill(symbol)

    def _close_cancelled(self, order: Order) -> None:
        order.cancel_rest()
        self._close(order)

    def _close(self, order: Order) -> None:
        """Remember a closed order, forgetting the oldest beyond the bound."""
        closed = self._closed
        closed.append(order)
        if len(closed) > self._closed_orders_kept:
            self._orders.remove(closed.popleft().id)

    # -- queries ----------------------------------------------------------

    def book(self, symbol: object, depth: object = 10) -> dict:
        """Aggregated levels, best first: ``{"bids": [[price, qty], ...], "asks": [...]}``."""
        book = self._books.get(_query_symbol(symbol), _EMPTY)
        count = _query_count(depth, "depth")
        return {"bids": book.depth(book.bids, count), "asks": book.depth(book.asks, count)}

    def order(self, order_id: object) -> Optional[dict]:
        """The order's public form, or ``None`` if unknown or forgotten."""
        order = self._orders.get(_number(order_id)) if type(order_id) is str else None
        return None if order is None else order.to_dict()

    def trades(self, symbol: object, limit: object = 100) -> list:
        """The last ``limit`` kept trades of ``symbol``, newest first."""
        name = _query_symbol(symbol)
        kept = self._trades.get(name)
        count = _query_count(limit, "limit")
        return [] if kept is None else [trade.fill(name) for trade in islice(reversed(kept), count)]

    def open_orders(self, symbol: object = None, client: object = None, limit: object = 1000) -> list:
        """Resting orders, oldest first, optionally of one symbol and/or client.

        A scan of the known orders (O(known orders)): for operators and
        clients, not for the matching path.
        """
        if symbol is not None:
            _query_symbol(symbol)
        if client is not None and type(client) is not str:
            raise ExchangeError(INVALID_QUERY, "client must be a string")
        count = _query_count(limit, "limit")
        found = []
        for order in self._orders.values():
            if order.is_open and (symbol is None or order.symbol == symbol) and (
                    client is None or order.client == client):
                found.append(order.to_dict())
                if len(found) == count:
                    break
        return found

    def stats(self) -> dict:
        """Counts for status pages and benchmarks (O(known orders))."""
        return {
            "resting_orders": sum(1 for order in self._orders.values() if order.is_open),
            "known_orders": len(self._orders),
            "books": len(self._books),
            "last_order_id": self._last_order_id,
            "last_trade_id": self._last_trade_id,
        }

    def known_orders(self) -> int:
        """Orders known, resting and closed ones kept (O(1)): what a snapshot's size grows with."""
        return len(self._orders)

    def resting_by_symbol(self) -> dict:
        """Resting orders per symbol that has any, for metrics (O(known orders))."""
        counts: dict = {}
        for order in self._orders.values():
            if order.is_open:
                counts[order.symbol] = counts.get(order.symbol, 0) + 1
        return counts

    # -- state ------------------------------------------------------------

    def snapshot(self) -> dict:
        """The whole state as plain JSON-able data in one canonical form.

        Orders are ``[id, client, symbol, side, price, quantity, filled,
        remaining, status, tif, post_only]`` sorted by id, amounts as decimal
        strings (price ``None`` for market orders); ``resting`` lists each
        non-empty book's order ids in priority order (bids best first, then
        asks); ``closed`` is the retention queue, oldest first.
        """
        return {
            "format": SNAPSHOT_FORMAT,
            "closed_orders_kept": self._closed_orders_kept,
            "trades_kept": self._trades_kept,
            "last_order_id": self._last_order_id,
            "last_trade_id": self._last_trade_id,
            "orders": [_order_row(order) for order in self._orders.values()],
            "resting": {
                symbol: [str(order.id) for order in book.resting()]
                for symbol, book in sorted(self._books.items()) if book
            },
            "closed": [str(order.id) for order in self._closed],
            "trades": {
                symbol: [trade.row() for trade in trades]
                for symbol, trades in sorted(self._trades.items()) if trades
            },
        }

    def state_hash(self) -> str:
        """SHA-256 hex digest of the canonical snapshot: equal iff states are equal."""
        text = json.dumps(self.snapshot(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    @classmethod
    def restore(cls, snapshot: Any) -> "Exchange":
        """An exchange in exactly the state ``snapshot`` describes."""
        try:
            return cls._restore(snapshot)
        except ExchangeError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise ExchangeError(INVALID_SNAPSHOT, f"malformed snapshot: {error!r}") from None

    @classmethod
    def _restore(cls, snapshot: Any) -> "Exchange":
        if snapshot["format"] != SNAPSHOT_FORMAT:
            raise ExchangeError(INVALID_SNAPSHOT, f"unknown format {snapshot['format']!r}")
        exchange = cls(closed_orders_kept=int(snapshot["closed_orders_kept"]),
                       trades_kept=int(snapshot["trades_kept"]))
        exchange._last_order_id = int(snapshot["last_order_id"])
        exchange._last_trade_id = int(snapshot["last_trade_id"])
        previous = 0
        for row in snapshot["orders"]:
            order = _order_from_row(row)
            if not previous < order.id <= exchange._last_order_id:
                raise ExchangeError(INVALID_SNAPSHOT, f"order id {order.id} is out of place")
            exchange._orders.add(order)
            previous = order.id
        resting = 0
        for symbol, order_ids in snapshot["resting"].items():
            book = exchange._books[symbol] = Book(symbol)
            for order_id in order_ids:
                order = exchange._known(order_id)
                if not order.is_open or order.symbol != symbol or order.price is None or order.prev or order.next:
                    raise ExchangeError(INVALID_SNAPSHOT, f"order {order_id} cannot rest")
                book.rest(order)
                resting += 1
        exchange._closed.extend([exchange._known(order_id) for order_id in snapshot["closed"]])
        closed = set(exchange._closed)
        if (len(closed) != len(exchange._closed) or len(closed) > exchange._closed_orders_kept
                or closed != {o for o in exchange._orders.values() if not o.is_open}
                or resting + len(closed) != len(exchange._orders)):
            raise ExchangeError(INVALID_SNAPSHOT, "orders, resting and closed lists disagree")
        for symbol, rows in snapshot["trades"].items():
            exchange._trades[symbol] = deque(
                [_trade_from_row(row) for row in rows], maxlen=exchange._trades_kept)
        return exchange

    def _known(self, order_id: Any) -> Order:
        """The indexed order a snapshot names, else KeyError (a malformed snapshot)."""
        order = self._orders.get(_snapshot_id(order_id))
        if order is None:
            raise KeyError(order_id)
        return order


def _refused(error: ExchangeError) -> dict:
    """The one wire form of a refusal; the state is unchanged."""
    return {"ok": False, "error": str(error)}


def _query_symbol(symbol: object) -> str:
    """``symbol`` if it is one, else ERR_INVALID_QUERY: queries take anything a client sends."""
    if type(symbol) is not str or not is_symbol(symbol):
        raise ExchangeError(INVALID_QUERY, "symbol must match [A-Z0-9]{2,12}")
    return symbol


def _query_count(value: object, name: str) -> int:
    """``value`` if it is a positive integer (not a bool), else ERR_INVALID_QUERY."""
    if type(value) is not int or value <= 0:
        raise ExchangeError(INVALID_QUERY, f"{name} must be a positive integer")
    return value


def _order_row(order: Order) -> list:
    return [
        str(order.id), order.client, order.symbol, order.side,
        None if order.price is None else format_ticks(order.price),
        format_ticks(order.quantity), format_ticks(order.filled), format_ticks(order.remaining),
        order.status, order.tif, order.post_only,
    ]


def _order_from_row(row: list) -> Order:
    order_id, client, symbol, side, price, quantity, filled, remaining, status, tif, post_only = row
    order = Order(
        _snapshot_id(order_id), sys.intern(client), sys.intern(symbol), SIDES[side],
        None if price is None else parse_ticks(price, "price"),
        parse_ticks(quantity, "quantity"), TIFS[tif], bool(post_only),
        filled=_ticks_or_zero(filled), remaining=_ticks_or_zero(remaining),
        status=_STATUSES[status],
    )
    if order.cancelled < 0:
        raise ExchangeError(INVALID_SNAPSHOT, f"order {order.id} is overfilled")
    return order


def _ticks_or_zero(text: str) -> int:
    return 0 if text == "0" else parse_ticks(text, "amount")


def _trade_from_row(row: list) -> Trade:
    trade_id, price, quantity, maker, taker, maker_client, taker_client, taker_side = row
    return Trade(_snapshot_id(trade_id), parse_ticks(price, "price"), parse_ticks(quantity, "quantity"),
                 _snapshot_id(maker), _snapshot_id(taker), sys.intern(maker_client), sys.intern(taker_client),
                 SIDES[taker_side])


def _number(order_id: str) -> int:
    """The number of an order id as the exchange writes them (``"42"``), else 0, which no order has."""
    return int(order_id) if order_id.isascii() and order_id.isdigit() and order_id[0] != "0" else 0


def _snapshot_id(text: Any) -> int:
    """An order or trade id of a snapshot, which writes them as :func:`_number` reads them."""
    number = int(text)
    if number <= 0 or str(number) != str(text):
        raise ExchangeError(INVALID_SNAPSHOT, f"malformed id {text!r}")
    return number
