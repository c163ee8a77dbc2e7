"""One order and its public form.

An :class:`Order` is a ``__slots__`` object (about 150 bytes) because a
book may hold millions of them; quantities are integer ticks (see
:mod:`.numbers`).  ``prev``/``next`` link it into its price level's FIFO (see
:mod:`.book`).  Compiled, orders are left out of the cyclic collector
(``acyclic``): every young collection walked the orders created since the
last one, scattered over the heap of a big book, which made the collector
the largest part of the extra cost per command at 10^6 resting orders.  The
links of a FIFO are the only cycles orders make, and the FIFO undoes them
itself (:meth:`.book.PriceLevel.remove`, and a discarded level unlinks
what it still holds), so reference counting frees every order.  Quantities always satisfy
``filled + remaining + cancelled == quantity``, where ``cancelled`` is the
part removed by a cancel, an ioc/market remainder or self-trade prevention.

Sides, tifs and statuses are the constants below and the core compares them
by identity (``order.side is BUY``), so whatever builds an order (the
command parser, snapshot restore) maps its input onto these objects.
"""
from __future__ import annotations

from typing import Final, Optional

from .native import mypyc_attr
from .numbers import format_ticks

BUY: Final = "buy"
SELL: Final = "sell"
LIMIT: Final = "limit"
MARKET: Final = "market"
GTC: Final = "gtc"
IOC: Final = "ioc"
FOK: Final = "fok"

OPEN: Final = "open"
PARTIALLY_FILLED: Final = "partially_filled"
FILLED: Final = "filled"
CANCELLED: Final = "cancelled"
_OPEN_STATES: Final = (OPEN, PARTIALLY_FILLED)


@mypyc_attr(acyclic=True)
class Order:
    """A submitted order; ``price`` is ``None`` for a market order, ``id`` is
    0 until the exchange accepts it (and numbers it: the wire form is its
    decimal string)."""

    __slots__ = (
        "id", "client", "symbol", "side", "price", "quantity", "filled", "remaining",
        "status", "tif", "post_only", "prev", "next",
    )

    def __init__(self, id: int, client: str, symbol: str, side: str,
                 price: Optional[int], quantity: int, tif: str, post_only: bool,
                 filled: int = 0, remaining: Optional[int] = None, status: str = OPEN) -> None:
        self.id = id
        self.client = client
        self.symbol = symbol
        self.side = side
        self.price = price
        self.quantity = quantity
        self.filled = filled
        self.remaining = quantity if remaining is None else remaining
        self.status = status
        self.tif = tif
        self.post_only = post_only
        self.prev: Optional[Order] = None
        self.next: Optional[Order] = None

    @property
    def cancelled(self) -> int:
        """Ticks removed without trading."""
        return self.quantity - self.filled - self.remaining

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN_STATES

    def settle(self) -> None:
        """Set the status from the quantities after a fill."""
        self.status = FILLED if not self.remaining else PARTIALLY_FILLED if self.filled else OPEN

    def cancel_rest(self) -> None:
        """Drop the unfilled remainder; the order is closed."""
        self.remaining = 0
        self.status = CANCELLED

    def to_dict(self) -> dict:
        """The public (wire) form of the order."""
        price = self.price
        quantity = self.quantity
        filled = self.filled
        remaining = self.remaining
        total = format_ticks(quantity)
        return {
            "id": str(self.id),
            "client": self.client,
            "symbol": self.symbol,
            "side": self.side,
            "type": MARKET if price is None else LIMIT,
            "price": None if price is None else format_ticks(price),
            "quantity": total,
            "filled": _part(filled, quantity, total),
            "remaining": _part(remaining, quantity, total),
            "cancelled": _part(quantity - filled - remaining, quantity, total),
            "status": self.status,
            "tif": self.tif,
            "post_only": self.post_only,
        }


def _part(ticks: int, quantity: int, total: str) -> str:
    """The text of a part of an order's ``quantity`` (printed ``total``): none
    or all of it is the common case, which needs no lookup."""
    if ticks == quantity:
        return total
    return format_ticks(ticks)
