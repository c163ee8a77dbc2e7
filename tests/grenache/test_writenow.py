"""write_now (writenow.py): sent at once when nothing is queued, never out of order."""
from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from tests.grenache.fakes import Recorder
from twisted_exchange.grenache.writenow import write_now


class WriteNowTests(unittest.TestCase):

    async def connection(self) -> tuple[Any, Recorder]:
        """(the client's TCP transport, what the server side receives) over loopback."""
        servers: list[Recorder] = []
        factory = Factory()
        factory.buildProtocol = lambda _: servers.append(Recorder()) or servers[-1]  # type: ignore[method-assign]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            ClientFactory.forProtocol(Protocol))
        self.addCleanup(client.transport.abortConnection)
        while not servers:  # accepted on a later turn than the client's connect
            await _turn()
        return client.transport, servers[0]

    async def test_a_message_with_nothing_queued_is_sent_before_it_returns(self) -> None:
        transport, server = await self.connection()
        write_now(transport, b"now")
        self.assertEqual((transport._tempDataBuffer, transport.dataBuffer[transport.offset:]), ([], b""))
        await server.until(3)
        self.assertEqual(bytes(server.received), b"now")

    async def test_bytes_never_overtake_queued_ones(self) -> None:
        transport, server = await self.connection()
        transport.write(b"first, ")  # queued until the reactor finds the socket writable
        write_now(transport, b"then")
        self.assertEqual(transport._tempDataBuffer, [b"first, ", b"then"])
        await server.until(11)
        self.assertEqual(bytes(server.received), b"first, then")

    async def test_what_the_socket_does_not_take_follows_in_order(self) -> None:
        transport, server = await self.connection()
        big = bytes(range(256)) * (1 << 17)  # 32 MiB: more than a loopback socket takes at once
        write_now(transport, big)
        self.assertTrue(transport._tempDataBuffer, "the rest should be queued")
        write_now(transport, b"tail")
        await server.until(len(big) + 4)
        self.assertTrue(bytes(server.received) == big + b"tail")

    def test_any_other_transport_gets_a_plain_write(self) -> None:
        transport = StringTransport()
        write_now(transport, b"queued")
        self.assertEqual(transport.value(), b"queued")


def _turn() -> Any:
    """A Deferred that fires on the reactor's next turn."""
    from twisted.internet import task
    return task.deferLater(reactor, 0, lambda: None)
