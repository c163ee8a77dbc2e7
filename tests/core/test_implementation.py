"""The core runs as its pure-Python source or as the mypyc build of that
source, and says which; TWISTED_EXCHANGE_CORE chooses (see the package's
docstring).  `make test` runs these suites both ways."""
import os
import subprocess
import sys
import unittest

import twisted_exchange.core as core

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORE = os.path.join(ROOT, "twisted_exchange", "core")
REPORT = ("import sys, twisted_exchange.core as core; "
          "print(core.COMPILED, sorted(name for name, module in sys.modules.items() "
          "if name.startswith('twisted_exchange.core.') and not module.__file__.endswith('.py')))")


def imported_with(choice: str) -> subprocess.CompletedProcess:
    """A fresh interpreter importing the core under TWISTED_EXCHANGE_CORE=``choice``."""
    env = dict(os.environ, TWISTED_EXCHANGE_CORE=choice, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", REPORT], capture_output=True, text=True, env=env, cwd=ROOT)


class ImplementationTests(unittest.TestCase):
    def test_every_core_module_runs_the_implementation_the_package_reports(self):
        loaded = [module for name, module in sys.modules.items() if name.startswith("twisted_exchange.core.")]
        compiled = [module for module in loaded if not module.__file__.endswith(".py")]
        self.assertIsInstance(core.COMPILED, bool)
        self.assertEqual(bool(compiled), core.COMPILED)

    def test_the_suite_runs_the_implementation_the_environment_asked_for(self):
        choice = os.environ.get("TWISTED_EXCHANGE_CORE")
        if choice not in ("pure", "compiled"):
            self.skipTest("TWISTED_EXCHANGE_CORE unset: whichever is there runs")
        self.assertEqual(core.COMPILED, choice == "compiled")

    def test_pure_choice_loads_every_module_from_source_even_beside_a_build(self):
        done = imported_with("pure")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.strip(), "False []")

    def test_compiled_choice_runs_the_build_or_refuses_to_import(self):
        done = imported_with("compiled")
        if done.returncode:
            self.assertIn("the core is not built", done.stderr)
        else:
            self.assertTrue(done.stdout.startswith("True ['twisted_exchange.core."), done.stdout)

    def test_a_build_older_than_its_source_is_not_used(self):
        if not any(name.startswith("book.") and name.endswith(".so") for name in os.listdir(CORE)):
            self.skipTest("no build of the core here (make core-compiled)")
        source = os.path.join(CORE, "book.py")
        times = os.stat(source)
        built = max(os.path.getmtime(os.path.join(CORE, name)) for name in os.listdir(CORE) if name.endswith(".so"))
        os.utime(source, (times.st_atime, built + 60))  # edited after the build
        self.addCleanup(os.utime, source, ns=(times.st_atime_ns, times.st_mtime_ns))
        self.assertEqual(imported_with("").stdout.strip(), "False []")
        refused = imported_with("compiled")
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("its source changed since (make core-compiled)", refused.stderr)
