"""new_request_id: fixed-width, time-ordered, increasing within a process."""
from __future__ import annotations

import unittest
from unittest import mock

from twisted_exchange.ctl.ids import new_request_id
from twisted_exchange.replication.sessions import request_order


class RequestIdTests(unittest.TestCase):

    def test_ids_increase_in_the_session_tables_order(self):
        ids = [new_request_id() for _ in range(1000)]
        self.assertEqual(sorted(ids, key=request_order), ids)
        self.assertEqual(len(set(ids)), len(ids))

    def test_ids_keep_increasing_when_the_clock_steps_back(self):
        first = new_request_id()
        with mock.patch("time.time_ns", return_value=1):
            later = [new_request_id() for _ in range(3)]
        self.assertEqual(sorted([first, *later], key=request_order), [first, *later])

    def test_ids_are_20_digit_nanoseconds_and_4_hex_digits(self):
        self.assertRegex(new_request_id(), r"^[0-9]{20}-[0-9a-f]{4}$")
