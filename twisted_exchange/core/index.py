"""Every order the exchange still knows, by id: a list for the recent ones.

The exchange numbers orders 1, 2, 3, ... so the orders it knows are a dense
run of ids with holes (forgotten orders) and a few old stragglers (orders
resting long after their neighbours went).  :class:`OrderIndex` keeps the
run in a list, ``recent[id - base]``, and the stragglers in a dict.  A
lookup in the list reads one slot, 8 bytes next to its neighbours' slots;
a lookup in a dict of a million ints reads its index, its entry and the
key object to compare, each a cache miss on a big book, and every order
costs that entry and an int object more (about 60 bytes).

When more than half of the list is holes, its older half moves out: the
orders still in it go to the dict and their slots are dropped.  An id
moves at most once, so that costs O(1) per id, and the list never holds
more than about two slots per order in it.
"""
from __future__ import annotations

from typing import Final, Iterator, Optional

from .order import Order

#: Below this many slots the list is not worth compacting.
_SMALL: Final = 1024


class OrderIndex:
    """Orders by id, added in increasing id order."""

    __slots__ = ("_old", "_recent", "_base", "_holes")

    def __init__(self) -> None:
        self._old: dict[int, Order] = {}  # ids below _base, in increasing order
        self._recent: list[Optional[Order]] = []  # slot i holds id _base + i, or None
        self._base = 1
        self._holes = 0

    def __len__(self) -> int:
        return len(self._old) + len(self._recent) - self._holes

    def get(self, order_id: int) -> Optional[Order]:
        """The order numbered ``order_id``, or ``None``."""
        slot = order_id - self._base
        if slot >= 0:
            return self._recent[slot] if slot < len(self._recent) else None
        return self._old.get(order_id)

    def add(self, order: Order) -> None:
        """Index ``order``, whose id is above every id added before."""
        recent = self._recent
        gap = order.id - self._base - len(recent)
        if gap < 0:
            raise ValueError(f"order id {order.id} is not above the ids before it")
        if gap > max(_SMALL, len(recent)):  # a jump (only a restore makes one): start a new run
            self._move_out(len(recent))
            self._base = order.id
        elif gap:
            recent.extend([None] * gap)
            self._holes += gap
        recent.append(order)

    def remove(self, order_id: int) -> None:
        """Forget the order numbered ``order_id``, which is indexed."""
        slot = order_id - self._base
        if slot < 0:
            del self._old[order_id]
            return
        recent = self._recent
        if recent[slot] is None:
            raise KeyError(order_id)
        recent[slot] = None
        self._holes += 1
        if 2 * self._holes > len(recent) >= _SMALL:
            self._move_out(len(recent) // 2)

    def values(self) -> Iterator[Order]:
        """Every indexed order, in id order."""
        yield from self._old.values()
        for order in self._recent:
            if order is not None:
                yield order

    def _move_out(self, count: int) -> None:
        """Move the first ``count`` slots' orders to the dict and drop the slots."""
        recent = self._recent
        old = self._old
        moved = 0
        for order in recent[:count]:
            if order is not None:
                old[order.id] = order
                moved += 1
        del recent[:count]
        self._holes -= count - moved
        self._base += count
