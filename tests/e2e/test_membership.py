"""End-to-end: `exchangectl member add peer4` then `member remove peer1` under
steady load (`exchangectl bench`, and the harness's Trader, whose every
acknowledged order is checked on every peer) loses nothing, and `exchangectl
check` is ok on peer2..peer4 (issue 13).  The bench's own final check may
fail: it still asks the removed peer1."""
from __future__ import annotations

import json

from twisted.internet import defer

from tests.e2e.cluster import Trader
from tests.e2e.test_cluster import ClusterTestCase
from tests.support import free_ports


class MembershipChangeTests(ClusterTestCase):
    timeout = 300

    @defer.inlineCallbacks
    def test_adding_peer4_then_removing_peer1_under_load_loses_nothing(self):
        trader = Trader(self.cluster, ["peer2", "peer3"], seed=13)
        load = trader.run(clients=4, orders_each=60)
        # exchangectl's own steady load beside it, on another market (the Trader's is checked trade by
        # trade), counted so that the 10,000 closed orders each peer keeps still hold the Trader's
        bench = self.exchangectl("--timeout", "2", "bench", "--count", "4000", "--clients", "2",
                                 "--symbol", "ETHUSD", "--wait", "1", "--json")
        port, = free_ports(1)
        added = yield self.exchangectl("member", "add", "peer4", "--port", str(port))
        self.assertEqual(added.returncode, 0, added.stdout + added.stderr)
        self.assertIn("peer4 is a voter", added.stdout)
        removed = yield self.exchangectl("member", "remove", "peer1")
        self.assertEqual(removed.returncode, 0, removed.stdout + removed.stderr)
        yield load
        self.assertEqual(trader.refused, [])
        benched = json.loads((yield bench).stdout)
        self.assertGreater(benched["committed"], 100, benched)
        listed = yield self.exchangectl("member", "list", "--json")
        self.assertIn('"peer4"', listed.stdout)
        self.assertNotIn('"peer1"', listed.stdout)
        self.peers = ["peer2", "peer3", "peer4"]
        checked = yield self.exchangectl("check", "--wait", "30")
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
        yield self.assert_consistent(trader)
