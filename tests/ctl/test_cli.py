"""exchangectl's argument checks and error lines, without any cluster running.

Every failure must be one ``error: ...`` line on stderr with exit status 1,
never a traceback.
"""
from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509

from tests.support import free_ports
from twisted_exchange import pki
from twisted_exchange.ctl.cli import main, order_payload, resolve_config
from twisted_exchange.ctl.errors import CtlError
from twisted_exchange.ctl.topology import parse, render

COMMANDS = ["up", "down", "status", "start", "stop", "restart", "kill", "logs", "submit", "cancel",
            "amend", "book", "trades", "order", "orders", "check", "bench", "bench-cluster", "client",
            "peer-credential", "dashboard", "init", "reset", "member"]


class CliTestCase(unittest.TestCase):
    """Runs exchangectl against a rendered config whose supervisord is not running."""

    def setUp(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        grape_ports = free_ports(4)
        self.config = Path(directory.name) / "cluster.conf"
        self.config.write_text(render(3, grape_ports=[tuple(grape_ports[:2]), tuple(grape_ports[2:])]))

    def ctl(self, *args: str):
        return CliRunner().invoke(main, ["-c", str(self.config), *args], prog_name="exchangectl")

    def assertFails(self, result, message: str, status: int = 1) -> None:
        self.assertEqual(result.exit_code, status, result.output)
        self.assertEqual(result.stderr, f"error: {message}\n")
        self.assertEqual(result.stdout, "")


class HelpTests(CliTestCase):

    def test_every_command_has_help(self):
        for name in COMMANDS:
            result = self.ctl(name, "--help")
            self.assertEqual(result.exit_code, 0, f"{name}: {result.output}")
            self.assertIn(f"Usage: exchangectl {name}", result.stdout)

    def test_the_group_lists_every_command(self):
        result = self.ctl("--help")
        self.assertEqual(result.exit_code, 0)
        listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()}
        self.assertEqual(listed, set(COMMANDS))

    def test_no_command_prints_help(self):
        result = CliRunner().invoke(main, [], prog_name="exchangectl")
        self.assertEqual(result.exit_code, 0)
        self.assertIn("Commands:", result.stdout)


class UsageErrorTests(CliTestCase):
    """Usage errors exit 2, as click's own do; every other failure exits 1."""

    def test_missing_argument_is_one_line_with_a_hint(self):
        self.assertFails(self.ctl("submit"),
                         "Missing argument 'SIDE'. (see: exchangectl submit --help)", status=2)

    def test_unknown_command(self):
        result = self.ctl("explode")
        self.assertEqual(result.exit_code, 2)
        self.assertTrue(result.stderr.startswith("error: No such command 'explode'"))
        self.assertEqual(result.stderr.count("\n"), 1)

    def test_bad_choice(self):
        result = self.ctl("submit", "buy", "1", "100", "--tif", "forever")
        self.assertEqual(result.exit_code, 2)
        self.assertIn("'forever' is not one of 'gtc', 'ioc', 'fok'", result.stderr)
        self.assertNotIn("Traceback", result.output)


class LocalValidationTests(CliTestCase):

    def test_side_must_be_buy_or_sell(self):
        self.assertFails(self.ctl("submit", "hold", "1", "100"), "invalid side 'hold': expected buy or sell")

    def test_quantity_must_be_a_positive_plain_decimal(self):
        result = self.ctl("submit", "buy", "--", "-1", "100")
        self.assertEqual(result.exit_code, 1)
        self.assertTrue(result.stderr.startswith("error: invalid quantity '-1': quantity must be"))

    def test_price_must_be_a_positive_plain_decimal(self):
        result = self.ctl("submit", "sell", "1", "1e3")
        self.assertTrue(result.stderr.startswith("error: invalid price '1e3':"), result.stderr)

    def test_limit_needs_a_price_and_market_refuses_one(self):
        self.assertFails(self.ctl("submit", "buy", "1"), "a limit order needs a PRICE (or use --type market)")
        self.assertFails(self.ctl("submit", "buy", "1", "100", "--type", "market"),
                         "a market order takes no PRICE")

    def test_amend_needs_something_to_change(self):
        self.assertFails(self.ctl("amend", "12"), "amend needs --quantity and/or --price")
        self.assertTrue(self.ctl("amend", "12", "--price", "x").stderr.startswith("error: invalid price 'x'"))

    def test_unknown_peer_is_refused_before_any_network_call(self):
        self.assertFails(self.ctl("book", "peer9"), "unknown peer 'peer9' (peers: peer1, peer2, peer3)")
        self.assertFails(self.ctl("order", "1", "--peer", "nobody"),
                         "unknown peer 'nobody' (peers: peer1, peer2, peer3)")


class PayloadTests(unittest.TestCase):

    def test_limit_payload_follows_the_protocol(self):
        payload = order_payload("BUY", "2", "100.5", symbol="BTCUSD", kind="limit", tif=None,
                                post_only=False, client="alice", request="r1")
        self.assertEqual(payload, {"action": "submit", "client": "alice", "request": "r1",
                                   "symbol": "BTCUSD", "side": "buy", "type": "limit",
                                   "price": "100.5", "quantity": "2", "post_only": False})

    def test_market_payload_has_no_price_and_keeps_an_explicit_tif(self):
        payload = order_payload("sell", "1", None, symbol="ETHUSD", kind="market", tif="fok",
                                post_only=False, client="bob", request="r2")
        self.assertNotIn("price", payload)
        self.assertEqual((payload["type"], payload["tif"]), ("market", "fok"))

    def test_bad_side_is_a_ctl_error(self):
        with self.assertRaises(CtlError):
            order_payload("up", "1", "1", symbol="BTCUSD", kind="limit", tif=None, post_only=False,
                          client="c", request="r")


class SupervisordDownTests(CliTestCase):
    NOT_RUNNING = "supervisord is not running (start it with: exchangectl up)"

    def test_process_commands_say_supervisord_is_not_running(self):
        for args in (["status"], ["start", "peer1"], ["stop", "peer1", "peer2"], ["restart", "all"],
                     ["kill", "peer1"], ["logs", "peer1"]):
            self.assertFails(self.ctl(*args), self.NOT_RUNNING)

    def test_under_json_an_error_is_a_json_object_on_standard_output(self):
        result = self.ctl("status", "--json")
        self.assertEqual((result.exit_code, result.stderr), (1, ""))
        self.assertEqual(json.loads(result.stdout), {"error": {"message": self.NOT_RUNNING, "code": None}})

    def test_down_is_idempotent(self):
        result = self.ctl("down")
        self.assertEqual(result.exit_code, 0)
        self.assertEqual(result.stdout, "supervisord is not running: nothing to stop\n")


class ConfigTests(unittest.TestCase):

    def test_missing_config_is_reported(self):
        result = CliRunner().invoke(main, ["-c", "/nonexistent/c.conf", "status"], prog_name="exchangectl")
        self.assertEqual(result.exit_code, 1)
        self.assertEqual(result.stderr, "error: config file not found: /nonexistent/c.conf"
                                        " (use -c PATH, or write one with: exchangectl init DIR)\n")

    def test_config_option_is_accepted_after_the_command_too(self):
        result = CliRunner().invoke(main, ["status", "-c", "/nonexistent/d.conf"], prog_name="exchangectl")
        self.assertIn("/nonexistent/d.conf", result.stderr)

    def test_config_from_the_environment(self):
        result = CliRunner().invoke(main, ["status"], prog_name="exchangectl",
                                    env={"EXCHANGECTL_CONFIG": "/nonexistent/e.conf"})
        self.assertIn("/nonexistent/e.conf", result.stderr)

    def test_default_config_is_found_from_the_current_directory_or_next_to_the_package(self):
        self.assertEqual(resolve_config("x.conf"), Path("x.conf"))
        self.assertTrue(resolve_config(None).is_file())
        self.assertEqual(resolve_config(None).name, "cluster.conf")


class ClientAddTests(CliTestCase):
    def test_a_client_credential_is_made_once_under_the_run_directory_and_verifies(self):
        first = self.ctl("client", "add", "alice", "--json")
        self.assertEqual(first.exit_code, 0, first.output)
        files = {part: Path(path) for part, path in json.loads(first.stdout).items()}
        self.assertEqual(set(files), {"key", "cert", "ca"})
        self.assertEqual(files["key"].parent, self.config.parent / "run" / "pki")
        self.assertEqual(files["key"].stat().st_mode & 0o777, 0o600)
        cert = x509.load_pem_x509_certificate(files["cert"].read_bytes())
        ca = x509.load_pem_x509_certificate(files["ca"].read_bytes())
        self.assertEqual(pki.verify(cert, ca), pki.Identity("client", "alice"))
        again = self.ctl("client", "add", "alice")
        self.assertEqual(again.exit_code, 0, again.output)
        self.assertIn(str(files["cert"]), again.stdout)
        self.assertEqual(x509.load_pem_x509_certificate(files["cert"].read_bytes()), cert)

    def test_a_name_that_is_not_an_identity_is_refused(self):
        result = self.ctl("client", "add", "bad name")
        self.assertEqual(result.exit_code, 2)
        self.assertIn("Invalid value for NAME", result.stderr)
        self.assertFalse((self.config.parent / "run" / "pki").exists())

    def test_a_peer_credential_names_the_peer_and_its_addresses_for_another_machine(self):
        result = self.ctl("peer-credential", "peer2", "--address", "10.0.0.2", "--address", "peer2.example",
                          "--json")
        self.assertEqual(result.exit_code, 0, result.output)
        files = {part: Path(path) for part, path in json.loads(result.stdout).items()}
        cert = x509.load_pem_x509_certificate(files["cert"].read_bytes())
        ca = x509.load_pem_x509_certificate(files["ca"].read_bytes())
        self.assertEqual(pki.verify(cert, ca), pki.Identity("peer", "peer2"))
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual([str(a) for a in names.get_values_for_type(x509.IPAddress)], ["10.0.0.2"])
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["peer2.example"])


class InitTests(unittest.TestCase):
    """``exchangectl init DIR``: a ready config outside the checkout."""

    def setUp(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.directory = Path(directory.name) / "exchange"

    def init(self, *args: str):
        return CliRunner().invoke(main, ["init", str(self.directory), *args], prog_name="exchangectl")

    def test_writes_a_config_with_its_run_directory_beside_it(self):
        result = self.init("5")
        self.assertEqual(result.exit_code, 0, result.output)
        config = self.directory / "cluster.conf"
        self.assertIn(f"exchangectl -c {config} up", result.stdout)
        self.assertEqual(config.read_text(), render(5, run_dir="%(here)s/run"))
        self.assertTrue((self.directory / "run").is_dir())
        self.assertEqual(parse(config).run_dir, self.directory.absolute() / "run")

    def test_the_node_grape_and_other_machines_are_options(self):
        result = self.init("--grape-command", "grape", "--peer-hosts", "10.0.0.1,10.0.0.2,10.0.0.3",
                           "--grape-hosts", "10.0.0.1,10.0.0.2", "--machine", "10.0.0.2")
        self.assertEqual(result.exit_code, 0, result.output)
        text = (self.directory / "cluster.conf").read_text()
        self.assertIn("command=grape --dp 20002 --aph 40001 --bn 10.0.0.1:20001 -b 10.0.0.2", text)
        self.assertNotIn("[program:peer1]", text)

    def test_an_existing_config_is_kept_unless_forced(self):
        self.assertEqual(self.init().exit_code, 0)
        again = self.init("1")
        self.assertEqual((again.exit_code, again.stderr),
                         (1, f"error: {self.directory / 'cluster.conf'} exists (use --force to overwrite it)\n"))
        self.assertEqual(self.init("1", "--force").exit_code, 0)
        self.assertEqual(parse(self.directory / "cluster.conf").peers, ("peer1",))

    def test_bad_addresses_are_usage_errors(self):
        result = self.init("--peer-hosts", "10.0.0.1")
        self.assertEqual((result.exit_code, result.stderr.startswith("error: one host address per peer")),
                         (2, True))
        self.assertFalse((self.directory / "cluster.conf").exists())


class ResetTests(CliTestCase):

    def test_reset_deletes_data_and_logs_but_keeps_credentials(self):
        run = self.config.parent / "run"
        (run / "peer1").mkdir(parents=True)
        (run / "peer1" / "log.000001").write_text("entries")
        (run / "peer1.log").write_text("log")
        self.assertEqual(self.ctl("client", "add", "alice").exit_code, 0)
        result = self.ctl("reset", "--yes")
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(sorted(p.name for p in run.iterdir()), ["pki"])
        self.assertTrue((run / "pki" / "client-alice.key").exists())

    def test_without_yes_and_without_a_terminal_to_ask_on_it_refuses(self):
        run = self.config.parent / "run"
        (run / "peer1").mkdir(parents=True)
        self.assertFails(self.ctl("reset"), "reset deletes every peer's data: confirm with --yes")
        self.assertTrue((run / "peer1").exists())


class VersionTests(unittest.TestCase):

    def test_every_command_line_tool_has_version(self):
        from twisted_exchange.ctl.topology import main as topology
        from twisted_exchange.grape.cli import main as grape
        from twisted_exchange.peer.cli import main as peer
        for tool in (main, grape, peer, topology):
            result = CliRunner().invoke(tool, ["--version"], prog_name="tool")
            self.assertEqual(result.exit_code, 0, result.output)
            self.assertRegex(result.stdout, r"version \d+\.\d+\.\d+")
