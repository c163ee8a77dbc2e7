"""The seeded command stream every engine of ``make bench-peers`` runs.

Engines differ in what a command looks like (a dict of decimal strings for
ours, typed arguments for the others), so the stream is neutral: tuples of
plain ints and strings, which each adapter turns into its engine's own form
before the clock starts.

- ``("limit", order_id, side, price, quantity)``: price in ticks of 0.01;
- ``("market", order_id, side, quantity)``;
- ``("cancel", order_id)`` of an earlier limit order, which may already be
  filled or cancelled (engines must take that in their stride).

Order ids count up from 1 across the prefill and the commands, as our core
numbers them.  The prefill is ``depth`` limit orders that never cross (bids
below the mid, asks above, thinning out with distance); the commands follow
the issue's mix: 70% limit orders near the mid, a third of them priced
through it (crossing), 15% cancels, 5% market orders, 10% limit orders far
from the mid.  The mid never moves, so the book's shape is stationary and
the cost per command depends on the depth, not on drift.

Pure standard library: the adapters run in a virtual environment that has
the peer engines and not this project.
"""
from __future__ import annotations

import random
from typing import Union

MID = 10_000          # 100.00 in ticks of 0.01
NEAR = 10             # non-crossing near-mid orders rest 1..NEAR ticks from the mid
THROUGH = 5           # crossing orders are priced 1..THROUGH ticks through the mid
FAR = (200, 2_000)    # far orders rest this many ticks from the mid
PREFILL_SPREAD = 100  # mean distance from the mid of the prefilled orders, in ticks
MAX_QUANTITY = 20

Limit = tuple[str, int, str, int, int]
Market = tuple[str, int, str, int]
Cancel = tuple[str, int]
Command = Union[Limit, Market, Cancel]


class Workload:
    """``prefill`` and ``commands`` of one seed; the same seed gives the same lists."""

    def __init__(self, seed: int, depth: int, commands: int) -> None:
        self._rng = random.Random(seed)
        self._last_id = 0
        self._limits: list[int] = []  # ids of the limit orders so far: what cancels pick from
        self.prefill: list[Command] = [self._resting(self._distance_prefill()) for _ in range(depth)]
        self.commands: list[Command] = [self._command() for _ in range(commands)]

    def _command(self) -> Command:
        rng = self._rng
        roll = rng.random()
        if roll < 0.70:
            if rng.random() < 1 / 3:
                return self._limit(rng.choice(("buy", "sell")), -rng.randint(1, THROUGH))
            return self._resting(rng.randint(1, NEAR))
        if roll < 0.85 and self._limits:
            return ("cancel", rng.choice(self._limits))
        if roll < 0.90:
            self._last_id += 1
            return ("market", self._last_id, rng.choice(("buy", "sell")), self._quantity())
        return self._resting(rng.randint(*FAR))

    def _distance_prefill(self) -> int:
        return 1 + int(self._rng.expovariate(1 / PREFILL_SPREAD))

    def _resting(self, distance: int) -> Limit:
        """A limit order ``distance`` ticks on its own side of the mid (it does not cross it)."""
        return self._limit(self._rng.choice(("buy", "sell")), distance)

    def _limit(self, side: str, distance: int) -> Limit:
        """A limit order ``distance`` ticks below the mid for a buy, above it for a sell
        (a negative distance prices it through the mid)."""
        self._last_id += 1
        self._limits.append(self._last_id)
        price = MID - distance if side == "buy" else MID + distance
        return ("limit", self._last_id, side, price, self._quantity())

    def _quantity(self) -> int:
        return self._rng.randint(1, MAX_QUANTITY)
