"""The peer's and grape's log options: levels and JSON lines."""
from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial import unittest

from twisted_exchange.logs import json_lines_observer, observer_for


class JsonLinesTests(unittest.SynchronousTestCase):

    def test_one_object_per_event_with_time_level_namespace_message_and_plain_fields(self):
        out = io.StringIO()
        observe = json_lines_observer(out)
        observe({"log_format": "peer {peer} became {role}", "peer": "peer2", "role": "leader",
                 "log_level": LogLevel.warn, "log_namespace": "twisted_exchange.peer", "log_time": 0.25,
                 "message": "shadowed", "opaque": object()})
        observe({"log_format": "second", "log_time": 1.0})
        first, second = [json.loads(line) for line in out.getvalue().splitlines()]
        self.assertEqual(first, {"time": "1970-01-01T00:00:00.250+00:00", "level": "warn",
                                 "namespace": "twisted_exchange.peer", "message": "peer peer2 became leader",
                                 "peer": "peer2", "role": "leader"})
        self.assertEqual((second["level"], second["message"]), ("info", "second"))

    def test_a_failure_carries_its_traceback(self):
        out = io.StringIO()
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        json_lines_observer(out)({"log_format": "boom", "log_failure": failure, "log_time": 0})
        record = json.loads(out.getvalue())
        self.assertIn("ZeroDivisionError", record["failure"])


class LevelTests(unittest.SynchronousTestCase):

    def test_events_below_the_level_are_dropped_in_either_format(self):
        for form in ("text", "json"):
            out = io.StringIO()
            log = Logger(namespace="test", observer=observer_for(out, "warn", form))
            log.info("quiet {n}", n=1)
            log.warn("loud {n}", n=2)
            log.error("louder {n}", n=3)
            self.assertNotIn("quiet", out.getvalue(), form)
            self.assertEqual([("loud 2" in line, "louder 3" in line) for line in out.getvalue().splitlines()],
                             [(True, False), (False, True)], form)
