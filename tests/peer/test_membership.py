"""What ties a data directory to its cluster, and how a wiped one is recognised."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from twisted_exchange.peer import membership
from twisted_exchange.peer.membership import Heard, MembershipError, wiped

PEERS = ["peer1", "peer2", "peer3"]


def status(heard=(), configuration_index=0, voters=PEERS) -> dict:
    return {"id": "peer2", "heard": list(heard), "configuration_index": configuration_index,
            "configuration": {"voters": list(voters), "learners": []}}


class HeardTests(SynchronousTestCase):
    def setUp(self):
        self.data_dir = tempfile.mkdtemp(prefix="tx-heard-")
        self.addCleanup(shutil.rmtree, self.data_dir, True)

    def test_what_is_added_is_there_after_a_restart_and_nothing_else(self):
        heard = Heard(self.data_dir)
        heard.add("peer3")
        heard.add("peer2")
        heard.add("peer3")
        again = Heard(self.data_dir)
        self.assertEqual(list(again), ["peer2", "peer3"])
        self.assertIn("peer2", again)
        self.assertNotIn("peer1", again)
        self.assertEqual(sorted(p.name for p in Path(self.data_dir).iterdir()), [membership.HEARD])

    def test_a_damaged_file_is_a_membership_error_not_an_empty_memory(self):
        for content in ("[\"peer2\"", json.dumps({"peer2": 1}), json.dumps([2])):
            (Path(self.data_dir) / membership.HEARD).write_text(content)
            with self.assertRaises(MembershipError):
                Heard(self.data_dir)


class WipedTests(SynchronousTestCase):
    def test_a_peer_another_has_heard_from_is_wiped(self):
        reason = wiped("peer1", status(heard=["peer1", "peer3"]))
        self.assertIn("peer1 has a new, empty data directory but peer2 has heard from it before", reason)
        self.assertIn("exchangectl member replace peer1 NEW_NAME", reason)

    def test_a_peer_a_changed_configuration_names_is_wiped(self):
        reason = wiped("peer4", status(configuration_index=12, voters=PEERS + ["peer4"]))
        self.assertIn("peer2 counts it as a member", reason)

    def test_a_peer_nobody_heard_from_in_the_initial_configuration_is_new(self):
        self.assertIsNone(wiped("peer1", status(heard=["peer3"])))
        self.assertIsNone(wiped("peer1", {"id": "peer2"}))   # an older peer's status: nothing to judge by
        self.assertIsNone(wiped("peer1", status(configuration_index=12, voters=["peer2", "peer3", "peer4"])))
