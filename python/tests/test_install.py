"""The documented offline install recipe works (python/README.md, "Install")."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import unittest

import helpers
from helpers import FdTestCase


class InstallTests(FdTestCase):
    def test_venv_install_offline(self) -> None:
        os.makedirs(helpers.WORK_DIR, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=helpers.WORK_DIR, prefix="venv-") as tmp:
            venv = os.path.join(tmp, "venv")
            # pip writes build/ and *.egg-info next to the sources: build from a copy
            src = os.path.join(tmp, "src")
            shutil.copytree(helpers.PYDIR, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
            env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
            env["PIP_NO_INDEX"] = "1"  # nothing may come from the network
            env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
            subprocess.run([helpers.PYTHON, "-m", "venv", "--system-site-packages", venv], check=True, env=env)
            r = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--no-build-isolation", "--no-index",
                                src], capture_output=True, text=True, env=env, timeout=300)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            probe = ("import chan, os, pathlib; a, b = chan.Pipe(); a.send({'ok': [1, 2.5, b'x']}); "
                     "print(b.recv()); print(pathlib.Path(chan.__file__).parent.joinpath('py.typed').exists()); "
                     "print(chan.__file__)")
            r = subprocess.run([os.path.join(venv, "bin", "python"), "-c", probe], capture_output=True,
                               text=True, env=env, cwd=tmp, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            lines = r.stdout.splitlines()
            self.assertEqual(lines[0], "{'ok': [1, 2.5, b'x']}")
            self.assertEqual(lines[1], "True")
            self.assertTrue(lines[2].startswith(venv), lines[2])


if __name__ == "__main__":
    unittest.main()
