"""The binding's registries match spec/*.tsv (the source of truth)."""

from __future__ import annotations

import os
import unittest

import helpers

import chan
from chan import _codec


def read_tsv(name: str):
    with open(os.path.join(helpers.SOURCE_DIR, "spec", name), encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip() and not line.startswith("#")]
    return rows[0], rows[1:]


class RegistryTests(unittest.TestCase):
    def test_errors(self) -> None:
        head, rows = read_tsv("errors.tsv")
        self.assertEqual(head[:4], ["code", "name", "section", "scope"])
        want = [(int(r[0]), r[1], r[2], r[3]) for r in rows]
        self.assertEqual(list(chan.REGISTRY), want)
        for code, name, section, scope in want:
            cls = chan.BY_NAME[name]
            self.assertIs(chan.BY_CODE[code], cls)
            self.assertEqual((cls.code, cls.name, cls.scope, cls.section), (code, name, scope, section))
            self.assertTrue(issubclass(cls, chan.ChanError))
            base = {"fatal": chan.FatalError, "frame": chan.FrameError, "local": chan.LocalError}[scope]
            self.assertTrue(issubclass(cls, base))
            # one exported class per NAME, CamelCase
            self.assertIs(getattr(chan, cls.__name__), cls)
            self.assertEqual(cls.__name__.upper(), name.replace("_", ""))
            e = cls("why")
            self.assertEqual((e.name, e.code, e.scope), (name, code, scope))
            self.assertIn(name, str(e))
        self.assertTrue(issubclass(chan.ConnectionClosed, EOFError))
        self.assertTrue(issubclass(chan.Timeout, TimeoutError))
        self.assertTrue(issubclass(chan.System, OSError))

    def test_limits(self) -> None:
        head, rows = read_tsv("limits.tsv")
        got = {r[0]: (int(r[1]), int(r[2])) for r in rows}
        self.assertEqual(got["max_payload_bytes"], (_codec.DEFAULT_MAX_PAYLOAD, _codec.HARD_MAX_PAYLOAD))
        self.assertEqual(got["max_handles"], (_codec.DEFAULT_MAX_HANDLES, _codec.HARD_MAX_HANDLES))
        self.assertEqual(got["max_depth"], (_codec.DEFAULT_MAX_DEPTH, _codec.HARD_MAX_DEPTH))
        self.assertEqual(len(got), 3)
        self.assertEqual(chan.DEFAULT_LIMITS, chan.Limits(16777216, 64, 32))

    def test_handle_kinds(self) -> None:
        _head, rows = read_tsv("handle-kinds.tsv")
        kinds = {int(r[0]): r[1] for r in rows if r[1] != "-"}
        self.assertEqual(kinds, {chan.KIND_FD: "fd", chan.KIND_CONN: "conn"})
        # SPEC.md §14.2: registered kinds are 1-63 (64-127 private use, 128+ unassigned)
        self.assertTrue(all(1 <= k <= 63 for k in kinds), kinds)

    def test_registry_policy(self) -> None:
        """SPEC.md §14.2: error codes 1-255, assigned in order, names unique."""
        _head, rows = read_tsv("errors.tsv")
        codes = [int(r[0]) for r in rows]
        self.assertEqual(codes, list(range(1, len(codes) + 1)))
        self.assertLessEqual(max(codes), 255)
        self.assertEqual(len({r[1] for r in rows}), len(rows))


if __name__ == "__main__":
    unittest.main()
