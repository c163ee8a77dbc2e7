"""The state-machine code fingerprint a peer reports (peer/build.py)."""
from __future__ import annotations

import shutil
import tempfile
import unittest
from pathlib import Path

from tests.peer.test_failstop import PeerHarness
from twisted_exchange.peer.build import PACKAGE, state_machine_code


class StateMachineCodeTests(unittest.TestCase):

    def setUp(self):
        self.copy = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.copy)
        for part in ("core", "replication"):
            shutil.copytree(PACKAGE / part, self.copy / part, ignore=shutil.ignore_patterns("*.so", "__pycache__"))

    def edit(self, name: str) -> None:
        path = self.copy / name
        path.write_text(path.read_text() + "\n# edited\n")

    def test_it_is_the_packages_own_and_sixteen_hex_digits(self):
        code = state_machine_code()
        self.assertRegex(code, r"^[0-9a-f]{16}$")
        self.assertEqual(state_machine_code(self.copy), code)

    def test_it_changes_with_the_code_that_decides_results_only(self):
        before = state_machine_code(self.copy)
        self.edit("replication/raft.py")
        self.assertEqual(state_machine_code(self.copy), before)
        for name in ("replication/sessions.py", "core/exchange.py"):
            self.edit(name)
            after = state_machine_code(self.copy)
            self.assertNotEqual(after, before, name)
            before = after


class StatusTests(PeerHarness):

    def test_a_peer_reports_the_code_it_runs(self):
        self.assertEqual(self.peer.status()["state_machine_code"], state_machine_code())
