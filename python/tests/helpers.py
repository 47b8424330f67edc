"""Shared test support: paths, fd accounting, random values."""

from __future__ import annotations

import gc
import math
import os
import random
import struct
import sys
import unittest
from typing import Any, List

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.dirname(HERE)
SRC = os.path.join(PYDIR, "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

SOURCE_DIR = os.environ.get("CHAN_SOURCE_DIR") or os.path.dirname(PYDIR)
BIN_DIR = os.environ.get("CHAN_PY_BIN") or os.path.join(SOURCE_DIR, "build", "python", "bin")
BUILD_DIR = os.environ.get("CHAN_BUILD") or os.path.join(SOURCE_DIR, "build")
WORK_DIR = os.environ.get("CHAN_PY_WORK") or os.path.join(SOURCE_DIR, "build", "python", "work")
PYTHON = "/usr/bin/python3"


def count_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def open_fds() -> List[str]:
    out = []
    for name in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            out.append(f"{name}->{os.readlink('/proc/self/fd/' + name)}")
        except OSError:
            pass
    return out


def c_bin(name: str) -> str:
    path = os.path.join(BIN_DIR, name)
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is not built: run `make test-python` (it builds python/interop/*.c)")
    return path


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class FdTestCase(unittest.TestCase):
    """Fails a test that leaves more (or fewer) descriptors open than it found."""

    def setUp(self) -> None:
        gc.collect()
        self._fds_before = open_fds()

    def tearDown(self) -> None:
        gc.collect()
        after = open_fds()
        if len(after) != len(self._fds_before):
            self.fail(f"fd leak: before {self._fds_before}\nafter {after}")


def random_value(rng: random.Random, depth: int = 1, max_depth: int = 6, handles: bool = False) -> Any:
    """A random value of the data model (handles as chan.Handle when asked)."""
    import chan

    choices = ["null", "bool", "int", "float", "str", "bytes"]
    if depth < max_depth:
        choices += ["list", "map", "list", "map"]
    if handles:
        choices.append("handle")
    c = rng.choice(choices)
    if c == "null":
        return None
    if c == "bool":
        return rng.random() < 0.5
    if c == "int":
        return rng.choice([0, 1, -1, 63, -64, 64, 127, 128, 300, -300, 2**31, -2**31, 2**53, 2**63 - 1,
                           -2**63, rng.randint(-2**63, 2**63 - 1), rng.randint(-1000, 1000)])
    if c == "float":
        return rng.choice([0.0, -0.0, 1.5, -2.25, math.inf, -math.inf, math.nan, 5e-324, 1e300,
                           struct.unpack("<d", rng.randbytes(8))[0], rng.uniform(-1e6, 1e6)])
    if c == "str":
        return rng.choice(["", "a", "héllo", "\x00", "日本語", "\U0001F600", "x" * rng.randint(0, 200),
                           "".join(chr(rng.choice([rng.randint(32, 126), rng.randint(0xA0, 0xD7FF),
                                                   rng.randint(0xE000, 0x10FFFF)])) for _ in range(rng.randint(0, 8)))])
    if c == "bytes":
        return rng.randbytes(rng.choice([0, 1, 5, 127, 128, 300]))
    if c == "list":
        return [random_value(rng, depth + 1, max_depth, handles) for _ in range(rng.randint(0, 5))]
    if c == "map":
        out = {}
        for _ in range(rng.randint(0, 5)):
            k = rng.choice(["", "a", "b", "key", "ключ", "$x", "\x01", "$$", "k" * 130, str(rng.randint(0, 99))])
            out[k] = random_value(rng, depth + 1, max_depth, handles)
        return out
    return chan.Handle(rng.choice([chan.KIND_FD, chan.KIND_CONN]))


def same(a: Any, b: Any) -> bool:
    """Equality of data-model values: NaN equals NaN, -0.0 differs from 0.0, map order matters."""
    if type(a) is float and type(b) is float:
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if type(a) is not type(b):
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            pass
        else:
            return False
    if isinstance(a, dict):
        return list(a.keys()) == list(b.keys()) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)
