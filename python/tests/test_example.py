"""The example and the benchmark run (their numbers are not checked: no timed assertions)."""

from __future__ import annotations

import os
import subprocess
import unittest

import helpers
from helpers import FdTestCase


class ExampleTests(FdTestCase):
    def test_futures_example(self) -> None:
        out = subprocess.run([helpers.PYTHON, os.path.join(helpers.PYDIR, "examples", "futures.py")],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("10 futures resolved across 3 processes, 0 failures", out.stdout)

    def test_futures_asyncio_example(self) -> None:
        out = subprocess.run([helpers.PYTHON, os.path.join(helpers.PYDIR, "examples", "futures_asyncio.py")],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("20 requests (10 answered through futures) on one event loop, 0 failures", out.stdout)

    def test_futures_channels_example(self) -> None:
        out = subprocess.run([helpers.PYTHON, os.path.join(helpers.PYDIR, "examples", "futures_channels.py")],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("200 requests over one connection, 100 answered through futures; "
                      "descriptors while in flight: +0; 0 failures", out.stdout)

    def test_bench_smoke(self) -> None:
        out = subprocess.run([helpers.PYTHON, os.path.join(helpers.PYDIR, "bench.py"), "--smoke"],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("speed-up", out.stdout)
        self.assertIn("chan/pickle", out.stdout)


if __name__ == "__main__":
    unittest.main()
