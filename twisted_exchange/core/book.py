"""The order book of one symbol: price levels in price order, FIFO inside.

Each side is a :class:`Side`: a plain dict from a *key* to its
:class:`PriceLevel`, a ``SortedList`` of those keys, best first, and the best
key itself.  Asks are keyed by price, bids by minus the price, so the best
level of either side has the lowest key.  A price level is a FIFO of orders
threaded through the orders' own ``prev``/``next`` slots (an intrusive doubly
linked list), which gives O(1) append, O(1) removal of any order (cancel,
amend) and O(1) access to the front, with no per-entry container overhead
and no tombstones.  So:

- resting an order: O(1) at an existing level, O(log P) for a new one;
- cancelling: O(1), plus O(log P) when its level empties;
- matching a taker: O(F) for F fills and self-trade cancels, plus O(log P)
  per level it empties.

The sorted keys are touched only when a level appears or disappears: finding
a level is a dict lookup and the best key is an attribute, so the common
commands (rest at a known price, trade at the best level) never call into
``sortedcontainers``, whose pure-Python methods cost more than the rest of
the book's work together.  And a level that empties mostly comes back: the
next order at that price (near the mid, 99% of new levels in ``make
bench-peers`` are ones that emptied before).  So an emptied level stays,
empty, with its key, until an order joins it again, the best moves past
it, or :data:`SPARE_LEVELS` empty ones are kept (then all are forgotten).
Empty levels are never seen from outside: depth, iteration, snapshots and
matching skip them.  Crossing is one comparison thanks to the keys: a
taker with *bound* ``b`` (its price for a buy, minus its price for a sell,
:data:`NO_LIMIT` for a market order) crosses every opposite level whose key
is ``<= b``, and an empty side's best key, :data:`EMPTY`, is above every
bound.

The book knows nothing of ids, trades or retention; it moves quantities
and links, and :class:`twisted_exchange.core.exchange.Exchange` does the
bookkeeping.
"""
from __future__ import annotations

from itertools import islice
from typing import Final, Iterator, Optional

from sortedcontainers import SortedList  # type: ignore[import-untyped]  # no stubs; used untyped

from .numbers import MAX_TICKS, format_ticks
from .order import BUY, Order

#: A bound above every key: what a market order crosses.
NO_LIMIT: Final = MAX_TICKS + 1
#: The best key of an empty side: above every bound, so nothing crosses it.
EMPTY: Final = NO_LIMIT + 1
#: Emptied levels a side keeps for their price's next order before it forgets
#: them all (each was a sorted-list add and remove saved; the bound keeps
#: a side's memory and the scans below its best key small).
SPARE_LEVELS: Final = 256


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

    def __del__(self) -> None:
        """Unlink the orders of a level that is discarded with them (its whole
        exchange is): compiled, the cyclic collector does not see orders
        (:mod:`.order`), so their links would keep them alive."""
        order = self.head
        while order is not None:
            following = order.next
            order.prev = order.next = None
            order = following


class Side:
    """The levels of one side by key (emptied ones kept, see the module),
    their keys in order, the best key holding orders, and how many are empty."""

    __slots__ = ("levels", "keys", "best", "empty")

    def __init__(self) -> None:
        self.levels: dict[int, PriceLevel] = {}
        self.keys = SortedList()
        self.best = EMPTY
        self.empty = 0

    def __bool__(self) -> bool:
        """Does any order rest on this side?"""
        return len(self.levels) > self.empty

    def level(self, key: int) -> PriceLevel:
        """The level at ``key`` for an order about to join it, created if there is none."""
        level = self.levels.get(key)
        if level is None:
            level = self.levels[key] = PriceLevel(key if key > 0 else -key)
            self.keys.add(key)
        elif level.head is None:
            self.empty -= 1
        if key < self.best:
            self.best = key
        return level

    def drop(self, key: int) -> None:
        """The level at ``key`` has just emptied: keep it for the next order at
        its price; if it was the best, the best moves up to the next level
        holding orders, forgetting the emptied ones it passes."""
        self.empty += 1
        if key == self.best:
            keys, levels = self.keys, self.levels
            index = keys.bisect_right(key)
            best = EMPTY
            while index < len(keys):
                following = keys[index]
                if levels[following].head is not None:
                    best = following
                    break
                del levels[following]
                del keys[index]
                self.empty -= 1
            self.best = best
        if self.empty > SPARE_LEVELS:
            self._forget_empty()

    def _forget_empty(self) -> None:
        levels, keys = self.levels, self.keys
        for key in [key for key, level in levels.items() if level.head is None]:
            del levels[key]
            keys.remove(key)
        self.empty = 0

    def in_order(self) -> Iterator[PriceLevel]:
        """The levels holding orders, best first."""
        levels = self.levels
        for key in self.keys.irange(minimum=self.best):
            level = levels[key]
            if level.head is not None:
                yield level


def bound(side: str, price: Optional[int]) -> int:
    """The highest opposite key an order of ``side`` at ``price`` crosses."""
    if price is None:
        return NO_LIMIT
    return price if side is BUY else -price


class Book:
    """Bids and asks of one symbol."""

    __slots__ = ("symbol", "bids", "asks")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = Side()
        self.asks = Side()

    def __bool__(self) -> bool:
        return bool(self.bids) or bool(self.asks)

    def rest(self, order: Order) -> None:
        """Queue a limit order last at its price on its own side."""
        price = order.price
        assert price is not None, "only limit orders rest"
        if order.side is BUY:
            self.bids.level(-price).append(order)
        else:
            self.asks.level(price).append(order)

    def take_out(self, order: Order) -> None:
        """Remove a resting order from the book."""
        side, key = self._place(order)
        level = side.levels[key]
        level.remove(order)
        if level.head is None:
            side.drop(key)

    def reduce(self, order: Order, quantity: int) -> None:
        """Lower a resting order's remainder in place, keeping its priority."""
        side, key = self._place(order)
        side.levels[key].total -= order.remaining - quantity
        order.remaining = quantity

    def _place(self, order: Order) -> tuple[Side, int]:
        """The side and the key where a limit order rests."""
        price = order.price
        assert price is not None, "only limit orders rest"
        return (self.bids, -price) if order.side is BUY else (self.asks, price)

    def crosses(self, side: str, price: Optional[int]) -> bool:
        """Would a limit order of ``side`` at ``price`` trade on arrival?"""
        return (self.asks if side is BUY else self.bids).best <= bound(side, price)

    def fillable(self, taker: Order) -> bool:
        """Could ``taker`` fill completely now, counting only other clients' orders?"""
        side = self.asks if taker.side is BUY else self.bids
        limit = bound(taker.side, taker.price)
        needed = taker.remaining
        levels = side.levels
        for key in side.keys.irange(minimum=side.best):
            if key > limit:
                return False
            for maker in levels[key]:
                if maker.client != taker.client:
                    needed -= maker.remaining
                    if needed <= 0:
                        return True
        return False

    def match(self, taker: Order) -> list[tuple[Order, int]]:
        """Trade ``taker`` against the opposite side in price-time priority.

        Returns ``(maker, quantity)`` pairs in the order they happened;
        ``quantity`` is 0 for a maker of the taker's own client, which
        self-trade prevention took out of the book with its remainder intact
        (the caller cancels it).  Quantities of both sides are updated and
        exhausted makers unlinked; statuses are the caller's.
        """
        side = self.asks if taker.side is BUY else self.bids
        limit = bound(taker.side, taker.price)
        client = taker.client
        remaining = taker.remaining
        events: list[tuple[Order, int]] = []
        levels = side.levels
        while remaining and side.best <= limit:
            key = side.best
            level = levels[key]
            maker = level.head
            while maker is not None:
                following = maker.next
                if maker.client == client:
                    level.remove(maker)
                    events.append((maker, 0))
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
                side.drop(key)
        taker.filled += taker.remaining - remaining
        taker.remaining = remaining
        return events

    def depth(self, side: Side, count: int) -> list[list[str]]:
        """``[[price, total], ...]`` of the best ``count`` levels of one side."""
        return [
            [format_ticks(level.price), format_ticks(level.total)]
            for level in islice(side.in_order(), count)
        ]

    def resting(self) -> Iterator[Order]:
        """Every resting order: bids best first, then asks, FIFO in each level."""
        for side in (self.bids, self.asks):
            for level in side.in_order():
                yield from level
