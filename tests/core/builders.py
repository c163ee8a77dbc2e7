"""Command builders shared by the core tests: one place that knows the wire shape."""
from __future__ import annotations

_requests = iter(range(1, 1 << 62))


def submit(client: str, side: str, price: str | None, quantity: str, *,
           symbol: str = "BTCUSD", **fields) -> dict:
    """A submit command; ``price=None`` makes a market order."""
    command = {
        "action": "submit", "client": client, "request": f"r{next(_requests)}",
        "symbol": symbol, "side": side, "quantity": quantity,
        "type": "market" if price is None else "limit",
    }
    if price is not None:
        command["price"] = price
    command.update(fields)
    return command


def cancel(client: str, order_id: str) -> dict:
    return {"action": "cancel", "client": client, "request": f"r{next(_requests)}",
            "order_id": order_id}


def amend(client: str, order_id: str, **fields) -> dict:
    return {"action": "amend", "client": client, "request": f"r{next(_requests)}",
            "order_id": order_id, **fields}
