"""Transport (SPEC.md §10): real sockets, real descriptors, real processes."""

from __future__ import annotations

import array
import fcntl
import gc
import os
import pickle
import socket
import struct
import subprocess
import tempfile
import threading
import unittest

import helpers
from helpers import FdTestCase

import chan
from chan import _codec


def raw_frame(value=None, hc=None, flags=0, channel=0, magic=b"CHAN", version=1, payload=None) -> bytes:
    if payload is None:
        payload = _codec.encode_payload(value)[0]
        if hc is None:
            hc = len(_codec.encode_payload(value)[1])
    return struct.pack("<4sBBHII", magic, version, flags, hc or 0, channel, len(payload)) + payload


def send_raw(sock: socket.socket, data: bytes, fds=()) -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    n = sock.sendmsg([data], anc)
    if n < len(data):
        sock.sendall(data[n:])


def is_cloexec(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


class RawPeer:
    """A chan Connection whose peer is a plain socket the test writes bytes to."""

    def __init__(self) -> None:
        a, b = socket.socketpair()
        self.conn = chan.Connection.from_fd(a.detach())
        self.raw = b

    def close(self) -> None:
        self.conn.close()
        self.raw.close()


class PipeTests(FdTestCase):
    def test_values_in_order(self) -> None:
        a, b = chan.Pipe()
        with a, b:
            values = [None, True, 1, -2**63, 1.5, "x", b"\x00", [1, [2]], {"k": {"j": []}}, "é" * 1000]
            for v in values:
                a.send(v)
            for v in values:
                self.assertEqual(b.recv(), v)
            b.send((1, 2))
            self.assertEqual(a.recv(), [1, 2])

    def test_large_frame_with_reader_thread(self) -> None:
        a, b = chan.Pipe()
        with a, b:
            big = {"blob": os.urandom(3 * 1024 * 1024), "list": list(range(20000))}
            got = []
            t = threading.Thread(target=lambda: got.append(b.recv()))
            t.start()
            a.send(big)
            t.join()
            self.assertEqual(got[0], big)

    def test_fds_travel_and_are_owned_cloexec(self) -> None:
        a, b = chan.Pipe()
        r, w = os.pipe()
        try:
            with tempfile.TemporaryFile() as f, a, b:
                f.write(b"file contents")
                f.flush()
                a.send({"w": chan.Fd(w), "files": [f, chan.Fd(r)]})
                # the sender keeps its own descriptors
                self.assertTrue(is_open(w) and is_open(r))
                m = b.recv()
                fw, (ff, fr) = m["w"], m["files"]
                for x in (fw, ff, fr):
                    self.assertIsInstance(x, chan.Fd)
                    self.assertTrue(is_cloexec(x.fileno()), "received fd without FD_CLOEXEC")
                    self.assertNotIn(x.fileno(), (r, w, f.fileno()))
                os.write(fw.fileno(), b"ping")
                self.assertEqual(os.read(fr.fileno(), 4), b"ping")
                self.assertEqual(os.pread(ff.fileno(), 13, 0), b"file contents")
                nums = [fw.fileno(), ff.fileno(), fr.fileno()]
                with fw:
                    pass
                self.assertFalse(is_open(nums[0]))
                raw = fr.detach()
                self.assertTrue(is_open(raw))
                os.close(raw)
                del m, ff, fr, fw, x
                gc.collect()
                self.assertFalse(is_open(nums[1]))
        finally:
            os.close(r)
            os.close(w)

    def test_fd_open_helper(self) -> None:
        a, b = chan.Pipe()
        r, w = os.pipe()
        with a, b:
            a.send(chan.Fd(w))
            os.close(w)
            with b.recv().open("wb", buffering=0) as f:
                f.write(b"via fdopen")
            with os.fdopen(r, "rb") as rf:
                self.assertEqual(rf.read(), b"via fdopen")

    def test_connection_travels(self) -> None:
        a, b = chan.Pipe()
        x, y = chan.Pipe()
        with a, b, x, y:
            a.send({"reply_to": y})
            y.close()
            m = b.recv()
            c = m["reply_to"]
            self.assertIsInstance(c, chan.Connection)
            c.send("answer")
            self.assertEqual(x.recv(), "answer")
            x.send("back")
            self.assertEqual(c.recv(), "back")
            c.close()
            with self.assertRaises(chan.ConnectionClosed):
                x.recv()

    def test_nested_conns_deep(self) -> None:
        # a connection inside a message inside ... : each hop is a real frame
        a, b = chan.Pipe()
        with a, b:
            leaf_a, leaf_b = chan.Pipe()
            a.send([[{"deep": [leaf_b]}]])
            leaf_b.close()
            got = b.recv()[0][0]["deep"][0]
            got.send(42)
            self.assertEqual(leaf_a.recv(), 42)
            got.close()
            leaf_a.close()

    def test_many_handles(self) -> None:
        a, b = chan.Pipe()
        with a, b:
            r, w = os.pipe()
            try:
                a.send([chan.Fd(r)] * 64)
                got = b.recv()
                self.assertEqual(len(got), 64)
                self.assertEqual(len({g.fileno() for g in got}), 64)
                del got
                a.send([chan.Fd(r)] * 65)
                with self.assertRaises(chan.HandleLimitExceeded):
                    b.recv()
                b.set_limits(max_handles=253)
                a.send([chan.Fd(r)] * 253)
                self.assertEqual(len(b.recv()), 253)
                with self.assertRaises(chan.HandleLimitExceeded):
                    a.send([chan.Fd(r)] * 254)
            finally:
                os.close(r)
                os.close(w)

    def test_socket_stays_blocking(self) -> None:
        a, b = chan.Pipe()
        with a, b:
            with self.assertRaises(chan.WouldBlock):
                b.recv(timeout=0)
            with self.assertRaises(chan.Timeout):
                b.recv(timeout=0.01)
            a.send(1, timeout=0)
            self.assertEqual(b.recv(timeout=1), 1)
            for c in (a, b):
                self.assertFalse(fcntl.fcntl(c.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)

    def test_poll(self) -> None:
        a, b = chan.Pipe()
        with a, b:
            self.assertFalse(b.poll())
            a.send("x")
            self.assertTrue(b.poll(1))
            self.assertEqual(b.recv(), "x")

    def test_not_picklable(self) -> None:
        a, b = chan.Pipe()
        with a, b:
            with self.assertRaises(TypeError):
                pickle.dumps(a)
            with self.assertRaises(TypeError):
                pickle.dumps(chan.Fd(0))

    def test_closed_use(self) -> None:
        a, b = chan.Pipe()
        a.close()
        a.close()
        with self.assertRaises(chan.InvalidArgument):
            a.send(1)
        with self.assertRaises(chan.InvalidArgument):
            a.recv()
        with self.assertRaises(chan.InvalidArgument):
            b.send([a])
        b.close()

    def test_unsendable_leaves_nothing(self) -> None:
        a, b = chan.Pipe()
        with a, b:
            with self.assertRaises(chan.InvalidArgument):
                a.send({"x": object()})
            with self.assertRaises(chan.InvalidArgument):
                a.send(chan.Handle(1))
            a.send("next")
            self.assertEqual(b.recv(), "next")

    def test_threads_do_not_interleave(self) -> None:
        a, b = chan.Pipe()
        with a, b:
            blobs = [bytes([i]) * 300000 for i in range(4)]
            got = []
            reader = threading.Thread(target=lambda: got.extend(b.recv() for _ in range(8)))
            reader.start()
            ts = [threading.Thread(target=lambda x=x: (a.send(x), a.send(x))) for x in blobs]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            reader.join()
            self.assertEqual(sorted(got), sorted(blobs * 2))


class SelfSendTests(FdTestCase):
    def test_refused_over_itself_and_peer(self) -> None:
        a, b = chan.Pipe()
        with a, b:
            for bad in (a, b):
                with self.assertRaises(chan.SelfSend) as cm:
                    a.send({"x": [bad]})
                self.assertEqual(cm.exception.scope, "local")
            # a copy of the same socket is refused too
            dup = chan.Connection.from_fd(os.dup(a.fileno()))
            with self.assertRaises(chan.SelfSend):
                b.send(dup)
            dup.close()
            x, y = chan.Pipe()
            # a copy of x made after x: over it, neither x nor its peer y may travel
            cx = chan.Connection.from_fd(os.dup(x.fileno()))
            for bad in (x, y):
                with self.assertRaises(chan.SelfSend):
                    cx.send(bad)
            cx.close()
            a.send([x])  # another connection is fine
            b.recv()[0].close()
            x.close()
            y.close()
            self.assertFalse(b.poll())

    def test_peer_found_through_sock_diag(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "s")
            with chan.Listener(path) as lst:
                c = chan.Client(path)
                s = lst.accept(timeout=5)
                with c, s:
                    with self.assertRaises(chan.SelfSend):
                        c.send(s)
                    with self.assertRaises(chan.SelfSend):
                        s.send([c])

    def test_receiver_rejects_its_own_endpoint(self) -> None:
        p = RawPeer()
        try:
            own = os.dup(p.conn.fileno())
            send_raw(p.raw, raw_frame(chan.Handle(chan.KIND_CONN)), [own])
            os.close(own)
            send_raw(p.raw, raw_frame("after"))
            with self.assertRaises(chan.SelfSend) as cm:
                p.conn.recv()
            self.assertEqual(cm.exception.scope, "frame")
            self.assertEqual(p.conn.recv(), "after")
        finally:
            p.close()


class StreamErrorTests(FdTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.p = RawPeer()

    def tearDown(self) -> None:
        self.p.close()
        super().tearDown()

    def pipe_fds(self, n: int):
        out = []
        for _ in range(n):
            r, w = os.pipe()
            os.close(w)
            out.append(r)
        return out

    def count(self) -> int:
        return helpers.count_fds()

    def test_frame_errors_keep_sync(self) -> None:
        p = self.p
        cases = [
            (raw_frame(1, flags=1), [], chan.ReservedFieldNonzero),
            (raw_frame(1, channel=3), [], chan.ReservedFieldNonzero),
            (raw_frame(payload=b"\x18\x80\x00"), [], chan.Noncanonical),
            (raw_frame(payload=b"\x50\x00"), [], chan.UnknownField),
            (raw_frame(payload=b""), [], chan.EmptyValue),
            (raw_frame(payload=b"\x2a\x01\xff"), [], chan.InvalidUtf8),
            (raw_frame(chan.Handle(1), hc=2), 2, chan.UnreferencedHandle),
            (raw_frame(chan.Handle(1), hc=2), 1, chan.TooFewHandles),
            (raw_frame(chan.Handle(1)), 2, chan.TooManyHandles),
            (raw_frame(1), 1, chan.TooManyHandles),
            (raw_frame(chan.Handle(2)), 1, chan.WrongHandleKind),
            (raw_frame(chan.Handle(3) if False else None, payload=b"\x4a\x02\x10\x05", hc=1), 1,
             chan.UnknownHandleKind),
            (raw_frame({"a": 1, "b": [chan.Handle(1)]}, flags=2), 1, chan.ReservedFieldNonzero),
        ]
        before = self.count()
        for data, nfds, exc in cases:
            with self.subTest(exc.__name__):
                fds = self.pipe_fds(nfds) if nfds else []
                send_raw(p.raw, data, fds)
                for fd in fds:
                    os.close(fd)
                send_raw(p.raw, raw_frame({"in": "sync"}))
                with self.assertRaises(exc) as cm:
                    p.conn.recv(timeout=5)
                self.assertEqual(cm.exception.scope, "frame")
                self.assertEqual(p.conn.recv(timeout=5), {"in": "sync"})
                self.assertEqual(self.count(), before, "descriptors of a rejected frame leaked")

    def test_limits(self) -> None:
        p = self.p
        p.conn.set_limits(max_handles=1, max_depth=3)
        self.assertEqual(p.conn.limits, chan.Limits(16 * 1024 * 1024, 1, 3))
        fds = self.pipe_fds(2)
        send_raw(p.raw, raw_frame([chan.Handle(1), chan.Handle(1)]), fds)
        for fd in fds:
            os.close(fd)
        send_raw(p.raw, raw_frame([[[1]]]))
        send_raw(p.raw, raw_frame([[1]]))
        before = self.count()
        with self.assertRaises(chan.HandleLimitExceeded):
            p.conn.recv()
        self.assertEqual(self.count(), before)
        with self.assertRaises(chan.DepthExceeded):
            p.conn.recv()
        self.assertEqual(p.conn.recv(), [[1]])
        with self.assertRaises(chan.InvalidArgument):
            p.conn.set_limits(max_depth=33)
        with self.assertRaises(chan.InvalidArgument):
            p.conn.set_limits(max_payload=2**30 + 1)
        p.conn.set_limits(max_payload=4)
        send_raw(p.raw, raw_frame("too long"))
        with self.assertRaises(chan.PayloadTooLarge) as cm:
            p.conn.recv()
        self.assertEqual(cm.exception.scope, "fatal")

    def assert_fatal_sticks(self, exc) -> None:
        """A fatal error closes the connection (§9.2) and sticks for receive and send."""
        before = self.count()
        with self.assertRaises(exc) as cm:
            self.p.conn.recv(timeout=5)
        self.assertEqual(cm.exception.scope, "fatal")
        self.assertTrue(self.p.conn.closed)
        self.closed_conn = before - self.count()
        with self.assertRaises(exc):
            self.p.conn.recv(timeout=0)
        with self.assertRaises(exc):
            self.p.conn.send("after a fatal error")
        self.assertTrue(self.p.conn.poll())
        # the peer sees the end of the stream (a reset when unread data was dropped)
        try:
            self.assertEqual(self.p.raw.recv(100, socket.MSG_DONTWAIT), b"")
        except ConnectionResetError:
            pass

    def test_bad_magic_fatal_closes_fds(self) -> None:
        fds = self.pipe_fds(1)
        before = self.count()
        send_raw(self.p.raw, raw_frame(chan.Handle(1), magic=b"XHAN"), fds)
        os.close(fds[0])
        self.assert_fatal_sticks(chan.BadMagic)
        self.assertEqual(self.count(), before - 1 - 1)  # our copy of the pipe, the connection

    def test_version_fatal(self) -> None:
        send_raw(self.p.raw, raw_frame(1, version=2))
        self.assert_fatal_sticks(chan.UnsupportedVersion)

    def test_eof_at_boundary(self) -> None:
        send_raw(self.p.raw, raw_frame("last"))
        self.p.raw.shutdown(socket.SHUT_WR)
        self.assertEqual(self.p.conn.recv(), "last")
        self.assert_fatal_sticks(chan.ConnectionClosed)
        with self.assertRaises(EOFError):
            self.p.conn.recv()

    def test_eof_in_header(self) -> None:
        fds = self.pipe_fds(1)
        before = self.count()
        send_raw(self.p.raw, raw_frame(chan.Handle(1))[:7], fds)
        os.close(fds[0])
        self.p.raw.shutdown(socket.SHUT_WR)
        self.assert_fatal_sticks(chan.Truncated)
        self.assertEqual(self.count(), before - 1 - 1)

    def test_eof_in_payload(self) -> None:
        send_raw(self.p.raw, raw_frame("abcdef")[:19])
        self.p.raw.shutdown(socket.SHUT_WR)
        self.assert_fatal_sticks(chan.Truncated)

    def test_fds_with_second_header_read_are_misattached(self) -> None:
        data = raw_frame(chan.Handle(1))
        fds = self.pipe_fds(1)
        send_raw(self.p.raw, data[:5])
        before = self.count()
        # the receiver reads the first 5 bytes alone
        with self.assertRaises(chan.WouldBlock):
            self.p.conn.recv(timeout=0)
        send_raw(self.p.raw, data[5:], fds)
        os.close(fds[0])
        self.assert_fatal_sticks(chan.MisattachedHandles)
        self.assertEqual(self.count(), before - 1 - 1)

    def test_fds_with_payload_are_misattached(self) -> None:
        data = raw_frame([chan.Handle(1), "padding"])
        fds = self.pipe_fds(1)
        send_raw(self.p.raw, data[:18])
        send_raw(self.p.raw, data[18:], fds)
        os.close(fds[0])
        before = self.count()
        self.assert_fatal_sticks(chan.MisattachedHandles)
        self.assertEqual(self.count(), before - 1)  # the connection; no received fd stays

    def test_fds_of_next_frame_not_taken_by_previous(self) -> None:
        # frame 1 without fds, frame 2 with: the kernel may return frame 1's tail
        # together with frame 2's fd-bearing bytes; reads never cross a frame end.
        fds = self.pipe_fds(2)
        send_raw(self.p.raw, raw_frame({"first": "x" * 100}))
        send_raw(self.p.raw, raw_frame([chan.Handle(1), chan.Handle(1)]), fds)
        send_raw(self.p.raw, raw_frame("third"))
        for fd in fds:
            os.close(fd)
        self.assertEqual(self.p.conn.recv(), {"first": "x" * 100})
        got = self.p.conn.recv()
        self.assertEqual([type(g) for g in got], [chan.Fd, chan.Fd])
        self.assertEqual(self.p.conn.recv(), "third")

    def test_bytewise_delivery(self) -> None:
        r, w = os.pipe()
        data = raw_frame({"k": [chan.Handle(1), 1.5, "text"]})
        send_raw(self.p.raw, data[:1], [w])
        os.close(w)
        for i in range(1, len(data)):
            with self.assertRaises(chan.WouldBlock):
                self.p.conn.recv(timeout=0)
            send_raw(self.p.raw, data[i:i + 1])
        got = self.p.conn.recv(timeout=0)
        os.write(got["k"][0].fileno(), b"!")
        self.assertEqual(os.read(r, 1), b"!")
        os.close(r)

    def test_partial_frame_survives_timeout(self) -> None:
        data = raw_frame("nothing is lost")
        send_raw(self.p.raw, data[:10])
        with self.assertRaises(chan.Timeout):
            self.p.conn.recv(timeout=0.02)
        send_raw(self.p.raw, data[10:20])
        with self.assertRaises(chan.Timeout):
            self.p.conn.recv(timeout=0.02)
        send_raw(self.p.raw, data[20:])
        self.assertEqual(self.p.conn.recv(timeout=5), "nothing is lost")

    def test_handles_truncated(self) -> None:
        # A receiver near RLIMIT_NOFILE: the kernel drops descriptors and sets MSG_CTRUNC.
        code = r"""
import os, resource, socket, sys
import chan
conn = chan.Connection.from_fd(int(sys.argv[1]))
highest = max(int(x) for x in os.listdir('/proc/self/fd'))
resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 3, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
before = len(os.listdir('/proc/self/fd'))
try:
    conn.recv(timeout=10)
    print("no error")
except chan.ChanError as e:
    after = len(os.listdir('/proc/self/fd')) + 1  # + the connection, closed by the fatal error
    try:
        conn.recv(timeout=0)
    except chan.ChanError as e2:
        print(e.name, e.scope, e2.name, after - before)
"""
        a, b = socket.socketpair()
        try:
            child = subprocess.Popen([helpers.PYTHON, "-c", code, str(a.fileno())], pass_fds=[a.fileno()],
                                     stdout=subprocess.PIPE, text=True, env=helpers.child_env())
            a.close()
            fds = self.pipe_fds(8)
            send_raw(b, raw_frame([chan.Handle(1)] * 8), fds)
            for fd in fds:
                os.close(fd)
            out, _ = child.communicate(timeout=30)
            self.assertEqual(out.split(), ["HANDLES_TRUNCATED", "fatal", "HANDLES_TRUNCATED", "0"])
        finally:
            a.close()
            b.close()


class SendTimeoutTests(FdTestCase):
    def test_would_block_and_commit(self) -> None:
        a, b = chan.Pipe()
        with a, b:
            sent = 0
            while True:
                try:
                    a.send(b"x" * 4096, timeout=0)
                    sent += 1
                except chan.WouldBlock:
                    break
            self.assertFalse(a.pending)
            with self.assertRaises(chan.Timeout):
                a.send("late", timeout=0.02)
            for _ in range(sent):
                self.assertEqual(b.recv(), b"x" * 4096)
            self.assertFalse(b.poll())
            # a frame larger than the socket buffer: committed, then flushed
            big = os.urandom(2 * 1024 * 1024)
            a.send(big, timeout=0.05)
            self.assertTrue(a.pending)
            got = []
            t = threading.Thread(target=lambda: got.append(b.recv()))
            t.start()
            a.flush()
            t.join()
            self.assertFalse(a.pending)
            self.assertEqual(got, [big])

    def test_send_to_closed_peer(self) -> None:
        a, b = chan.Pipe()
        b.send("last words")
        b.close()
        with a:
            with self.assertRaises(chan.ConnectionClosed) as cm:
                a.send("anyone?")
            self.assertEqual(cm.exception.scope, "fatal")
            with self.assertRaises(chan.ConnectionClosed):
                a.send("again?")  # sticks for sends
            # what the peer sent before closing can still be read
            self.assertEqual(a.recv(), "last words")
            with self.assertRaises(chan.ConnectionClosed):
                a.recv()


class ListenerTests(FdTestCase):
    def test_path(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "sock")
            lst = chan.Listener(path)
            self.assertTrue(os.path.exists(path))
            with self.assertRaises(chan.System) as cm:
                chan.Listener(path)
            self.assertEqual(cm.exception.errno, 98)  # EADDRINUSE
            self.assertIsInstance(cm.exception, OSError)
            with self.assertRaises(chan.Timeout):
                lst.accept(timeout=0.01)
            with self.assertRaises(chan.WouldBlock):
                lst.accept(timeout=0)
            c = chan.Client(path)
            s = lst.accept(timeout=5)
            with c, s:
                c.send("hello")
                self.assertEqual(s.recv(), "hello")
                cred = s.peer_cred()
                self.assertEqual(cred, (os.getpid(), os.getuid(), os.getgid()))
                self.assertEqual(c.peer_cred().pid, os.getpid())
                self.assertTrue(is_cloexec(s.fileno()) and is_cloexec(c.fileno()))
            lst.close()
            self.assertFalse(os.path.exists(path))
            with self.assertRaises(chan.System) as cm:
                chan.Client(path)
            self.assertEqual(cm.exception.errno, 2)

    def test_abstract(self) -> None:
        name = f"@chan-test-{os.getpid()}"
        with chan.Listener(name) as lst:
            c = chan.Client(name)
            s = lst.accept()
            with c, s:
                s.send({"abstract": True})
                self.assertEqual(c.recv(), {"abstract": True})
        with self.assertRaises(chan.System):
            chan.Client(name)

    def test_bad_names(self) -> None:
        for bad in ("", None, 5):
            with self.assertRaises(chan.InvalidArgument):
                chan.Listener(bad)  # type: ignore[arg-type]

    def test_from_fd_checks(self) -> None:
        r, w = os.pipe()
        with self.assertRaises(chan.WrongHandleKind):
            chan.Connection.from_fd(r)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with self.assertRaises(chan.WrongHandleKind):
            chan.Connection.from_fd(s.fileno())
        # not taken on failure
        self.assertTrue(is_open(r) and is_open(s.fileno()))
        s.close()
        os.close(r)
        os.close(w)


class ProcessTests(FdTestCase):
    """A child Python process on the other end: fds and connections across processes."""

    CHILD = r"""
import os, sys
import chan
conn = chan.Connection.from_fd(int(sys.argv[1]))
while True:
    try:
        req = conn.recv()
    except chan.ConnectionClosed:
        break
    op = req["op"]
    if op == "write":
        with req["fd"] as f:
            os.write(f.fileno(), req["data"])
        req["reply_to"].send({"ok": True, "pid": os.getpid()})
    elif op == "pipe":
        r, w = os.pipe()
        os.write(w, b"made by the child")
        os.close(w)
        req["reply_to"].send({"fd": chan.Fd(r)})
        os.close(r)
    elif op == "forward":
        req["to"].send({"forwarded": req["what"]})
    req["reply_to"].close() if "reply_to" in req else None
"""

    def test_child(self) -> None:
        a, b = socket.socketpair()
        child = subprocess.Popen([helpers.PYTHON, "-c", self.CHILD, str(b.fileno())], pass_fds=[b.fileno()],
                                 env=helpers.child_env())
        b.close()
        conn = chan.Connection.from_fd(a.detach())
        try:
            r, w = os.pipe()
            reply, reply_peer = chan.Pipe()
            conn.send({"op": "write", "fd": chan.Fd(w), "data": b"hello parent", "reply_to": reply_peer})
            reply_peer.close()
            os.close(w)
            ans = reply.recv(timeout=10)
            self.assertEqual(ans["ok"], True)
            self.assertEqual(ans["pid"], child.pid)
            self.assertEqual(os.read(r, 100), b"hello parent")
            os.close(r)
            with self.assertRaises(chan.ConnectionClosed):
                reply.recv(timeout=10)
            reply.close()

            reply, reply_peer = chan.Pipe()
            conn.send({"op": "pipe", "reply_to": reply_peer})
            reply_peer.close()
            with reply.recv(timeout=10)["fd"] as f:
                self.assertTrue(is_cloexec(f.fileno()))
                self.assertEqual(os.read(f.fileno(), 100), b"made by the child")
            reply.close()

            x, y = chan.Pipe()
            conn.send({"op": "forward", "to": y, "what": [1, 2, 3]})
            y.close()
            self.assertEqual(x.recv(timeout=10), {"forwarded": [1, 2, 3]})
            x.close()
        finally:
            conn.close()
            self.assertEqual(child.wait(timeout=10), 0)


if __name__ == "__main__":
    unittest.main()


class ReceiverOptionTests(FdTestCase):
    """SO_PASSCRED and SO_PASSPIDFD on the receiving socket (SPEC.md §10.4 rule 4):
    their control messages never truncate the descriptors, and the pidfd is closed."""

    def test_passcred_and_passpidfd(self) -> None:
        a, b = chan.Pipe()
        sock = socket.socket(fileno=os.dup(b.fileno()))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.setsockopt(socket.SOL_SOCKET, 76, 1)  # SO_PASSPIDFD (Linux 6.5)
        sock.close()
        r, w = os.pipe2(os.O_CLOEXEC)
        before = len(os.listdir("/proc/self/fd"))
        for i in range(5):
            a.send({"i": i, "w": chan.Fd(w)})
            got = b.recv(timeout=5)
            self.assertEqual(got["i"], i)
            got["w"].close()
            self.assertEqual(len(os.listdir("/proc/self/fd")), before)  # no pidfd kept
        os.close(r)
        os.close(w)
        a.close()
        b.close()
