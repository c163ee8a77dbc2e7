"""CI-sized nemesis run: 45 s of faults across namespaces, compaction on,
then a clean verdict.

The run is a child process (``tests.netns.run``): it moves itself onto the
client host's namespace and runs its own reactor, neither of which a test
runner's process should do.  The 5-minute run is ``make nemesis``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from tests.netns.hosts import unavailable
from tests.support import ROOT

SECONDS = 45


class NemesisTests(unittest.TestCase):
    def setUp(self):
        reason = unavailable()
        if reason is not None:
            self.skipTest(reason)

    def test_faults_for_45_seconds_while_every_peer_compacts_lose_duplicate_and_diverge_nothing(self):
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "figures.json"
            run = subprocess.Popen(
                [sys.executable, "-m", "tests.netns.run", "--seconds", str(SECONDS), "--seed", "7",
                 "--clients", "4", "--json", str(report)],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                output, _ = run.communicate(timeout=SECONDS + 240)
            finally:
                if run.poll() is None:  # SIGTERM: the run deletes its namespaces and processes
                    run.terminate()
                    output, _ = run.communicate(timeout=60)
            figures = json.loads(report.read_text()) if report.exists() else {}
        self.assertEqual(run.returncode, 0, output)
        self.assertEqual((figures["lost"], figures["duplicated"], figures["divergent"]), (0, 0, 0))
        self.assertGreaterEqual(figures["faults_total"], 5, figures["faults"])
        self.assertGreater(figures["acked"], 100, figures)
        self.assertGreater(figures["replays_acked"], 0, figures)  # late duplicates were sent and answered
        self.assertTrue(all(peer["taken"] for peer in figures["snapshots"].values()), figures["snapshots"])
