"""Naive reference model of the exchange, for tests and benchmarks only.

Not used in production.  It states the matching rules of
:mod:`twisted_exchange.core` as plainly as possible (one list of resting
orders, a full scan for the best counterparty before every fill, a sort for
every book view) so that the property tests can check the fast engine
against it command by command, and the benchmark can measure the speed-up.
It shares only the command parser and the tick formatting with the engine:
parsing has its own example tests, the point here is matching.  Errors carry
the same codes as the engine's, not necessarily the same reasons.
"""
from __future__ import annotations

from typing import Optional

from .commands import Amend, Cancel, parse_command
from .errors import (
    FOK_UNFILLABLE, INVALID_ORDER, NOT_OWNER, ORDER_CLOSED, POST_ONLY_WOULD_TAKE,
    UNKNOWN_ORDER, ExchangeError,
)
from .numbers import format_ticks, parse_ticks
from .order import BUY, FOK, GTC, LIMIT, MARKET

_ORDER_FIELDS = ("id", "client", "symbol", "side", "price", "quantity", "filled", "remaining",
                 "status", "tif", "post_only")
_FILL_FIELDS = ("trade_id", "price", "quantity", "maker_order", "taker_order",
                "maker_client", "taker_client", "taker_side")


class ReferenceExchange:
    """Same commands and queries as :class:`~twisted_exchange.core.Exchange`, slowly."""

    def __init__(self, *, closed_orders_kept: int = 10_000, trades_kept: int = 1_000) -> None:
        self.closed_orders_kept = closed_orders_kept
        self.trades_kept = trades_kept
        self.orders: dict[str, dict] = {}   # known orders by id
        self.resting: list[dict] = []       # every resting order of every symbol
        self.closed: list[str] = []         # closed order ids, oldest first
        self.trade_log: dict[str, list] = {}
        self.last_order_id = 0
        self.last_trade_id = 0
        self.arrivals = 0                   # time priority: higher is later

    @classmethod
    def restore(cls, snapshot: dict) -> "ReferenceExchange":
        """The state of an :meth:`Exchange.snapshot` (trusted), e.g. a big book for a benchmark."""
        reference = cls(closed_orders_kept=snapshot["closed_orders_kept"],
                        trades_kept=snapshot["trades_kept"])
        reference.last_order_id = snapshot["last_order_id"]
        reference.last_trade_id = snapshot["last_trade_id"]
        for row in snapshot["orders"]:
            order = dict(zip(_ORDER_FIELDS, row))
            for field in ("price", "quantity", "filled", "remaining"):
                order[field] = ticks(order[field])
            reference.orders[order["id"]] = order
        for order_ids in snapshot["resting"].values():
            for order_id in order_ids:
                order = reference.orders[order_id]
                order["arrival"] = reference.next_arrival()
                reference.resting.append(order)
        reference.closed = list(snapshot["closed"])
        for symbol, rows in snapshot["trades"].items():
            reference.trade_log[symbol] = [dict(zip(_FILL_FIELDS, row), symbol=symbol) for row in rows]
        return reference

    def apply(self, command: object) -> dict:
        try:
            parsed = parse_command(command)
            if isinstance(parsed, Cancel):
                return self.cancel(parsed)
            if isinstance(parsed, Amend):
                return self.amend(parsed)
            return self.submit(parsed)
        except ExchangeError as error:
            return {"ok": False, "error": str(error)}

    def submit(self, command) -> dict:
        order = {
            "id": str(self.last_order_id + 1), "client": command.client, "symbol": command.symbol,
            "side": command.side, "price": command.price, "quantity": command.quantity,
            "filled": 0, "remaining": command.quantity, "status": "open",
            "tif": command.tif, "post_only": command.post_only,
        }
        if command.post_only and self.counterparties(order, any_client=True):
            raise ExchangeError(POST_ONLY_WOULD_TAKE, "would take")
        if command.tif == FOK:
            available = sum(maker["remaining"] for maker in self.counterparties(order))
            if available < order["quantity"]:
                raise ExchangeError(FOK_UNFILLABLE, "cannot fill")
        self.last_order_id += 1
        self.orders[order["id"]] = order
        return self.take(order)

    def cancel(self, command) -> dict:
        order = self.open_order(command)
        self.resting.remove(order)
        self.close(order, "cancelled")
        return {"ok": True, "order": public(order), "fills": []}

    def amend(self, command) -> dict:
        order = self.open_order(command)
        quantity = order["quantity"] if command.quantity is None else command.quantity
        price = order["price"] if command.price is None else command.price
        if quantity <= order["filled"]:
            raise ExchangeError(INVALID_ORDER, "quantity must exceed the filled quantity")
        if price != order["price"]:
            moved = dict(order, price=price)
            if order["post_only"] and self.counterparties(moved, any_client=True):
                raise ExchangeError(POST_ONLY_WOULD_TAKE, "would take")
            self.resting.remove(order)
            order.update(price=price, quantity=quantity, remaining=quantity - order["filled"])
            return self.take(order)
        if quantity != order["quantity"]:
            if quantity > order["quantity"]:
                order["arrival"] = self.next_arrival()
            order.update(quantity=quantity, remaining=quantity - order["filled"])
        return {"ok": True, "order": public(order), "fills": []}

    def open_order(self, command) -> dict:
        order = self.orders.get(command.order_id)
        if order is None:
            raise ExchangeError(UNKNOWN_ORDER, "unknown")
        if order["client"] != command.client:
            raise ExchangeError(NOT_OWNER, "not yours")
        if order["status"] not in ("open", "partially_filled"):
            raise ExchangeError(ORDER_CLOSED, "closed")
        return order

    def take(self, taker: dict) -> dict:
        fills = []
        while taker["remaining"]:
            candidates = self.counterparties(taker, any_client=True)
            if not candidates:
                break
            maker = candidates[0]
            self.resting.remove(maker)
            if maker["client"] == taker["client"]:
                self.close(maker, "cancelled")
                continue
            quantity = min(maker["remaining"], taker["remaining"])
            for order in (maker, taker):
                order["remaining"] -= quantity
                order["filled"] += quantity
            fills.append(self.record_trade(maker, taker, quantity))
            if maker["remaining"]:
                self.resting.append(maker)
                maker["status"] = "partially_filled"
            else:
                self.close(maker, "filled")
        if not taker["remaining"]:
            self.close(taker, "filled")
        elif taker["tif"] == GTC:
            taker["status"] = "partially_filled" if taker["filled"] else "open"
            taker["arrival"] = self.next_arrival()
            self.resting.append(taker)
        else:
            self.close(taker, "cancelled")
        return {"ok": True, "order": public(taker), "fills": fills}

    def counterparties(self, taker: dict, any_client: bool = False) -> list:
        """Resting orders ``taker`` would meet, best first (all clients or only others)."""
        found = [
            maker for maker in self.resting
            if maker["symbol"] == taker["symbol"] and maker["side"] != taker["side"]
            and (any_client or maker["client"] != taker["client"])
            and (taker["price"] is None or (
                maker["price"] <= taker["price"] if taker["side"] == BUY else maker["price"] >= taker["price"]))
        ]
        return sorted(found, key=priority)

    def record_trade(self, maker: dict, taker: dict, quantity: int) -> dict:
        self.last_trade_id += 1
        fill = {
            "trade_id": str(self.last_trade_id), "symbol": taker["symbol"],
            "price": format_ticks(maker["price"]), "quantity": format_ticks(quantity),
            "maker_order": maker["id"], "taker_order": taker["id"],
            "maker_client": maker["client"], "taker_client": taker["client"],
            "taker_side": taker["side"],
        }
        log = self.trade_log.setdefault(taker["symbol"], [])
        log.append(fill)
        del log[:max(0, len(log) - self.trades_kept)]
        return dict(fill)

    def close(self, order: dict, status: str) -> None:
        order["status"] = status
        order["remaining"] = 0
        self.closed.append(order["id"])
        while len(self.closed) > self.closed_orders_kept:
            del self.orders[self.closed.pop(0)]

    def next_arrival(self) -> int:
        self.arrivals += 1
        return self.arrivals

    def book(self, symbol: str, depth: int = 10) -> dict:
        view = {}
        for side, name in ((BUY, "bids"), ("sell", "asks")):
            totals: dict[int, int] = {}
            for order in self.resting:
                if order["symbol"] == symbol and order["side"] == side:
                    totals[order["price"]] = totals.get(order["price"], 0) + order["remaining"]
            prices = sorted(totals, reverse=side == BUY)[:depth]
            view[name] = [[format_ticks(price), format_ticks(totals[price])] for price in prices]
        return view

    def order(self, order_id: str) -> Optional[dict]:
        order = self.orders.get(order_id)
        return None if order is None else public(order)

    def trades(self, symbol: str, limit: int = 100) -> list:
        return [dict(fill) for fill in reversed(self.trade_log.get(symbol, []))][:limit]


def ticks(text: Optional[str]) -> Optional[int]:
    return None if text is None else 0 if text == "0" else parse_ticks(text, "amount")


def priority(order: dict) -> tuple:
    """Sort key, best first: better price, then earlier arrival."""
    return (-order["price"] if order["side"] == BUY else order["price"], order["arrival"])


def public(order: dict) -> dict:
    price = order["price"]
    return {
        "id": order["id"], "client": order["client"], "symbol": order["symbol"],
        "side": order["side"], "type": MARKET if price is None else LIMIT,
        "price": None if price is None else format_ticks(price),
        "quantity": format_ticks(order["quantity"]), "filled": format_ticks(order["filled"]),
        "remaining": format_ticks(order["remaining"]),
        "cancelled": format_ticks(order["quantity"] - order["filled"] - order["remaining"]),
        "status": order["status"], "tif": order["tif"], "post_only": order["post_only"],
    }
