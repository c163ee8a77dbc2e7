"""One adapter per engine of ``make bench-peers``, and the child process that times one.

``python engines.py ENGINE WORKLOAD.json [--cold-pages]`` (run as a script, by the project's
interpreter for ``ours`` and by the peers' virtual environment for the
others, so no engine shares a process or an installed package with another)
loads the neutral stream of :mod:`.workload`, lets the adapter turn it into
the engine's own form, applies the prefill, then times the commands and
prints one JSON line: CPU seconds (and the kernel's share of them), fills,
resting orders' bytes.

Each adapter gives its engine what that engine wants: ours gets the wire
form (a dict of decimal strings per command, validated, answered with a
reply dict); the peers get pre-typed arguments (ticks as ints).  An engine
without market orders gets a limit order priced through the whole book, its
remainder cancelled; a cancel of an order the engine no longer holds is
skipped the way its API allows, and a command the engine raises on is
counted as an error (a bug of that engine) and the run goes on.  Fills are
what the engine itself reports; ``None`` where its API reports none.

Only the standard library is imported at the top: each adapter imports its
engine when it is chosen.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import resource
import sys
import time
from typing import Any, Optional

SYMBOL = "BTCUSD"
TOP = 10**9  # a price above every order of the workload: what a buy "market" order is limited to
#: Memory written then freed before the clock starts, so that the timed
#: commands grow into pages the machine has already backed (see :func:`measure`).
BACKED_BYTES = 256 << 20


class Adapter:
    """An engine driven by the neutral stream: ``prepare`` (untimed) then ``run`` (timed)."""

    #: Why the fill count may differ from ours although the engine matched the same, if it may.
    fill_note = ""
    #: Which build of the engine ran, for an engine that has more than one.
    implementation = ""

    def prepare(self, commands: list) -> list:
        """The engine's own form of ``commands``: ``(function, arguments)`` pairs."""
        kinds = {"limit": self.limit, "market": self.market, "cancel": self.cancel}
        return [(kinds[command[0]], command[1:]) for command in commands]

    def run(self, prepared: list) -> int:
        """Apply ``prepared``; the number of commands the engine raised on (it goes on)."""
        errors = 0
        for function, arguments in prepared:
            try:
                function(*arguments)
            except Exception:
                errors += 1
        return errors

    def limit(self, order_id: int, side: str, price: int, quantity: int) -> None:
        raise NotImplementedError

    def market(self, order_id: int, side: str, quantity: int) -> None:
        raise NotImplementedError

    def cancel(self, order_id: int) -> None:
        raise NotImplementedError

    def fills(self) -> Optional[int]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop whatever the engine started (threads)."""


class Ours(Adapter):
    """twisted_exchange's core through its full API: dict in, validated, reply out."""

    def __init__(self) -> None:
        from twisted_exchange.core import COMPILED, Exchange
        self.exchange = Exchange()
        self.implementation = "compiled (mypyc)" if COMPILED else "pure Python"
        self.sides: dict[int, str] = {}
        self.requests = 0

    def prepare(self, commands: list) -> list:
        return [self.command(*command) for command in commands]

    def run(self, prepared: list) -> int:
        apply = self.exchange.apply
        for command in prepared:
            apply(command)  # never raises: a refusal is a reply
        return 0

    def command(self, kind: str, order_id: int, side: str = "", *rest: int) -> dict:
        """The wire form; buyers and sellers are distinct clients, so self-trade prevention never acts."""
        if kind == "cancel":
            return self.base("cancel", self.sides[order_id], order_id) | {"order_id": str(order_id)}
        self.sides[order_id] = side
        command = self.base("submit", side, order_id) | {"symbol": SYMBOL, "side": side}
        if kind == "limit":
            price, quantity = rest
            return command | {"type": "limit", "price": f"{price // 100}.{price % 100:02d}",
                              "quantity": str(quantity)}
        return command | {"type": "market", "quantity": str(rest[0])}

    def base(self, action: str, side: str, order_id: int) -> dict:
        self.requests += 1
        return {"action": action, "client": f"{side}{order_id % 100}", "request": str(self.requests)}

    def fills(self) -> int:
        return self.exchange.stats()["last_trade_id"]


class CythonOrderbook(Adapter):
    """cython-orderbook; akhil4n-orderbook is the same design in pure Python."""

    def __init__(self) -> None:
        from cython_orderbook import Order, OrderBook, OrderSide
        self.make(Order, OrderBook, OrderSide)

    def make(self, order: type, book: type, sides: Any) -> None:
        self.book = book()
        self.sides = {"buy": sides.BID, "sell": sides.ASK}
        self.orders: dict[int, Any] = {}
        self.new_order = order

    def limit(self, order_id: int, side: str, price: int, quantity: int) -> None:
        order = self.orders[order_id] = self.new_order(self.sides[side], quantity, price)
        self.book.add_limit_order(order)

    def market(self, order_id: int, side: str, quantity: int) -> None:
        self.book.add_market_order(self.new_order(self.sides[side], quantity))

    def cancel(self, order_id: int) -> None:
        self.book.cancel_order(self.orders[order_id].order_id)

    def fills(self) -> int:
        return len(self.book.trade_log)


class Akhil4nOrderbook(CythonOrderbook):
    def __init__(self) -> None:
        from orderbook import Order, OrderBook, OrderSide
        self.make(Order, OrderBook, OrderSide)
        from orderbook import MarketOrder
        self.market_order = MarketOrder

    def limit(self, order_id: int, side: str, price: int, quantity: int) -> None:
        order = self.orders[order_id] = self.new_order(self.sides[side], price, quantity)
        self.book.add_limit_order(order)

    def market(self, order_id: int, side: str, quantity: int) -> None:
        self.book.add_market_order(self.market_order(self.sides[side], quantity))


class PyOrderbook(Adapter):
    """pyorderbook: no market orders, so a limit through the whole book, remainder cancelled."""

    def __init__(self) -> None:
        import pyorderbook
        self.book = pyorderbook.Book()
        self.sides = {"buy": pyorderbook.Side.BID, "sell": pyorderbook.Side.ASK}
        self.new_order = pyorderbook.Order
        self.orders: dict[int, Any] = {}
        self.filled = 0

    def limit(self, order_id: int, side: str, price: int, quantity: int) -> None:
        order = self.orders[order_id] = self.new_order(self.sides[side], SYMBOL, price, quantity)
        self.filled += len(self.book.match(order).trades)

    def market(self, order_id: int, side: str, quantity: int) -> None:
        order = self.new_order(self.sides[side], SYMBOL, TOP if side == "buy" else 1, quantity)
        self.filled += len(self.book.match(order).trades)
        if order.quantity:
            self.book.cancel(order)

    def cancel(self, order_id: int) -> None:
        order = self.orders[order_id]
        if self.book.get_order(order.id) is not None:
            self.book.cancel(order)

    def fills(self) -> int:
        return self.filled


class Fastlob(Adapter):
    """fastlob: a "market" order is a limit through the whole book, remainder cancelled."""

    fill_note = "counts only the makers it fills completely"

    def __init__(self) -> None:
        import fastlob
        self.fastlob = fastlob
        self.book = fastlob.Orderbook()
        self.book.start()  # required before orders are accepted; starts its expiry thread
        self.sides = {"buy": fastlob.OrderSide.BID, "sell": fastlob.OrderSide.ASK}
        self.rested = {fastlob.ResultType.LIMIT, fastlob.ResultType.PARTIAL_MARKET}
        self.ids: dict[int, str] = {}
        self.filled = 0

    def limit(self, order_id: int, side: str, price: int, quantity: int) -> None:
        result = self.book.process(self.fastlob.OrderParams(self.sides[side], price, quantity))
        self.ids[order_id] = result.orderid()
        self.filled += result.n_orders_matched()

    def market(self, order_id: int, side: str, quantity: int) -> None:
        price = TOP if side == "buy" else 1
        result = self.book.process(self.fastlob.OrderParams(self.sides[side], price, quantity))
        self.filled += result.n_orders_matched()
        if result.kind() in self.rested:
            self.book.cancel(result.orderid())

    def cancel(self, order_id: int) -> None:
        self.book.cancel(self.ids[order_id])

    def fills(self) -> int:
        return self.filled

    def close(self) -> None:
        self.book.stop()


class LimitOrderBook(Adapter):
    """limit-order-book (C++ through ctypes): its API reports no fills."""

    fill_note = "its API reports no fills"

    def __init__(self) -> None:
        from limit_order_book import LimitOrderBook as Book
        self.book = Book()

    def limit(self, order_id: int, side: str, price: int, quantity: int) -> None:
        self.book.limit(side == "buy", order_id, quantity, price)

    def market(self, order_id: int, side: str, quantity: int) -> None:
        self.book.market(side == "buy", order_id, quantity)

    def cancel(self, order_id: int) -> None:
        if self.book.has(order_id):
            self.book.cancel(order_id)

    def fills(self) -> None:
        return None


#: name -> (adapter, PyPI requirement; None for ours, which runs in the project's interpreter)
ENGINES: dict[str, tuple[type[Adapter], Optional[str]]] = {
    "twisted_exchange core": (Ours, None),
    "cython-orderbook": (CythonOrderbook, "cython-orderbook==0.1.2"),
    "akhil4n-orderbook": (Akhil4nOrderbook, "akhil4n-orderbook==0.1.1"),
    "pyorderbook": (PyOrderbook, "pyorderbook==0.4.9"),
    "fastlob": (Fastlob, "fastlob==0.0.24"),
    "limit-order-book": (LimitOrderBook, "limit-order-book==2.0.0"),
}


def measure(adapter: Adapter, prefill: list, commands: list, back_pages: bool = True) -> dict:
    """Apply ``prefill`` (untimed, for its memory) then time ``commands`` in CPU seconds.

    The cyclic collector stays on, as in a long-running process.  Unless
    ``back_pages`` is false, :data:`BACKED_BYTES` are written and freed just
    before the clock starts.  On a virtual machine that hands the guest's
    free pages back to its host (``CONFIG_PAGE_REPORTING``, the machines of
    issue 12), a process that has just grown by a gigabyte (a prefill of
    10^6 orders) grows on into pages the host no longer backs, and the
    kernel's clearing of each one then costs ~10 us instead of ~0.1 us: for
    ours, a kernel share of 9% of the timed CPU at 10^6 on average and 5%
    at 10^3 (2% at both when backed; 8 rounds).  A long-running
    engine pays that once per page, not per command; freed pages are the
    ones the kernel hands out next, so the timed commands measure the engine.
    """
    native_prefill = adapter.prepare(prefill)
    native_commands = adapter.prepare(commands)
    gc.collect()
    before = _resident_bytes()
    errors = adapter.run(native_prefill)
    gc.collect()
    grown = _resident_bytes() - before
    if back_pages:
        _touch_and_free(BACKED_BYTES)
    start = time.process_time()
    kernel = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    errors += adapter.run(native_commands)
    seconds = time.process_time() - start
    kernel = resource.getrusage(resource.RUSAGE_SELF).ru_stime - kernel
    return {"seconds": seconds, "kernel_seconds": kernel, "commands": len(commands), "errors": errors,
            "fills": adapter.fills(), "fill_note": adapter.fill_note, "implementation": adapter.implementation,
            "bytes_per_order": grown / len(prefill) if prefill else None,
            "backed_bytes": BACKED_BYTES if back_pages else 0}


def _touch_and_free(size: int) -> None:
    """Write every page of ``size`` bytes, then give them back (freed at once:
    a block this large is its own mapping, unmapped on free)."""
    block = b"\x01" * size
    del block


def _resident_bytes() -> int:
    """Resident set size: it counts what a C or C++ engine allocates, which tracemalloc does not."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str]) -> int:
    engine, path, *options = argv
    logging.disable(logging.CRITICAL)  # engines that log per order would measure their log output
    with open(path) as file:
        workload = json.load(file)
    adapter = ENGINES[engine][0]()
    try:
        print(json.dumps(measure(adapter, workload["prefill"], workload["commands"],
                                 back_pages="--cold-pages" not in options)))
    finally:
        adapter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
