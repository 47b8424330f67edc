"""Codec: canonical bytes, round trips, and every decode error with its precedence."""

from __future__ import annotations

import fcntl
import math
import os
import random
import socket
import struct
import unittest

import helpers
from helpers import FdTestCase, same

import chan
from chan import _codec, _handles


def frame(payload_hex: str = "", hc: int = 0, flags: int = 0, channel: int = 0, version: int = 1,
          magic: bytes = b"CHAN", plen: int = -1) -> bytes:
    p = bytes.fromhex(payload_hex.replace(" ", ""))
    return struct.pack("<4sBBHII", magic, version, flags, hc, channel, len(p) if plen < 0 else plen) + p


# value -> payload hex (SPEC.md §7.2 examples and hand-checked encodings)
VECTORS = [
    (None, "0a00"),
    (False, "1000"),
    (True, "1001"),
    (0, "1800"),
    (1, "1802"),
    (-1, "1801"),
    (63, "187e"),
    (-64, "187f"),
    (64, "188001"),
    (2**63 - 1, "18feffffffffffffffff01"),
    (-2**63, "18ffffffffffffffffff01"),
    (0.0, "210000000000000000"),
    (-0.0, "210000000000000080"),
    (1.0, "21000000000000f03f"),
    (math.inf, "21000000000000f07f"),
    (math.nan, "21000000000000f87f"),
    ("", "2a00"),
    ("a\x00", "2a026100"),
    ("é", "2a02c3a9"),
    (b"", "3200"),
    (b"\xff", "3201ff"),
    ([], "3a00"),
    ({}, "4200"),
    ([None], "3a040a020a00"),
    ({"": 0}, "4206" "0a04" "12021800"),
    ({"a": 1}, "4209" "0a07" "0a0161" "12021802"),
    ({"b": 1, "a": 2}, "4212" "0a07" "0a0162" "12021802" "0a07" "0a0161" "12021804"),
    (chan.Handle(chan.KIND_FD), "4a021001"),
    ([chan.Handle(chan.KIND_FD), chan.Handle(chan.KIND_CONN)], "3a0e" "0a044a021001" "0a064a0408011002"),
    ("x" * 128, "2a8001" + "78" * 128),
]


class EncodeTests(FdTestCase):
    def test_vectors(self) -> None:
        for value, hexp in VECTORS:
            with self.subTest(value=value):
                payload, objs, kinds = _codec.encode_payload(value)
                self.assertEqual(payload.hex(), hexp)
                whole, fds = chan.encode(value)
                self.assertEqual(whole[:16], frame(hexp, hc=len(objs))[:16])
                back = chan.decode(whole, detached=True)
                self.assertTrue(same(back, value) or isinstance(value, chan.Handle) or
                                isinstance(value, list) and value and isinstance(value[0], chan.Handle),
                                (back, value))

    def test_any_nan_is_canonical(self) -> None:
        odd_nan = struct.unpack("<d", bytes.fromhex("0100000000f8ffff"))[0]
        self.assertTrue(math.isnan(odd_nan))
        self.assertEqual(_codec.encode_payload(odd_nan)[0].hex(), "21000000000000f87f")

    def test_python_types(self) -> None:
        self.assertEqual(_codec.encode_payload((1, 2))[0], _codec.encode_payload([1, 2])[0])
        self.assertEqual(_codec.encode_payload(bytearray(b"ab"))[0], _codec.encode_payload(b"ab")[0])
        self.assertEqual(_codec.encode_payload(memoryview(b"ab"))[0], _codec.encode_payload(b"ab")[0])

        class MyInt(int):
            pass

        class MyStr(str):
            pass

        self.assertEqual(_codec.encode_payload({MyStr("k"): MyInt(5)})[0], _codec.encode_payload({"k": 5})[0])

    def test_local_errors(self) -> None:
        cases = [
            (2**63, chan.InvalidArgument),
            (-2**63 - 1, chan.InvalidArgument),
            ({1: 2}, chan.InvalidArgument),
            ({1.5}, chan.InvalidArgument),
            (object(), chan.InvalidArgument),
            ("\ud800", chan.InvalidUtf8),
            ({"\udfff": 1}, chan.InvalidUtf8),
            ({"a\x00": 1}, chan.InvalidKey),
            ({"\x00": 1}, chan.InvalidKey),
            (chan.Handle(3), chan.UnknownHandleKind),
        ]
        for value, exc in cases:
            with self.subTest(value=value):
                with self.assertRaises(exc) as cm:
                    chan.encode(value)
                # encoder errors are local in effect, whatever their registry scope (§9.2)
                self.assertEqual(cm.exception.scope, "local")

    def test_depth_limit(self) -> None:
        v: object = 1
        for _ in range(31):
            v = [v]
        chan.encode(v)  # depth 32 exactly
        with self.assertRaises(chan.DepthExceeded):
            chan.encode([v])
        m: object = None
        for _ in range(31):
            m = {"k": m}
        chan.encode(m)
        with self.assertRaises(chan.DepthExceeded):
            chan.encode({"k": m})
        chan.encode([[[[]]]] * 3)
        cyclic: list = []
        cyclic.append(cyclic)
        with self.assertRaises(chan.DepthExceeded):
            chan.encode(cyclic)

    def test_handle_limit(self) -> None:
        chan.encode([chan.Handle(1)] * 253)
        with self.assertRaises(chan.HandleLimitExceeded):
            chan.encode([chan.Handle(1)] * 254)

    def test_fd_objects(self) -> None:
        r, w = os.pipe()
        try:
            with open(os.devnull, "rb") as f:
                fr, fw = chan.Fd(r), chan.Fd(w)
                # Fd(fd) duplicates: a new number, the same open file, close-on-exec
                self.assertNotIn(fr.fileno(), (r, w))
                self.assertEqual(os.fstat(fr.fileno()).st_ino, os.fstat(r).st_ino)
                self.assertTrue(fcntl.fcntl(fr.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
                whole, fds = chan.encode({"a": fr, "b": [f, fw]})
                # a file object is sent as its own descriptor (borrowed)
                self.assertEqual(fds, [fr.fileno(), f.fileno(), fw.fileno()])
                dup_r = fr.fileno()
                fr.close()
                fw.close()
                self.assertRaises(OSError, os.fstat, dup_r)
            # the caller keeps its descriptors
            os.fstat(r)
            os.fstat(w)
            a = chan.Fd.adopt(r)
            self.assertEqual(a.fileno(), r)
            self.assertEqual(a.detach(), r)
            self.assertTrue(a.closed)
            with self.assertRaises(chan.InvalidArgument):
                chan.Fd(-1)
            with self.assertRaises(chan.System):
                chan.Fd(987654)
        finally:
            os.close(r)
            os.close(w)


# (frame, error NAME or None for success, limits)
def error_cases():
    big = 16 * 1024 * 1024
    c = []
    add = c.append
    # §9.3 frame level, in precedence order
    add(("short", frame("1800")[:15], "TRUNCATED", None))
    add(("short beats magic", b"XXXX" + bytes(11), "TRUNCATED", None))
    add(("magic", frame("1800", magic=b"CHAX"), "BAD_MAGIC", None))
    add(("magic beats version", frame("1800", magic=b"chan", version=2), "BAD_MAGIC", None))
    add(("version", frame("1800", version=2), "UNSUPPORTED_VERSION", None))
    add(("version 0", frame("1800", version=0), "UNSUPPORTED_VERSION", None))
    add(("version beats size", frame("", version=2, plen=big + 1), "UNSUPPORTED_VERSION", None))
    add(("too large", frame("", plen=big + 1), "PAYLOAD_TOO_LARGE", None))
    add(("too large for limit", frame("1800"), "PAYLOAD_TOO_LARGE", chan.Limits(max_payload=1)))
    add(("at limit", frame("1800"), None, chan.Limits(max_payload=2)))
    add(("too large beats reserved", frame("", flags=1, plen=big + 1), "PAYLOAD_TOO_LARGE", None))
    add(("payload short", frame("1800", plen=3), "TRUNCATED", None))
    add(("payload short beats flags", frame("1800", flags=1, plen=3), "TRUNCATED", None))
    add(("flags", frame("1800", flags=1), "RESERVED_FIELD_NONZERO", None))
    add(("channel", frame("1800", channel=7), "RESERVED_FIELD_NONZERO", None))
    add(("reserved beats handle limit", frame("1800", channel=1, hc=65), "RESERVED_FIELD_NONZERO", None))
    add(("handle limit", frame("1800", hc=65), "HANDLE_LIMIT_EXCEEDED", None))
    add(("handle limit lowered", frame("4a021001", hc=1), "HANDLE_LIMIT_EXCEEDED", chan.Limits(max_handles=0)))
    add(("empty payload", frame(""), "EMPTY_VALUE", None))
    # §7.3 step 1: tags
    add(("tag past range", frame("98"), "MALFORMED", None))
    add(("tag nonminimal", frame("980000"), "NONCANONICAL", None))
    add(("tag > 32 bits", frame("f8ffffff7f00"), "MALFORMED", None))
    add(("tag 11 bytes", frame("8080808080808080808000"), "MALFORMED", None))
    add(("tag 10 bytes value 0", frame("80808080808080808000"), "NONCANONICAL", None))
    # step 2-4
    add(("field 0", frame("0000"), "MALFORMED", None))
    add(("wire type 3", frame("1b"), "MALFORMED", None))
    add(("wire type 4", frame("1c"), "MALFORMED", None))
    add(("wire type 6", frame("1e"), "MALFORMED", None))
    add(("wire type 7", frame("1f"), "MALFORMED", None))
    add(("unknown field", frame("5000"), "UNKNOWN_FIELD", None))
    add(("unknown field wt5", frame("5500000000"), "UNKNOWN_FIELD", None))
    add(("unknown field beats wt check", frame("f80100"), "UNKNOWN_FIELD", None))
    add(("int as LEN", frame("1a00"), "MALFORMED", None))
    add(("string as varint", frame("2800"), "MALFORMED", None))
    add(("float as fixed32", frame("2500000000"), "MALFORMED", None))
    # step 5: a second member, after steps 1-4 of its tag
    add(("two members same", frame("18021802"), "NONCANONICAL", None))
    add(("two members", frame("18021001"), "NONCANONICAL", None))
    add(("two members decreasing", frame("2a001001"), "NONCANONICAL", None))
    add(("second tag unknown", frame("18025000"), "UNKNOWN_FIELD", None))
    add(("second tag bad wt", frame("18021a00"), "MALFORMED", None))
    add(("second tag field 0", frame("18020000"), "MALFORMED", None))
    # step 6
    add(("varint past range", frame("18"), "MALFORMED", None))
    add(("varint past range 2", frame("1880"), "MALFORMED", None))
    add(("varint nonminimal", frame("188000"), "NONCANONICAL", None))
    add(("varint 10th byte 2", frame("18ffffffffffffffffff02"), "MALFORMED", None))
    add(("varint 11 bytes", frame("18ffffffffffffffffff8101"), "MALFORMED", None))
    add(("varint 10 bytes nonminimal", frame("1880808080808080808000"), "NONCANONICAL", None))
    add(("fixed64 short", frame("210000"), "MALFORMED", None))
    add(("len past range", frame("2a0561"), "MALFORMED", None))
    add(("len nonminimal", frame("2a810061"), "NONCANONICAL", None))
    add(("len nonminimal beats past range", frame("2a8000"), "NONCANONICAL", None))
    add(("len huge", frame("2affffffffffffffffff01"), "MALFORMED", None))
    # step 7
    add(("bool 2", frame("1002"), "NONCANONICAL", None))
    add(("bool nonminimal", frame("108100"), "NONCANONICAL", None))
    add(("nan payload", frame("21010000000000f87f"), "NONCANONICAL", None))
    add(("negative nan", frame("21000000000000f8ff"), "NONCANONICAL", None))
    add(("signalling nan", frame("21010000000000f07f"), "NONCANONICAL", None))
    add(("canonical nan", frame("21000000000000f87f"), None, None))
    add(("overlong", frame("2a02c080"), "INVALID_UTF8", None))
    add(("surrogate", frame("2a03eda080"), "INVALID_UTF8", None))
    add(("above 10ffff", frame("2a04f4908080"), "INVALID_UTF8", None))
    add(("lone continuation", frame("2a0180"), "INVALID_UTF8", None))
    add(("cut sequence", frame("2a01c3"), "INVALID_UTF8", None))
    add(("nul ok", frame("2a0100"), None, None))
    add(("max code point", frame("2a04f48fbfbf"), None, None))
    add(("bytes not checked", frame("3202c080"), None, None))
    add(("null with field", frame("0a020800"), "UNKNOWN_FIELD", None))
    add(("null with field 0", frame("0a020000"), "MALFORMED", None))
    add(("null with nonminimal tag", frame("0a03880000"), "NONCANONICAL", None))
    add(("null with bad wt", frame("0a010b"), "MALFORMED", None))
    add(("list empty item", frame("3a020a00"), "EMPTY_VALUE", None))
    add(("list unknown field", frame("3a021000"), "UNKNOWN_FIELD", None))
    add(("list items wt5", frame("3a050d00000000"), "MALFORMED", None))
    add(("list item nonminimal tag", frame("3a058a00021800"), "NONCANONICAL", None))
    add(("list item len past", frame("3a020a05"), "MALFORMED", None))
    add(("map empty entry", frame("42020a00"), "EMPTY_VALUE", None))
    add(("map unknown field", frame("42021000"), "UNKNOWN_FIELD", None))
    add(("entry key empty present", frame("42060a040a001800"), "NONCANONICAL", None))
    add(("entry key empty present 2", frame("42080a060a0012021800"), "NONCANONICAL", None))
    add(("entry without value", frame("42050a030a0161"), "EMPTY_VALUE", None))
    add(("entry value then key", frame("42090a0712021802" "0a0161"), "NONCANONICAL", None))
    add(("entry key twice", frame("420c0a0a0a01610a016212021802"), "NONCANONICAL", None))
    add(("entry value twice", frame("420a0a08120218021202180a"), "NONCANONICAL", None))
    add(("entry unknown field", frame("42060a041a021800"), "UNKNOWN_FIELD", None))
    add(("entry key as varint", frame("42040a020800"), "MALFORMED", None))
    add(("entry key invalid utf8", frame("420a0a080a02c08012021802"), "INVALID_UTF8", None))
    add(("entry key with nul", frame("420a0a080a02610012021802"), "INVALID_KEY", None))
    add(("entry key only nul", frame("42090a070a010012021802"), "INVALID_KEY", None))
    add(("entry key utf8 beats nul", frame("420b0a090a0300c08012021802"), "INVALID_UTF8", None))
    add(("entry key nul beats later errors", frame("42090a070a010012021002"), "INVALID_KEY", None))
    add(("entry key nul, generic path", frame("420b0a090a0100120418021802"), "INVALID_KEY", None))
    add(("entry value empty", frame("42040a021200"), "EMPTY_VALUE", None))
    add(("entry key len long", frame("42060a040a051200"), "MALFORMED", None))
    # step 8 and handles
    add(("handle kind absent", frame("4a00", hc=1), "UNKNOWN_HANDLE_KIND", None))
    add(("handle kind 3", frame("4a021003", hc=1), "UNKNOWN_HANDLE_KIND", None))
    add(("handle kind huge", frame("4a0b10ffffffffffffffffff01", hc=1), "UNKNOWN_HANDLE_KIND", None))
    add(("handle kind 0 present", frame("4a021000", hc=1), "NONCANONICAL", None))
    add(("handle index 0 present", frame("4a0408001001", hc=1), "NONCANONICAL", None))
    add(("handle fields reversed", frame("4a0410010801", hc=2), "NONCANONICAL", None))
    add(("handle kind twice", frame("4a0410011001", hc=1), "NONCANONICAL", None))
    add(("handle unknown field", frame("4a021801", hc=1), "UNKNOWN_FIELD", None))
    add(("handle index as LEN", frame("4a020a00", hc=1), "MALFORMED", None))
    add(("handle out of range", frame("4a0408011001", hc=1), "HANDLE_INDEX_OUT_OF_RANGE", None))
    add(("handle no table", frame("4a021001"), "HANDLE_INDEX_OUT_OF_RANGE", None))
    add(("handle index 2^64-1", frame("4a0d08ffffffffffffffffff011001", hc=1), "HANDLE_INDEX_OUT_OF_RANGE", None))
    add(("handle index 2^32", frame("4a080880808080101001", hc=1),
         "HANDLE_INDEX_OUT_OF_RANGE", None))
    add(("unknown kind beats range", frame("4a0408051003", hc=1), "UNKNOWN_HANDLE_KIND", None))
    add(("handle repeated", frame("3a0c0a044a0210010a044a021001", hc=2), "HANDLE_INDEX_OUT_OF_ORDER", None))
    add(("handle decreasing", frame("3a0e0a064a04080110010a044a021001", hc=2), "HANDLE_INDEX_OUT_OF_ORDER", None))
    add(("handle skipped", frame("3a0e0a044a0210010a064a0408021001", hc=3), "UNREFERENCED_HANDLE", None))
    add(("handle unreferenced", frame("1800", hc=1), "UNREFERENCED_HANDLE", None))
    add(("two handles ok", frame("3a0e0a044a0210010a064a0408011002", hc=2), None, None))
    # post-walk order: unreferenced beats duplicate key
    dup = "4212" "0a07" "0a0161" "12021802" "0a07" "0a0161" "12021804"
    add(("duplicate key", frame(dup), "DUPLICATE_KEY", None))
    add(("unreferenced beats duplicate", frame(dup, hc=1), "UNREFERENCED_HANDLE", None))
    add(("duplicate empty key", frame("420c0a0412021802" "0a0412021804"), "DUPLICATE_KEY", None))
    add(("walk error beats duplicate", frame(dup[:-8] + "12021002"), "NONCANONICAL", None))
    # first failing check along the walk wins
    add(("first error wins", frame("3a090a032a01800a025000"), "INVALID_UTF8", None))
    add(("first error wins 2", frame("3a090a0250000a032a0180"), "UNKNOWN_FIELD", None))
    return c


def nest(depth: int, leaf: str = "1800") -> str:
    """Payload hex of `depth` nested single-item lists around leaf (a Value)."""
    v = bytes.fromhex(leaf)
    for _ in range(depth):
        item = b"\x0a" + _codec._varint(len(v)) + v
        v = b"\x3a" + _codec._varint(len(item)) + item
    return v.hex()


def nest_map(depth: int, leaf: str = "1800") -> str:
    v = bytes.fromhex(leaf)
    for _ in range(depth):
        entry = b"\x0a\x01k\x12" + _codec._varint(len(v)) + v
        m = b"\x0a" + _codec._varint(len(entry)) + entry
        v = b"\x42" + _codec._varint(len(m)) + m
    return v.hex()


class DecodeErrorTests(FdTestCase):
    def check(self, name: str, data: bytes, want, limits=None) -> None:
        with self.subTest(name):
            try:
                got = chan.decode(data, limits=limits, detached=True)
            except chan.ChanError as exc:
                self.assertEqual(exc.name, want, f"{name}: {exc}")
                self.assertEqual(exc.scope, chan.BY_NAME[want].scope)
                return
            self.assertIsNone(want, f"{name}: decoded to {got!r}")

    def test_error_table(self) -> None:
        cases = error_cases()
        self.assertGreater(len(cases), 100)
        for name, data, want, limits in cases:
            self.check(name, data, want, limits)

    def test_depth(self) -> None:
        self.check("list depth 32", frame(nest(31)), None)
        self.check("list depth 33", frame(nest(32)), "DEPTH_EXCEEDED")
        self.check("map depth 32", frame(nest_map(31)), None)
        self.check("map depth 33", frame(nest_map(32)), "DEPTH_EXCEEDED")
        self.check("empty list at depth 32", frame(nest(31, "3a00")), None)
        self.check("lowered", frame(nest(2)), "DEPTH_EXCEEDED", chan.Limits(max_depth=2))
        self.check("lowered ok", frame(nest(1)), None, chan.Limits(max_depth=2))
        self.check("depth 1 scalar", frame("1800"), None, chan.Limits(max_depth=1))
        self.check("depth 1 empty list", frame("3a00"), None, chan.Limits(max_depth=1))
        self.check("deep garbage", frame(nest(5000)), "DEPTH_EXCEEDED")
        # the depth check comes after the item's length was read (step 6, then 7)
        bad = nest(32)
        self.check("length error before depth", frame(bad[:-2]), "MALFORMED")

    def test_limits_validation(self) -> None:
        with self.assertRaises(chan.InvalidArgument):
            chan.decode(frame("1800"), limits=chan.Limits(max_depth=33))
        with self.assertRaises(chan.InvalidArgument):
            chan.decode(frame("1800"), limits=chan.Limits(max_handles=254))
        with self.assertRaises(chan.InvalidArgument):
            chan.decode(frame("1800"), limits=chan.Limits(max_payload=2**30 + 1))

    def test_trailing_bytes_ignored(self) -> None:
        data = frame("1802") + b"garbage"
        self.assertEqual(chan.decode(data), 1)
        self.assertEqual(_codec.decode_payload(data)[1], 18)


class DescriptorDecodeTests(FdTestCase):
    def pipes(self, n: int):
        fds = []
        for _ in range(n):
            fds.extend(os.pipe())
        return fds

    def assert_closed(self, fds) -> None:
        for fd in fds:
            with self.assertRaises(OSError, msg=f"fd {fd} still open"):
                os.fstat(fd)

    def test_success_owns(self) -> None:
        fds = self.pipes(1)
        v = chan.decode(frame("3a0e0a044a0210010a064a0408011001", hc=2), fds)
        self.assertEqual([type(x) for x in v], [chan.Fd, chan.Fd])
        self.assertEqual([x.fileno() for x in v], fds)
        os.write(v[1].fileno(), b"x")
        self.assertEqual(os.read(v[0].fileno(), 1), b"x")
        del v
        helpers.gc.collect()
        self.assert_closed(fds)

    def test_every_error_closes_all(self) -> None:
        for name, data, want, lim in error_cases():
            if want is None:
                continue
            with self.subTest(name):
                hc = struct.unpack_from("<H", data, 6)[0] if len(data) >= 8 else 0
                pairs = [os.pipe() for _ in range(hc)]
                for _r, w in pairs:
                    os.close(w)
                fds = [r for r, _w in pairs]
                with self.assertRaises(chan.ChanError) as cm:
                    chan.decode(data, fds, limits=lim)
                self.assertEqual(cm.exception.name, want)
                self.assert_closed(fds)

    def test_too_few_too_many(self) -> None:
        fds = self.pipes(1)
        with self.assertRaises(chan.TooFewHandles):
            chan.decode(frame("3a0e0a044a0210010a064a0408011001", hc=2), fds[:1])
        self.assert_closed(fds[:1])
        os.close(fds[1])
        fds = self.pipes(1)
        with self.assertRaises(chan.TooManyHandles):
            chan.decode(frame("4a021001", hc=1), fds)
        self.assert_closed(fds)
        fds = self.pipes(1)
        with self.assertRaises(chan.TooManyHandles):
            chan.decode(frame("1800"), fds[:1])
        self.assert_closed(fds[:1])
        os.close(fds[1])

    def test_handle_error_closes(self) -> None:
        fds = self.pipes(1)
        with self.assertRaises(chan.HandleIndexOutOfOrder):
            chan.decode(frame("3a0c0a044a0210010a044a021001", hc=2), fds)
        self.assert_closed(fds)

    def test_conn_verified(self) -> None:
        fds = self.pipes(1)
        with self.assertRaises(chan.WrongHandleKind):
            chan.decode(frame("4a021002", hc=1), fds[:1])
        self.assert_closed(fds[:1])
        os.close(fds[1])
        for fam, typ in ((socket.AF_UNIX, socket.SOCK_DGRAM), (socket.AF_UNIX, socket.SOCK_SEQPACKET),
                         (socket.AF_INET, socket.SOCK_STREAM)):
            s = socket.socket(fam, typ)
            fd = s.detach()
            with self.assertRaises(chan.WrongHandleKind):
                chan.decode(frame("4a021002", hc=1), [fd])
            self.assert_closed([fd])
        a, b = socket.socketpair()
        fd = a.detach()
        conn = chan.decode(frame("4a021002", hc=1), [fd])
        self.assertIsInstance(conn, chan.Connection)
        conn.send("hi")
        self.assertEqual(chan.decode(b.recv(100)), "hi")
        conn.close()
        b.close()
        self.assert_closed([fd])

    def test_wrong_kind_after_duplicate_key(self) -> None:
        # post-walk order: DUPLICATE_KEY before WRONG_HANDLE_KIND
        body = b""
        for key, val in (("a", "4a021002"), ("a", "1800")):
            vb = bytes.fromhex(val)
            entry = b"\x0a\x01" + key.encode() + b"\x12" + bytes([len(vb)]) + vb
            body += b"\x0a" + bytes([len(entry)]) + entry
        fds = self.pipes(1)
        with self.assertRaises(chan.DuplicateKey):
            chan.decode(frame(("42" + "%02x" % len(body)) + body.hex(), hc=1), fds[:1])
        self.assert_closed(fds[:1])
        os.close(fds[1])

    def test_self_send_on_receive(self) -> None:
        a, b = socket.socketpair()
        st = os.fstat(a.fileno())
        dup = os.dup(a.fileno())
        with self.assertRaises(chan.SelfSend) as cm:
            _handles.decode_frame(frame("4a021002", hc=1), [dup], self_ino=(st.st_dev, st.st_ino),
                                  conn_factory=chan.Connection._from_socket)
        self.assertEqual(cm.exception.scope, "frame")
        self.assert_closed([dup])
        a.close()
        b.close()

    def test_detached(self) -> None:
        v = chan.decode(frame("3a0e0a044a0210010a064a0408011002", hc=2), detached=True)
        self.assertEqual(v, [chan.Handle(1, 0), chan.Handle(2, 1)])
        with self.assertRaises(chan.InvalidArgument):
            fds = self.pipes(1)
            try:
                chan.decode(frame("4a021001", hc=1), fds[:1], detached=True)
            finally:
                self.assert_closed(fds[:1])
                os.close(fds[1])


class RoundTripTests(FdTestCase):
    def test_random_round_trip(self) -> None:
        rng = random.Random(8)
        for i in range(1500):
            v = helpers.random_value(rng, handles=True)
            whole, fds = chan.encode(v)
            back = chan.decode(whole, detached=True)
            again, _ = chan.encode(back)
            self.assertEqual(again, whole)
            if not fds:
                self.assertTrue(same(back, v), (v, back))


if __name__ == "__main__":
    unittest.main()
