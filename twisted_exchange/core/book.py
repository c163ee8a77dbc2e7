"""The order book of one symbol: price levels in price order, FIFO inside.

Each side is a ``SortedDict`` from a *key* to a :class:`PriceLevel`, kept so
that the best level is always first: asks are keyed by price, bids by minus
the price.  A price level is a FIFO of orders threaded through the orders'
own ``prev``/``next`` slots (an intrusive doubly linked list), which gives
O(1) append, O(1) removal of any order (cancel, amend) and O(1) access to the
front, with no per-entry container overhead and no tombstones.  So:

- resting an order: O(log P) for a new level, O(1) otherwise;
- cancelling: O(1), plus O(log P) when its level empties;
- matching a taker: O(log P + F) for F fills and self-trade cancels.

Crossing is one comparison thanks to the keys: a taker with *bound* ``b``
(its price for a buy, minus its price for a sell, "infinity" for a market
order) crosses every opposite level whose key is ``<= b``.  The best key is
read through each side's keys view (``bid_keys[0]``), kept beside the side:
that is two to three times cheaper than ``SortedDict.peekitem(0)``, which
builds a view and an item on every call, and it is the first thing matching
does for every order.

The book knows nothing of ids, trades or retention; it moves quantities
and links, and :class:`twisted_exchange.core.exchange.Exchange` does the
bookkeeping.
"""
from __future__ import annotations

from itertools import islice
from typing import Iterator, Optional

from sortedcontainers import SortedDict

from .numbers import MAX_TICKS, format_ticks
from .order import BUY, Order

#: A bound above every key: what a market order crosses.
NO_LIMIT = MAX_TICKS + 1


class PriceLevel:
    """The resting orders at one price, oldest first, and their total."""

    __slots__ = ("price", "head", "tail", "total")

    def __init__(self, price: int) -> None:
        self.price = price
        self.head: Optional[Order] = None
        self.tail: Optional[Order] = None
        self.total = 0

    def append(self, order: Order) -> None:
        """Queue ``order`` last (newest time priority)."""
        tail = self.tail
        order.prev = tail
        order.next = None
        if tail is None:
            self.head = order
        else:
            tail.next = order
        self.tail = order
        self.total += order.remaining

    def remove(self, order: Order) -> None:
        """Unlink ``order`` wherever it is in the queue."""
        prev, nxt = order.prev, order.next
        if prev is None:
            self.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            self.tail = prev
        else:
            nxt.prev = prev
        order.prev = order.next = None
        self.total -= order.remaining

    def __iter__(self) -> Iterator[Order]:
        order = self.head
        while order is not None:
            yield order
            order = order.next


def bound(side: str, price: Optional[int]) -> int:
    """The highest opposite key an order of ``side`` at ``price`` crosses."""
    if price is None:
        return NO_LIMIT
    return price if side is BUY else -price


class Book:
    """Bids and asks of one symbol."""

    __slots__ = ("symbol", "bids", "asks", "bid_keys", "ask_keys")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = SortedDict()
        self.asks = SortedDict()
        self.bid_keys = self.bids.keys()
        self.ask_keys = self.asks.keys()

    def __bool__(self) -> bool:
        return bool(self.bids or self.asks)

    def rest(self, order: Order) -> None:
        """Queue a limit order last at its price on its own side."""
        levels, key = self._place(order)
        level = levels.get(key)
        if level is None:
            level = levels[key] = PriceLevel(key if key > 0 else -key)
        level.append(order)

    def take_out(self, order: Order) -> None:
        """Remove a resting order from the book."""
        levels, key = self._place(order)
        level = levels[key]
        level.remove(order)
        if level.head is None:
            del levels[key]

    def reduce(self, order: Order, quantity: int) -> None:
        """Lower a resting order's remainder in place, keeping its priority."""
        levels, key = self._place(order)
        levels[key].total -= order.remaining - quantity
        order.remaining = quantity

    def _place(self, order: Order) -> tuple[SortedDict, int]:
        """The side and the key where a limit order rests."""
        price = order.price
        assert price is not None, "only limit orders rest"
        return (self.bids, -price) if order.side is BUY else (self.asks, price)

    def crosses(self, side: str, price: Optional[int]) -> bool:
        """Would a limit order of ``side`` at ``price`` trade on arrival?"""
        keys = self.ask_keys if side is BUY else self.bid_keys
        return bool(keys) and keys[0] <= bound(side, price)

    def fillable(self, taker: Order) -> bool:
        """Could ``taker`` fill completely now, counting only other clients' orders?"""
        levels = self.asks if taker.side is BUY else self.bids
        limit = bound(taker.side, taker.price)
        needed = taker.remaining
        for key, level in levels.items():
            if key > limit:
                return False
            for maker in level:
                if maker.client != taker.client:
                    needed -= maker.remaining
                    if needed <= 0:
                        return True
        return False

    def match(self, taker: Order) -> list:
        """Trade ``taker`` against the opposite side in price-time priority.

        Returns ``(maker, quantity)`` pairs in the order they happened;
        ``quantity`` is ``None`` for a maker of the taker's own client, which
        self-trade prevention took out of the book with its remainder intact
        (the caller cancels it).  Quantities of both sides are updated and
        exhausted makers unlinked; statuses are the caller's.
        """
        if taker.side is BUY:
            levels, keys = self.asks, self.ask_keys
        else:
            levels, keys = self.bids, self.bid_keys
        limit = bound(taker.side, taker.price)
        client = taker.client
        remaining = taker.remaining
        events: list[tuple[Order, Optional[int]]] = []
        while remaining and levels:
            key = keys[0]
            if key > limit:
                break
            level = levels[key]
            maker = level.head
            while maker is not None:
                following = maker.next
                if maker.client == client:
                    level.remove(maker)
                    events.append((maker, None))
                else:
                    quantity = maker.remaining if maker.remaining < remaining else remaining
                    maker.remaining -= quantity
                    maker.filled += quantity
                    level.total -= quantity
                    remaining -= quantity
                    if not maker.remaining:
                        level.remove(maker)
                    events.append((maker, quantity))
                    if not remaining:
                        break
                maker = following
            if level.head is None:
                del levels[key]
        taker.filled += taker.remaining - remaining
        taker.remaining = remaining
        return events

    def depth(self, levels: SortedDict, count: int) -> list:
        """``[[price, total], ...]`` of the best ``count`` levels of one side."""
        return [
            [format_ticks(level.price), format_ticks(level.total)]
            for level in islice(levels.values(), count)
        ]

    def resting(self) -> Iterator[Order]:
        """Every resting order: bids best first, then asks, FIFO in each level."""
        for levels in (self.bids, self.asks):
            for level in levels.values():
                yield from level
