"""The test suite: every module runs under both pytest and trial.

Pure layers are tested with stdlib ``unittest.TestCase`` or trial's
``SynchronousTestCase``; Twisted code with ``twisted.trial.unittest.TestCase``.
Hypothesis runs derandomized so that both runners see the same examples and
a failure is reproducible.
"""
from hypothesis import settings

settings.register_profile("twisted-exchange", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("twisted-exchange")
