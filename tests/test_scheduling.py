"""SCHED_BATCH for a thread that works in turns (scheduling.py).

The policy is per thread on Linux, so each test switches a thread of its
own and never the runner's.
"""
from __future__ import annotations

import os
import threading
import unittest
from unittest import mock

from twisted_exchange import scheduling

LINUX = hasattr(os, "SCHED_BATCH") and hasattr(os, "sched_getscheduler")


def in_a_thread(work):
    """``work()``'s result, computed on a thread started for it."""
    result = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    thread.join(10)
    return result[0]


@unittest.skipUnless(LINUX, "SCHED_BATCH is Linux's")
class LinuxPolicyTests(unittest.TestCase):

    def test_batch_switches_the_calling_thread_and_what_it_starts(self):
        def work():
            refused = scheduling.use_policy("batch")
            child = in_a_thread(lambda: os.sched_getscheduler(0))
            return refused, os.sched_getscheduler(0), child
        before = os.sched_getscheduler(0)
        self.assertEqual(in_a_thread(work), (None, os.SCHED_BATCH, os.SCHED_BATCH))
        self.assertEqual(os.sched_getscheduler(0), before)  # the runner's thread: untouched

    def test_normal_switches_back(self):
        def work():
            scheduling.use_policy("batch")
            return scheduling.use_policy("normal"), os.sched_getscheduler(0)
        self.assertEqual(in_a_thread(work), (None, os.SCHED_OTHER))

    def test_inherit_leaves_the_policy_the_thread_has(self):
        def work():
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return scheduling.use_policy("inherit"), os.sched_getscheduler(0)
        self.assertEqual(in_a_thread(work), (None, os.SCHED_IDLE))

    def test_batch_scheduled_holds_for_the_block_then_restores(self):
        def work():
            with scheduling.batch_scheduled():
                inside = os.sched_getscheduler(0)
            return inside, os.sched_getscheduler(0)
        self.assertEqual(in_a_thread(work), (os.SCHED_BATCH, os.SCHED_OTHER))

    def test_batch_scheduled_restores_after_an_exception(self):
        def work():
            try:
                with scheduling.batch_scheduled():
                    raise KeyError("boom")
            except KeyError:
                return os.sched_getscheduler(0)
        self.assertEqual(in_a_thread(work), os.SCHED_OTHER)


class RefusedPolicyTests(unittest.TestCase):

    def test_a_refusal_is_a_reason_not_an_exception(self):
        refusal = PermissionError(1, "Operation not permitted")
        with mock.patch.object(os, "sched_setscheduler", side_effect=refusal, create=True), \
                mock.patch.object(os, "SCHED_BATCH", 3, create=True), \
                mock.patch.object(os, "sched_param", lambda priority: priority, create=True):
            reason = scheduling.use_policy("batch")
        self.assertEqual(reason, "cannot switch to SCHED_BATCH: Operation not permitted")

    def test_a_system_without_the_policy_is_a_reason(self):
        with mock.patch.object(scheduling, "os", mock.Mock(spec=["getpid"])):
            self.assertEqual(scheduling.use_policy("batch"), "SCHED_BATCH is not available on this system")

    def test_batch_scheduled_runs_the_block_where_it_cannot_switch(self):
        ran = []
        with mock.patch.object(scheduling, "use_policy", return_value="refused"):
            with scheduling.batch_scheduled():
                ran.append(True)
        self.assertEqual(ran, [True])

    @unittest.skipUnless(LINUX, "sched_setscheduler is Linux's")
    def test_switching_a_process_that_has_ended_is_a_reason_not_an_error(self):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        self.assertEqual(scheduling.switch("SCHED_OTHER", pid), "cannot switch to SCHED_OTHER: No such process")
