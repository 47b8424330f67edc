#!/usr/bin/python3
"""The Python binding's testee for the chan/1 conformance runner (spec/vectors.md §4).

    build/conformance/runner --vectors conformance/vectors --errors spec/errors.tsv \
        -- /usr/bin/python3 python/conformance_testee.py

stdin: requests, stdout: responses (4-byte little-endian length + text lines);
fd 3: descriptors only.  Everything chan-specific goes through the binding (package
chan in python/src): decode, encode, connections, the text form reader.

``--class codec`` runs it as a codec-class testee (conformance/README.md): no
descriptors and no connections; handle tables arrive as kinds and ids
(``handle_kinds``, ``handle_ids``) and the binding's codec layer (``_codec``, the
layer below the descriptors) decodes and encodes with :class:`chan.Handle`
placeholders.  Without it the testee declares class transport.

Revision 1.1 (spec/vectors.md §4.5): the hello answer says ``revision 1.1``; a
``decode`` with ``revision 1.1`` accepts what a receiver that has the peer's HELLO
accepts; received channel handles become endpoints (``channels``), ``send`` with
``last 1`` sends END, an epitaph is reported with ``epitaph 1``.

CHAN_TESTEE_BREAK=kindlie|idswap (codec class) makes it lie, for the runner's
self-test: kindlie accepts a conn handle on a table entry of kind fd, idswap
returns the handle table in reverse order.  Transport class: nohello never
answers a HELLO; readahead reads a connection in one large recvmsg and gives
the descriptors to the first frame of what it read.
"""

from __future__ import annotations

import array
import os
import socket
import struct
import sys
import traceback
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

import chan  # noqa: E402
import chan.text  # noqa: E402
from chan import _codec, _handles  # noqa: E402
from chan._errors import error as chan_error  # noqa: E402

BREAK = os.environ.get("CHAN_TESTEE_BREAK", "")
if BREAK == "nohello":  # wrong on purpose: takes the peer's HELLO, answers nothing
    def _hello_silently(self: Any, features: Any, require: Any) -> None:
        x = self._ext()
        x.peer_features = features
        x.peer_required = frozenset(require)
        x.hello_sent = True
    chan.Connection._hello_received = _hello_silently  # type: ignore[method-assign]

MAX_CHANNEL_ID = (1 << 31) - 1


def check_header11(frame: bytes) -> None:
    """The header checks of a decoder told of the peer's HELLO (SPEC.md §9.3 note:
    §17.1 rule 1, then §18.1 rule 2).  chan.decode has no revision option for them
    (its ``channels=True`` still wants flags and channel 0), so they are made here
    after the fatal header checks, which parse_header makes."""
    h = chan.parse_header(frame)
    if len(frame) - chan.HEADER_SIZE < h.payload_length:
        raise chan_error("TRUNCATED", "short payload")
    if h.flags & 0x0C:
        raise chan_error("RESERVED_FIELD_NONZERO", f"flags {h.flags:#x}: a critical reserved bit")
    if h.flags & chan.END and not h.channel:
        raise chan_error("RESERVED_FIELD_NONZERO", "END on channel 0")
    if h.channel == 0x80000000:
        raise chan_error("UNKNOWN_CHANNEL", "channel 0x80000000")

FDSOCK = socket.socket(fileno=3)
ANCBUF = socket.CMSG_SPACE(253 * 4)
CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0x40000000)


def read_exact(n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(0, n - len(out))
        if not chunk:
            return b""
        out += chunk
    return out


def read_request() -> Optional[Dict[str, str]]:
    head = read_exact(4)
    if len(head) < 4:
        return None
    body = read_exact(struct.unpack("<I", head)[0]).decode("utf-8")
    req: Dict[str, str] = {}
    for line in body.split("\n"):
        if not line:
            continue
        key, _, value = line.partition(" ")
        req.setdefault(key, value)
    return req


def write_response(lines: List[str]) -> None:
    body = "".join(line + "\n" for line in lines).encode("utf-8")
    data = struct.pack("<I", len(body)) + body
    while data:
        n = os.write(1, data)
        data = data[n:]


def recv_fds(n: int) -> List[int]:
    fds: List[int] = []
    while len(fds) < n:
        _data, anc, _flags, _addr = FDSOCK.recvmsg(1, ANCBUF, CLOEXEC)
        got = _handles.fds_from_ancillary(anc)
        if not got:
            raise RuntimeError("descriptor message without descriptors")
        fds.extend(got)
    return fds


def send_fds(fds: List[int]) -> None:
    for i in range(0, len(fds), 253):
        part = fds[i:i + 253]
        FDSOCK.sendmsg([b"F"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", part).tobytes())])


def close_quietly(fds: List[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class Testee:
    cls = "transport"

    def __init__(self) -> None:
        self.held: Any = None
        self.conns: Dict[int, Any] = {}  # chan.Connection or chan.ChannelEndpoint
        self.next_id = 1
        self.epitaph_told: set = set()

    # -- helpers -------------------------------------------------------------

    def release(self) -> None:
        self.held = None  # Fd and Connection objects close when collected

    def limits(self, req: Dict[str, str]) -> chan.Limits:
        return chan.Limits(int(req.get("max_payload", "16777216")), int(req.get("max_handles", "64")),
                           int(req.get("max_depth", "32")))

    def build(self, text: str, fds: List[int]) -> Any:
        """The value of a text form with {"$fd":i}/{"$conn":i} bound to descriptor i.

        Takes fds: on success those the value uses belong to its Fd/Connection
        objects and the rest are closed; on failure all are closed."""
        made: Dict[Tuple[int, int], Any] = {}
        try:
            value = self.bind(chan.text.loads(text, check_handles=False), fds, made)
        except BaseException:
            for obj in made.values():
                obj.close()
            used = {i for (_k, i) in made}
            close_quietly([fd for i, fd in enumerate(fds) if i not in used])
            raise
        used = {i for (_k, i) in made}
        close_quietly([fd for i, fd in enumerate(fds) if i not in used])
        return value

    def bind(self, v: Any, fds: List[int], made: Dict[Tuple[int, int], Any]) -> Any:
        t = type(v)
        if t is list:
            return [self.bind(x, fds, made) for x in v]
        if t is dict:
            return {k: self.bind(x, fds, made) for k, x in v.items()}
        if t is chan.Handle:
            if v.index >= len(fds):
                raise chan.InvalidArgument(f"handle {v.index} but only {len(fds)} descriptors")
            key = (v.kind, v.index)
            if key not in made:
                if v.kind == chan.KIND_CONN:
                    made[key] = chan.Connection.from_fd(fds[v.index])
                else:
                    made[key] = chan.Fd.adopt(fds[v.index])
            return made[key]
        return v

    def ok_frame(self, value: Any, extra: List[str]) -> List[str]:
        frame, table = chan.encode(as_channels(value))
        send_fds(table)
        return ["ok", "frame " + frame.hex(), f"fds {len(table)}", "value " + chan.text.dumps(value)] + extra

    def conn(self, req: Dict[str, str]) -> chan.Connection:
        c = self.conns.get(int(req.get("conn", "0")))
        if c is None:
            raise chan.InvalidArgument(f"no connection {req.get('conn')}")
        return c

    # -- operations -----------------------------------------------------------

    def op_hello(self, req: Dict[str, str], fds: List[int]) -> List[str]:
        return ["ok", "binding python", "chan " + chan.__version__, "class " + self.cls, "revision 1.1"]

    def op_decode(self, req: Dict[str, str], fds: List[int]) -> List[str]:
        frame = bytes.fromhex(req.get("frame", ""))
        r11 = req.get("revision") == "1.1"
        if r11:
            try:
                check_header11(frame)
            except chan.ChanError:
                close_quietly(fds)
                raise
        value, consumed = _handles.decode_frame(frame, fds, limits=self.limits(req).resolved(),
                                                conn_factory=chan.Connection._from_socket,
                                                channels=r11, check_reserved=not r11)
        self.held = value
        return self.ok_frame(value, [f"consumed {consumed}"])

    def op_encode(self, req: Dict[str, str], fds: List[int]) -> List[str]:
        value = self.build(req.get("value", ""), fds)
        self.held = value
        try:
            return self.ok_frame(value, [])
        except BaseException:
            self.held = None
            for obj in walk_handles(value):
                obj.close()
            raise

    def op_attach(self, req: Dict[str, str], fds: List[int]) -> List[str]:
        if len(fds) != 1:
            close_quietly(fds)
            raise chan.InvalidArgument("attach takes one descriptor")
        try:
            c = chan.Connection.from_fd(fds[0])
        except chan.ChanError:
            close_quietly(fds)
            raise
        c.set_limits(*self.limits(req))
        if "max_channels" in req:
            c.set_channel_limits(max_channels=int(req["max_channels"]))
        cid = self.next_id
        self.next_id += 1
        self.conns[cid] = c
        return ["ok", f"conn {cid}"]

    def op_recv(self, req: Dict[str, str], fds: List[int]) -> List[str]:
        close_quietly(fds)
        cid = int(req.get("conn", "0"))
        c = self.conn(req)
        try:
            value = recv_readahead_wrongly(c) if BREAK == "readahead" else c.recv()
        except chan.ChanError as exc:
            if getattr(exc, "from_peer", False) and cid not in self.epitaph_told:
                # the peer's epitaph: reported once, the connection is kept until
                # the next receive says CONNECTION_CLOSED (spec/vectors.md §4.2)
                self.epitaph_told.add(cid)
                msg = exc.peer_message or ""
                raise TesteeAnswer(["error " + exc.name, "epitaph 1"] +
                                   (["message " + msg] if "\n" not in msg else []))
            if exc.scope == "fatal":
                c.close()
                del self.conns[cid]
            raise
        self.held = value
        ids, chans = [], []
        for obj in walk_handles(value):
            nid = self.next_id
            if isinstance(obj, chan.Connection):
                obj.set_limits(*c.limits)
                self.next_id += 1
                self.conns[nid] = obj
                ids.append(str(nid))
            elif isinstance(obj, chan.ChannelEndpoint):
                self.next_id += 1
                self.conns[nid] = obj
                chans.append(str(nid))
        return self.ok_frame(value, ["conns " + " ".join(ids)] + (["channels " + " ".join(chans)] if chans else []))

    def op_send(self, req: Dict[str, str], fds: List[int]) -> List[str]:
        try:
            c = self.conn(req)
        except chan.ChanError:
            close_quietly(fds)
            raise
        value = self.build(req.get("value", ""), fds)
        try:
            if req.get("last") == "1":
                if not isinstance(c, chan.ChannelEndpoint):
                    raise chan.InvalidArgument("last 1 is for a channel endpoint")
                c.send(value, last=True)
            else:
                c.send(value)
        finally:
            for obj in walk_handles(value):
                obj.close()
        return ["ok"]

    def op_close(self, req: Dict[str, str], fds: List[int]) -> List[str]:
        close_quietly(fds)
        c = self.conns.pop(int(req.get("conn", "0")), None)
        if c is None:
            raise chan.InvalidArgument(f"no connection {req.get('conn')}")
        c.close()
        return ["ok"]

    def op_reset(self, req: Dict[str, str], fds: List[int]) -> List[str]:
        close_quietly(fds)
        self.release()
        for c in self.conns.values():
            c.close()
        self.conns.clear()
        self.epitaph_told.clear()
        return ["ok"]

    def serve(self) -> int:
        while True:
            req = read_request()
            if req is None:
                return 0
            self.release()
            fds = recv_fds(int(req.get("fds", "0") or 0))
            handler = getattr(self, "op_" + req.get("op", ""), None)
            if handler is None:
                close_quietly(fds)
                write_response(["error UNSUPPORTED"])
                continue
            try:
                lines = handler(req, fds)
            except TesteeAnswer as ans:
                lines = ans.lines
            except chan.ChanError as exc:
                lines = ["error " + exc.name, "message " + str(exc).replace("\n", " ")]
            except Exception as exc:  # a bug in the testee or the binding: say so loudly
                traceback.print_exc()
                lines = ["error INTERNAL_" + type(exc).__name__]
            # The exception and its traceback (which holds the failed request's value)
            # are gone here: its descriptors are closed before the runner looks.
            if lines[0] != "ok":
                self.release()
            write_response(lines)


class CodecTestee(Testee):
    """Class codec: the handle table is a list of kinds (``fd``/``conn``) with ids;
    no descriptor is ever received or sent, and only hello, decode, encode are asked."""

    cls = "codec"

    @staticmethod
    def table(req: Dict[str, str]) -> Tuple[List[str], List[str]]:
        kinds = req.get("handle_kinds", "").split()
        ids = req.get("handle_ids", "").split()
        if len(kinds) != len(ids):
            raise chan.InvalidArgument(f"{len(kinds)} handle_kinds but {len(ids)} handle_ids")
        return kinds, ids

    @staticmethod
    def check_kind(kind: int, index: int, kinds: List[str]) -> None:
        """SPEC.md §4.2 rules 2-3 as far as a table of kinds decides them: a handle
        of kind conn names an entry that is a conn (an fd handle may name anything)."""
        if kind == chan.KIND_CONN and kinds[index] != "conn" and BREAK != "kindlie":
            raise chan_error("WRONG_HANDLE_KIND", f"conn handle {index} names a table entry of kind {kinds[index]}")

    def ok_codec(self, value: Any, ids: List[str], extra: List[str]) -> List[str]:
        payload, objs, _kinds = _codec.encode_payload(value)
        frame = _codec.header(len(objs), len(payload)) + payload
        table = [ids[o.index] for o in objs]  # every object is a Handle placeholder
        if BREAK == "idswap":
            table.reverse()
        return ["ok", "frame " + frame.hex(), "handle_ids " + " ".join(table),
                "value " + chan.text.dumps(value)] + extra

    def op_decode(self, req: Dict[str, str], fds: List[int]) -> List[str]:
        close_quietly(fds)  # never sent to a codec-class testee
        kinds, ids = self.table(req)
        # TOO_FEW / TOO_MANY against the table's length, every index rule, the walk
        frame = bytes.fromhex(req.get("frame", ""))
        r11 = req.get("revision") == "1.1"
        if r11:
            check_header11(frame)
        value, consumed, slots = _codec.decode_payload(frame, len(kinds), limits=self.limits(req).resolved(),
                                                       channels=r11, check_reserved=not r11)
        for _c, _k, hd in sorted(slots, key=lambda s: s[2].index):  # kind checks in index order
            self.check_kind(hd.kind, hd.index, kinds)
        self.held = value
        return self.ok_codec(value, ids, [f"consumed {consumed}"])

    def op_encode(self, req: Dict[str, str], fds: List[int]) -> List[str]:
        close_quietly(fds)
        kinds, ids = self.table(req)
        made: Dict[Tuple[int, int], chan.Handle] = {}

        def bind(v: Any) -> Any:
            t = type(v)
            if t is list:
                return [bind(x) for x in v]
            if t is dict:
                return {k: bind(x) for k, x in v.items()}
            if t is chan.Handle:
                if v.index >= len(kinds):
                    raise chan.InvalidArgument(f"handle {v.index} but only {len(kinds)} table entries")
                self.check_kind(v.kind, v.index, kinds)
                return made.setdefault((v.kind, v.index), chan.Handle(v.kind, v.index))
            return v

        value = bind(chan.text.loads(req.get("value", ""), check_handles=False))
        self.held = value
        return self.ok_codec(value, ids, [])

    def unsupported(self, req: Dict[str, str], fds: List[int]) -> List[str]:
        close_quietly(fds)
        return ["error UNSUPPORTED"]

    op_attach = op_recv = op_send = op_close = op_reset = unsupported


class TesteeAnswer(Exception):
    """A response other than ok that is not a plain error (an epitaph)."""

    def __init__(self, lines: List[str]) -> None:
        Exception.__init__(self, lines[0])
        self.lines = lines


def as_channels(v: Any) -> Any:
    """A received value with each channel endpoint written as the channel handle
    it arrived as (chan.Channel with its id), for the re-encoding of a recv."""
    t = type(v)
    if t is list:
        return [as_channels(x) for x in v]
    if t is dict:
        return {k: as_channels(x) for k, x in v.items()}
    if isinstance(v, chan.ChannelEndpoint):
        return chan.Channel(v.id)
    return v


def recv_readahead_wrongly(c: chan.Connection) -> Any:
    """CHAN_TESTEE_BREAK=readahead: one recvmsg of up to 4 KiB, its descriptors
    given to the first frame it returned (the wrong one when a later frame of the
    read owns them, SPEC.md §10.3 rule 1)."""
    data, anc, _fl, _a = c._sock.recvmsg(4096, socket.CMSG_SPACE(253 * 4), CLOEXEC)
    fds = _handles.fds_from_ancillary(anc)
    size = chan.HEADER_SIZE + struct.unpack_from("<I", data, 12)[0]
    return chan.decode(data[:size], fds)


def walk_handles(v: Any) -> List[Any]:
    """Handle objects of a value in table (depth-first) order."""
    out: List[Any] = []
    stack = [v]
    while stack:
        x = stack.pop()
        t = type(x)
        if t is list:
            stack.extend(reversed(x))
        elif t is dict:
            stack.extend(reversed(list(x.values())))
        elif isinstance(x, (chan.Fd, chan.Connection, chan.ChannelEndpoint)):
            out.append(x)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if args not in ([], ["--class", "transport"], ["--class", "codec"]):
        sys.exit("usage: conformance_testee.py [--class transport|codec]")
    sys.exit((CodecTestee if args == ["--class", "codec"] else Testee)().serve())
