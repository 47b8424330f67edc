"""Revision 1.1 (SPEC.md §16-§18): features and HELLO, control frames and epitaphs,
logical channels; and the 1.0 mode, which must interoperate with 1.1 on
everything 1.0 has.  Real socketpairs, real descriptors; every test checks the
process's descriptor count before and after (FdTestCase)."""

from __future__ import annotations

import array
import gc
import os
import socket
import struct
import subprocess
import tempfile
import threading
import unittest

import helpers
from helpers import FdTestCase

import chan
import chan.text
from chan import _codec

HELLO = {"op": "hello", "features": {"epitaph": {}, "channels": {}}}


def frame(value, flags=0, channel=0, hc=None, payload=None) -> bytes:
    """A frame built by hand (channel handles as chan.Channel)."""
    if payload is None:
        payload, objs, _k = _codec.encode_payload(value)
        if hc is None:
            hc = len(objs)
    return struct.pack("<4sBBHII", b"CHAN", 1, flags, hc or 0, channel, len(payload)) + payload


def send_raw(sock: socket.socket, data: bytes, fds=()) -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    n = sock.sendmsg([data], anc)
    if n < len(data):
        sock.sendall(data[n:])


def read_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError(f"stream ended after {len(out)} of {n} bytes")
        out += chunk
    return out


def read_frame(sock: socket.socket):
    """(flags, channel, handle_count, value, raw bytes) of the next frame on a raw socket."""
    head = read_exact(sock, 16)
    _m, _v, flags, hc, channel, plen = struct.unpack("<4sBBHII", head)
    data = head + read_exact(sock, plen)
    value = chan.decode(struct.pack("<4sBBHII", b"CHAN", 1, 0, hc, 0, plen) + data[16:], detached=True,
                        channels=True)
    return flags, channel, hc, value, data


def nothing_to_read(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
        return False
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


class Raw:
    """A chan Connection (1.1 unless told) whose peer is a plain socket."""

    def __init__(self, revision=None) -> None:
        a, b = socket.socketpair()
        self.conn = chan.Connection.from_fd(a.detach(), revision=revision)
        self.raw = b

    def agree(self) -> None:
        """The raw side sends a HELLO; the connection consumes it and answers."""
        send_raw(self.raw, frame(HELLO, flags=chan.CONTROL))
        with self.assertRaisesWouldBlock():
            self.conn.recv(timeout=0)
        flags, channel, hc, value, _ = read_frame(self.raw)
        assert (flags, channel, hc, value) == (chan.CONTROL, 0, 0, HELLO), (flags, channel, hc, value)

    @staticmethod
    def assertRaisesWouldBlock():
        return unittest.TestCase().assertRaises(chan.WouldBlock)

    def close(self) -> None:
        self.conn.close()
        self.raw.close()

    def __enter__(self) -> "Raw":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def mixed_pair(rev_a: str, rev_b: str):
    a, b = socket.socketpair()
    return (chan.Connection.from_fd(a.detach(), revision=rev_a), chan.Connection.from_fd(b.detach(), revision=rev_b))


def agreed_pair(**kw):
    a, b = chan.Pipe(**kw)
    a.hello()
    with unittest.TestCase().assertRaises(chan.WouldBlock):
        b.recv(timeout=0)  # consumes a's HELLO, answers it
    with unittest.TestCase().assertRaises(chan.WouldBlock):
        a.recv(timeout=0)
    return a, b


# --------------------------------------------------------------------------
# Codec: Value.channel_value (SPEC.md §4.4, §7.3, §18.2)

class ChannelCodecTests(FdTestCase):
    def payload_frame(self, payload: bytes) -> bytes:
        return struct.pack("<4sBBHII", b"CHAN", 1, 0, 0, 0, len(payload)) + payload

    def verdict(self, payload: bytes, channels: bool):
        try:
            return chan.decode(self.payload_frame(payload), channels=channels)
        except chan.ChanError as exc:
            return exc.name

    def test_canonical_bytes_and_round_trip(self) -> None:
        f, fds = chan.encode([chan.Channel(1), {"c": chan.Channel(300)}, chan.Channel(2**31 - 1)])
        self.assertEqual(fds, [])
        self.assertIn(bytes.fromhex("52020801"), f)
        self.assertIn(bytes.fromhex("5203 08ac02".replace(" ", "")), f)
        self.assertEqual(chan.decode(f, channels=True),
                         [chan.Channel(1), {"c": chan.Channel(300)}, chan.Channel(2**31 - 1)])
        self.assertEqual(chan.decode(chan.encode(chan.Channel(7))[0], channels=True), chan.Channel(7))

    def test_field_10_is_unknown_where_channels_is_not_accepted(self) -> None:
        # §7.2's example `50 00` and a well-formed channel: UNKNOWN_FIELD in 1.0 / by default
        for payload in ("5000", "52020801", "5200"):
            self.assertEqual(self.verdict(bytes.fromhex(payload), False), "UNKNOWN_FIELD", payload)
        self.assertEqual(self.verdict(bytes.fromhex("5000"), True), "MALFORMED")  # wire type 0 for a LEN field

    def test_walk_rules(self) -> None:
        cases = {
            "52020801": [chan.Channel(1)],
            "5200": "UNKNOWN_CHANNEL",                   # id absent
            "52020800": "NONCANONICAL",                  # id 0 written
            "5207088080808008": "MALFORMED",             # length 7 runs past the Value's body
            "520608808080800800": "UNKNOWN_CHANNEL",     # 2^31, found before the bad tag after it
            "5206088080808008": "UNKNOWN_CHANNEL",       # 2^31
            "52050880808080": "MALFORMED",               # varint runs past the range
            "5204080108 02": "NONCANONICAL",             # id twice
            "52021001": "UNKNOWN_FIELD",                 # Channel has only field 1
            "52020901": "MALFORMED",                     # wire type 1 (then too short)
            "5203088100": "NONCANONICAL",                # id not minimal
            "1800 52020801": "NONCANONICAL",             # second member of a Value
            "52020801 1800": "NONCANONICAL",
        }
        for hexs, want in cases.items():
            payload = bytes.fromhex(hexs.replace(" ", ""))
            got = self.verdict(payload, True)
            if isinstance(want, list):
                self.assertEqual(got, want[0], hexs)
            else:
                self.assertEqual(got, want, hexs)
        # the channel walk keeps the depth rules: a list item is a Value at depth 2
        self.assertEqual(self.verdict(bytes.fromhex("3a040a0252020801"[:-0] if False else "3a060a0452020801"), True),
                         [chan.Channel(1)])

    def test_text_form(self) -> None:
        self.assertEqual(chan.text.dumps([chan.Channel(5), {"$channel": 1}]), '[{"$channel":5},{"$$channel":1}]')
        self.assertEqual(chan.text.loads('{"$channel":2147483647}'), chan.Channel(2147483647))
        for bad in ('{"$channel":0}', '{"$channel":-0}', '{"$channel":1.0}', '{"$channel":0e0}',
                    '{"$channel":2147483648}', '{"$channel":"1"}', '{"$channel":true}', '{"$channel":1,"x":2}'):
            with self.assertRaises(chan.InvalidText, msg=bad):
                chan.text.loads(bad)

    def test_channel_values(self) -> None:
        for bad in (0, -1, 2**31, "1", 1.0, True):
            with self.assertRaises(chan.InvalidArgument):
                chan.Channel(bad)  # type: ignore[arg-type]
        self.assertNotEqual(chan.Channel(1), chan.Handle(chan.KIND_FD, 1))


# --------------------------------------------------------------------------
# §16: features and HELLO

class HelloTests(FdTestCase):
    def test_no_hello_unprompted_and_1_0_bytes(self) -> None:
        """A 1.1 connection never sends a HELLO of its own accord (§16.2 rule 3), and
        a frame that uses no 1.1 feature is a 1.0 frame byte for byte (§16)."""
        r, w = os.pipe()
        try:
            with Raw() as p:
                values = [None, 1, "x", {"a": [1.5, b"\x00"]}, {"fd": chan.Fd(w)}]
                for v in values:
                    p.conn.send(v)
                    want = chan.encode(v)[0]
                    got = read_frame(p.raw)[4]
                    self.assertEqual(got, want)
                    self.assertEqual(got[5], 0)
                    self.assertEqual(got[8:12], b"\0\0\0\0")
                # receiving 1.0 frames does not make it talk either
                send_raw(p.raw, frame({"q": 1}))
                self.assertEqual(p.conn.recv(), {"q": 1})
                self.assertTrue(nothing_to_read(p.raw))
                self.assertIsNone(p.conn.peer_features)
                self.assertEqual(p.conn.usable_features, frozenset())
                # after agreement, frames without a feature are still 1.0 bytes
                p.agree()
                for v in values[:4]:
                    p.conn.send(v)
                    self.assertEqual(read_frame(p.raw)[4], chan.encode(v)[0])
        finally:
            os.close(r)
            os.close(w)

    def test_hello_is_answered_once_at_once(self) -> None:
        with Raw() as p:
            send_raw(p.raw, frame({"op": "hello", "features": {"channels": {}, "x_future": {"p": 1}},
                                   "extra": [1]}, flags=chan.CONTROL) + frame("after"))
            self.assertEqual(p.conn.recv(), "after")  # the HELLO was consumed, not delivered
            flags, channel, hc, value, _ = read_frame(p.raw)  # answered at once, before any send
            self.assertEqual((flags, channel, hc, value), (chan.CONTROL, 0, 0, HELLO))
            self.assertEqual(p.conn.peer_features, frozenset({"channels", "x_future"}))
            self.assertEqual(p.conn.usable_features, frozenset({"channels"}))
            # a second HELLO is ignored and not answered (§16.2 rule 5)
            send_raw(p.raw, frame(HELLO, flags=chan.CONTROL) + frame(2))
            self.assertEqual(p.conn.recv(), 2)
            p.conn.hello()  # at most one HELLO per connection: sends nothing
            p.conn.send(3)
            self.assertEqual(read_frame(p.raw)[3], 3)

    def test_hello_answer_comes_before_other_frames(self) -> None:
        with Raw() as p:
            # a HELLO received while this side sends: the answer still precedes the next frame
            send_raw(p.raw, frame(HELLO, flags=chan.CONTROL))
            self.assertTrue(p.conn.poll(1))
            with self.assertRaises(chan.WouldBlock):
                p.conn.recv(timeout=0)
            p.conn.send("x")
            self.assertEqual(read_frame(p.raw)[3], HELLO)
            self.assertEqual(read_frame(p.raw)[3], "x")

    def test_negotiation_both_directions(self) -> None:
        for first in (0, 1):
            a, b = chan.Pipe()
            with a, b:
                x, y = (a, b) if first == 0 else (b, a)
                x.hello()
                self.assertEqual(x.usable_features, frozenset())
                x.send("hi")
                self.assertEqual(y.recv(), "hi")
                self.assertEqual(y.peer_features, frozenset(chan.FEATURES))
                self.assertEqual(y.usable_features, frozenset(chan.FEATURES))
                y.send("ho")
                self.assertEqual(x.recv(), "ho")
                self.assertEqual(x.usable_features, frozenset(chan.FEATURES))

    def test_before_agreement_1_0_answers(self) -> None:
        """§16.2 rule 2: before the peer's HELLO, anything with flags or channel that
        is not a well-formed HELLO is RESERVED_FIELD_NONZERO, and the stream stays in sync."""
        bad = [
            frame({"op": "x"}, flags=chan.CONTROL),
            frame(HELLO, flags=chan.END),
            frame(HELLO, flags=chan.CONTROL | chan.END),
            frame(HELLO, flags=chan.CONTROL, channel=1),
            frame(1, channel=1),
            frame(1, flags=0x10),
            frame({"features": {}, "op": "hello"}, flags=chan.CONTROL),      # op not first
            frame({"op": "hello", "features": []}, flags=chan.CONTROL),      # features not a map
            frame({"op": "hello"}, flags=chan.CONTROL),                       # features absent
            frame({"op": "hello", "features": {}, "require": "channels"}, flags=chan.CONTROL),
            frame({"op": "hello", "features": {}, "require": [1]}, flags=chan.CONTROL),
            frame(None, flags=chan.CONTROL, payload=bytes.fromhex("0a")),     # malformed payload
            frame(chan.Channel(1), flags=chan.CONTROL),                        # field 10 before agreement
        ]
        r, w = os.pipe()
        try:
            with Raw() as p:
                for data in bad:
                    send_raw(p.raw, data)
                    with self.assertRaises(chan.ReservedFieldNonzero, msg=data.hex()):
                        p.conn.recv()
                # a HELLO with a descriptor is not a HELLO either; the descriptor is closed
                before = helpers.count_fds()
                send_raw(p.raw, frame(HELLO, flags=chan.CONTROL, hc=1), fds=[w])
                with self.assertRaises(chan.ReservedFieldNonzero):
                    p.conn.recv()
                self.assertEqual(helpers.count_fds(), before)
                send_raw(p.raw, frame("in sync"))
                self.assertEqual(p.conn.recv(), "in sync")
                self.assertTrue(nothing_to_read(p.raw))
                # field 10 on channel 0 with flags 0, before agreement: 1.0's UNKNOWN_FIELD
                send_raw(p.raw, frame([chan.Channel(1)]))
                with self.assertRaises(chan.UnknownField):
                    p.conn.recv()
        finally:
            os.close(r)
            os.close(w)

    def test_require_met(self) -> None:
        """§16.2 rule 6: a required feature is usable at once, before the answer."""
        a, b = chan.Pipe()
        with a, b:
            a.hello(require=["channels", "epitaph"])
            self.assertEqual(a.usable_features, frozenset(chan.FEATURES))
            ch = a.open_channel()
            a.send({"reply": ch})  # before b's answer
            req = b.recv()
            req["reply"].send("answer", last=True)
            self.assertEqual(ch.recv(), "answer")
            self.assertEqual(b.peer_features, frozenset(chan.FEATURES))

    def test_require_unmet_is_fatal_with_epitaph(self) -> None:
        for require, features in ((["channels"], ["epitaph"]), (["x_unknown"], list(chan.FEATURES))):
            a, b = chan.Pipe()
            with a, b:
                b.set_features(features)
                a.hello(require=require)
                a.send("never delivered")
                with self.assertRaises(chan.UnsupportedFeature) as cm:
                    b.recv()
                self.assertEqual(cm.exception.scope, "fatal")
                self.assertFalse(cm.exception.from_peer)
                # reported once; then plainly over, so no loop that keeps
                # reading after a frame-scope name spins (as libchan)
                with self.assertRaises(chan.ConnectionClosed):
                    b.recv()
                with self.assertRaises(chan.ConnectionClosed):
                    b.send(1)
                # a reads b's HELLO answer, then the epitaph
                with self.assertRaises(chan.UnsupportedFeature) as cm:
                    a.recv()
                self.assertTrue(cm.exception.from_peer)
                self.assertIn(require[0], cm.exception.peer_message or "")
                self.assertIs(a.epitaph, cm.exception)
                with self.assertRaises(chan.ConnectionClosed):
                    a.recv()
                with self.assertRaises(chan.ConnectionClosed):
                    a.send(1)

    def test_hello_arguments(self) -> None:
        a, b = chan.Pipe()
        with a, b:
            for bad in (["Channels"], [""], ["x" * 33], [1]):
                with self.assertRaises(chan.InvalidArgument):
                    a.hello(require=bad)  # type: ignore[list-item]
            with self.assertRaises(chan.InvalidArgument):
                a.set_features(["nope"])
            a.hello()
            with self.assertRaises(chan.InvalidArgument):
                a.set_features(["epitaph"])  # too late


# --------------------------------------------------------------------------
# The 1.0 mode and interoperation (§16: no error on either side)

VALUES = [None, True, False, 0, -1, 2**63 - 1, -2**63, 1.5, -0.0, float("inf"), "", "héllo\x00", b"\x00\xff",
          [], {}, [1, [2, [3]]], {"k": {"j": [None]}, "$x": 1}, "x" * 70000]


class Revision10Tests(FdTestCase):
    def test_1_0_mode_rejects_every_1_1_frame(self) -> None:
        with Raw(revision="1.0") as p:
            self.assertEqual(p.conn.revision, "1.0")
            for data in (frame(HELLO, flags=chan.CONTROL), frame(1, flags=chan.END, channel=1),
                         frame(1, channel=0x80000001)):
                send_raw(p.raw, data)
                with self.assertRaises(chan.ReservedFieldNonzero):
                    p.conn.recv()
            send_raw(p.raw, frame([chan.Channel(1)]))
            with self.assertRaises(chan.UnknownField):
                p.conn.recv()
            self.assertTrue(nothing_to_read(p.raw))  # never answers
            for call in (p.conn.hello, p.conn.open_channel, lambda: p.conn.send_epitaph(29)):
                with self.assertRaises(chan.UnsupportedFeature):
                    call()
            with self.assertRaises(chan.UnsupportedFeature):
                p.conn.send(chan.Channel(1))
            send_raw(p.raw, frame("still fine"))
            self.assertEqual(p.conn.recv(), "still fine")

    def test_default_revision_switch(self) -> None:
        self.assertEqual(chan.default_revision(), "1.1")
        chan.set_default_revision("1.0")
        try:
            a, b = chan.Pipe()
            x, y = chan.Pipe(revision="1.1")
        finally:
            chan.set_default_revision("1.1")
        with a, b, x, y:
            self.assertEqual((a.revision, b.revision, x.revision), ("1.0", "1.0", "1.1"))
            # a received conn takes the receiving connection's revision
            a.send(y)
            with b.recv() as c:
                self.assertEqual(c.revision, "1.0")
        with self.assertRaises(chan.InvalidArgument):
            chan.set_default_revision("2.0")

    def exchange(self, old: chan.Connection, new: chan.Connection) -> None:
        """Everything 1.0 has, both directions: values, fds, conns (reply_to)."""
        r, w = os.pipe()
        try:
            for src, dst in ((old, new), (new, old)):
                for v in VALUES:
                    src.send(v)
                    self.assertTrue(helpers.same(dst.recv(), v))
                mine, theirs = chan.Pipe()
                with mine, theirs:
                    src.send({"reply_to": theirs, "fd": chan.Fd(w)})
                    m = dst.recv()
                    with m["reply_to"] as rt, m["fd"] as fd:
                        os.write(fd.fileno(), b"k")
                        rt.send("answer")
                    self.assertEqual(mine.recv(), "answer")
                    self.assertEqual(os.read(r, 1), b"k")
        finally:
            os.close(r)
            os.close(w)

    def test_1_0_and_1_1_interoperate(self) -> None:
        old, new = mixed_pair("1.0", "1.1")
        with old, new:
            self.exchange(old, new)
            self.assertIsNone(new.peer_features)
            self.assertFalse(old.poll() or new.poll())
            # frame-scope errors behave as in 1.0 on both sides
            old_raw = socket.socket(fileno=os.dup(old.fileno()))
            try:
                send_raw(old_raw, frame(1, flags=0x01))
            finally:
                old_raw.close()
            with self.assertRaises(chan.ReservedFieldNonzero):
                new.recv()
            new.send("ok")
            self.assertEqual(old.recv(), "ok")

    def test_1_1_frames_identical_to_1_0_frames(self) -> None:
        old1, old2 = mixed_pair("1.0", "1.0")
        new1, new2 = mixed_pair("1.1", "1.1")
        with old1, old2, new1, new2:
            for v in VALUES:
                old1.send(v)
                new1.send(v)
                a = os.read(old2.fileno(), 1 << 20)
                b = os.read(new2.fileno(), 1 << 20)
                while len(a) < len(chan.encode(v)[0]):
                    a += os.read(old2.fileno(), 1 << 20)
                while len(b) < len(chan.encode(v)[0]):
                    b += os.read(new2.fileno(), 1 << 20)
                self.assertEqual(a, b)
                self.assertEqual(a, chan.encode(v)[0])

    CHILD = r"""
import os, sys, chan
conn = chan.Connection.from_fd(int(sys.argv[1]), revision=sys.argv[2])
while True:
    try:
        m = conn.recv()
    except chan.ConnectionClosed:
        break
    if isinstance(m, dict) and "reply_to" in m:
        with m["reply_to"] as rt:
            rt.send({"echo": m["v"], "fds": [m["fd"]] if "fd" in m else []})
    else:
        conn.send(m)
print("child ok", conn.revision, conn.peer_features)
"""

    def test_separate_processes_both_directions(self) -> None:
        for parent_rev, child_rev in (("1.1", "1.0"), ("1.0", "1.1"), ("1.1", "1.1")):
            a, b = socket.socketpair()
            child = subprocess.Popen([helpers.PYTHON, "-c", self.CHILD, str(b.fileno()), child_rev],
                                     pass_fds=[b.fileno()], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=helpers.child_env())
            b.close()
            r, w = os.pipe()
            try:
                with chan.Connection.from_fd(a.detach(), revision=parent_rev) as conn:
                    for v in VALUES:
                        conn.send(v)
                        self.assertTrue(helpers.same(conn.recv(), v), v)
                    mine, theirs = chan.Pipe()
                    with mine, theirs:
                        conn.send({"v": [1, "two"], "reply_to": theirs, "fd": chan.Fd(w)})
                        theirs.close()
                        got = mine.recv()
                        self.assertEqual(got["echo"], [1, "two"])
                        with got["fds"][0] as fd:
                            os.write(fd.fileno(), b"z")
                        self.assertEqual(os.read(r, 1), b"z")
            finally:
                os.close(r)
                os.close(w)
            out, err = child.communicate(timeout=60)
            self.assertEqual(child.returncode, 0, err)
            self.assertEqual(out.strip(), f"child ok {child_rev} None")


# --------------------------------------------------------------------------
# §17: flags, control frames, epitaphs

class ControlTests(FdTestCase):
    def test_flag_checks_after_agreement(self) -> None:
        with Raw() as p:
            p.agree()
            for data, err in ((frame(1, flags=0x04), chan.ReservedFieldNonzero),
                              (frame(1, flags=0x08), chan.ReservedFieldNonzero),
                              (frame(1, flags=chan.END), chan.ReservedFieldNonzero),          # END on channel 0
                              (frame({"op": "x"}, flags=chan.CONTROL | chan.END, channel=0), chan.ReservedFieldNonzero),
                              (frame(1, channel=0x80000000), chan.UnknownChannel),
                              (frame(1, channel=5), chan.UnknownChannel),                     # never opened by peer
                              (frame(1, channel=0x80000001), chan.UnknownChannel)):           # never allocated here
                send_raw(p.raw, data)
                with self.assertRaises(err, msg=data[:16].hex()):
                    p.conn.recv()
            send_raw(p.raw, frame("optional bits ignored", flags=0xF0))
            self.assertEqual(p.conn.recv(), "optional bits ignored")

    def test_control_frames(self) -> None:
        r, w = os.pipe()
        try:
            with Raw() as p:
                p.agree()
                cases = [
                    (frame({"op": "future_thing", "x": 1}, flags=chan.CONTROL), None),            # ignored
                    (frame({"op": "future", "critical": False}, flags=chan.CONTROL), None),
                    (frame({"op": "future", "critical": True}, flags=chan.CONTROL), chan.UnsupportedFeature),
                    (frame([1], flags=chan.CONTROL), chan.UnsupportedFeature),                     # not a map
                    (frame({"x": 1, "op": "y"}, flags=chan.CONTROL), chan.UnsupportedFeature),     # op not first
                    (frame({"op": 1}, flags=chan.CONTROL), chan.UnsupportedFeature),               # op not a string
                    (frame({"op": "hello", "features": 1}, flags=chan.CONTROL), chan.UnsupportedFeature),
                    (frame(HELLO, flags=chan.CONTROL), None),                                     # second HELLO
                    (frame({"op": "close"}, flags=chan.CONTROL), chan.UnsupportedFeature),         # close on channel 0
                ]
                for data, err in cases:
                    send_raw(p.raw, data + frame("next"))
                    if err is not None:
                        with self.assertRaises(err, msg=data.hex()) as cm:
                            p.conn.recv()
                        self.assertEqual(cm.exception.scope, "frame")
                    self.assertEqual(p.conn.recv(), "next")
                # a control frame with a descriptor: UNSUPPORTED_FEATURE, the descriptor closed
                before = helpers.count_fds()
                send_raw(p.raw, frame({"op": "x", "fd": chan.Handle(chan.KIND_FD, 0)}, flags=chan.CONTROL), fds=[w])
                with self.assertRaises(chan.UnsupportedFeature):
                    p.conn.recv()
                self.assertEqual(helpers.count_fds(), before)
                # a control frame's payload is checked as any payload first
                send_raw(p.raw, frame(None, flags=chan.CONTROL, payload=bytes.fromhex("0a")))
                with self.assertRaises(chan.Malformed):
                    p.conn.recv()
                self.assertTrue(nothing_to_read(p.raw))
        finally:
            os.close(r)
            os.close(w)

    def test_epitaph_delivery(self) -> None:
        a, b = agreed_pair()
        with a, b:
            a.send("before")
            a.send_epitaph(chan.InvalidArgument, "you sent nonsense")
            with self.assertRaises(chan.ConnectionClosed):
                a.send("after")  # sending ended
            self.assertEqual(b.recv(), "before")
            # INVALID_ARGUMENT is of local scope: it means something only
            # where it was raised, so the receive says CONNECTION_CLOSED and
            # the epitaph keeps the code (SPEC.md §17.3 rule 3)
            with self.assertRaises(chan.ConnectionClosed) as cm:
                b.recv()
            e = cm.exception
            self.assertTrue(e.from_peer)
            self.assertEqual(e.peer_message, "you sent nonsense")
            self.assertIsInstance(b.epitaph, chan.InvalidArgument)
            self.assertEqual(b.epitaph.peer_message, "you sent nonsense")
            for _ in range(2):
                with self.assertRaises(chan.ConnectionClosed) as cm2:
                    b.recv()
                self.assertFalse(cm2.exception.from_peer)
            with self.assertRaises(chan.ConnectionClosed):
                b.send(1)
            # a's receiving goes on: b closed, so a sees the end of the stream
            with self.assertRaises(chan.ConnectionClosed):
                a.recv()

    def test_epitaph_codes(self) -> None:
        for payload, want, code in (({"op": "epitaph", "code": 200}, chan.UnknownError, 200),
                                    ({"op": "epitaph", "code": 24, "message": 5}, chan.ConnectionClosed, 24),
                                    ({"op": "epitaph"}, chan.ConnectionClosed, 24),
                                    ({"op": "epitaph", "code": 0}, chan.ConnectionClosed, 24),
                                    ({"op": "epitaph", "code": 256}, chan.ConnectionClosed, 24),
                                    ({"op": "epitaph", "code": 36, "message": "m"}, chan.UnsupportedFeature, 36)):
            with Raw() as p:
                p.agree()
                send_raw(p.raw, frame(payload, flags=chan.CONTROL))
                with self.assertRaises(want) as cm:
                    p.conn.recv()
                self.assertEqual(cm.exception.code, code)
                self.assertTrue(cm.exception.from_peer)
                self.assertEqual(cm.exception.peer_message, payload.get("message") if payload.get("message") == "m"
                                 else None)
                with self.assertRaises(chan.ConnectionClosed):
                    p.conn.recv()

    def test_send_epitaph_needs_the_feature(self) -> None:
        a, b = chan.Pipe()
        with a, b:
            with self.assertRaises(chan.UnsupportedFeature) as cm:
                a.send_epitaph(29)
            self.assertEqual(cm.exception.scope, "local")
            a.send(1)  # nothing was sent
            self.assertEqual(b.recv(), 1)
            with self.assertRaises(chan.InvalidArgument):
                a.send_epitaph(0)
        with Raw() as p:
            send_raw(p.raw, frame({"op": "hello", "features": {"channels": {}}}, flags=chan.CONTROL))
            with self.assertRaises(chan.WouldBlock):
                p.conn.recv(timeout=0)
            with self.assertRaises(chan.UnsupportedFeature):
                p.conn.send_epitaph(29)  # the peer did not announce epitaph

    def test_automatic_epitaph_on_peer_caused_fatal_error(self) -> None:
        for garbage, err in ((b"XHAN" + bytes(12), chan.BadMagic),
                             (b"CHAN\x02" + bytes(11), chan.UnsupportedVersion),
                             (struct.pack("<4sBBHII", b"CHAN", 1, 0, 0, 0, 1 << 30), chan.PayloadTooLarge)):
            a, b = agreed_pair()
            with a, b:
                os.write(a.fileno(), garbage)  # a bug in a, as b sees it
                with self.assertRaises(err):
                    b.recv()
                with self.assertRaises(err) as cm:
                    a.recv()
                self.assertTrue(cm.exception.from_peer)
        # without agreement, no epitaph: the peer may be 1.0
        a, b = chan.Pipe()
        with a, b:
            os.write(a.fileno(), b"XHAN" + bytes(12))
            with self.assertRaises(chan.BadMagic):
                b.recv()
            with self.assertRaises(chan.ConnectionClosed):
                a.recv()


# --------------------------------------------------------------------------
# §18: logical channels

class ChannelTests(FdTestCase):
    def test_request_reply_with_end(self) -> None:
        a, b = agreed_pair()
        with a, b:
            ch = a.open_channel()
            self.assertIsNone(ch.id)
            a.send({"op": "add", "args": [1, 2], "reply_to": ch})
            self.assertEqual(ch.id, 1)
            req = b.recv()
            rt = req["reply_to"]
            self.assertIsInstance(rt, chan.ChannelEndpoint)
            self.assertEqual((rt.id, rt.opened_here, ch.opened_here), (1, False, True))
            rt.send(sum(req["args"]), last=True)
            self.assertTrue(rt.closed)
            with self.assertRaises(chan.ChannelClosed):
                rt.send(1)
            with self.assertRaises(chan.ChannelClosed):
                rt.recv()
            self.assertEqual(ch.recv(), 3)
            with self.assertRaises(chan.ChannelClosed):
                ch.recv()
            with self.assertRaises(chan.ChannelClosed) as cm:
                ch.send(1)
            self.assertEqual(cm.exception.scope, "local")
            del req, rt, ch
            gc.collect()
            # one frame each way, no close frame (§18.5 rule 3)
            self.assertFalse(a.poll() or b.poll())
            a.send("main still works")
            self.assertEqual(b.recv(), "main still works")

    def test_conversation_both_ways_and_close_with_code(self) -> None:
        a, b = agreed_pair()
        with a, b:
            ch = a.open_channel()
            a.send(ch)
            peer = b.recv()
            for i in range(3):
                ch.send(i)
                self.assertEqual(peer.recv(), i)
                peer.send(-i)
                self.assertEqual(ch.recv(), -i)
            peer.send("queued before the close")
            peer.close(chan.ChannelLimitExceeded)
            peer.close()  # idempotent
            self.assertEqual(ch.recv(), "queued before the close")
            with self.assertRaises(chan.ChannelLimitExceeded) as cm:
                ch.recv()
            self.assertTrue(cm.exception.from_peer)
            with self.assertRaises(chan.ChannelClosed):
                ch.recv()
            with self.assertRaises(chan.ChannelClosed):
                ch.send(1)
            with self.assertRaises(chan.ChannelClosed):
                peer.recv()

    def test_release_sends_close(self) -> None:
        with Raw() as p:
            p.agree()
            send_raw(p.raw, frame({"reply_to": chan.Channel(1)}))
            m = p.conn.recv()
            del m  # released without END either way: close (§18.5 rules 3, 4)
            gc.collect()
            flags, channel, hc, value, _ = read_frame(p.raw)
            self.assertEqual((flags, channel, hc, value), (chan.CONTROL | chan.END, 0x80000001, 0, {"op": "close"}))
            # frames the peer sent before it learnt of the close are discarded (§18.4 rule 2)
            r, w = os.pipe()
            try:
                before = helpers.count_fds()
                send_raw(p.raw, frame({"fd": chan.Handle(chan.KIND_FD, 0), "nested": chan.Channel(2)}, channel=1),
                         fds=[w])
                send_raw(p.raw, frame("main"))
                self.assertEqual(p.conn.recv(), "main")
                self.assertEqual(helpers.count_fds(), before)
                # the channel it named was closed too
                flags, channel, hc, value, _ = read_frame(p.raw)
                self.assertEqual((flags, channel, value), (chan.CONTROL | chan.END, 0x80000002, {"op": "close"}))
            finally:
                os.close(r)
                os.close(w)
            # an endpoint of this side: closing it, then frames on it are discarded
            ep = p.conn.open_channel()
            p.conn.send([ep])
            self.assertEqual(read_frame(p.raw)[3], [chan.Channel(1)])
            ep.close()
            flags, channel, hc, value, _ = read_frame(p.raw)
            self.assertEqual((flags, channel, value), (chan.CONTROL | chan.END, 1, {"op": "close"}))
            send_raw(p.raw, frame("late", channel=0x80000001) + frame("main2"))
            self.assertEqual(p.conn.recv(), "main2")
            with self.assertRaises(chan.ChannelClosed):
                ep.recv()
            self.assertTrue(nothing_to_read(p.raw))

    def test_unknown_channel_handles(self) -> None:
        with Raw() as p:
            p.agree()
            send_raw(p.raw, frame([chan.Channel(3)]))
            keep = p.conn.recv()
            self.assertEqual(len(keep), 1)
            for value in ([chan.Channel(3)], [chan.Channel(2)], [chan.Channel(5), chan.Channel(5)],
                          [chan.Channel(7), chan.Channel(6)]):
                send_raw(p.raw, frame(value))
                with self.assertRaises(chan.UnknownChannel, msg=repr(value)):
                    p.conn.recv()
            # ids 5 and 7 were new: the opener is told they are closed (§18.3 rule 2)
            for want in (5, 7):
                flags, channel, hc, value, _ = read_frame(p.raw)
                self.assertEqual((flags, channel, value), (chan.CONTROL | chan.END, 0x80000000 | want,
                                                           {"op": "close", "code": 38}))
            # the discarded ones are now closed ids: late frames on them are dropped silently
            send_raw(p.raw, frame("late", channel=5) + frame("main"))
            self.assertEqual(p.conn.recv(), "main")
            self.assertTrue(nothing_to_read(p.raw))
            del keep

    def test_frame_error_on_a_channel_goes_to_its_endpoint(self) -> None:
        a, b = agreed_pair()
        with a, b:
            ch = a.open_channel()
            a.send(ch)
            peer = b.recv()
            os.write(a.fileno(), frame(None, channel=1, payload=bytes.fromhex("0a")))  # malformed, on channel 1
            a.send("main")
            self.assertEqual(b.recv(), "main")
            with self.assertRaises(chan.Malformed):
                peer.recv()
            ch.send("ok")
            self.assertEqual(peer.recv(), "ok")

    def test_ids_increase_in_send_order(self) -> None:
        with Raw() as p:
            p.agree()
            x, y, z = (p.conn.open_channel() for _ in range(3))
            p.conn.send({"second": y, "first": [z, x]})
            self.assertEqual(read_frame(p.raw)[3], {"second": chan.Channel(1),
                                                    "first": [chan.Channel(2), chan.Channel(3)]})
            self.assertEqual((y.id, z.id, x.id), (1, 2, 3))
            w = p.conn.open_channel()
            y.send({"nested": w})  # a handle on a channel frame
            flags, channel, _hc, value, _ = read_frame(p.raw)
            self.assertEqual((flags, channel, value), (0, 1, {"nested": chan.Channel(4)}))
            # a send that fails before commit allocates nothing
            q = p.conn.open_channel()
            with self.assertRaises(chan.InvalidArgument):
                p.conn.send([q, 2**64])
            self.assertIsNone(q.id)
            p.conn.send(q)
            self.assertEqual(q.id, 5)
            self.assertEqual(read_frame(p.raw)[3], chan.Channel(5))
            for e in (x, y, z, w, q):
                e.close()
            for _ in range(5):
                self.assertEqual(read_frame(p.raw)[0], chan.CONTROL | chan.END)

    def test_not_transferable(self) -> None:
        a, b = agreed_pair()
        c, d = agreed_pair()
        e, f = chan.Pipe()  # nothing agreed: still CHANNEL_NOT_TRANSFERABLE, not UNSUPPORTED_FEATURE
        with a, b, c, d, e, f:
            ch = a.open_channel()
            with self.assertRaises(chan.ChannelNotTransferable):
                e.send({"x": ch})
            for bad in (lambda: c.send(ch), lambda: c.send([1, {"x": ch}]),
                        lambda: a.send(chan.Fd(ch)), lambda: a.send([ch, ch])):
                with self.assertRaises(chan.ChannelNotTransferable) as cm:
                    bad()
                self.assertEqual(cm.exception.scope, "local")
            self.assertFalse(c.poll() or d.poll() or b.poll())
            self.assertIsNone(ch.id)
            a.send(ch)
            with self.assertRaises(chan.ChannelNotTransferable):
                a.send(ch)  # a second time
            got = b.recv()
            with self.assertRaises(chan.ChannelNotTransferable):
                b.send(got)  # the peer's channel, back to it
            with self.assertRaises(chan.ChannelNotTransferable):
                d.send(got)
            with self.assertRaises(chan.InvalidArgument):
                a.send(chan.Channel(1))  # a detached Channel is not an endpoint
            with self.assertRaises(chan.ChannelNotTransferable):
                chan.encode(ch)
            self.assertFalse(b.poll() or d.poll())
            with self.assertRaises(TypeError):
                import pickle
                pickle.dumps(ch)

    def test_channels_need_the_feature(self) -> None:
        a, b = chan.Pipe()
        with a, b:
            ch = a.open_channel()
            with self.assertRaises(chan.UnsupportedFeature):
                a.send(ch)  # nothing agreed yet
            with self.assertRaises(chan.InvalidArgument):
                ch.send(1)  # its handle was not sent
            with self.assertRaises(chan.InvalidArgument):
                ch.recv(timeout=0)
            self.assertFalse(b.poll())
        a, b = chan.Pipe()
        with a, b:
            a.set_features(["epitaph"])
            with self.assertRaises(chan.UnsupportedFeature):
                a.open_channel()
            a.hello()
            b.send("x")  # b sends a HELLO answer first
            self.assertEqual(a.recv(), "x")
            # a does not implement channels: a channel frame is RESERVED_FIELD_NONZERO
            os.write(b.fileno(), frame(1, channel=1))
            with self.assertRaises(chan.ReservedFieldNonzero):
                a.recv(timeout=1)

    def test_max_channels(self) -> None:
        a, b = agreed_pair()
        with a, b:
            b.set_channel_limits(max_channels=2)
            chs = [a.open_channel() for _ in range(3)]
            a.send(chs)
            with self.assertRaises(chan.ChannelLimitExceeded) as cm:
                b.recv()
            self.assertEqual(cm.exception.scope, "frame")
            for ch in chs:  # each opener's endpoint learns it (§18.3 rule 2)
                with self.assertRaises(chan.ChannelLimitExceeded) as cm:
                    ch.recv()
                self.assertTrue(cm.exception.from_peer)
                with self.assertRaises(chan.ChannelClosed):
                    ch.recv()
            two = [a.open_channel() for _ in range(2)]
            a.send(two)
            got = b.recv()
            self.assertEqual(len(got), 2)
            one_more = a.open_channel()
            a.send(one_more)
            with self.assertRaises(chan.ChannelLimitExceeded):
                b.recv()
            got[0].send("end", last=True)  # one fewer open on b
            self.assertEqual(two[0].recv(), "end")
            again = a.open_channel()
            a.send(again)
            self.assertIsInstance(b.recv(), chan.ChannelEndpoint)
            # this side's own limit: local, nothing sent
            a.set_channel_limits(max_channels=a._x.open_count)
            with self.assertRaises(chan.ChannelLimitExceeded) as cm:
                a.send(a.open_channel())
            self.assertEqual(cm.exception.scope, "local")
            self.assertFalse(b.poll())

    def test_queue_overflow_resets_the_largest_queue(self) -> None:
        a, b = agreed_pair()
        with a, b:
            big_ch, small_ch = a.open_channel(), a.open_channel()
            a.send([big_ch, small_ch])
            big, small = b.recv()
            b.set_channel_limits(max_queued_bytes=4000)
            small_ch.send("s1")                   # 16 + 4 + 64 = 84 queued
            for _ in range(3):
                big_ch.send(b"x" * 1000)          # 1,084 each
            r, w = os.pipe()
            try:
                big_ch.send({"fd": chan.Fd(w)})   # queued with its descriptor
                big_ch.send(b"y" * 1000)          # over 4,000: big is reset
                small_ch.send("s2")
                a.send("main")
                before = helpers.count_fds()
                self.assertEqual(b.recv(), "main")
                self.assertEqual(helpers.count_fds(), before)  # the queued fd was closed on reset
            finally:
                os.close(r)
                os.close(w)
            self.assertEqual(small.recv(), "s1")
            self.assertEqual(small.recv(), "s2")
            with self.assertRaises(chan.ChannelLimitExceeded):
                big.recv()
            with self.assertRaises(chan.ChannelClosed):
                big.recv()
            # the opener was sent close with CHANNEL_LIMIT_EXCEEDED
            with self.assertRaises(chan.ChannelLimitExceeded) as cm:
                big_ch.recv()
            self.assertTrue(cm.exception.from_peer)
            # and the connection goes on
            small_ch.send("s3")
            self.assertEqual(small.recv(), "s3")

    def test_main_stream_overflow_is_fatal(self) -> None:
        a, b = agreed_pair()
        with a, b:
            ch = a.open_channel()
            a.send(ch)
            peer = b.recv()
            b.set_channel_limits(max_queued_bytes=3000)
            for _ in range(3):
                a.send(b"m" * 1000)   # read by nobody while b reads the channel
            ch.send("never reached")
            with self.assertRaises(chan.ChannelLimitExceeded) as cm:
                peer.recv()
            self.assertEqual(cm.exception.scope, "fatal")
            with self.assertRaises(chan.ConnectionClosed):
                b.recv()  # reported once, then the connection is plainly over
            with self.assertRaises(chan.ConnectionClosed):
                peer.send(1)  # every endpoint's send (§18.5 rule 5)
            with self.assertRaises(chan.ChannelLimitExceeded) as cm:
                a.recv()
            self.assertTrue(cm.exception.from_peer)  # the epitaph (§17.3 rule 2)

    def test_connection_end_reaches_every_endpoint(self) -> None:
        a, b = agreed_pair()
        with b:
            chs = [a.open_channel() for _ in range(2)]
            a.send(chs)
            peers = b.recv()
            chs[1].send("queued")
            a.send("main")
            a.close()
            self.assertEqual(b.recv(), "main")
            self.assertEqual(peers[1].recv(), "queued")
            for p in peers:
                with self.assertRaises(chan.ConnectionClosed):
                    p.recv()
                with self.assertRaises(chan.ConnectionClosed):
                    p.send(1)
            del chs

    def test_threads_read_different_channels(self) -> None:
        a, b = agreed_pair()
        with a, b:
            chs = [a.open_channel() for _ in range(4)]
            a.send(chs)
            peers = b.recv()
            results = {}

            def reader(i):
                results[i] = [peers[i].recv(timeout=30) for _ in range(50)]

            threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for n in range(50):
                for i in reversed(range(4)):
                    chs[i].send((i, n))
            for t in threads:
                t.join(60)
            self.assertEqual(results, {i: [[i, n] for n in range(50)] for i in range(4)})
            with self.assertRaises(chan.Timeout):
                peers[0].recv(timeout=0.05)
            with self.assertRaises(chan.WouldBlock):
                peers[0].recv(timeout=0)

    def test_ten_thousand_channels_cost_no_descriptor(self) -> None:
        a, b = agreed_pair()
        with a, b:
            before = helpers.count_fds()
            mine = []
            received = []
            for _ in range(50):  # 12,500 requests in flight, each with its reply channel
                batch = [a.open_channel() for _ in range(250)]
                a.send({"replies": batch})
                received.extend(b.recv()["replies"])
                mine.extend(batch)
            self.assertEqual(len(received), 12500)
            self.assertEqual(helpers.count_fds(), before)
            self.assertEqual(a._x.open_count, 12500)
            out = []
            for k in range(0, 12500, 250):  # answered in batches: a socket buffer holds a few thousand frames
                for i, ep in enumerate(reversed(received[k:k + 250])):
                    ep.send(k + i, last=True)
                out.extend(ep.recv() for ep in mine[k:k + 250])
            self.assertEqual(sorted(out), list(range(12500)))
            self.assertEqual(helpers.count_fds(), before)
            self.assertEqual((a._x.open_count, b._x.open_count), (0, 0))
            self.assertEqual((a._x.queued, b._x.queued), (0, 0))
            del mine, received, out
            gc.collect()
            self.assertFalse(a.poll() or b.poll())  # no close frames: every channel saw END
            self.assertEqual(helpers.count_fds(), before)

    def test_descriptors_on_channels(self) -> None:
        a, b = agreed_pair()
        with a, b, tempfile.TemporaryFile() as f:
            f.write(b"data")
            f.flush()
            ch = a.open_channel()
            a.send(ch)
            peer = b.recv()
            x, y = chan.Pipe()
            with x, y:
                peer.send({"file": f, "conn": y}, last=True)
                m = ch.recv()
                with m["file"] as fd, m["conn"] as c:
                    self.assertEqual(os.pread(fd.fileno(), 4, 0), b"data")
                    c.send("via conn")
                    self.assertEqual(x.recv(), "via conn")
                    self.assertEqual(c.revision, "1.1")
                    self.assertIsNone(c.peer_features)  # a received conn knows nothing (§16.1 rule 3)


if __name__ == "__main__":
    unittest.main()
