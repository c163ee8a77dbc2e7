"""The peer's admin port: metrics, /healthz, the dashboard API and its files."""
from __future__ import annotations

import ast
import fnmatch
import json
import random
import shutil
import socket
import tempfile
from importlib.resources import files
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from twisted_exchange.adminport import MAX_CONNECTIONS, AdminPort, JSONResource, admin_root
from twisted_exchange.core.commands import canonical_command
from twisted_exchange.grenache import GrenacheError, Link, RPCClient
from twisted_exchange.peer import membership, metrics as peer_metrics
from twisted_exchange.peer.admin import AGREES, CLUSTER_FIELDS, DASHBOARD, DIVERGED, SELF, UNCONFIRMED, Agreement
from twisted_exchange.peer.history import Digests
from twisted_exchange.peer.metrics import PeerMetrics
from twisted_exchange.peer.protocol import ERR_INVALID_ORDER, ERR_UNKNOWN_ACTION, RequestError
from twisted_exchange.peer.service import PeerService
from twisted_exchange.replication.records import empty_hard_state
from twisted_exchange.replication.replica import Replica
from twisted_exchange.replication.storage import Recovered
from tests.peer.test_service import PEERS, order
from tests.support import LOOPBACK, ROOT, closed_by_peer, eventually, http_get, start_grape


def samples(text: str) -> dict[tuple, float]:
    """``{(sample name, (label, value), ...): value}`` of a /metrics page."""
    return {(s.name, *sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class _Observed:
    """What PeerMetrics reads, without a running peer."""

    def __init__(self) -> None:
        self.replica = Replica("p1", ["p1"], Recovered(empty_hard_state(), None, []), random.Random(0))

    def health(self) -> dict:
        return {"ok": True, "problems": []}

    def connections(self) -> tuple[int, int, int]:
        return 3, 1, 2


class PeerMetricsTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.metrics = PeerMetrics(_Observed(), now=self.clock.seconds)

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(f"twisted_exchange_{name}", labels)

    def test_rpc_connections_open_and_refused_are_read_at_scrape_time(self):
        self.assertEqual((self.value("rpc_connections"), self.value("rpc_connections_refused_total"),
                          self.value("rpc_connections_evicted_total")), (3, 1, 2))

    def test_a_request_is_counted_by_action_and_outcome_and_timed_until_answered(self):
        answer = defer.Deferred()
        handler = self.metrics.metered(lambda key, payload, caller: answer)
        result = handler("exchange", {"action": "submit"}, None)
        self.clock.advance(0.25)
        answer.callback({"ok": True})
        self.assertEqual(self.successResultOf(result), {"ok": True})
        self.assertEqual(self.value("requests_total", action="submit", outcome="ok"), 1)
        self.assertEqual(self.value("request_seconds_sum", action="submit"), 0.25)

    def test_a_refusal_counts_its_error_code_and_still_reaches_the_caller(self):
        def refuse(key, payload, caller):
            raise RequestError(ERR_INVALID_ORDER, "no")
        with self.assertRaises(RequestError):
            self.metrics.metered(refuse)("exchange", {"action": "submit"}, None)
        failing = self.metrics.metered(lambda *args: defer.fail(RequestError(ERR_INVALID_ORDER, "no")))
        self.failureResultOf(failing("exchange", {"action": "amend"}, None), RequestError)
        self.assertEqual(self.value("requests_total", action="submit", outcome=ERR_INVALID_ORDER), 1)
        self.assertEqual(self.value("requests_total", action="amend", outcome=ERR_INVALID_ORDER), 1)

    def test_a_failure_without_a_code_is_internal(self):
        failing = self.metrics.metered(lambda *args: defer.fail(ZeroDivisionError()))
        self.failureResultOf(failing("exchange", {"action": "book"}, None), ZeroDivisionError)
        self.assertEqual(self.value("requests_total", action="book", outcome="ERR_INTERNAL"), 1)

    def test_an_action_we_do_not_serve_is_counted_as_invalid_not_under_its_name(self):
        handler = self.metrics.metered(lambda *args: {"ok": True})
        for payload in ({"action": "x" * 40}, [1, 2], {"no": "action"}):
            handler("exchange", payload)
        self.assertEqual(self.value("requests_total", action="invalid", outcome="ok"), 3)
        self.assertIsNone(self.value("requests_total", action="x" * 40, outcome="ok"))

    def test_trades_count_per_symbol_with_a_bounded_number_of_labels(self):
        symbols = [f"S{i:03d}" for i in range(peer_metrics.MAX_SYMBOLS + 5)]
        for index, symbol in enumerate(symbols, 1):
            self.metrics.applied(index, {}, {"ok": True, "fills": [{"symbol": symbol}, {"symbol": symbol}]})
        self.metrics.applied(len(symbols) + 1, None, None)
        self.assertEqual(self.value("trades_total", symbol="S000"), 2)
        self.assertEqual(self.value("trades_total", symbol=peer_metrics.OTHER), 10)
        self.assertIsNone(self.value("trades_total", symbol=symbols[-1]))

    def test_fsync_times_are_a_histogram(self):
        for seconds in (0.0002, 0.0005, 0.003):
            self.metrics.fsynced(seconds)
        self.assertEqual(self.value("fsync_seconds_count"), 3)
        self.assertEqual(self.value("fsync_seconds_bucket", le="0.00025"), 1)
        self.assertEqual(self.value("fsync_seconds_bucket", le="0.0005"), 2)  # a bound is in its own bucket
        self.assertEqual(self.value("fsync_seconds_bucket", le="+Inf"), 3)
        self.assertAlmostEqual(self.value("fsync_seconds_sum"), 0.0037)


    def test_background_snapshots_count_by_outcome_and_time_what_compacted(self):
        self.assertEqual(self.value("snapshots_total", outcome="failed"), 0)  # every outcome shown from the start
        self.metrics.snapshotted("compacted", 0.3)
        self.metrics.snapshotted("stale")
        self.metrics.snapshotted("failed")
        self.metrics.snapshotted("failed")
        self.assertEqual(self.value("snapshots_total", outcome="compacted"), 1)
        self.assertEqual(self.value("snapshots_total", outcome="stale"), 1)
        self.assertEqual(self.value("snapshots_total", outcome="failed"), 2)
        self.assertEqual(self.value("snapshot_seconds_count"), 1)
        self.assertEqual(self.value("snapshot_seconds_bucket", le="0.25"), 0)
        self.assertEqual(self.value("snapshot_seconds_bucket", le="0.5"), 1)


class AgreementTests(SynchronousTestCase):
    def setUp(self):
        self.digests = Digests()
        for index in range(1, 11):
            self.digests.record(index, f"d{index}")
        self.agreement = Agreement("p1", self.digests)
        self.agreement.own = (10, "d10")

    def test_this_peer_is_the_reference(self):
        self.assertEqual(self.agreement.judge("p1", 10, "d10"), SELF)

    def test_a_peer_at_or_behind_this_one_is_checked_at_its_own_index(self):
        self.assertEqual(self.agreement.judge("p2", 10, "d10"), AGREES)
        self.assertEqual(self.agreement.judge("p2", 7, "d7"), AGREES)
        self.assertEqual(self.agreement.judge("p3", 7, "forged"), DIVERGED)

    def test_a_peer_ahead_is_unconfirmed_until_this_peer_catches_up(self):
        self.assertEqual(self.agreement.judge("p2", 12, "d12"), UNCONFIRMED)
        for index in (11, 12, 13):
            self.digests.record(index, f"d{index}")
        self.agreement.own = (13, "d13")
        self.assertEqual(self.agreement.judge("p2", 15, "d15"), AGREES)  # its report at 12, checked now
        self.assertEqual(self.agreement.judge("p3", 14, "bad"), UNCONFIRMED)
        self.digests.record(14, "d14")
        self.agreement.own = (14, "d14")
        self.assertEqual(self.agreement.judge("p3", 20, "d20"), DIVERGED)


class AdminPortTests(TestCase):
    """The shared admin port, with a stand-in health and API."""

    def serve(self, root) -> str:
        port = AdminPort(root)
        port.start()
        self.addCleanup(port.stop)
        return port.url

    @defer.inlineCallbacks
    def test_healthz_is_200_while_healthy_and_503_with_the_problems_when_not(self):
        health = {"ok": True, "problems": []}
        url = self.serve(admin_root(CollectorRegistry(), lambda: health))
        status, content_type, body = yield http_get(url + "/healthz")
        self.assertEqual((status, content_type, json.loads(body)), (200, "application/json", health))
        health = {"ok": False, "problems": ["tick loop stalled"]}
        status, _, body = yield http_get(url + "/healthz")
        self.assertEqual((status, json.loads(body)), (503, health))

    @defer.inlineCallbacks
    def test_a_failing_api_is_one_line_500_without_a_traceback(self):
        root = admin_root(CollectorRegistry(), lambda: {"ok": True, "problems": []})
        root.putChild(b"boom", JSONResource(lambda query: 1 / 0))
        status, _, body = yield http_get(self.serve(root) + "/boom")
        self.assertEqual((status, json.loads(body)), (500, {"error": "internal error: ZeroDivisionError"}))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def capped(self) -> tuple[AdminPort, int, list]:
        """A served admin port, its port number, and a list of sockets closed at cleanup."""
        admin = AdminPort(admin_root(CollectorRegistry(), lambda: {"ok": True, "problems": []}))
        admin.start()
        self.addCleanup(admin.stop)
        held: list = []
        self.addCleanup(lambda: [s.close() for s in held])
        return admin, int(admin.url.rsplit(":", 1)[1]), held

    @defer.inlineCallbacks
    def test_at_its_cap_of_half_sent_requests_a_new_request_is_answered_in_the_quietest_ones_place(self):
        # Plain HTTP: a byte proves nothing, so connections that sent one (Slowloris) give way too.
        admin, port, held = self.capped()
        yield deferToThread(_open, port, MAX_CONNECTIONS, held, b"GET /heal")  # in a thread: this reactor accepts
        yield eventually(lambda: admin._site.caps.open == MAX_CONNECTIONS, 10, what="every connection accepted")
        extra = yield deferToThread(_open, port, 1, held, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = yield deferToThread(extra.recv, 1024)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertEqual((admin._site.caps.evicted, admin._site.caps.refused), (1, 0))  # the quietest gave way

    @defer.inlineCallbacks
    def test_at_its_cap_a_new_connection_takes_the_place_of_the_oldest_silent_one(self):
        admin, port, held = self.capped()
        yield deferToThread(_open, port, MAX_CONNECTIONS, held)
        yield eventually(lambda: admin._site.caps.open == MAX_CONNECTIONS, 10, what="every connection accepted")
        extra = yield deferToThread(_open, port, 1, held, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = yield deferToThread(extra.recv, 1024)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertTrue((yield deferToThread(closed_by_peer, held[0])))  # the oldest, aborted for it

    @defer.inlineCallbacks
    def test_only_get_is_served(self):
        url = self.serve(admin_root(CollectorRegistry(), lambda: {"ok": True, "problems": []}))
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = yield agent.request(b"POST", (url + "/healthz").encode())
        self.assertEqual(response.code, 405)


class DashboardFilesTests(SynchronousTestCase):
    def test_the_dashboard_files_are_found_in_the_package(self):
        dashboard = files("twisted_exchange.peer").joinpath("dashboard")
        for name in ("index.html", "app.js", "style.css"):
            self.assertTrue(dashboard.joinpath(name).is_file(), name)
        self.assertEqual(Path(str(dashboard)), DASHBOARD)

    def test_setup_ships_every_dashboard_file(self):
        tree = ast.parse((ROOT / "setup.py").read_text())
        package_data = next(ast.literal_eval(k.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
                            for k in node.keywords if k.arg == "package_data")
        patterns = package_data["twisted_exchange.peer"]
        for path in DASHBOARD.iterdir():
            self.assertTrue(any(fnmatch.fnmatch(f"dashboard/{path.name}", p) for p in patterns), path.name)

    def test_the_page_loads_nothing_from_outside_the_admin_port(self):
        self.assertNotIn("://", (DASHBOARD / "index.html").read_text())
        for name in ("app.js", "style.css"):
            text = (DASHBOARD / name).read_text().replace("http://www.w3.org/2000/svg", "")
            self.assertNotIn("https://", text, name)
            self.assertNotIn("http://", text, name)
            self.assertNotIn("@import", text, name)


class PeerAdminTests(TestCase):
    """Three peers with admin ports and a grape in one reactor, over loopback."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.grape_url = grape_url = start_grape(self)
        self.peers = {}
        for seed, peer_id in enumerate(PEERS):
            data_dir = tempfile.mkdtemp(prefix=f"tx-{peer_id}-")
            self.addCleanup(shutil.rmtree, data_dir, True)
            peer = PeerService(peer_id, PEERS, [grape_url], data_dir, fsync="batch",
                               seed=seed, admin_port=0)
            self.peers[peer_id] = peer
            yield peer.startService()
            self.addCleanup(lambda peer=peer: peer.stopService() if peer.running else None)
        yield eventually(lambda: len({p.replica.node.leader for p in self.peers.values()} - {None}) == 1
                         and all(p.replica.node.leader for p in self.peers.values()))

    def url(self, peer_id: str, path: str) -> str:
        return self.peers[peer_id].status()["admin"] + path

    @defer.inlineCallbacks
    def get_json(self, peer_id: str, path: str):
        status, content_type, body = yield http_get(self.url(peer_id, path))
        self.assertEqual(content_type, "application/json")
        return status, json.loads(body)

    @defer.inlineCallbacks
    def trade(self):
        """peer1: alice rests 2 at 123.45, bob sells 1 into it: one trade, one resting order."""
        for payload in (order("alice", "a1", "buy", "123.45", "2"), order("bob", "b1", "sell", "123.45", "1")):
            yield self.peers["peer1"].propose(canonical_command(payload))

    def test_status_names_the_admin_url_on_the_peers_host(self):
        admins = {p.status()["admin"] for p in self.peers.values()}
        self.assertEqual(len(admins), 3)
        for url in admins:
            self.assertRegex(url, r"^http://127\.0\.0\.1:\d+$")

    @defer.inlineCallbacks
    def test_metrics_show_raft_state_requests_resting_orders_trades_and_fsync_time(self):
        yield self.trade()
        peer = self.peers["peer1"]
        status, content_type, body = yield http_get(self.url("peer1", "/metrics"))
        self.assertEqual(status, 200)
        self.assertTrue(content_type.startswith("text/plain"))
        found = samples(body.decode())
        node = peer.replica.node
        self.assertEqual(found[("twisted_exchange_raft_term",)], node.term)
        self.assertEqual(found[("twisted_exchange_raft_commit_index",)], node.commit)
        self.assertEqual(found[("twisted_exchange_raft_applied_index",)], peer.applied)
        self.assertEqual(found[("twisted_exchange_raft_is_leader",)], int(node.leader == "peer1"))
        self.assertEqual(found[("twisted_exchange_healthy",)], 1)
        self.assertEqual(found[("twisted_exchange_resting_orders", ("symbol", "BTCUSD"))], 1)
        self.assertEqual(found[("twisted_exchange_trades_total", ("symbol", "BTCUSD"))], 1)
        self.assertGreater(found[("twisted_exchange_fsync_seconds_count",)], 0)
        # and the families every Prometheus client exports: memory, CPU, the collector
        self.assertGreater(found[("process_resident_memory_bytes",)], 0)
        self.assertGreater(found[("process_cpu_seconds_total",)], 0)
        self.assertIn(("python_gc_collections_total", ("generation", "0")), found)
        leader_metrics = samples((yield http_get(self.url(node.leader, "/metrics")))[2].decode())
        self.assertEqual(leader_metrics[("twisted_exchange_raft_is_leader",)], 1)
        self.assertGreater(leader_metrics[("twisted_exchange_requests_total", ("action", "raft.batch"),
                                           ("outcome", "ok"))], 0)

    @defer.inlineCallbacks
    def test_client_requests_are_counted_by_action_and_outcome(self):
        link = Link(self.grape_url)
        client = RPCClient(link)
        self.addCleanup(link.close)
        self.addCleanup(client.close)
        yield client.request("exchange:peer2", order("carol", "c1", "buy", "1", "1"))
        with self.assertRaises(GrenacheError):
            yield client.request("exchange:peer2", {"action": "steal"}, retry=0)
        found = samples((yield http_get(self.url("peer2", "/metrics")))[2].decode())
        self.assertEqual(found[("twisted_exchange_requests_total", ("action", "submit"), ("outcome", "ok"))], 1)
        self.assertEqual(found[("twisted_exchange_requests_total", ("action", "invalid"),
                                ("outcome", ERR_UNKNOWN_ACTION))], 1)
        self.assertEqual(found[("twisted_exchange_request_seconds_count", ("action", "submit"))], 1)

    @defer.inlineCallbacks
    def test_healthz_is_200_on_a_healthy_peer(self):
        status, health = yield self.get_json("peer2", "/healthz")
        self.assertEqual((status, health), (200, {"ok": True, "problems": []}))

    @defer.inlineCallbacks
    def test_book_trades_and_symbols_answer_from_this_peers_state(self):
        yield self.trade()
        yield eventually(lambda: self.peers["peer3"].applied == self.peers["peer1"].applied)
        _, book = yield self.get_json("peer3", "/api/book?symbol=BTCUSD&depth=5")
        self.assertEqual(book, {"peer": "peer3", "symbol": "BTCUSD", "bids": [["123.45", "1"]], "asks": []})
        _, trades = yield self.get_json("peer3", "/api/trades")
        self.assertEqual([(t["price"], t["quantity"], t["taker_side"]) for t in trades["trades"]],
                         [("123.45", "1", "sell")])
        _, symbols = yield self.get_json("peer3", "/api/symbols")
        self.assertEqual(symbols, {"peer": "peer3", "symbols": ["BTCUSD"]})

    @defer.inlineCallbacks
    def test_a_bad_query_is_a_400_with_the_reason(self):
        for path in ("/api/book?symbol=btc", "/api/book?depth=0", "/api/trades?limit=1e3"):
            status, reply = yield self.get_json("peer1", path)
            self.assertEqual(status, 400, path)
            self.assertRegex(reply["error"], r"^(symbol|depth|limit) must", path)

    @defer.inlineCallbacks
    def test_cluster_shows_every_peer_with_its_role_and_agreement_with_this_one(self):
        yield self.trade()

        def agreed(reply):
            rows = reply[1]["peers"]
            return reply if all(r.get("agreement") in (SELF, AGREES) for r in rows) else None
        _, cluster = yield eventually(lambda: self.get_json("peer2", "/api/cluster").addCallback(agreed))
        rows = {row["id"]: row for row in cluster["peers"]}
        self.assertEqual(set(rows), set(PEERS))
        self.assertEqual(rows["peer2"]["agreement"], SELF)
        self.assertEqual(sorted(row["role"] for row in rows.values()), ["follower", "follower", "leader"])
        for peer_id, row in rows.items():
            self.assertEqual(row["admin"], self.peers[peer_id].status()["admin"])
            self.assertEqual(set(row) - {"id", "agreement"}, set(CLUSTER_FIELDS))

    @defer.inlineCallbacks
    def test_a_stopped_peer_shows_as_unreachable_in_the_cluster(self):
        def rows():
            return self.get_json("peer1", "/api/cluster").addCallback(
                lambda reply: {row["id"]: row for row in reply[1]["peers"]})
        yield eventually(lambda: rows().addCallback(lambda found: not any("error" in r for r in found.values())))
        yield self.peers["peer3"].stopService()
        found = yield rows()
        self.assertIn("error", found["peer3"])
        self.assertNotIn("error", found["peer2"])

    @defer.inlineCallbacks
    def test_the_dashboard_page_and_its_files_are_served_at_the_root(self):
        status, content_type, body = yield http_get(self.url("peer1", "/"))
        self.assertEqual((status, content_type), (200, "text/html"))
        self.assertIn(b'<script src="app.js">', body)
        for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
            status, content_type, _ = yield http_get(self.url("peer1", "/" + name))
            self.assertEqual(status, 200, name)
            self.assertIn(kind, content_type)


class LonePeerHealthTests(TestCase):
    """One peer of three, alone: /healthz says 503 and why."""

    @defer.inlineCallbacks
    def start_lone_peer(self, recorded: bool):
        grape_url = start_grape(self)
        data_dir = tempfile.mkdtemp(prefix="tx-lone-")
        self.addCleanup(shutil.rmtree, data_dir, True)
        if recorded:
            membership.record(data_dir, "peer1", PEERS)  # a data directory of this cluster's
        peer = PeerService("peer1", PEERS, [grape_url], data_dir, fsync="never", admin_port=0)
        yield peer.startService()
        self.addCleanup(peer.stopService)
        return peer, data_dir

    @defer.inlineCallbacks
    def healthz_problems(self, peer):
        status, _, body = yield http_get(peer.status()["admin"] + "/healthz")
        self.assertEqual(status, 503)
        return json.loads(body)["problems"]

    @defer.inlineCallbacks
    def test_healthz_is_503_with_the_problems_while_no_leader_is_known(self):
        peer, _ = yield self.start_lone_peer(recorded=True)
        problems = yield self.healthz_problems(peer)
        self.assertIn("no leader known", problems)

    @defer.inlineCallbacks
    def test_a_new_data_directory_waits_for_every_other_member_and_takes_no_part_meanwhile(self):
        peer, data_dir = yield self.start_lone_peer(recorded=False)
        yield eventually(lambda: "waiting for peer2, peer3" in peer.health()["problems"][0],
                         what="the first round of asking")
        problems = yield self.healthz_problems(peer)
        self.assertIn("must say it has not heard from peer1", problems[0])
        self.assertEqual(peer.replica.node.term, 0)  # no tick, so no campaign
        self.assertFalse(membership.recorded(data_dir, "peer1"))


def _open(port: int, count: int, held: list, say: bytes = b"") -> socket.socket:
    """Open ``count`` connections to ``port``, each sending ``say``; kept in
    ``held`` (closed at cleanup); the last one."""
    for _ in range(count):
        connection = socket.create_connection((LOOPBACK, port), timeout=10)
        held.append(connection)
        if say:
            connection.sendall(say)
    return held[-1]
