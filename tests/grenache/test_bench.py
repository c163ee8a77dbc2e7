"""The RPC baseline says why it is ours when it is not Node's."""
from twisted.trial import unittest

from twisted_exchange.grenache import bench


class WhyNotNodeTests(unittest.SynchronousTestCase):

    def test_without_node(self):
        self.patch(bench.shutil, "which", lambda name: None)
        self.assertEqual(bench._why_not_node(), "node not found")

    def test_without_the_node_packages_it_says_what_to_run(self):
        self.patch(bench.shutil, "which", lambda name: "/usr/bin/node")
        self.patch(bench, "NODE_MODULES", bench.Path("/nonexistent/node_modules"))
        self.assertEqual(bench._why_not_node(),
                         "/nonexistent/node_modules/grenache-nodejs-http missing: run `make interop`")
        self.assertIsNone(bench.measure_node(10))
