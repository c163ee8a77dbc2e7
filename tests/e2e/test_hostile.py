"""End-to-end, as an attacker and a Jepsen-style tester (issue 9): requests that
once stopped trading, a disk that fails under a peer, and a check that must
not say "ok" while something is wrong."""
from __future__ import annotations

import json
import subprocess

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest

from twisted_exchange.grenache import GrenacheError
from twisted_exchange.peer.protocol import MAX_BODY, MAX_CLIENT_BODY
from twisted_exchange.pki import PEER
from tests.e2e.cluster import SYMBOL, Trader, prefill, statuses, wait_for_convergence
from tests.e2e.test_cluster import ClusterTestCase
from tests.support import connect, eventually, free_ports, raw_http_status, stall_uploads, vm_kb


def raw_call(port: int, body: bytes, tls: dict | None) -> list:
    """One Grenache call with a hand-written body: ``[rid, err, result]``."""
    head = (f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    with connect(port, tls) as s:
        s.sendall(head + body)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])


def submit_body(peer: str, request: str, quantity: str, extra: str = "") -> bytes:
    return (f'["{request}","exchange:{peer}",{{"action":"submit","client":"mallory",'
            f'"request":"{request}","symbol":"{SYMBOL}","side":"buy","type":"limit",'
            f'"price":"100","quantity":{quantity}{extra}}}]').encode()


class PoisonTests(ClusterTestCase):
    @defer.inlineCallbacks
    def test_poisoned_submits_are_refused_and_trading_goes_on_everywhere(self):
        nested = "," + '"x":' + "[" * 30 + "1" + "]" * 30
        for n, (peer, quantity, extra) in enumerate([
                ("peer1", "1e999", ""), (self.leader, "1e999", ""), ("peer2", "NaN", ""),
                ("peer3", '"1"', nested), (self.leader, '"1"', nested)]):
            port = self.cluster.peer_ports[self.peers.index(peer)]
            rid, error, result = yield deferToThread(raw_call, port, submit_body(peer, f"p{n}", quantity, extra),
                                                     self.cluster.tls_files("mallory"))
            self.assertIsNone(result)
            self.assertRegex(error, r"^ERR_(INVALID_ORDER|REQUEST_INVALID)", (quantity, extra))
        for n, peer in enumerate(self.peers):
            reply = yield self.call(peer, {"action": "submit", "client": "honest", "request": f"h{n}",
                                           "symbol": SYMBOL, "side": "sell", "type": "limit",
                                           "price": "200", "quantity": "1"}, timeout=10)
            self.assertTrue(reply["ok"])
        found = yield wait_for_convergence(self.client, self.peers)
        self.assertEqual({s["applied"] for s in found.values()}, {found[self.leader]["applied"]})
        for peer in self.peers:
            book = yield self.call(peer, {"action": "book"})
            self.assertEqual((book["bids"], book["asks"]), ([], [["200", "3"]]), peer)
        done = yield self.exchangectl("check", "--wait", "20")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    @defer.inlineCallbacks
    def test_a_malformed_raft_batch_even_from_a_peer_credential_changes_no_term(self):
        before = yield statuses(self.client, self.peers)
        follower = next(p for p in self.peers if p != self.leader)
        forged = {"action": "raft.batch", "from": self.leader, "to": follower,
                  "messages": [{"type": "raft.append", "from": self.leader, "to": follower,
                                "term": 10**6, "prev_term": 0, "entries": [], "commit": 0}]}
        as_leader = self.cluster.client(name=self.leader, kind=PEER)  # a buggy peer, not an attacker
        reply = yield as_leader.request(f"exchange:{follower}", forged)
        self.assertTrue(reply["ok"])  # accepted as a batch, its message dropped
        after = yield statuses(self.client, self.peers)
        self.assertEqual({p: s["term"] for p, s in after.items()},
                         {p: s["term"] for p, s in before.items()})
        self.assertIn("dropped raft message", self.cluster.log(follower))

    @defer.inlineCallbacks
    def test_check_fails_naming_a_stopped_peer_and_passes_once_it_is_back(self):
        victim = next(p for p in self.peers if p != self.leader)
        self.cluster.supervisor.stop(victim)
        done = yield self.exchangectl("check", "--wait", "1")
        self.assertEqual(done.returncode, 1)
        self.assertIn(victim, done.stderr)
        self.cluster.supervisor.start(victim)
        yield wait_for_convergence(self.client, self.peers)
        done = yield self.exchangectl("check", "--wait", "20")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)


class DiskFailureTests(ClusterTestCase):
    """peer3's data directory is a small tmpfs of its own, so the test can fill
    it under the running peer and free it again (needs root)."""

    victim = "peer3"

    def prepare(self) -> None:
        self.mount = self.cluster.data_dir(self.victim)
        self.mount.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(self.mount)],
                          capture_output=True).returncode != 0:
            raise SkipTest("cannot mount a tmpfs here (needs root)")
        self.addCleanup(subprocess.run, ["umount", "-l", str(self.mount)], capture_output=True)

    def fill_disk(self) -> None:
        with open(self.mount / "filler", "wb") as filler:
            try:
                while True:
                    filler.write(b"\0" * (1 << 20))
                    filler.flush()
            except OSError:
                pass

    def free_disk(self) -> None:
        (self.mount / "filler").unlink()

    def order(self, peer: str, request: str):
        return self.call(peer, {"action": "submit", "client": "disk", "request": request,
                                "symbol": SYMBOL, "side": "buy", "type": "limit",
                                "price": "50", "quantity": "1"}, timeout=10)

    @defer.inlineCallbacks
    def test_a_peer_whose_disk_fills_stops_waits_and_rejoins_once_there_is_room(self):
        yield self.order(self.peers[0], "d00")
        pid = self.cluster.supervisor.process(self.victim)["pid"]
        self.fill_disk()
        survivors = [p for p in self.peers if p != self.victim]
        yield self.order(survivors[0], "d01")
        yield eventually(lambda: "fail-stop: peer3" in self.cluster.log(self.victim),
                         timeout=20, what="peer3 fail-stops on its full disk")
        yield eventually(lambda: "waiting for data directory" in self.cluster.log(self.victim),
                         timeout=20, what="the restarted peer3 waits for its disk")
        self.assertNotEqual(self.cluster.supervisor.process(self.victim)["pid"], pid)
        done = yield self.exchangectl("check", "--wait", "1")
        self.assertEqual(done.returncode, 1, done.stdout)
        self.assertIn(self.victim, done.stderr)
        for n in range(2, 6):
            reply = yield self.order(survivors[n % 2], f"d{n:02d}")
            self.assertTrue(reply["ok"])
        self.free_disk()
        found = yield wait_for_convergence(self.client, self.peers, timeout=60)
        self.assertEqual(found[self.victim]["applied"], found[self.leader]["applied"])
        book = yield self.call(self.victim, {"action": "book"})
        self.assertEqual(book["bids"], [["50", "6"]])
        done = yield self.exchangectl("check", "--wait", "20")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)


class LargeStateTests(ClusterTestCase):
    """50,000 resting orders, installed as every peer's snapshot before start."""

    resting = 50_000
    leader_timeout = 60.0

    def prepare(self) -> None:
        commands = [{"action": "submit", "client": f"maker{n % 500}", "request": f"{n:08d}",
                     "symbol": SYMBOL, "side": "buy", "type": "limit",
                     "price": str(1000 + n % 5000), "quantity": "1"} for n in range(self.resting)]
        prefill([self.cluster.data_dir(p) for p in self.cluster.peer_ids], commands)

    @defer.inlineCallbacks
    def test_200_concurrent_status_calls_on_a_large_state_cause_no_election(self):
        before = yield statuses(self.client, self.peers)
        self.assertGreaterEqual(min(s["applied"] for s in before.values()), self.resting)
        for _ in range(5):
            replies = yield defer.gatherResults([
                self.client.request(f"exchange:{self.peers[n % 3]}", {"action": "status"}, timeout=10)
                for n in range(200)])
            self.assertEqual(len(replies), 200)
        reply = yield self.call(self.leader, {"action": "book", "depth": 1})
        self.assertEqual(reply["bids"], [["5999", "10"]])
        after = yield statuses(self.client, self.peers)
        self.assertEqual({p: (s["term"], s["leader"]) for p, s in after.items()},
                         {p: (s["term"], s["leader"]) for p, s in before.items()})

    @defer.inlineCallbacks
    def test_a_burst_of_the_heaviest_queries_causes_no_election_and_trading_goes_on(self):
        before = yield statuses(self.client, self.peers)
        heavy = [self.client.request(f"exchange:{self.leader}", {"action": "orders", "limit": 10_000},
                                     timeout=30) for n in range(40)]
        order = yield self.call(self.peers[1], {"action": "submit", "client": "taker", "request": "t1",
                                                "symbol": SYMBOL, "side": "sell", "type": "limit",
                                                "price": "5999", "quantity": "3"}, timeout=30)
        self.assertEqual(len(order["fills"]), 3)
        replies = yield defer.gatherResults(heavy)
        self.assertEqual({len(r["orders"]) for r in replies}, {10_000})
        after = yield statuses(self.client, self.peers)
        self.assertEqual({p: (s["term"], s["leader"]) for p, s in after.items()},
                         {p: (s["term"], s["leader"]) for p, s in before.items()})


class ExactlyOnceTests(ClusterTestCase):
    def order(self, request: str, price: str = "10", client: str = "retrier"):
        return {"action": "submit", "client": client, "request": request, "symbol": SYMBOL,
                "side": "buy", "type": "limit", "price": price, "quantity": "1"}

    @defer.inlineCallbacks
    def refused(self, peer: str, payload: dict) -> defer.Deferred:
        try:
            result = yield self.call(peer, payload)
        except GrenacheError as error:
            return error.code
        self.fail(f"{payload} was accepted: {result}")

    @defer.inlineCallbacks
    def test_late_retries_and_reused_ids_never_execute_twice_on_any_peer(self):
        first = yield self.call("peer1", self.order("r0000"))
        for n in range(1, 100):
            yield self.call(self.peers[n % 3], self.order(f"r{n:04d}"))
            if n == 10:
                again = yield self.call("peer3", self.order("r0000"))
                self.assertEqual(again, first)  # a retry within the window: the original result
        code = yield self.refused("peer2", self.order("r0000"))
        self.assertEqual(code, "ERR_STALE_REQUEST")
        code = yield self.refused("peer3", self.order("r0099", price="11"))
        self.assertEqual(code, "ERR_REQUEST_REUSED")
        yield wait_for_convergence(self.client, self.peers)
        for peer in self.peers:
            book = yield self.call(peer, {"action": "book"})
            self.assertEqual(book["bids"], [["10", "100"]], peer)


class DamagedDataTests(ClusterTestCase):
    """A follower's files damaged while it is stopped (issue 9, bullet 6)."""

    peer_args = "--snapshot-every 40"

    @defer.inlineCallbacks
    def trade_then_stop_a_follower(self):
        yield Trader(self.cluster, self.peers, seed=21).run(clients=10, orders_each=10)
        victim = next(p for p in self.peers if p != self.leader)
        yield wait_for_convergence(self.client, self.peers)
        yield eventually(lambda: statuses(self.client, [victim]).addCallback(  # written in the background
            lambda s: s[victim]["snapshot_index"] > 0), what=f"{victim} holding a snapshot")
        self.cluster.supervisor.stop(victim)
        return victim

    @defer.inlineCallbacks
    def test_a_peer_with_a_corrupt_snapshot_discards_it_and_catches_up_by_itself(self):
        victim = yield self.trade_then_stop_a_follower()
        snapshot = self.cluster.data_dir(victim) / "snapshot.json"
        damaged = bytearray(snapshot.read_bytes())
        damaged[len(damaged) // 2:len(damaged) // 2 + 16] = b"\x00garbage\xff{[\"}]"
        snapshot.write_bytes(bytes(damaged))
        self.cluster.supervisor.start(victim)
        yield Trader(self.cluster, self.peers, seed=22, name="after").run(clients=4, orders_each=5)
        found = yield wait_for_convergence(self.client, self.peers, timeout=60)
        self.assertGreater(found[victim]["applied"], 100)
        self.assertIn("discarded damaged data", self.cluster.log(victim))
        self.assertTrue((self.cluster.data_dir(victim) / "snapshot.json.damaged").exists())
        yield eventually(lambda: statuses(self.client, [victim]).addCallback(
            lambda s: s[victim]["health"]["ok"]), what=f"{victim} voting again")
        done = yield self.exchangectl("check", "--wait", "20")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    @defer.inlineCallbacks
    def test_a_peer_with_a_corrupt_hard_state_refuses_to_start_and_is_replaced(self):
        victim = yield self.trade_then_stop_a_follower()
        data_dir = self.cluster.data_dir(victim)
        (data_dir / "hardstate.json").write_bytes(b'{"term": 3, "vo')
        self.cluster.supervisor.start(victim, wait=False)  # supervisord retries, then gives up
        yield eventually(lambda: self.cluster.supervisor.process(victim)["statename"] == "FATAL",
                         timeout=60, what=f"{victim} FATAL")
        log = self.cluster.log(victim)
        self.assertIn("refuses to start", log)
        self.assertIn(f"mv {data_dir} {data_dir}.damaged", log)
        self.assertNotIn("Traceback", log)
        data_dir.rename(f"{data_dir}.damaged")
        port, = free_ports(1)
        replaced = yield self.exchangectl("member", "replace", victim, "peer4", "--port", str(port))
        self.assertEqual(replaced.returncode, 0, replaced.stdout + replaced.stderr)
        self.peers = [p for p in self.peers if p != victim] + ["peer4"]
        found = yield wait_for_convergence(self.client, self.peers, timeout=60)
        self.assertGreater(found["peer4"]["applied"], 100)
        done = yield self.exchangectl("check", "--wait", "20")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)


class UploadFloodTests(ClusterTestCase):
    @defer.inlineCallbacks
    def test_12_stalled_64_mib_uploads_keep_a_peer_under_400_mb_and_trading(self):
        """A client may not even announce more than 1 MiB; a peer (the one
        identity trusted with 64 MiB, for catch-up) gone wrong may stall
        that much, twelve times over."""
        peer = "peer1"
        port = self.cluster.peer_ports[self.peers.index(peer)]
        status = yield deferToThread(raw_http_status, port, b"POST / HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: %d\r\n\r\n" % (MAX_CLIENT_BODY + 1),
                                     self.cluster.tls_files())
        self.assertEqual(status, b"413")
        yield deferToThread(stall_uploads, self, port, 12, MAX_BODY, MAX_BODY - 1,
                            self.cluster.tls_files("peer2", kind=PEER))
        trader = Trader(self.cluster, [peer], seed=31, name="beside")
        yield trader.run(clients=4, orders_each=5)
        self.assertEqual(len(trader.acked), 20)
        pid = self.cluster.supervisor.process(peer)["pid"]
        self.assertLess(vm_kb(pid, "VmHWM"), 400 * 1000)
        yield wait_for_convergence(self.client, self.peers)
