"""The grape's admin port: its own metrics and /healthz."""
from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task
from twisted.internet.error import CannotListenError
from twisted.trial.unittest import TestCase

from tests.grape.support import call, start_grape
from tests.support import free_port, http_get


def values(text: bytes) -> dict[tuple, float]:
    return {(s.name, *sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


class GrapeAdminTests(TestCase):
    @defer.inlineCallbacks
    def test_metrics_count_api_requests_by_endpoint_and_show_the_dht(self):
        grape = start_grape(self, admin_port=0)
        yield call(grape, "/announce", ["svc", 4242])
        yield call(grape, "/lookup", "svc")
        yield call(grape, "/lookup", 7)
        yield call(grape, "/nonsense", "x")
        status, content_type, body = yield http_get(grape.admin_url + "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(content_type.startswith("text/plain"))
        found = values(body)
        prefix = "twisted_exchange_grape_"
        # a lone grape stores the announce but answers "No nodes to query", as Node's does
        self.assertEqual(found[(prefix + "requests_total", ("endpoint", "announce"), ("outcome", "error"))], 1)
        self.assertEqual(found[(prefix + "requests_total", ("endpoint", "lookup"), ("outcome", "ok"))], 1)
        self.assertEqual(found[(prefix + "requests_total", ("endpoint", "lookup"), ("outcome", "error"))], 1)
        self.assertEqual(found[(prefix + "requests_total", ("endpoint", "unknown"), ("outcome", "error"))], 1)
        self.assertEqual(found[(prefix + "announcements",)], 1)
        self.assertEqual(found[(prefix + "routing_nodes",)], 0)
        self.assertEqual((found[(prefix + "api_connections_refused_total",)],
                          found[(prefix + "api_connections_evicted_total",)]), (0, 0))
        self.assertIn((prefix + "api_connections",), found)
        self.assertGreater(found[("process_resident_memory_bytes",)], 0)
        self.assertIn(("python_gc_collections_total", ("generation", "2")), found)

    @defer.inlineCallbacks
    def test_healthz_is_503_while_a_bootstrapped_grape_knows_no_other_node(self):
        lone = start_grape(self, admin_port=0)
        status, _, body = yield http_get(lone.admin_url + "/healthz")
        self.assertEqual((status, json.loads(body)), (200, {"ok": True, "problems": []}))
        stranded = start_grape(self, admin_port=0, bootstrap=[("127.0.0.1", free_port())], query_timeout=0.1)
        status, _, body = yield http_get(stranded.admin_url + "/healthz")
        self.assertEqual(status, 503)
        self.assertIn("no other DHT node known", json.loads(body)["problems"][0])

    def test_no_admin_port_unless_asked(self):
        self.assertIsNone(start_grape(self).admin_url)

    @defer.inlineCallbacks
    def test_an_admin_port_in_use_fails_the_start(self):
        taken = start_grape(self, admin_port=0)
        with self.assertRaises(CannotListenError):
            start_grape(self, admin_port=int(taken.admin_url.rsplit(":", 1)[1]))
        yield task.deferLater(reactor, 0, lambda: None)  # the other ports close on the next turn
