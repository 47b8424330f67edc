"""Interop with libchan across real processes (python/interop/interop_peer.c)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import unittest

import helpers
from helpers import FdTestCase, same

import chan


def spawn(*args: str):
    """Start interop_peer with one end of a fresh socketpair; returns (process, our Connection)."""
    a, b = socket.socketpair()
    proc = subprocess.Popen([helpers.c_bin("interop_peer"), args[0], str(b.fileno()), *args[1:]],
                            pass_fds=[b.fileno()], stderr=subprocess.PIPE, text=True)
    b.close()
    return proc, chan.Connection.from_fd(a.detach())


def finish(test: unittest.TestCase, proc) -> None:
    _out, err = proc.communicate(timeout=30)
    test.assertEqual(proc.returncode, 0, f"C peer failed: {err}")


class InteropTests(FdTestCase):
    def test_python_producer_c_consumer(self) -> None:
        proc, conn = spawn("consumer")
        try:
            for i in range(50):
                reply, reply_peer = chan.Pipe()
                conn.send({"op": "add", "args": [i, 10 * i, -3], "reply_to": reply_peer})
                reply_peer.close()  # the C side holds the only other copy now
                self.assertEqual(reply.recv(timeout=10), {"sum": 11 * i - 3, "by": "c"})
                with self.assertRaises(chan.ConnectionClosed):
                    reply.recv(timeout=10)  # libchan freed its reply_to
                reply.close()
            # values of every type survive a trip through libchan and back
            rng = random.Random(5)
            for _ in range(150):
                v = helpers.random_value(rng, max_depth=5)
                reply, reply_peer = chan.Pipe()
                conn.send({"op": "echo", "value": v, "reply_to": reply_peer})
                reply_peer.close()
                back = reply.recv(timeout=10)["echo"]
                self.assertTrue(same(back, v), (v, back))
                self.assertEqual(chan.encode(back)[0], chan.encode(v)[0])
                reply.close()
            # descriptors both ways: an fd the C side writes to, handles echoed back
            r, w = os.pipe()
            reply, reply_peer = chan.Pipe()
            conn.send({"op": "write", "fd": chan.Fd(w), "text": "written by c", "reply_to": reply_peer})
            reply_peer.close()
            os.close(w)
            self.assertEqual(reply.recv(timeout=10), {"wrote": 12})
            self.assertEqual(os.read(r, 100), b"written by c")
            reply.close()
            x, y = chan.Pipe()
            reply, reply_peer = chan.Pipe()
            conn.send({"op": "echo", "value": [{"fd": chan.Fd(r)}, y], "reply_to": reply_peer})
            reply_peer.close()
            y.close()
            got = reply.recv(timeout=10)["echo"]
            self.assertIsInstance(got[0]["fd"], chan.Fd)
            self.assertEqual(os.fstat(got[0]["fd"].fileno()).st_ino, os.fstat(r).st_ino)
            got[1].send("through a conn libchan copied")
            self.assertEqual(x.recv(timeout=10), "through a conn libchan copied")
            os.close(r)
            del got
            x.close()
            reply.close()
        finally:
            conn.close()
        finish(self, proc)

    def test_c_producer_python_consumer(self) -> None:
        proc, conn = spawn("producer", "25")
        handled = 0
        try:
            while True:
                try:
                    req = conn.recv(timeout=10)
                except chan.ConnectionClosed:
                    break
                with req["reply_to"] as reply_to:
                    if req["op"] == "add":
                        reply_to.send({"sum": sum(req["args"]), "by": "python"})
                    else:
                        with req["fd"] as f:
                            n = os.write(f.fileno(), req["text"].encode())
                        reply_to.send({"wrote": n})
                handled += 1
        finally:
            conn.close()
        finish(self, proc)
        self.assertEqual(handled, 26)

    def test_c_connection_forwarded_to_c(self) -> None:
        a_proc, a = spawn("origin", "hello through python")
        b_proc, b = spawn("consumer")
        try:
            msg = a.recv(timeout=10)
            self.assertEqual(msg["from"], "c origin")
            made_in_c = msg["conn"]
            self.assertIsInstance(made_in_c, chan.Connection)
            self.assertEqual(made_in_c.peer_cred().pid, a_proc.pid)
            b.send({"op": "use", "conn": made_in_c, "text": "hello through python"})
            made_in_c.close()
        finally:
            a.close()
            b.close()
        finish(self, a_proc)
        finish(self, b_proc)


if __name__ == "__main__":
    unittest.main()


class Revision11InteropTests(FdTestCase):
    """Revision 1.1 between the Python binding and libchan, and the 1.0 mode of
    the Python binding against libchan 0.3 (SPEC.md §16: a 1.0 peer keeps working
    with a 1.1 peer on everything 1.0 has, with no error on either side)."""

    def test_python_10_mode_with_libchan_11(self) -> None:
        a, b = socket.socketpair()
        proc = subprocess.Popen([helpers.c_bin("interop_peer"), "consumer", str(b.fileno())],
                                pass_fds=[b.fileno()], stderr=subprocess.PIPE, text=True)
        b.close()
        conn = chan.Connection.from_fd(a.detach(), revision="1.0")
        try:
            for i in range(20):
                reply, reply_peer = chan.Pipe(revision="1.0")
                conn.send({"op": "add", "args": [i, 1], "reply_to": reply_peer})
                reply_peer.close()
                self.assertEqual(reply.recv(timeout=10), {"sum": i + 1, "by": "c"})
                reply.close()
        finally:
            conn.close()
        finish(self, proc)

    def test_channels_python_requests_libchan_answers(self) -> None:
        proc, conn = spawn("consumer")
        try:
            conn.hello(require=["channels"])
            for i in range(30):
                ep = conn.open_channel()
                conn.send({"op": "add", "args": [i, 5], "reply_to": ep})
                self.assertEqual(ep.recv(timeout=10), {"sum": i + 5, "by": "c"})
                with self.assertRaises(chan.ChannelClosed):
                    ep.recv(timeout=10)  # libchan answered with END
                ep.close()
            self.assertEqual(set(conn.usable_features), {"epitaph", "channels"})
        finally:
            conn.close()
        finish(self, proc)

    def test_channels_libchan_requests_python_answers(self) -> None:
        proc, conn = spawn("producer11", "25")
        try:
            for i in range(25):
                req = conn.recv(timeout=10)
                self.assertEqual(req["op"], "add")
                ep = req["reply_to"]
                self.assertIsInstance(ep, chan.ChannelEndpoint)
                ep.send({"sum": sum(req["args"]), "by": "python"}, last=True)
                ep.close()
            with self.assertRaises(chan.ChanError) as cm:
                conn.recv(timeout=10)  # the C side's epitaph
            self.assertEqual(cm.exception.name, "MALFORMED")
            self.assertTrue(cm.exception.from_peer)
            self.assertEqual(cm.exception.peer_message, "bye from c")
            with self.assertRaises(chan.ConnectionClosed):
                conn.recv(timeout=10)
        finally:
            conn.close()
        finish(self, proc)

    def test_libchan_epitaph_for_garbage(self) -> None:
        a, b = socket.socketpair()
        proc = subprocess.Popen([helpers.c_bin("interop_peer"), "victim", str(b.fileno())],
                                pass_fds=[b.fileno()], stderr=subprocess.PIPE, text=True)
        b.close()
        raw = a.dup()
        conn = chan.Connection.from_fd(a.detach())
        try:
            conn.hello()
            conn.send({"op": "noise"})  # libchan answers the HELLO while reading it
            raw.sendall(b"JUNKJUNKJUNKJUNK")
            with self.assertRaises(chan.ChanError) as cm:
                while True:
                    conn.recv(timeout=10)
            self.assertEqual(cm.exception.name, "BAD_MAGIC")
            self.assertTrue(cm.exception.from_peer)
        finally:
            raw.close()
            conn.close()
        finish(self, proc)

