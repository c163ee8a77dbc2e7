"""A stand-in for exchange peers: an in-process grape and RPC servers that
answer the peer protocol (README.md, "Peer RPC protocol") from canned state.

Lets exchangectl's Grenache side be tested without Raft: the fakes record
what they were sent and answer what the test set up.
"""
from __future__ import annotations

from typing import Any

from tests.support import LOOPBACK, free_ports
from twisted_exchange.grape.service import GrapeConfig, GrapeService
from twisted_exchange.grenache import GrenacheError, Link, RPCServer
from twisted_exchange.pki import Credential


class Refused(Exception):
    """A protocol error reply: sent as ``"<code>: <reason>"``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code


class FakePeer:
    """One peer's canned answers; ``received`` lists every payload."""

    def __init__(self, peer_id: str, applied: int = 5, digest: str = "ab" * 32,
                 role: str = "follower", leader: str | None = "peer1") -> None:
        self.id = peer_id
        self.status = {"id": peer_id, "role": role, "term": 2, "leader": leader,
                       "commit": applied, "applied": applied, "last_index": applied, "digest": digest,
                       "peers": {}, "address": ""}
        self.book = {"bids": [["100", "2"]], "asks": [["101", "1.5"]]}
        self.received: list[dict] = []
        self.next_order_id = 1
        self.address = ""  # "host:port" once served

    def __call__(self, key: str, payload: Any) -> Any:
        self.received.append(payload)
        action = payload.get("action")
        if action == "status":
            return dict(self.status)
        if action == "book":
            return {"peer": self.id, "symbol": payload["symbol"], "applied": self.status["applied"],
                    **self.book}
        if action == "order":
            if payload["order_id"] == "404":
                raise Refused("ERR_UNKNOWN_ORDER", "no order '404'")
            return {"peer": self.id, "applied": self.status["applied"],
                    "order": {"id": payload["order_id"], "side": "buy", "price": "100"}}
        if action == "submit":
            order_id, self.next_order_id = str(self.next_order_id), self.next_order_id + 1
            return {"ok": True, "order": {"id": order_id, "client": payload["client"],
                                          "side": payload["side"], "price": payload.get("price"),
                                          "quantity": payload["quantity"], "status": "open"},
                    "fills": []}
        raise Refused("ERR_UNKNOWN_ACTION", f"unknown action {action!r}")


class FakeCluster:
    """A grape and fake peers announced on it, all in this reactor; stopped at cleanup."""

    def __init__(self, test: Any, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.test = test
        self.reactor = reactor
        dht, api = free_ports(2)
        self.grape = GrapeService(GrapeConfig(dht_port=dht, api_port=api, bind=LOOPBACK), reactor)
        self.grape.startService()
        test.addCleanup(self.grape.stopService)
        self.grape_url = f"http://{LOOPBACK}:{api}"
        self.grape_ports = (dht, api)
        self.link = Link(self.grape_url, reactor=reactor)
        test.addCleanup(self.link.close)
        self.peers: dict[str, FakePeer] = {}

    async def add(self, peer: FakePeer, announced: bool = True, tls: Credential | None = None) -> FakePeer:
        """Serve ``peer`` (over mutual TLS with ``tls``) and announce it as
        ``exchange`` and ``exchange:<id>`` (unless not ``announced``: the
        grape then knows only what else is)."""
        server = RPCServer(peer, host=LOOPBACK, port=0, reactor=self.reactor, tls=tls)
        await server.start()
        self.test.addCleanup(server.stop)
        peer.address = f"{LOOPBACK}:{server.port}"
        if announced:
            await self.announce(peer.id, server.port)
        self.peers[peer.id] = peer
        return peer

    async def announce(self, peer_id: str, port: int) -> None:
        """Announce ``peer_id`` at ``port`` (which may have nothing listening: a stale address).

        A lone grape keeps the announce but answers "No nodes to query", as
        Node's does; the lookup that follows proves it was stored.
        """
        for name in ("exchange", f"exchange:{peer_id}"):
            try:
                await self.link.announce(name, port)
            except GrenacheError:
                pass
        self.test.assertIn(f"{LOOPBACK}:{port}", await self.link.lookup(f"exchange:{peer_id}"))
