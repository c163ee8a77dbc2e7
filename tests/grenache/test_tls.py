"""Secure mode: RPCServer and RPCClient over mutual TLS, over loopback."""
from __future__ import annotations

import datetime
import random
from typing import Any

from twisted.trial import unittest

from twisted_exchange.grenache import Caller, GrenacheError, RPCClient, RPCServer
from twisted_exchange.grenache.bench import FixedLink
from twisted_exchange.grenache.pool import ConnectionPool
from twisted_exchange.pki import CA, CLIENT, PEER, Credential, Identity

PEER1, PEER2, ALICE = Identity(PEER, "peer1"), Identity(PEER, "peer2"), Identity(CLIENT, "alice")


#: One cluster for every test (made at import: trial has no setUpClass).
CLUSTER = CA.create()
PEER1_CREDENTIAL, ALICE_CREDENTIAL = CLUSTER.issue(PEER1, ["127.0.0.1"]), CLUSTER.issue(ALICE)


class SecureModeTests(unittest.TestCase):
    ca, peer1, alice = CLUSTER, PEER1_CREDENTIAL, ALICE_CREDENTIAL

    def setUp(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def handler(self, key: str, payload: Any) -> Any:
        self.calls.append((key, payload))
        return {"echo": payload}

    async def server(self, credential: Credential | None, **kwargs: Any) -> str:
        server = RPCServer(kwargs.pop("handler", self.handler), tls=credential, **kwargs)
        await server.start()
        self.addCleanup(server.stop)
        return f"127.0.0.1:{server.port}"

    def client(self, dests: list[str], credential: Credential | None, **kwargs: Any) -> RPCClient:
        client = RPCClient(FixedLink(dests), tls=credential, timeout=5.0, **kwargs)
        self.addCleanup(client.close)
        return client

    async def refused(self, call: Any, code: str) -> GrenacheError:
        with self.assertRaises(GrenacheError) as caught:
            await call
        self.assertEqual(caught.exception.code, code, caught.exception)
        self.assertEqual(self.calls, [])
        return caught.exception

    async def test_a_tls_client_calls_a_tls_server_with_an_unchanged_handler(self) -> None:
        dest = await self.server(self.peer1)
        self.assertEqual(await self.client([dest], self.alice).request("k", [1, "ü"]),
                         {"echo": [1, "ü"]})

    async def test_a_handler_with_caller_sees_the_verified_identity_of_the_client(self) -> None:
        callers: list[Caller] = []
        def handler(key: str, payload: Any, caller: Caller) -> str:
            callers.append(caller)
            return str(caller.identity)
        dest = await self.server(self.peer1, handler=handler, with_caller=True)
        client = self.client([dest], self.alice)
        self.assertEqual([await client.request("k", n) for n in range(2)],
                         ["client:alice", "client:alice"])
        self.assertEqual(callers[0].certificate.serial_number,
                         callers[1].certificate.serial_number)

    async def test_a_handler_with_caller_over_plain_http_sees_no_identity(self) -> None:
        dest = await self.server(None, handler=lambda key, payload, caller: [
            caller.identity, caller.certificate, caller.address.startswith("127.0.0.1:")],
            with_caller=True)
        self.assertEqual(await self.client([dest], None).request("k", 1), [None, None, True])

    async def test_a_call_expecting_the_servers_identity_succeeds(self) -> None:
        dest = await self.server(self.peer1)
        self.assertEqual(await self.client([dest], self.alice).request_to(
            dest, "k", 1, expect=PEER1), {"echo": 1})

    async def test_a_server_that_is_not_the_expected_peer_never_sees_the_payload(self) -> None:
        dest = await self.server(self.peer1)
        error = await self.refused(self.client([dest], self.alice).request_to(
            dest, "k", "secret", expect=PEER2), "ERR_TLS_IDENTITY")
        self.assertIn("names peer:peer1, not peer:peer2", error.detail)

    async def test_request_rotates_past_an_address_that_is_not_the_expected_peer(self) -> None:
        wrong = await self.server(self.peer1)
        right = await self.server(self.ca.issue(PEER2, ["127.0.0.1"]),
                                  handler=lambda key, payload: "peer2")
        client = self.client([wrong, right], self.alice, rng=random.Random(1))
        for _ in range(4):
            self.assertEqual(await client.request("k", "secret", expect=PEER2), "peer2")
        self.assertEqual(self.calls, [])

    async def test_request_moves_past_an_address_that_accepts_and_never_handshakes(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.protocol import Factory, Protocol
        silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        hole = f"127.0.0.1:{silent.getHost().port}"
        right = await self.server(self.peer1)
        first = random.Random()
        first.choice = lambda dests: dests[0]  # the black hole, while untried
        pool = ConnectionPool(reactor, tls=self.alice, connect_timeout=0.2)
        self.addCleanup(pool.close)
        client = self.client([hole, right], None, rng=first, pool=pool)
        self.assertEqual(await client.request("k", 1, timeout=4.0), {"echo": 1})  # else ERR_TIMEOUT at 4 s

    async def test_a_plain_http_client_gets_err_tls_required_not_a_hang(self) -> None:
        dest = await self.server(self.peer1)
        error = await self.refused(self.client([dest], None).request("k", 1),
                                   "ERR_REQUEST_GENERIC")
        self.assertIn("HTTP 400", error.detail)
        self.assertIn("ERR_TLS_REQUIRED", error.detail)

    async def test_a_tls_client_of_a_plain_server_fails_at_once(self) -> None:
        dest = await self.server(None)
        await self.refused(self.client([dest], self.alice).request("k", 1, retry=0),
                           "ERR_REQUEST_GENERIC")

    async def test_a_client_certificate_from_another_ca_is_refused(self) -> None:
        dest = await self.server(self.peer1)
        stranger = CA.create().issue(ALICE)
        await self.refused(self.client([dest], Credential(stranger.key, stranger.cert, self.alice.ca)).request("k", 1, retry=0),
                           "ERR_REQUEST_GENERIC")

    async def test_a_server_certificate_from_another_ca_is_refused(self) -> None:
        dest = await self.server(CA.create().issue(PEER1, ["127.0.0.1"]))
        error = await self.refused(self.client([dest], self.alice).request("k", 1, retry=0),
                                   "ERR_REQUEST_GENERIC")
        self.assertIn("certificate verify failed", error.detail)

    async def test_a_client_certificate_cannot_serve(self) -> None:
        dest = await self.server(self.ca.issue(Identity(CLIENT, "mallory"), ["127.0.0.1"]))
        error = await self.refused(self.client([dest], self.alice).request("k", 1, retry=0),
                                   "ERR_REQUEST_GENERIC")
        self.assertIn("certificate verify failed", error.detail)

    async def test_an_expired_server_certificate_is_refused(self) -> None:
        issued = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=3)
        dest = await self.server(self.ca.issue(PEER1, ["127.0.0.1"], now=issued,
                                               valid_for=datetime.timedelta(days=1)))
        error = await self.refused(self.client([dest], self.alice).request("k", 1, retry=0),
                                   "ERR_REQUEST_GENERIC")
        self.assertIn("certificate verify failed", error.detail)
