"""End-to-end: every peer's admin port on a real cluster, and the dashboard in a
real browser (headless Chromium from Debian's ``chromium``, driven by Playwright).

The browser runs in a thread of its own (Playwright's sync API), so the
reactor goes on submitting orders while the page polls.
"""
from __future__ import annotations

import json
import shutil
import threading
import unittest

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from tests.e2e.cluster import SYMBOL
from tests.e2e.test_cluster import ClusterTestCase
from tests.support import eventually, http_get

#: A price no other test uses, so seeing it on the page means this order got there.
PRICE = "123.45"
#: Milliseconds Playwright waits for one thing on the page.
PAGE_TIMEOUT_MS = 30_000


def chromium_or_skip() -> str:
    """Path of Debian's chromium, with Playwright to drive it, else SkipTest."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise unittest.SkipTest("chromium not found: dashboard not tested in a browser (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise unittest.SkipTest("playwright not installed: dashboard not tested in a browser (pip install playwright)")
    return chromium


def watch(chromium: str, url: str, opened: threading.Event) -> dict:
    """Open ``url``, set ``opened`` once the page is live with the whole
    cluster listed, then wait for PRICE in the book and on the trade tape;
    what the page showed then."""
    from playwright.sync_api import Error, sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(url)

            def shows(what: str, locator) -> None:
                try:
                    locator.wait_for()
                except Error as e:
                    raise AssertionError(f"no {what} on {url} ({e.message.splitlines()[0]}); the page "
                                         f"showed:\n{page.inner_text('body')}") from None
            shows("row for each of 3 peers", page.locator("#cluster tbody tr.peer").nth(2))
            shows("live mark", page.locator("#live:not(.stale)"))
            opened.set()
            shows(f"bid at {PRICE}", page.locator(f'#bids .level[data-price="{PRICE}"]'))
            shows(f"trade at {PRICE}", page.locator("#tape tbody td", has_text=PRICE).first)
            shows("two peers agreeing with this one", page.locator("#cluster tbody tr.peer.agrees").nth(1))
            return {"title": page.title(), "peer": page.inner_text("#peer-id"),
                    "bids": page.inner_text("#bids"), "tape": page.inner_text("#tape"),
                    "roles": page.locator("#cluster td.role").all_inner_texts(),
                    "hashes": page.locator("#cluster td.hash").evaluate_all(
                        "cells => cells.map(cell => cell.className)")}
        finally:
            browser.close()


class DashboardTests(ClusterTestCase):

    def submit(self, client: str, side: str, quantity: str):
        """A limit order at PRICE on peer1, as ``client`` (two clients: one's orders never cross its own)."""
        return self.cluster.client(name=client).request(
            "exchange:peer1", {"action": "submit", "client": client, "request": "1", "symbol": SYMBOL,
                               "side": side, "type": "limit", "price": PRICE, "quantity": quantity}, timeout=5.0)

    @defer.inlineCallbacks
    def test_an_order_submitted_on_peer1_appears_on_peer2s_dashboard_in_a_browser(self):
        chromium = chromium_or_skip()
        status = yield self.call("peer2", {"action": "status"})
        opened = threading.Event()
        shown = deferToThread(watch, chromium, status["admin"], opened)
        yield eventually(opened.is_set, 60, what="peer2's dashboard live with every peer listed")
        yield self.submit("buyer", "buy", "2")
        yield self.submit("seller", "sell", "0.5")
        page = yield shown
        self.assertEqual(page["peer"], "peer2")
        self.assertIn(PRICE, page["bids"])
        self.assertIn("1.5", page["bids"])  # what rests after the trade
        self.assertIn(PRICE, page["tape"])
        self.assertEqual(sorted(page["roles"]), ["follower", "follower", "leader"])
        self.assertNotIn("diverged", " ".join(page["hashes"]))

    @defer.inlineCallbacks
    def test_status_and_exchangectl_name_each_peers_admin_port_which_serves_metrics_and_health(self):
        done = yield self.exchangectl("status", "--json")
        self.assertEqual(done.returncode, 0, done.stderr)
        admins = {peer: s["admin"] for peer, s in json.loads(done.stdout)["peers"].items()}
        self.assertEqual(set(admins), set(self.peers))
        shown = yield self.exchangectl("dashboard", "peer2", "--json")
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertEqual(json.loads(shown.stdout), {"peer": "peer2", "url": admins["peer2"]})
        for peer, url in admins.items():
            code, _, body = yield http_get(url + "/healthz")
            self.assertEqual((code, json.loads(body)["ok"]), (200, True), peer)
            code, _, body = yield http_get(url + "/metrics")
            leader = {s.name: s.value for family in text_string_to_metric_families(body.decode())
                      for s in family.samples}["twisted_exchange_raft_is_leader"]
            self.assertEqual(leader, int(peer == self.leader), peer)
