"""The peer's connection caps from its descriptor limit."""
from __future__ import annotations

import resource

from twisted.trial.unittest import SynchronousTestCase

from twisted_exchange.peer import limits


class ConnectionCapTests(SynchronousTestCase):
    def test_the_wanted_cap_while_the_descriptors_leave_the_reserve(self):
        self.assertEqual(limits.connection_cap(8192, 1 << 20), 8192)
        self.assertEqual(limits.connection_cap(8192, resource.RLIM_INFINITY), 8192)

    def test_fewer_where_the_descriptors_would_not_leave_the_reserve(self):
        self.assertEqual(limits.connection_cap(8192, 1024), 1024 - limits.RESERVED_FDS)
        self.assertEqual(limits.connection_cap(8192, 100), 0)


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
        self.assertEqual(limits.raise_descriptor_limit(), 524288)
        self.assertEqual(calls, [(524288, 524288)])

    def test_a_refused_raise_keeps_the_soft_limit(self):
        self.fake(1024, 4096, refuse=True)
        self.assertEqual(limits.raise_descriptor_limit(), 1024)

    def test_nothing_to_raise_asks_nothing(self):
        calls = self.fake(4096, 4096)
        self.assertEqual(limits.raise_descriptor_limit(), 4096)
        self.assertEqual(calls, [])
