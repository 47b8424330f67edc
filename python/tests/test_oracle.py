"""Differential tests: this binding against libchan (the C reference) and against
Google's protobuf runtime (python3-protobuf), on random and mutated frames."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import tempfile
import unittest

import helpers
from helpers import FdTestCase

import chan
from chan import _codec


def mutants(rng: random.Random, whole: bytes, n: int):
    payload = whole[16:]
    hc = struct.unpack_from("<H", whole, 6)[0]
    for _ in range(n):
        p = bytearray(payload)
        op = rng.randrange(7)
        if op == 0 and p:
            p[rng.randrange(len(p))] = rng.randrange(256)
        elif op == 1:
            p.insert(rng.randrange(len(p) + 1), rng.randrange(256))
        elif op == 2 and p:
            del p[rng.randrange(len(p))]
        elif op == 3 and p:
            i = rng.randrange(len(p))
            p[i] ^= 1 << rng.randrange(8)
        elif op == 4 and p:
            i = rng.randrange(len(p))
            j = rng.randrange(i, min(len(p), i + 8) + 1)
            p[i:j] = rng.randbytes(j - i)
        elif op == 5:
            p = p[: rng.randrange(len(p) + 1)]
        else:
            i = rng.randrange(len(p) + 1)
            p[i:i] = bytes.fromhex(rng.choice(["80", "00", "0a00", "1800", "5000", "4a021001", "ff", "8000"]))
        h = hc + rng.choice([0, 0, 0, 0, 1, -1]) if hc else rng.choice([0, 0, 0, 1])
        yield struct.pack("<4sBBHII", b"CHAN", 1, 0, max(h, 0), 0, len(p)) + bytes(p)


class LibchanOracleTests(FdTestCase):
    """Every frame: same verdict as libchan (error NAME, or the same canonical re-encoding)."""

    def run_oracle(self, cases):
        lines = []
        for data, lim in cases:
            mp, mh, md = (lim or (0, 0, 0))
            lines.append(f"{mp} {mh} {md} {data.hex()}\n")
        out = subprocess.run([helpers.c_bin("codec_oracle")], input="".join(lines), capture_output=True,
                             text=True, check=True).stdout.splitlines()
        self.assertEqual(len(out), len(cases))
        return out

    def mine(self, data: bytes, lim) -> str:
        limits = chan.Limits(*(x or None for x in lim)) if lim else None
        try:
            v = chan.decode(data, limits=limits, detached=True)
        except chan.ChanError as exc:
            return "ERR " + exc.name
        return "OK " + chan.encode(v)[0].hex()

    def test_random_and_mutated(self) -> None:
        rng = random.Random(1)
        cases = []
        originals = []
        for i in range(600):
            v = helpers.random_value(rng, handles=True, max_depth=rng.choice([3, 6, 9]))
            whole, _fds = chan.encode(v)
            originals.append(len(cases))
            cases.append((whole, None))
            for m in mutants(rng, whole, 8):
                lim = None
                if rng.random() < 0.1:
                    lim = (rng.choice([0, 20, 100]), rng.choice([0, 1, 2]), rng.choice([0, 1, 2, 3]))
                cases.append((m, lim))
        # deep nesting around the limit
        for d in range(28, 36):
            v: object = 0
            for _ in range(d - 1):
                v = rng.choice([lambda x: [x], lambda x: {"k": x}])(v)
            try:
                cases.append((chan.encode(v)[0], None))
            except chan.DepthExceeded:
                pass
        results = self.run_oracle(cases)
        mismatches = []
        errors_seen = set()
        for (data, lim), theirs in zip(cases, results):
            ours = self.mine(data, lim)
            if ours.startswith("ERR"):
                errors_seen.add(ours[4:])
            if ours != theirs:
                mismatches.append(f"{lim} {data.hex()}\n  libchan: {theirs}\n  python:  {ours}")
        self.assertEqual(mismatches, [], "\n".join(mismatches[:10]))
        # the mutants reach most payload errors
        self.assertTrue({"MALFORMED", "NONCANONICAL", "UNKNOWN_FIELD", "EMPTY_VALUE", "INVALID_UTF8",
                         "HANDLE_INDEX_OUT_OF_RANGE", "UNREFERENCED_HANDLE", "DEPTH_EXCEEDED"}
                        <= errors_seen, errors_seen)
        # valid frames round-trip byte for byte through libchan
        self.assertEqual(len(originals), 600)
        for i in originals:
            self.assertEqual(results[i], "OK " + cases[i][0].hex())
        self.assertGreater(len(cases), 5000)

    def test_error_table_agrees(self) -> None:
        from test_codec import error_cases

        cases = [(data, None if lim is None else (lim.max_payload or 0, lim.max_handles if lim.max_handles is not None else 0,
                                                   lim.max_depth or 0))
                 for _n, data, _w, lim in error_cases()]
        # libchan treats a limit of 0 as "default": drop the cases that lower a limit to 0
        keep = [(c, n) for c, n in zip(cases, error_cases()) if not (n[3] and 0 in (n[3].max_handles,))]
        out = self.run_oracle([c for c, _n in keep])
        for ((data, lim), (name, _d, want, _l)), theirs in zip(keep, out):
            if want in ("TOO_FEW_HANDLES", "TOO_MANY_HANDLES"):
                continue
            with self.subTest(name):
                if want is None:
                    self.assertTrue(theirs.startswith("OK"), theirs)
                else:
                    self.assertEqual(theirs, "ERR " + want)


class ProtobufTests(FdTestCase):
    """Google's runtime (independent of protobuf-c) agrees with the canonical bytes."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.TemporaryDirectory(prefix="chan-pb-")
        subprocess.run(["protoc", "--proto_path=" + os.path.join(helpers.SOURCE_DIR, "proto"),
                        "--python_out=" + cls.tmp.name, "chan/v1/chan.proto"], check=True)
        # "chan" is this package: load the generated module by its path
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "chan_v1_pb2", os.path.join(cls.tmp.name, "chan", "v1", "chan_pb2.py"))
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        cls.pb = mod

    @classmethod
    def tearDownClass(cls) -> None:
        cls.tmp.cleanup()

    def to_pb(self, obj, v):
        t = type(obj)
        if obj is None:
            v.null_value.SetInParent()
        elif t is bool:
            v.bool_value = obj
        elif t is int:
            v.int_value = obj
        elif t is float:
            v.float_value = obj
        elif t is str:
            v.string_value = obj.encode()
        elif t is bytes:
            v.bytes_value = obj
        elif t is list:
            v.list_value.SetInParent()
            for x in obj:
                self.to_pb(x, v.list_value.items.add())
        elif t is dict:
            v.map_value.SetInParent()
            for k, x in obj.items():
                e = v.map_value.entries.add()
                e.key = k.encode()
                self.to_pb(x, e.value)
        elif t is chan.Handle:
            v.handle_value.index = obj.index
            v.handle_value.kind = obj.kind
        return v

    def test_same_bytes(self) -> None:
        rng = random.Random(2)
        for _ in range(1500):
            v = helpers.random_value(rng, handles=True)
            payload, objs, _k = _codec.encode_payload(v)
            # number the Handle objects as the encoder did
            for i, h in enumerate(objs):
                h.index = i
            want = self.to_pb(v, self.pb.Value()).SerializeToString()
            if payload != want:
                # the only difference allowed: NaN canonicalisation
                self.assertIn(b"\x21", payload)
                m = self.pb.Value()
                m.ParseFromString(payload)
                self.assertEqual(m.SerializeToString(), payload)
                continue
            self.assertEqual(payload, want)

    def test_accepted_means_protobuf_canonical(self) -> None:
        rng = random.Random(3)
        accepted = 0
        for _ in range(300):
            whole, _f = chan.encode(helpers.random_value(rng, handles=True))
            for m in mutants(rng, whole, 10):
                try:
                    chan.decode(m, detached=True)
                except chan.ChanError:
                    continue
                accepted += 1
                msg = self.pb.Value()
                msg.ParseFromString(m[16:])
                self.assertEqual(msg.SerializeToString(), m[16:], m.hex())
        self.assertGreater(accepted, 100)


if __name__ == "__main__":
    unittest.main()
