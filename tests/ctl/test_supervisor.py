"""exchangectl's process control against a real supervisord.

The config is rendered like the shipped one, but on free ports in a temp
directory, with dummy programs (a Python that prints its argv and waits for
SIGTERM) in place of grapes and peers: this tests supervisord control, not
the exchange.
"""
from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import json
import sys
import sysconfig
import tempfile
import time
import unittest
from pathlib import Path
from unittest import mock

from click.testing import CliRunner

from tests.support import free_ports, python_module, spawn
from twisted_exchange.ctl.cli import main
from twisted_exchange.ctl.errors import CtlError
from twisted_exchange.ctl.supervisor import Supervisor, programs_environment
from twisted_exchange.ctl.topology import parse, render

DUMMY = shlex.join([sys.executable, "-c",
                    "import signal, sys; print('dummy', *sys.argv[1:], flush=True); signal.pause()"])


def eventually(check, timeout: float = 15.0, interval: float = 0.05):
    """Poll ``check()`` until it returns something true; that value, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not true within {timeout}s: {check}")


class SupervisedTestCase(unittest.TestCase):
    """A rendered cluster config with dummy programs in a temp dir."""

    def setUp(self):
        directory = tempfile.TemporaryDirectory(prefix="tx-ctl-")
        self.addCleanup(directory.cleanup)
        ports = free_ports(4)
        self.config = Path(directory.name) / "cluster.conf"
        self.config.write_text(render(3, grape_ports=[tuple(ports[:2]), tuple(ports[2:])],
                                      peer_ports=[0, 0, 0], peer_command=DUMMY, grape_command=DUMMY,
                                      stopwaitsecs=3))
        self.topology = parse(self.config)
        self.topology.run_dir.mkdir()
        self.supervisor = Supervisor(self.topology.socket)

    def ctl(self, *args: str):
        return CliRunner().invoke(main, ["-c", str(self.config), *args], prog_name="exchangectl")

    def state(self, name: str) -> str:
        return self.supervisor.process(name)["statename"]

    def all_running(self) -> bool:
        return all(p["statename"] == "RUNNING" for p in self.supervisor.processes())


class ProcessControlTests(SupervisedTestCase):
    """supervisord in the foreground (-n) as our child, killed by PID at cleanup."""

    def setUp(self):
        super().setUp()
        self.daemon = spawn(self, python_module("supervisor.supervisord", "-n", "-c", str(self.config)),
                            log=self.topology.run_dir / "foreground.log")
        eventually(lambda: self.supervisor.is_running() and self.all_running())

    def test_stop_and_start_a_program(self):
        result = self.ctl("stop", "peer2")
        self.assertEqual((result.exit_code, result.stdout), (0, "peer2: stopped\n"))
        self.assertEqual(self.state("peer2"), "STOPPED")
        result = self.ctl("start", "peer2")
        self.assertEqual((result.exit_code, result.stdout), (0, "peer2: started\n"))
        self.assertEqual(self.state("peer2"), "RUNNING")

    def test_restart_gives_a_new_process(self):
        before = self.supervisor.process("grape1")["pid"]
        self.assertEqual(self.ctl("restart", "grape1").exit_code, 0)
        info = self.supervisor.process("grape1")
        self.assertEqual(info["statename"], "RUNNING")
        self.assertNotEqual(info["pid"], before)

    def test_kill_sends_sigkill_and_supervisord_restarts_the_program(self):
        before = self.supervisor.process("peer1")["pid"]
        result = self.ctl("kill", "peer1")
        self.assertEqual(result.exit_code, 0)
        self.assertEqual(result.stdout, f"peer1: killed pid {before} with SIGKILL (supervisord restarts it)\n")
        eventually(lambda: self.supervisor.process("peer1")["pid"] not in (0, before)
                   and self.state("peer1") == "RUNNING")
        self.assertIn("exited: peer1 (terminated by SIGKILL; not expected)",
                      self.topology.run_dir.joinpath("supervisord.log").read_text())

    def test_kill_of_a_stopped_program_is_refused(self):
        self.supervisor.stop("peer3")
        result = self.ctl("kill", "peer3")
        self.assertEqual((result.exit_code, result.stderr), (1, "error: peer3 is not running (STOPPED)\n"))

    def printed(self, name: str) -> str:
        return eventually(lambda: self.supervisor.last_lines(name, 1000)[0])

    def restart(self, name: str, times: int) -> None:
        for _ in range(times):
            self.supervisor.stop(name)
            self.supervisor.start(name)

    def test_logs_show_the_last_whole_lines_the_program_printed(self):
        self.printed("peer2")
        self.restart("peer2", 3)
        eventually(lambda: self.printed("peer2").count("\n") == 4)
        lines = self.printed("peer2").splitlines()
        self.assertTrue(all(line.startswith("dummy --id peer2 --peers peer1,peer2,peer3") for line in lines))
        result = self.ctl("logs", "peer2")
        self.assertEqual((result.exit_code, result.stdout.splitlines()), (0, lines))
        result = self.ctl("logs", "peer2", "-n", "2")
        self.assertEqual((result.exit_code, result.stdout.splitlines()), (0, lines[-2:]))

    def test_the_last_lines_start_at_a_line_even_when_only_part_of_the_file_is_read(self):
        self.printed("peer2")
        self.restart("peer2", 2)
        size = eventually(lambda: self.supervisor.log_size("peer2") if
                          self.printed("peer2").count("\n") == 3 else 0)
        text, offset = self.supervisor.last_lines("peer2", 1)
        self.assertEqual((text.count("\n"), text.startswith("dummy"), offset), (1, True, size))

    def test_following_a_log_yields_each_appended_line_once(self):
        self.printed("peer2")
        follow = self.supervisor.follow("peer2", interval=0.05)
        seen = next(follow)
        self.assertEqual(seen.count("dummy --id peer2"), 1)
        for restarts in (1, 2):
            self.restart("peer2", 1)
            seen += next(follow)
            self.assertEqual(seen.count("dummy --id peer2"), 1 + restarts)
        self.assertEqual(seen, self.printed("peer2"))

    def test_start_stop_and_restart_take_several_names_or_all(self):
        result = self.ctl("stop", "peer1", "peer3")
        self.assertEqual((result.exit_code, result.stdout), (0, "peer1: stopped\npeer3: stopped\n"))
        self.assertEqual([self.state(n) for n in ("peer1", "peer2", "peer3")], ["STOPPED", "RUNNING", "STOPPED"])
        result = self.ctl("start", "all")
        self.assertEqual((result.exit_code, result.stdout), (0, "peer1: started\npeer3: started\n"))
        before = {p["name"]: p["pid"] for p in self.supervisor.processes()}
        result = self.ctl("restart", "all")
        self.assertEqual(result.stdout.count("restarted"), 5)
        after = {p["name"]: p["pid"] for p in self.supervisor.processes()}
        self.assertTrue(all(after[name] != pid for name, pid in before.items()))
        self.assertEqual(self.ctl("stop", "all").stdout.count("stopped"), 5)
        self.assertFalse(any(self.state(n) == "RUNNING" for n in before))

    def test_unknown_names_and_repeated_actions_are_one_line_errors(self):
        programs = "(programs: grape1, grape2, peer1, peer2, peer3)"
        for args, message in ((["start", "peer9"], f"no such process: peer9 {programs}"),
                              (["stop", "peer1", "peer8", "peer9"], f"no such process: peer8, peer9 {programs}"),
                              (["logs", "peer9"], "no such process: peer9"),
                              (["logs", "peer9", "-f"], "no such process: peer9"),
                              (["kill", "peer9"], "no such process: peer9"),
                              (["start", "peer1"], "peer1: already started")):
            result = self.ctl(*args)
            self.assertEqual((result.exit_code, result.stderr), (1, f"error: {message}\n"), args)
        self.supervisor.stop("peer1")
        self.assertEqual(self.ctl("stop", "peer1").stderr, "error: peer1: not running\n")

    def test_down_stops_every_program_and_supervisord(self):
        pids = [p["pid"] for p in self.supervisor.processes()]
        result = self.ctl("down")
        self.assertEqual((result.exit_code, result.stdout), (0, "cluster down\n"))
        self.assertEqual(self.daemon.wait(30), 0)
        for pid in pids:
            self.assertRaises(ProcessLookupError, os.kill, pid, 0)


class HungSupervisordTests(unittest.TestCase):

    def test_a_socket_that_never_answers_times_out_with_a_clear_error(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "hung.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(str(path))
        listener.listen()
        with self.assertRaisesRegex(CtlError, rf"^supervisord at {path}: timed out$"):
            Supervisor(path, timeout=0.2).state()


class UpTests(SupervisedTestCase):
    """``up`` daemonizes supervisord; cleanup stops it by the PID in its pidfile."""

    def setUp(self):
        super().setUp()
        self.addCleanup(self.stop_daemon)

    def stop_daemon(self):
        pidfile = self.topology.run_dir / "supervisord.pid"
        if not pidfile.exists():
            return
        pid = int(pidfile.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
            eventually(lambda: not self.supervisor.is_running(), timeout=20)
        except ProcessLookupError:
            pass
        except AssertionError:
            os.kill(pid, signal.SIGKILL)
            raise

    def exchangectl(self, *args: str) -> subprocess.CompletedProcess:
        """exchangectl in a child process: waiting for peers runs a reactor, once per process."""
        return subprocess.run(python_module("twisted_exchange.ctl", "-c", str(self.config), *args),
                              capture_output=True, text=True, timeout=60)

    def test_up_starts_supervisord_and_reports_peers_without_a_leader(self):
        result = self.exchangectl("up", "--wait", "0.5")
        self.assertTrue(result.stdout.startswith(f"starting supervisord with {self.config}\n"), result.stdout)
        self.assertEqual(result.returncode, 1)
        self.assertTrue(result.stderr.startswith("error: not every peer reports a leader after 0.5s: peer1 unreachable"),
                        result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertTrue(self.supervisor.is_running())
        eventually(self.all_running)

    def test_up_again_restarts_stopped_programs_then_down_stops_everything(self):
        self.exchangectl("up", "--wait", "0")
        eventually(self.all_running)
        self.supervisor.stop("peer3")
        result = self.exchangectl("up", "--wait", "0")
        self.assertIn("starting peer3\n", result.stdout)
        eventually(lambda: self.state("peer3") in ("STARTING", "RUNNING"))
        result = self.exchangectl("down")
        self.assertEqual((result.returncode, result.stdout), (0, "cluster down\n"))
        self.assertFalse(self.supervisor.is_running())

    def test_a_supervisord_startup_error_is_reported_with_its_message(self):
        self.config.write_text(self.config.read_text().replace("logfile_backups=2", "logfile_backups=x", 1))
        result = self.ctl("up")
        self.assertEqual(result.exit_code, 1)
        self.assertTrue(result.stderr.startswith("error: supervisord failed to start: invalid literal for int()"),
                        result.stderr)
        self.assertFalse(self.supervisor.is_running())

    def test_up_fails_at_once_naming_what_supervisord_cannot_start_and_status_says_why(self):
        self.config.write_text(self.config.read_text().replace(DUMMY, "no-such-program-here", 1))
        result = self.exchangectl("up", "--wait", "60")
        self.assertEqual(result.returncode, 1)
        self.assertIn("supervisord could not start grape1: can't find command 'no-such-program-here'",
                      result.stderr)
        result = self.exchangectl("status", "--json")
        self.assertEqual(result.returncode, 3)
        grape1 = json.loads(result.stdout)["processes"]["grape1"]
        self.assertEqual((grape1["state"], grape1["error"]), ("FATAL", "can't find command 'no-such-program-here'"))
        self.assertEqual(grape1["admin"], "http://127.0.0.1:7001")
        self.assertIn("grape1: FATAL: can't find command 'no-such-program-here'",
                      self.exchangectl("status").stdout)

    def test_programs_are_found_through_this_pythons_scripts_even_outside_its_venv(self):
        scripts = sysconfig.get_path("scripts")
        with mock.patch.dict(os.environ, {"PATH": "/usr/bin:/bin"}):
            path = programs_environment()["PATH"].split(os.pathsep)
        self.assertEqual(path[0], scripts)
        self.assertEqual(path[-2:], ["/usr/bin", "/bin"])
        self.assertTrue(os.access(os.path.join(scripts, "twisted-exchange-peer"), os.X_OK))

    def test_status_shows_process_states_and_unreachable_peers(self):
        self.exchangectl("up", "--wait", "0")
        eventually(self.all_running)
        self.supervisor.stop("peer2")
        result = self.exchangectl("status")
        self.assertEqual(result.returncode, 3, result.stderr)  # as supervisorctl: a program is not RUNNING
        lines = result.stdout.splitlines()
        rows = {line.split()[0]: line for line in lines[1:6]}
        self.assertEqual(set(rows), {"grape1", "grape2", "peer1", "peer2", "peer3"})
        self.assertIn("RUNNING pid", rows["grape1"])
        self.assertEqual(rows["peer2"].split(), ["peer2", "STOPPED"])
        self.assertEqual(rows["peer1"].split()[-1], "unreachable")
        self.assertTrue(lines[6].startswith("peer1: no grape reachable"), lines[6:])
