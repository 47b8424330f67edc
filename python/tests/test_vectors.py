"""conformance/vectors/*.vec run in memory through the binding (spec/vectors.md §3.1).

The conformance runner (make conformance-python) is the full check, over connections
too; this is the fast, in-process version, with its own small .vec reader."""

from __future__ import annotations

import glob
import os
import socket
import tempfile
import unittest
from typing import Any, Dict, List

import helpers
from helpers import FdTestCase

import chan
import chan.text
from chan import _handles


class Case:
    def __init__(self, name: str) -> None:
        self.name = name
        self.kind = ""
        self.value = None
        self.handles: List[str] = []
        self.limits: Dict[str, int] = {}
        self.error = None
        self.transport = None
        self.revision = "1.0"  # spec/vectors.md: "revision 1.1" cases need a 1.1 decoder
        self.bytes = b""
        self.canonical = b""


def read_vec(path: str) -> List[Case]:
    cases: List[Case] = []
    cur = None
    block = None
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line[:1].isspace():
                hexpart = line.split("#", 1)[0].split()
                setattr(cur, block, getattr(cur, block) + bytes(int(h, 16) for h in hexpart))
                continue
            block = None
            if not line or line.startswith("#"):
                continue
            key, _, rest = line.partition(" ")
            if key == "case":
                cur = Case(rest)
            elif key == "end":
                cases.append(cur)
                cur = None
            elif key == "kind":
                cur.kind = rest
            elif key == "value":
                cur.value = rest
            elif key == "handle":
                cur.handles.append(rest.split(" = ")[1])
            elif key == "handles":
                rng, obj = rest.split(" = ")
                a, b = (int(x.strip("#")) for x in rng.split(".."))
                cur.handles += [obj] * (b - a + 1)
            elif key == "limits":
                for kv in rest.split():
                    k, v = kv.split("=")
                    cur.limits[k] = int(v)
            elif key == "error":
                cur.error = rest
            elif key == "transport":
                cur.transport = rest
            elif key == "revision":
                cur.revision = rest
            elif key in ("bytes", "canonical"):
                block = key
    return cases


class Objects:
    """Real kernel objects for a case's handle table; closes what it made."""

    def __init__(self, names: List[str]) -> None:
        self.fds: List[int] = []
        self.keep: List[Any] = []
        for n in names:
            self.fds.append(self.make(n))

    def make(self, n: str) -> int:
        if n == "conn" or n == "seqpacket":
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM if n == "conn" else socket.SOCK_SEQPACKET)
            self.keep.append(b)
            return a.detach()
        if n in ("pipe_read", "pipe_write"):
            r, w = os.pipe()
            mine, other = (r, w) if n == "pipe_read" else (w, r)
            self.keep.append(other)
            return mine
        if n == "memfd":
            return os.memfd_create("vec", os.MFD_CLOEXEC)
        if n == "eventfd":
            return os.eventfd(0, os.EFD_CLOEXEC)
        if n == "file":
            return os.open(tempfile.gettempdir(), os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC)
        if n == "dgram":
            return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).detach()
        if n == "tcp":
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM).detach()
        if n == "unconnected":  # a stream socket that was never connected
            return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).detach()
        if n == "listener":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind("")
            s.listen()
            return s.detach()
        raise AssertionError(f"unknown object {n}")

    def close(self) -> None:
        for k in self.keep:
            if isinstance(k, int):
                os.close(k)
            else:
                k.close()


def bind(v: Any, objs: List[Any]) -> Any:
    if type(v) is list:
        return [bind(x, objs) for x in v]
    if type(v) is dict:
        return {k: bind(x, objs) for k, x in v.items()}
    if type(v) is chan.Handle:
        return objs[v.index]
    return v


def same_object(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


class VectorTests(FdTestCase):
    def test_all_vectors_in_memory(self) -> None:
        files = sorted(glob.glob(os.path.join(helpers.SOURCE_DIR, "conformance", "vectors", "*.vec")))
        self.assertGreater(len(files), 5)
        ran = 0
        for path in files:
            for c in read_vec(path):
                if c.transport:
                    continue  # transport deliveries: the runner's job
                with self.subTest(c.name):
                    self.run_case(c)
                    ran += 1
        self.assertGreater(ran, 250)

    def run_case(self, c: Case) -> None:
        lim = chan.Limits(c.limits.get("max_payload"), c.limits.get("max_handles"), c.limits.get("max_depth"))
        if c.kind in ("success", "decode_success", "decode_failure"):
            objs = Objects(c.handles)
            fds = list(objs.fds)
            try:
                try:
                    value, consumed = _handles.decode_frame(c.bytes, [os.dup(f) for f in fds],
                                                            limits=lim.resolved(),
                                                            conn_factory=chan.Connection._from_socket,
                                                            channels=c.revision == "1.1")
                except chan.ChanError as exc:
                    self.assertEqual(exc.name, c.error, str(exc))
                else:
                    self.assertIsNone(c.error, f"decoded {value!r}")
                    frame, table = chan.encode(value)
                    want = c.bytes if c.kind == "success" else c.canonical
                    self.assertEqual(frame.hex(), want.hex())
                    self.assertEqual(consumed, len(want))
                    self.assertEqual(len(table), len(fds))
                    for got, orig in zip(table, fds):
                        self.assertTrue(same_object(got, orig))
                    self.assertEqual(chan.text.dumps(value), c.value)
                    del value
            finally:
                for f in fds:
                    os.close(f)
                objs.close()
        if c.kind in ("success", "encode_failure"):
            objs = Objects(c.handles)
            live: List[Any] = []
            try:
                try:
                    value = chan.text.loads(c.value)
                    # {"$conn":i} needs a Connection; {"$fd":i} an Fd (borrowed)
                    conns: set = set()
                    self.collect_conns(value, conns)
                    for i, fd in enumerate(objs.fds):
                        if i in conns:
                            d = os.dup(fd)
                            try:
                                live.append(chan.Connection.from_fd(d))
                            except chan.ChanError:
                                os.close(d)  # from_fd takes the fd on success only
                                raise
                        else:
                            live.append(chan.Fd(fd))
                    frame, table = chan.encode(bind(value, live))
                except chan.ChanError as exc:
                    self.assertEqual(exc.name, c.error, str(exc))
                else:
                    self.assertIsNone(c.error)
                    self.assertEqual(frame.hex(), c.bytes.hex())
                    self.assertEqual(chan.text.dumps(chan.decode(frame, detached=True, limits=lim,
                                                                 channels=c.revision == "1.1")), c.value)
            finally:
                for x in live:
                    if isinstance(x, chan.Connection):
                        x.close()
                for f in objs.fds:
                    try:
                        os.close(f)
                    except OSError:
                        pass
                objs.close()

    def collect_conns(self, v: Any, out: set) -> None:
        if type(v) is list:
            for x in v:
                self.collect_conns(x, out)
        elif type(v) is dict:
            for x in v.values():
                self.collect_conns(x, out)
        elif type(v) is chan.Handle and v.kind == chan.KIND_CONN:
            out.add(v.index)


if __name__ == "__main__":
    unittest.main()
