"""``exchangectl dashboard``: the peer's admin URL, printed, and opened only where a desktop is."""
from __future__ import annotations

import json
from unittest import mock

from tests.ctl.test_cli import CliTestCase

STATUS = {"id": "peer2", "role": "follower", "admin": "http://127.0.0.1:6002"}


class DashboardCommandTests(CliTestCase):
    def dashboard(self, *args: str, reply=STATUS, environment=None):
        """Run the command with the peer's status ``reply`` and a browser that only records."""
        with mock.patch("twisted_exchange.ctl.cli._ask", return_value=reply) as ask, \
                mock.patch("webbrowser.open") as opened, \
                mock.patch.dict("os.environ", environment or {}, clear=True), \
                mock.patch("sys.platform", "linux"):
            result = self.ctl("dashboard", *args)
        return result, ask, opened

    def test_prints_the_url_of_the_peers_dashboard(self):
        result, ask, opened = self.dashboard("peer2")
        self.assertEqual((result.exit_code, result.stdout), (0, "http://127.0.0.1:6002\n"))
        ask.assert_called_once_with({"action": "status"}, "peer2")
        opened.assert_not_called()  # no display: nothing to open, and no error either

    def test_opens_a_browser_only_where_a_display_exists(self):
        result, _, opened = self.dashboard(environment={"DISPLAY": ":0"})
        self.assertEqual(result.exit_code, 0)
        opened.assert_called_once_with("http://127.0.0.1:6002", new=2)
        _, _, opened = self.dashboard("--no-open", environment={"DISPLAY": ":0"})
        opened.assert_not_called()

    def test_json_names_the_peer_and_the_url(self):
        result, _, opened = self.dashboard("--json", environment={"DISPLAY": ":0"})
        self.assertEqual(json.loads(result.stdout), {"peer": "peer2", "url": "http://127.0.0.1:6002"})
        opened.assert_not_called()

    def test_a_peer_without_an_admin_port_is_one_error_line(self):
        result, _, _ = self.dashboard(reply={**STATUS, "admin": None})
        self.assertFails(result, "peer2 serves no dashboard: its program needs --admin-port "
                                 "(see: exchangectl status --json)")
