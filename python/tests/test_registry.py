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
        self.assertEqual(head, ["code", "name", "section", "scope", "meaning", "receive", "send"])
        want = [(int(r[0]), r[1], r[2], r[3]) for r in rows]
        # SPEC.md §9.1: the receive and send columns (what an error means on each path)
        self.assertEqual({r[1]: (r[5], r[6]) for r in rows}, chan._errors.PATHS)
        for r in rows:
            cls = chan.BY_NAME[r[1]]
            self.assertEqual((cls.on_receive, cls.on_send), (r[5], r[6]), r[1])
            self.assertIn(r[5], ("fatal", "frame", "local", "frame/fatal", "-"), r[1])
            self.assertIn(r[6], ("local", "sticky", "local/sticky", "-"), r[1])
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
        # revision 1.1 (SPEC.md §16-§18): errors 36-40
        self.assertEqual([chan.UnsupportedFeature.code, chan.ChannelClosed.code, chan.UnknownChannel.code,
                          chan.ChannelLimitExceeded.code, chan.ChannelNotTransferable.code], [36, 37, 38, 39, 40])
        # a code no registry entry has is an unknown error with its code (§14.2 item 1)
        e = chan._errors.error_for_code(200, scope="fatal")
        self.assertIsInstance(e, chan.UnknownError)
        self.assertEqual((e.code, e.name, e.scope), (200, "UNKNOWN", "fatal"))
        self.assertFalse(e.from_peer)

    def test_limits(self) -> None:
        head, rows = read_tsv("limits.tsv")
        got = {r[0]: (int(r[1]), int(r[2])) for r in rows}
        self.assertEqual(got["max_payload_bytes"], (_codec.DEFAULT_MAX_PAYLOAD, _codec.HARD_MAX_PAYLOAD))
        self.assertEqual(got["max_handles"], (_codec.DEFAULT_MAX_HANDLES, _codec.HARD_MAX_HANDLES))
        self.assertEqual(got["max_depth"], (_codec.DEFAULT_MAX_DEPTH, _codec.HARD_MAX_DEPTH))
        self.assertEqual(got["max_channels"], (_codec.DEFAULT_MAX_CHANNELS, _codec.HARD_MAX_CHANNELS))
        self.assertEqual(got["max_queued_bytes"], (_codec.DEFAULT_MAX_QUEUED_BYTES, _codec.HARD_MAX_QUEUED_BYTES))
        self.assertEqual({r[0]: (r[3], r[4]) for r in rows if r[0].startswith("max_c") or r[0].startswith("max_q")},
                         {"max_channels": ("18.6", "CHANNEL_LIMIT_EXCEEDED"),
                          "max_queued_bytes": ("18.6", "CHANNEL_LIMIT_EXCEEDED")})
        self.assertEqual(len(got), 5)
        a, b = chan.Pipe()
        with a, b:
            self.assertEqual(a.channel_limits, (1048576, 67108864))
            a.set_channel_limits(2147483647, 4294967295)
            with self.assertRaises(chan.InvalidArgument):
                a.set_channel_limits(2147483648)
            with self.assertRaises(chan.InvalidArgument):
                a.set_channel_limits(None, 4294967296)
        self.assertEqual(chan.DEFAULT_LIMITS, chan.Limits(16777216, 64, 32))

    def test_handle_kinds(self) -> None:
        _head, rows = read_tsv("handle-kinds.tsv")
        kinds = {int(r[0]): r[1] for r in rows if r[1] != "-"}
        self.assertEqual(kinds, {chan.KIND_FD: "fd", chan.KIND_CONN: "conn"})
        # SPEC.md §14.2: registered kinds are 1-63 (64-127 private use, 128+ unassigned)
        self.assertTrue(all(1 <= k <= 63 for k in kinds), kinds)

    def test_features(self) -> None:
        """spec/features.tsv (SPEC.md §16.3): the binding implements every feature."""
        head, rows = read_tsv("features.tsv")
        self.assertEqual(head, ["name", "section", "defines", "parameters"])
        self.assertEqual(tuple(r[0] for r in rows), chan.FEATURES)
        self.assertEqual({r[0]: r[1] for r in rows}, {"epitaph": "17.3", "channels": "18"})
        for r in rows:
            self.assertRegex(r[0], r"\A[a-z0-9_]{1,32}\Z")
            self.assertFalse(r[0].startswith("x_"))  # private-use names are never registered
            self.assertEqual(r[3], "none")  # revision 1.1 features have no parameters
        a, b = chan.Pipe()
        with a, b:
            self.assertEqual(a.features, chan.FEATURES)

    def test_registry_policy(self) -> None:
        """SPEC.md §14.2: error codes 1-255, assigned in order, names unique."""
        _head, rows = read_tsv("errors.tsv")
        codes = [int(r[0]) for r in rows]
        self.assertEqual(codes, list(range(1, len(codes) + 1)))
        self.assertLessEqual(max(codes), 255)
        self.assertEqual(len({r[1] for r in rows}), len(rows))


if __name__ == "__main__":
    unittest.main()
