"""Simulated exchange clients, honest and poisonous."""
from __future__ import annotations

import random


class Client:
    """One exchange client: one outstanding command at a time, retried until answered."""

    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name
        self.rng = rng
        self.requests = 0
        self.command: dict | None = None
        self.open_orders: list[str] = []

    def next_command(self) -> dict:
        self.requests += 1
        request = f"{self.name}-{self.requests}"
        rng = self.rng
        if self.open_orders and rng.random() < 0.25:
            order_id = self.open_orders.pop(rng.randrange(len(self.open_orders)))
            self.command = {"action": "cancel", "client": self.name, "request": request,
                            "order_id": order_id}
            return self.command
        command = {"action": "submit", "client": self.name, "request": request, "symbol": "BTCUSD",
                   "side": rng.choice(("buy", "sell")), "quantity": str(rng.randint(1, 5))}
        kind = rng.random()
        if kind < 0.1:
            command.update(type="market")
        else:
            command.update(type="limit", price=str(100 + rng.randint(-3, 3)),
                           tif="ioc" if kind < 0.2 else "gtc")
        self.command = command
        return command

    def answered(self, result: dict) -> None:
        if result.get("ok") and result["order"]["status"] in ("open", "partially_filled"):
            self.open_orders.append(result["order"]["id"])
        self.command = None


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


#: What a hostile or broken client sends, as changes to a valid submit.
POISONS: dict[str, dict] = {
    "infinite quantity": {"quantity": float("inf")},
    "nan price": {"price": float("nan")},
    "number quantity": {"quantity": 2},
    "nested extra field": {"extra": _nested(60)},
    "non-string client": {"client": 7},
    "lone surrogate client": {"client": "c\ud800"},
    "lone surrogate request": {"request": "r\udfff"},
    "huge request": {"request": "r" * 100_000},
    "huge price": {"price": "1" * 100_000},
}


def poison_command(client: str, rng: random.Random) -> tuple[str, dict]:
    """A malformed command (its kind and itself) that must never enter the log."""
    kind = rng.choice(sorted(POISONS))
    command = {"action": "submit", "client": client, "request": f"{client}-poison-{rng.randrange(10**6)}",
               "symbol": "BTCUSD", "side": "buy", "type": "limit", "price": "100", "quantity": "1",
               **POISONS[kind]}
    return kind, command
