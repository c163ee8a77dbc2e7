"""The topology renderer, its parser, and the shipped configs it produced."""
from __future__ import annotations

import configparser
import tempfile
import unittest
from pathlib import Path

from click.testing import CliRunner

from tests.support import ROOT
from twisted_exchange.ctl import topology
from twisted_exchange.ctl.errors import CtlError
from twisted_exchange.ctl.topology import main as topology_main, parse, render


def _written(test: unittest.TestCase, text: str, name: str = "cluster.conf") -> Path:
    directory = tempfile.TemporaryDirectory()
    test.addCleanup(directory.cleanup)
    path = Path(directory.name) / name
    path.write_text(text, encoding="utf-8")
    return path


class ShippedConfigTests(unittest.TestCase):

    def test_cluster_conf_is_the_renderers_three_peer_output(self):
        self.assertEqual((ROOT / "conf" / "cluster.conf").read_text(encoding="utf-8"), render(3))

    def test_cluster5_conf_is_the_renderers_five_peer_output(self):
        self.assertEqual((ROOT / "conf" / "cluster5.conf").read_text(encoding="utf-8"), render(5))

    def test_run_directory_exists_in_a_fresh_clone_but_its_content_is_ignored(self):
        self.assertEqual((ROOT / "conf" / "run" / ".gitignore").read_text().split(), ["*", "!.gitignore"])

    def test_shipped_cluster_parses_with_paths_under_the_conf_directory(self):
        topology = parse(ROOT / "conf" / "cluster.conf")
        self.assertEqual(topology.peers, ("peer1", "peer2", "peer3"))
        self.assertEqual(topology.grapes, ("http://127.0.0.1:30001", "http://127.0.0.1:40001"))
        self.assertEqual(topology.run_dir, ROOT / "conf" / "run")
        self.assertEqual(topology.socket, ROOT / "conf" / "run" / "supervisord.sock")


class RenderTests(unittest.TestCase):

    def sections(self, text: str) -> configparser.RawConfigParser:
        parser = configparser.RawConfigParser()
        parser.read_string(text)
        return parser

    def test_round_trip_with_free_ports_and_an_absolute_run_dir(self):
        text = render(5, grape_ports=[(21001, 31001), (21002, 41001)],
                      peer_ports=[6001, 6002, 6003, 6004, 6005], run_dir="/tmp/x/run")
        topology = parse(_written(self, text))
        self.assertEqual(topology.peers, tuple(f"peer{i}" for i in range(1, 6)))
        self.assertEqual(topology.grapes, ("http://127.0.0.1:31001", "http://127.0.0.1:41001"))
        self.assertEqual(topology.run_dir, Path("/tmp/x/run"))
        self.assertEqual(topology.socket, Path("/tmp/x/run/supervisord.sock"))

    def test_grapes_bootstrap_to_each_other(self):
        parser = self.sections(render(3))
        self.assertEqual(parser.get("program:grape1", "command"),
                         "twisted-exchange-grape --dp 20001 --aph 30001 --bn 127.0.0.1:20002 -b 127.0.0.1"
                         " --admin-port 7001")
        self.assertEqual(parser.get("program:grape2", "command"),
                         "twisted-exchange-grape --dp 20002 --aph 40001 --bn 127.0.0.1:20001 -b 127.0.0.1"
                         " --admin-port 7002")

    def test_peer_command_line_follows_the_protocol_and_spreads_peers_over_grapes(self):
        parser = self.sections(render(3, peer_ports=[0, 0, 0]))
        self.assertEqual(parser.get("program:peer2", "command"),
                         "twisted-exchange-peer --id peer2 --peers peer1,peer2,peer3"
                         " --grape http://127.0.0.1:40001,http://127.0.0.1:30001"
                         " --host 127.0.0.1 --port 0 --admin-port 6002 --data-dir %(here)s/run/peer2"
                         " --pki %(here)s/run/pki")
        self.assertIn("--grape http://127.0.0.1:30001,http://127.0.0.1:40001 ",
                      parser.get("program:peer3", "command"))

    def test_every_program_restarts_and_logs_under_the_run_dir(self):
        parser = self.sections(render(3))
        programs = [s for s in parser.sections() if s.startswith("program:")]
        self.assertEqual(programs, ["program:grape1", "program:grape2", "program:peer1",
                                    "program:peer2", "program:peer3"])
        for section in programs:
            self.assertEqual(parser.get(section, "autorestart"), "true")
            self.assertEqual(parser.get(section, "stopsignal"), "TERM")
            self.assertEqual(parser.get(section, "stdout_logfile"),
                             f"%(here)s/run/{section.split(':')[1]}.log")

    def test_supervisor_control_sections_are_present(self):
        parser = self.sections(render(3))
        self.assertEqual(parser.get("unix_http_server", "file"), "%(here)s/run/supervisord.sock")
        self.assertEqual(parser.get("supervisorctl", "serverurl"), "unix://%(here)s/run/supervisord.sock")
        self.assertTrue(parser.has_section("rpcinterface:supervisor"))

    def test_a_lone_grape_gets_an_empty_bootstrap(self):
        parser = self.sections(render(1, grape_ports=[(20001, 30001)]))
        self.assertIn('--bn "" -b', parser.get("program:grape1", "command"))

    def test_mismatched_peer_ports_are_refused(self):
        with self.assertRaises(ValueError):
            render(3, peer_ports=[1, 2])

    def test_secure_by_default_every_peer_and_exchangectl_use_the_run_directorys_pki(self):
        text = render(3)
        topology = parse(_written(self, text))
        self.assertEqual(topology.pki, topology.run_dir / "pki")
        parser = self.sections(text)
        for peer in topology.peers:
            self.assertTrue(parser.get(f"program:{peer}", "command").endswith(" --pki %(here)s/run/pki"))

    def test_every_programs_admin_url_is_read_back_and_port_0_has_none(self):
        self.assertEqual(parse(_written(self, render(3))).admin,
                         {"grape1": "http://127.0.0.1:7001", "grape2": "http://127.0.0.1:7002",
                          "peer1": "http://127.0.0.1:6001", "peer2": "http://127.0.0.1:6002",
                          "peer3": "http://127.0.0.1:6003"})
        free = render(3, admin_ports=[0, 7100, 0, 0, 6200], peer_hosts=["10.0.0.1"] * 3)
        self.assertEqual(parse(_written(self, free)).admin,
                         {"grape2": "http://127.0.0.1:7100", "peer3": "http://10.0.0.1:6200"})

    def test_each_peer_is_told_every_other_peers_fixed_address(self):
        parser = self.sections(render(3, peer_ports=[5001, 0, 5003], peer_hosts=["10.0.0.1", "10.0.0.2", "10.0.0.3"]))
        self.assertIn(" --peers peer1,peer2,peer3 --peer-address peer3=10.0.0.3:5003 --grape ",
                      parser.get("program:peer1", "command"))
        self.assertIn(" --peer-address peer1=10.0.0.1:5001,peer3=10.0.0.3:5003 ", parser.get("program:peer2", "command"))
        self.assertNotIn("--peer-address", self.sections(render(2, peer_ports=[0, 0])).get("program:peer1", "command"))

    def test_every_peers_rpc_address_is_read_back_and_port_0_has_none(self):
        self.assertEqual(parse(_written(self, render(3))).rpc,
                         {"peer1": "127.0.0.1:5001", "peer2": "127.0.0.1:5002", "peer3": "127.0.0.1:5003"})
        free = render(3, peer_ports=[0, 5100, 5200], peer_hosts=["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        self.assertEqual(parse(_written(self, free)).rpc, {"peer2": "10.0.0.2:5100", "peer3": "10.0.0.3:5200"})

    def test_plain_rendering_is_only_for_tests_and_benchmarks_and_has_no_pki(self):
        text = render(3, secure=False)
        self.assertIsNone(parse(_written(self, text)).pki)
        self.assertNotIn("--pki", text)


class MachineTests(unittest.TestCase):
    """Configs for peers and grapes on several machines."""

    PEERS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    GRAPES = ["10.0.0.1", "10.0.0.2"]

    def machine(self, address: str) -> configparser.RawConfigParser:
        parser = configparser.RawConfigParser()
        parser.read_string(render(3, peer_hosts=self.PEERS, grape_hosts=self.GRAPES, machine=address))
        return parser

    def test_each_machine_starts_only_its_own_programs_but_knows_the_whole_cluster(self):
        programs = {address: [s for s in self.machine(address).sections() if s.startswith("program:")]
                    for address in self.PEERS}
        self.assertEqual(programs, {"10.0.0.1": ["program:grape1", "program:peer1"],
                                    "10.0.0.2": ["program:grape2", "program:peer2"],
                                    "10.0.0.3": ["program:peer3"]})
        for address in self.PEERS:
            section = self.machine(address)["twisted-exchange"]
            self.assertEqual(section["peers"], "peer1,peer2,peer3")
            self.assertEqual(section["grapes"], "http://10.0.0.1:30001,http://10.0.0.2:40001")

    def test_processes_bind_and_announce_their_own_address_and_grapes_bootstrap_across_machines(self):
        second = self.machine("10.0.0.2")
        self.assertEqual(second.get("program:grape2", "command"),
                         "twisted-exchange-grape --dp 20002 --aph 40001 --bn 10.0.0.1:20001 -b 10.0.0.2"
                         " --admin-port 7002")
        self.assertIn(" --grape http://10.0.0.2:40001,http://10.0.0.1:30001 --host 10.0.0.2 --port 5002"
                      " --admin-port 6002 ",
                      second.get("program:peer2", "command"))
        third = self.machine("10.0.0.3").get("program:peer3", "command")
        self.assertIn(" --host 10.0.0.3 ", third)
        self.assertTrue(third.endswith(" --pki %(here)s/run/pki"))

    def test_an_address_with_no_process_or_a_missing_address_is_refused(self):
        with self.assertRaisesRegex(ValueError, "no peer or grape is on 10.0.0.9"):
            render(3, peer_hosts=self.PEERS, grape_hosts=self.GRAPES, machine="10.0.0.9")
        with self.assertRaisesRegex(ValueError, "one host address per peer"):
            render(3, peer_hosts=self.PEERS[:2])

    def test_the_command_line_renders_a_machine_and_refuses_what_is_not_an_address(self):
        runner = CliRunner()
        result = runner.invoke(topology_main, ["--peer-hosts", ",".join(self.PEERS),
                                               "--grape-hosts", ",".join(self.GRAPES), "--machine", "10.0.0.3"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(result.stdout, render(3, peer_hosts=self.PEERS, grape_hosts=self.GRAPES,
                                               machine="10.0.0.3"))
        bad = runner.invoke(topology_main, ["--peer-hosts", "10.0.0.1,peer2"])
        self.assertEqual(bad.exit_code, 2)
        self.assertIn("'peer2' is not an IP address", bad.output)
        self.assertEqual(runner.invoke(topology_main, []).stdout, render(3))


class ParseErrorTests(unittest.TestCase):

    def test_missing_file_names_the_path_and_the_option(self):
        with self.assertRaisesRegex(CtlError, r"config file not found: /nonexistent/x.conf"
                                              r" \(use -c PATH, or write one with: exchangectl init DIR\)"):
            parse("/nonexistent/x.conf")

    def test_missing_exchange_section_is_reported(self):
        path = _written(self, "[unix_http_server]\nfile=/tmp/s.sock\n")
        with self.assertRaisesRegex(CtlError, r"missing \[twisted-exchange\] peers"):
            parse(path)

    def test_garbage_is_reported_on_one_line(self):
        path = _written(self, "this is not an ini file\n")
        with self.assertRaises(CtlError) as caught:
            parse(path)
        self.assertIn("cannot read config", str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))


class MembershipEditTests(unittest.TestCase):
    """How ``exchangectl member add/remove`` edit a config: read back through the parser."""

    def setUp(self):
        self.text = render()

    def test_an_added_peer_is_its_templates_copy_with_its_own_id_port_data_log_and_admin_port(self):
        added = topology.add_peer(self.text, "peer2", "peer4", 5004)
        self.assertEqual(topology.peer_ports(added), [5001, 5002, 5003, 5004])
        self.assertEqual(topology.initial_peers(added, "peer4"), ["peer1", "peer2", "peer3"])
        self.assertEqual(topology.peer_host(added, "peer4"), "127.0.0.1")
        config = configparser.ConfigParser(interpolation=None)
        config.read_string(added)
        self.assertEqual(config["twisted-exchange"]["peers"], "peer1,peer2,peer3,peer4")
        command = config["program:peer4"]["command"]
        self.assertIn(" --id peer4 ", command)
        self.assertIn(" --port 5004 --admin-port 6004 --data-dir %(here)s/run/peer4 ", command)
        self.assertTrue(config["program:peer4"]["stdout_logfile"].endswith("/peer4.log"))
        self.assertEqual(_command(added, "peer2"), _command(self.text, "peer2"))  # the template unchanged
        self.assertIn(" --peer-address peer1=127.0.0.1:5001,peer2=127.0.0.1:5002,peer3=127.0.0.1:5003 ", command)

    def test_a_removed_peer_leaves_no_program_and_no_mention_in_the_peers(self):
        removed = topology.remove_peer(topology.add_peer(self.text, "peer1", "peer4", 5004), "peer1")
        self.assertEqual(topology.peer_ports(removed), [5002, 5003, 5004])
        self.assertNotIn("[program:peer1]", removed)
        self.assertIn("peers = peer2,peer3,peer4\n", removed)
        self.assertEqual(topology.initial_peers(removed, "peer4"), ["peer1", "peer2", "peer3"])

    def test_a_peer_without_a_program_or_without_peers_is_one_error(self):
        with self.assertRaisesRegex(CtlError, r"no \[program:peer9\] section"):
            topology.initial_peers(self.text, "peer9")
        with self.assertRaisesRegex(CtlError, r"\[program:peer1\] has no --peers"):
            topology.initial_peers(self.text.replace(" --peers peer1,peer2,peer3", "", 1), "peer1")


def _command(text: str, program: str) -> str:
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(text)
    return config[f"program:{program}"]["command"]
