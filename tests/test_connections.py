"""Connection caps: counting, eviction of silent connections, and sizing from ulimit -n."""
from __future__ import annotations

import resource

from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twisted_exchange import connections


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class CappedFactoryTests(SynchronousTestCase):
    """A wrapped factory's connections against the caps (here as the admin port and grape use it)."""

    def setUp(self) -> None:
        self.caps = connections.ConnectionCaps(Clock(), total=3, per_address=2, name="test")
        self.factory = connections.CappedFactory(Factory.forProtocol(_Echo), self.caps)

    def connect(self, host: str) -> object:
        connection = self.factory.buildProtocol(IPv4Address("TCP", host, 40000))
        if connection is not None:
            connection.makeConnection(StringTransport())
        return connection

    def test_past_the_per_address_cap_a_connection_is_refused(self) -> None:
        self.connect("10.0.0.1").dataReceived(b"a")
        self.connect("10.0.0.1").dataReceived(b"b")
        self.assertIsNone(self.connect("10.0.0.1"))
        self.assertEqual((self.caps.open, self.caps.refused, self.caps.by_address), (2, 1, {"10.0.0.1": 2}))

    def test_at_the_total_the_quietest_connection_gives_its_place(self) -> None:
        spoke, silent, newer = self.connect("10.0.0.1"), self.connect("10.0.0.2"), self.connect("10.0.0.3")
        spoke.dataReceived(b"hi")
        self.assertEqual(spoke.transport.value(), b"hi")  # the wrapped protocol is served through the wrapper
        latest = self.connect("10.0.0.4")
        self.assertIsNotNone(latest)
        self.assertTrue(silent.transport.disconnecting)
        self.assertFalse(spoke.transport.disconnecting or newer.transport.disconnecting)
        self.assertEqual((self.caps.open, self.caps.evicted), (3, 1))
        silent.connectionLost(None)  # the abort's, later: uncounted once
        self.assertEqual(self.caps.by_address, {"10.0.0.1": 1, "10.0.0.3": 1, "10.0.0.4": 1})

    def test_on_plain_http_a_connection_that_has_spoken_still_gives_its_place_when_quietest(self) -> None:
        # One byte proves nothing on plain HTTP: hosts that sent one each once cannot hold the total.
        held = [self.connect(f"10.0.0.{n}") for n in range(3)]
        for connection in held:
            connection.dataReceived(b"x")
        held[0].dataReceived(b"y")  # held[1] is now the quietest
        self.assertIsNotNone(self.connect("10.0.0.9"))
        self.assertEqual([c.transport.disconnecting for c in held], [False, True, False])
        self.assertEqual((self.caps.open, self.caps.refused, self.caps.evicted), (3, 0, 1))

    def test_bytes_sent_count_as_activity_too(self) -> None:
        first, second, third = (self.connect(f"10.0.0.{n}") for n in range(3))
        first.dataReceived(b"ping")  # echoed: a write through the wrapper
        second.write(b"unasked")
        self.assertIsNotNone(self.connect("10.0.0.9"))
        self.assertEqual([c.transport.disconnecting for c in (first, second, third)], [False, False, True])


class ConnectionFamiliesTests(SynchronousTestCase):
    def test_open_refused_and_evicted_under_the_servers_prefix_read_at_scrape_time(self) -> None:
        caps = connections.ConnectionCaps(Clock(), total=1, per_address=1)
        registry = CollectorRegistry()

        class Collector:
            def describe(self):
                return connections.connection_families("x_api", "X")

            def collect(self):
                return connections.connection_families("x_api", "X", caps.counts())

        registry.register(Collector())
        factory = connections.CappedFactory(Factory.forProtocol(_Echo), caps)
        for host in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):  # the second refused, the third evicts the first
            connection = factory.buildProtocol(IPv4Address("TCP", host, 40000))
            if connection is not None:
                connection.makeConnection(StringTransport())
        self.assertEqual([registry.get_sample_value(name) for name in
                          ("x_api_connections", "x_api_connections_refused_total", "x_api_connections_evicted_total")],
                         [1, 1, 1])
        self.assertEqual([family.name for family in connections.connection_families("x_api", "X")],
                         ["x_api_connections", "x_api_connections_refused", "x_api_connections_evicted"])


class ConnectionCapTests(SynchronousTestCase):
    def test_the_wanted_cap_while_the_descriptors_leave_the_reserve(self):
        self.assertEqual(connections.connection_cap(8192, 1 << 20), 8192)
        self.assertEqual(connections.connection_cap(8192, resource.RLIM_INFINITY), 8192)

    def test_fewer_where_the_descriptors_would_not_leave_the_reserve(self):
        self.assertEqual(connections.connection_cap(8192, 1024), 1024 - connections.RESERVED_FDS)
        self.assertEqual(connections.connection_cap(8192, 100), 0)


class DescriptorLimitTests(SynchronousTestCase):
    def fake(self, soft: int, hard: int, refuse: bool = False) -> list:
        """Patch getrlimit/setrlimit; the setrlimit calls made."""
        calls = []

        def setrlimit(which, limits_):
            calls.append(limits_)
            if refuse:
                raise ValueError("not allowed")
        self.patch(resource, "getrlimit", lambda which: (soft, hard))
        self.patch(resource, "setrlimit", setrlimit)
        return calls

    def test_the_soft_limit_is_raised_to_the_hard_one(self):
        calls = self.fake(1024, 524288)
        self.assertEqual(connections.raise_descriptor_limit(), 524288)
        self.assertEqual(calls, [(524288, 524288)])

    def test_a_refused_raise_keeps_the_soft_limit(self):
        self.fake(1024, 4096, refuse=True)
        self.assertEqual(connections.raise_descriptor_limit(), 1024)

    def test_nothing_to_raise_asks_nothing(self):
        calls = self.fake(4096, 4096)
        self.assertEqual(connections.raise_descriptor_limit(), 4096)
        self.assertEqual(calls, [])
