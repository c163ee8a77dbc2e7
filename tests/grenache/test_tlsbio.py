"""The TLS layer over Python's ssl (tlsbio.py), end to end over loopback TCP."""
from __future__ import annotations

import os
import ssl
from typing import Any
from unittest import mock

from cryptography import x509
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.protocol import ClientFactory, Factory
from twisted.trial import unittest

from tests.grenache.fakes import Recorder
from twisted_exchange.grenache import tls as tls_module, tlsbio
from twisted_exchange.grenache.tls import context
from twisted_exchange.grenache.tlsbio import TLSFactory
from twisted_exchange.pki import CA, CLIENT, PEER, Credential, Identity

CLUSTER = CA.create()
SERVER, CLIENT_CREDENTIAL = CLUSTER.issue(Identity(PEER, "peer1")), CLUSTER.issue(Identity(CLIENT, "alice"))


class TLSLayerTests(unittest.TestCase):

    async def pair(self, client_credential: Any = CLIENT_CREDENTIAL) -> tuple[Recorder, Recorder]:
        """(server side, client side) of one TLS connection over loopback."""
        servers: list[Recorder] = []
        def accept(_: Any) -> Recorder:
            servers.append(Recorder())
            return servers[-1]
        server_factory = Factory()
        server_factory.buildProtocol = accept  # type: ignore[method-assign]
        port = reactor.listenTCP(0, TLSFactory(context(SERVER, server_side=True), server_factory, server_side=True),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = Recorder()
        tls = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            TLSFactory(context(client_credential, server_side=False),
                       ClientFactory.forProtocol(lambda: client), server_side=False))
        self.addCleanup(tls.transport.abortConnection)
        return servers[0], client

    async def test_both_sides_see_the_other_sides_verified_certificate_after_the_handshake(self) -> None:
        server, client = await self.pair()
        await client.handshaken
        await server.handshaken
        self.assertEqual(client.transport.peer_certificate.serial_number, _serial(SERVER.cert))
        self.assertEqual(server.transport.peer_certificate.serial_number, _serial(CLIENT_CREDENTIAL.cert))

    async def test_what_is_written_during_the_handshake_arrives_after_it(self) -> None:
        server, client = await self.pair()
        client.transport.write(b"early")  # before the handshake can have finished: no turn has passed
        client.transport.writeSequence([b" and ", b"on time"])
        await server.until(len(b"early and on time"))
        self.assertEqual(bytes(server.received), b"early and on time")

    async def test_a_megabyte_crosses_whole_in_both_directions(self) -> None:
        server, client = await self.pair()
        await server.handshaken
        payload = bytes(range(256)) * 4096
        client.transport.write(payload)
        server.transport.write(payload[::-1])
        await server.until(len(payload))
        await client.until(len(payload))
        self.assertEqual((bytes(server.received), bytes(client.received)), (payload, payload[::-1]))

    async def test_records_arriving_a_byte_at_a_time_are_read_whole_once_complete(self) -> None:
        # Each byte but a record's last leaves OpenSSL wanting more; the
        # reader must then stop, and go on when the rest comes.
        server, client = await self.pair()
        await server.handshaken
        layer = server.transport
        whole = layer.dataReceived
        layer.dataReceived = lambda data: [whole(data[i:i + 1]) for i in range(len(data))]
        for message in (b"first", b"second record", b"third" * 1000):
            client.transport.write(message)
        client.transport.loseConnection()  # and a close_notify, a byte at a time too
        await server.lost
        self.assertEqual(bytes(server.received), b"firstsecond record" + b"third" * 1000)
        self.assertIsInstance(server.reason.value, ConnectionDone)

    async def test_lose_connection_sends_close_notify_and_the_other_side_closes_cleanly(self) -> None:
        server, client = await self.pair()
        await client.handshaken
        client.transport.write(b"last words")
        client.transport.loseConnection()
        client.transport.write(b"after the close: dropped")
        await server.lost
        reason = server.reason
        self.assertEqual(bytes(server.received), b"last words")
        self.assertTrue(reason.check(ConnectionDone), reason)
        await client.lost

    async def test_tcp_closed_under_tls_is_a_lost_connection_not_a_clean_close(self) -> None:
        server, client = await self.pair()
        await server.handshaken
        client.transport.write(b"cut")
        client.transport.transport.loseConnection()  # under the TLS layer: no close_notify
        await server.lost
        self.assertTrue(server.reason.check(ConnectionLost), server.reason)
        self.assertEqual(bytes(server.received), b"cut")

    async def test_an_abort_is_reported_as_such_not_as_a_missing_close_notify(self) -> None:
        server, client = await self.pair()
        await client.handshaken
        client.transport.abortConnection()
        await client.lost
        self.assertTrue(client.reason.check(ConnectionAborted), client.reason)

    async def test_a_certificate_that_cryptography_cannot_read_fails_the_handshake_not_the_reactor(self) -> None:
        with mock.patch.object(tlsbio.x509, "load_der_x509_certificate", side_effect=ValueError("odd DER")):
            server, client = await self.pair()
            await server.lost
        self.assertTrue(server.reason.check(ssl.SSLError), server.reason)
        self.assertIn("cannot be read: odd DER", str(server.reason.value))
        self.assertFalse(server.handshaken.called)

    async def test_a_client_certificate_from_another_ca_loses_the_connection_with_the_tls_error(self) -> None:
        stranger = CA.create().issue(Identity(CLIENT, "mallory"))
        server, client = await self.pair(Credential(stranger.key, stranger.cert, SERVER.ca))
        await server.lost
        reason = server.reason
        self.assertTrue(reason.check(ssl.SSLError), reason)
        self.assertFalse(server.handshaken.called)
        await client.lost
        self.assertEqual(bytes(server.received), b"")

    async def test_garbage_instead_of_a_record_loses_the_connection_with_the_tls_error(self) -> None:
        server, client = await self.pair()
        await server.handshaken
        client.transport.transport.write(b"\x17\x03\x03\x00\x05garbage")  # under the TLS layer
        await server.lost
        reason = server.reason
        self.assertTrue(reason.check(ssl.SSLError), reason)
        self.assertEqual(bytes(server.received), b"")


def _serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


class ContextTests(unittest.TestCase):

    def test_both_sides_require_tls_1_2_a_verified_certificate_and_refuse_renegotiation(self) -> None:
        for server_side, credential in ((True, SERVER), (False, CLIENT_CREDENTIAL)):
            tls = context(credential, server_side)
            self.assertEqual((tls.minimum_version, tls.verify_mode, tls.check_hostname),
                             (ssl.TLSVersion.TLSv1_2, ssl.CERT_REQUIRED, False))
            self.assertTrue(tls.options & ssl.OP_NO_RENEGOTIATION)
            self.assertTrue(tls.options & ssl.OP_NO_COMPRESSION)

    def test_without_memfd_the_credential_passes_through_a_private_file_that_is_gone_after(self) -> None:
        seen: list[tuple[str, int]] = []
        load = ssl.SSLContext.load_cert_chain
        def spy(tls: ssl.SSLContext, path: str) -> None:
            seen.append((path, os.stat(path).st_mode & 0o777))
            load(tls, path)
        with mock.patch.object(tls_module, "_memfd_create", None), \
                mock.patch.object(ssl.SSLContext, "load_cert_chain", spy):
            context(SERVER, server_side=True)
        [(path, mode)] = seen
        self.assertEqual(mode, 0o600)
        self.assertFalse(os.path.exists(path))

