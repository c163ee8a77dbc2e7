"""The naive baseline of ``exchangectl bench-cluster``: no consensus.

This is the design the seeds (and many public solutions) use: a peer
matches an order on its own book at once, answers, and broadcasts the order
to every other peer, which matches it on its book when it arrives.  Under
concurrent orders on different peers the arrival orders differ, so the books
diverge; the benchmark measures how fast it is and how many books end up
different.  It speaks Grenache RPC like the real peers, but finds the others
by address (no grape): discovery is not what is being compared.

Run: ``python -m twisted_exchange.ctl.naive --id n1 --port 7001 --others 127.0.0.1:7002,...``
"""
from __future__ import annotations

import sys
from typing import Any

import click

from twisted_exchange.core import Exchange

SERVICE = "exchange"


class NaivePeer:
    """An exchange that matches locally and tells the others afterwards."""

    def __init__(self, peer_id: str, others: list[str], client: Any) -> None:
        self.id = peer_id
        self.exchange = Exchange()
        self.applied = 0
        self._others = others
        self._client = client

    def __call__(self, key: str, payload: Any) -> Any:
        action = payload.get("action") if isinstance(payload, dict) else None
        if action == "submit":
            command = dict(payload)
            result = self._apply(command)
            for other in self._others:
                self._client.request_to(other, SERVICE, {"action": "naive.order", "command": command}
                                        ).addErrback(lambda failure: None)
            return result
        if action == "naive.order":
            self._apply(payload["command"])
            return {"ok": True}
        if action == "status":
            return {"id": self.id, "applied": self.applied, "commit": self.applied,
                    "last_index": self.applied, "digest": self.exchange.state_hash()}
        return {"ok": False, "error": f"ERR_UNKNOWN_ACTION: {action!r}"}

    def _apply(self, command: dict) -> dict:
        self.applied += 1
        return self.exchange.apply(command)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--id", "peer_id", required=True)
@click.option("--port", type=click.IntRange(1, 65535), required=True)
@click.option("--others", default="", help="Comma list of the other peers' host:port.")
def main(peer_id: str, port: int, others: str) -> None:
    """Serve one naive baseline peer on 127.0.0.1:PORT until SIGTERM."""
    from twisted.internet import reactor

    from twisted_exchange.grenache import RPCClient, RPCServer

    client = RPCClient(link=None, reactor=reactor)
    server = RPCServer(NaivePeer(peer_id, [o for o in others.split(",") if o], client),
                       host="127.0.0.1", port=port, reactor=reactor)
    reactor.callWhenRunning(server.startService)
    reactor.run()
    sys.exit(0)


if __name__ == "__main__":
    main()
