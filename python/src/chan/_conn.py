"""chan/1 connections over Unix stream sockets (SPEC.md §10, §11).

The socket is never put in non-blocking mode (O_NONBLOCK lives in the open file
description, which every process holding a copy of the connection shares):
timeouts use poll() and MSG_DONTWAIT, exactly as libchan does.
"""

from __future__ import annotations

import itertools
import os
import re
import select
import _socket
import socket
import stat
import struct
import threading
import time
import weakref
from array import array
from collections import deque
from typing import Any, Callable, Deque, Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Set, Tuple

from . import _codec
from ._codec import (HEADER_SIZE, KIND_CONN, MAX_CHANNEL_ID, Channel, Header, Limits, decode_payload, encode_payload,
                     handle_fd, parse_header)
from ._handles import close_all, decode_frame, fds_from_ancillary, release_value, verify_conn
from ._errors import BY_CODE, ChanError, error, error_for_code, system_error

# Room for the most descriptors one frame may carry (SPEC.md §10.4).
# msg_controllen is CMSG_LEN, not CMSG_SPACE: no descriptor can land in padding (§10.4 rule 3).
# Room too for what a receiver with SO_PASSCRED / SO_PASSPIDFD is sent with
# every read (credentials, a pidfd), which come before the descriptors (§10.4).
_ANCBUF = (socket.CMSG_SPACE(12) + socket.CMSG_SPACE(4) +
           socket.CMSG_LEN(_codec.HARD_MAX_HANDLES * array("i").itemsize))
_MSG_CMSG_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0x40000000)
_MSG_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0x4000)
_MSG_DONTWAIT = int(socket.MSG_DONTWAIT)
_MSG_CTRUNC = int(socket.MSG_CTRUNC)
_SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
_SOL_SOCKET = int(socket.SOL_SOCKET)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)
_SEQUENCE = itertools.count()
_HEADER_PACK = struct.Struct("<4sBBHII").pack
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT


class PeerCred(NamedTuple):
    """Credentials of the peer process at connect time (SO_PEERCRED, SPEC.md §10.7)."""

    pid: int
    uid: int
    gid: int


def _deadline(timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    if timeout < 0:
        raise error("INVALID_ARGUMENT", f"timeout must be >= 0 or None, not {timeout!r}")
    return time.monotonic() + timeout


def _remaining_ms(deadline: Optional[float]) -> int:
    if deadline is None:
        return -1
    left = deadline - time.monotonic()
    if left <= 0:
        return 0
    return max(1, int(left * 1000 + 0.999))


def _wait(fd: int, events: int, deadline: Optional[float], timeout: Optional[float]) -> None:
    """Wait until fd is ready or raise TIMEOUT / WOULD_BLOCK (nothing lost)."""
    p = select.poll()
    p.register(fd, events)
    while True:
        ms = _remaining_ms(deadline)
        if p.poll(ms):
            return
        if ms == 0:
            if timeout == 0:
                raise error("WOULD_BLOCK", "the operation cannot proceed now")
            raise error("TIMEOUT", f"not done within {timeout} s")


def _sock_ident(fd: int) -> Tuple[int, int]:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def _peer_inode(fd: int) -> Optional[int]:
    """The inode of the peer socket of a connected AF_UNIX socket, via sock_diag
    (UNIX_DIAG_PEER), or None when the kernel does not say (SPEC.md §10.6)."""
    try:
        ino = os.fstat(fd).st_ino
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 4)  # NETLINK_SOCK_DIAG
    except OSError:
        return None
    try:
        # struct unix_diag_req: family, protocol, pad, states, ino, show (UDIAG_SHOW_PEER), cookie[2]
        req = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, ino & 0xFFFFFFFF, 4,
                          0xFFFFFFFF, 0xFFFFFFFF)
        nl.send(struct.pack("=IHHII", 16 + len(req), 20, 1, 1, 0) + req)  # SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST
        resp = nl.recv(8192)
    except OSError:
        return None
    finally:
        nl.close()
    if len(resp) < 32:
        return None
    _nlen, ntype = struct.unpack_from("=IH", resp)
    if ntype != 20:
        return None
    off = 32  # nlmsghdr (16) + unix_diag_msg (16)
    while off + 4 <= len(resp):
        alen, atype = struct.unpack_from("=HH", resp, off)
        if alen < 4:
            break
        if atype == 2 and alen >= 8:  # UNIX_DIAG_PEER
            return int(struct.unpack_from("=I", resp, off + 4)[0])
        off += (alen + 3) & ~3
    return None


class Connection:
    """One endpoint of a chan connection.

    Create with :func:`Pipe`, :func:`Client`, :meth:`Listener.accept`,
    :meth:`Connection.from_fd`, or receive one inside a message.  Thread-safe:
    sends are serialised by a send lock, receives by a receive lock.
    """

    _chan_kind = KIND_CONN
    __slots__ = ("_sock", "_fd", "_limits", "_send_lock", "_recv_lock", "_fatal", "_pending", "_hdr", "_head",
                 "_parts", "_have", "_ffds", "_ident", "_peer_ino", "_peer_known", "_pipe_peer", "_send_fatal",
                 "_created", "_fresh", "_rev11", "_x", "_implemented", "_max_channels", "_max_queued",
                 "__weakref__")
    # The slots' types (annotations only: __slots__ holds the storage).
    _sock: Any
    _fd: int
    _limits: Limits
    _send_lock: threading.Lock
    _recv_lock: threading.Lock
    _fatal: Optional[ChanError]
    _send_fatal: Optional[ChanError]
    _pending: bytes
    _hdr: bytes
    _head: Optional[Header]
    _parts: List[bytes]
    _have: int
    _ffds: List[int]
    _ident: Optional[Tuple[int, int]]
    _peer_ino: Optional[int]
    _peer_known: bool
    _pipe_peer: Optional["weakref.ref[Connection]"]
    _created: int
    _fresh: Optional[int]
    _rev11: bool
    _x: Optional["_Ext"]
    _implemented: Tuple[str, ...]
    _max_channels: int
    _max_queued: int

    def __init__(self, *_a: Any, **_k: Any) -> None:
        raise TypeError("use chan.Pipe(), chan.Client(), Listener.accept() or Connection.from_fd()")

    @classmethod
    def _from_socket(cls, sock: Any, rev11: Optional[bool] = None) -> "Connection":
        """Wrap a connected AF_UNIX stream socket object (socket.socket or _socket.socket)."""
        self = object.__new__(cls)
        self._rev11 = _revision11(None) if rev11 is None else rev11
        self._x = None
        self._implemented = FEATURES
        self._max_channels = _codec.DEFAULT_MAX_CHANNELS
        self._max_queued = _codec.DEFAULT_MAX_QUEUED_BYTES
        self._sock = sock
        self._fd = sock.fileno()
        self._limits = _codec.DEFAULT_LIMITS
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._fatal = None
        self._send_fatal = None
        self._pending = b""
        # Receive state of the frame in progress (kept across timeouts).
        self._hdr = b""
        self._head = None
        self._parts = []
        self._have = 0
        self._ffds = []
        self._ident = None
        self._peer_ino = None
        self._peer_known = False
        self._pipe_peer = None
        # Creation order, for a cheap self-send proof: a socket made by Pipe()
        # (_fresh) is newer than every connection created before it, so it can be
        # neither of them nor their peers.
        self._created = next(_SEQUENCE)
        self._fresh = None
        return self

    @classmethod
    def from_fd(cls, fd: int, revision: Optional[str] = None) -> "Connection":
        """Wrap an AF_UNIX SOCK_STREAM socket.  Takes fd on success only; anything
        else is WRONG_HANDLE_KIND (local scope, SPEC.md §4.2 rule 3).  ``revision``:
        see :func:`set_default_revision`."""
        rev11 = _revision11(revision)
        try:
            sock = verify_conn(fd)
        except ChanError as exc:
            exc.scope = "local"
            raise
        return cls._from_socket(sock, rev11)

    def _child(self, sock: Any) -> "Connection":
        """A connection received in a message: knows nothing of its peer (SPEC.md
        §16.1 rule 3), same revision as this one."""
        return Connection._from_socket(sock, self._rev11)

    # -- plumbing -------------------------------------------------------------

    def fileno(self) -> int:
        """The socket, for poll/select.  Owned by the connection: do not read or close it."""
        if self._fd < 0:
            raise error("INVALID_ARGUMENT", "connection is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Close the socket; descriptors of a partly received frame are closed too."""
        if getattr(self, "_fd", -1) < 0:
            return
        self._fd = -1
        ffds, self._ffds = self._ffds, []
        for fd in ffds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._sock.close()

    def detach(self) -> int:
        """Give up the socket: returns its fd, which the caller now owns."""
        self.fileno()  # INVALID_ARGUMENT when closed
        self._fd = -1
        for f in self._ffds:
            os.close(f)
        self._ffds = []
        fd: int = self._sock.detach()
        return fd

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<chan.Connection fd={self._fd}{' closed' if self._fd < 0 else ''}>"

    def __reduce__(self) -> Any:
        raise TypeError("a chan Connection cannot be pickled: send it over a chan connection")

    @property
    def limits(self) -> Limits:
        """The receive limits in force (SPEC.md §8)."""
        return self._limits

    def set_limits(self, max_payload: Optional[int] = None, max_handles: Optional[int] = None,
                   max_depth: Optional[int] = None) -> None:
        """Set receive limits; None means the spec default.  Values above the hard
        maxima are INVALID_ARGUMENT."""
        self._limits = Limits(max_payload, max_handles, max_depth).resolved()

    def peer_cred(self) -> PeerCred:
        """pid, uid, gid of the peer process at connect time (SO_PEERCRED)."""
        try:
            raw = self._sock.getsockopt(socket.SOL_SOCKET, _SO_PEERCRED, struct.calcsize("3i"))
        except OSError as exc:
            raise system_error(exc, "getsockopt(SO_PEERCRED)") from None
        return PeerCred(*struct.unpack("3i", raw))

    def _identity(self) -> Tuple[int, int]:
        if self._ident is None:
            self._ident = _sock_ident(self.fileno())
        return self._ident

    def _peer_inode(self) -> Optional[int]:
        if not self._peer_known:
            other = self._pipe_peer() if self._pipe_peer is not None else None
            if other is not None and not other.closed:
                self._peer_ino = other._identity()[1]
            else:
                self._peer_ino = _peer_inode(self.fileno())
            self._peer_known = True
        return self._peer_ino

    # -- sending ---------------------------------------------------------------

    def send(self, obj: Any, timeout: Optional[float] = None) -> None:
        """Send obj as one frame (SPEC.md §10.2).

        Handles in obj (Connection, Fd, file objects) are passed by reference: the
        caller keeps its own copies.  timeout None blocks; 0 never waits
        (WOULD_BLOCK); otherwise TIMEOUT if not even the first byte could be
        written in time (nothing was sent).  Once the first byte is out, the frame
        is committed: an unwritten rest is kept and written by the next send or
        :meth:`flush`.  Revision 1.1: obj may hold channel endpoints of this
        connection (:meth:`open_channel`) once the feature ``channels`` is usable.
        """
        if self._x is not None:
            self._send_x(obj, timeout, None, 0)
            return
        payload, objs, kinds = encode_payload(obj, allow_detached=False, chan_id=self._no_channels)
        if objs:
            fds = [handle_fd(o) for o in objs]
            self._check_self_send(objs, kinds, fds)
            anc: Any = [(_SOL_SOCKET, _SCM_RIGHTS, array("i", fds).tobytes())]
        else:
            anc = ()
        frame = _HEADER_PACK(_codec.MAGIC, 1, 0, len(objs), 0, len(payload)) + payload
        deadline = None if timeout is None else _deadline(timeout)
        with self._send_lock:
            self._check_sendable()
            if self._pending:
                self._flush(deadline, timeout)
            n = self._sendmsg(frame, anc, deadline, timeout)
            if n < len(frame):
                # The descriptors went with the first byte; the rest is plain bytes.
                self._pending = frame[n:]
                self._flush(deadline, timeout, committed=True)

    def _check_sendable(self) -> None:
        if self._fatal is not None:
            self._raise_fatal()
        if self._send_fatal is not None:
            f = self._send_fatal
            raise type(f)(f.args[0] if f.args else None, scope=f.scope)
        if self._fd < 0:
            raise error("INVALID_ARGUMENT", "connection is closed")

    def _sendmsg(self, frame: bytes, anc: Any, deadline: Optional[float], timeout: Optional[float]) -> int:
        """The first sendmsg of a frame: nothing written on error (not committed)."""
        sock = self._sock
        try:
            if deadline is None:
                n: int = sock.sendmsg((frame,), anc, _MSG_NOSIGNAL)
                return n
            while True:
                _wait(self._fd, _POLLOUT, deadline, timeout)
                try:
                    n = sock.sendmsg((frame,), anc, _MSG_NOSIGNAL | _MSG_DONTWAIT)
                    return n
                except BlockingIOError:
                    continue
        except ChanError:
            raise
        except (BrokenPipeError, ConnectionResetError):
            raise self._send_failed() from None
        except OSError as exc:
            raise system_error(exc, "sendmsg") from None  # ETOOMANYREFS, EINVAL: SPEC.md §10.2 rule 8

    def _flush(self, deadline: Optional[float], timeout: Optional[float], committed: bool = False) -> None:
        sock = self._sock
        while self._pending:
            try:
                if deadline is None:
                    n = sock.send(self._pending, _MSG_NOSIGNAL)
                else:
                    try:
                        _wait(self._fd, _POLLOUT, deadline, timeout)
                    except ChanError:
                        if committed:
                            return  # the frame is committed; the rest waits for flush()
                        raise
                    try:
                        n = sock.send(self._pending, _MSG_NOSIGNAL | _MSG_DONTWAIT)
                    except BlockingIOError:
                        continue
            except ChanError:
                raise
            except (BrokenPipeError, ConnectionResetError):
                self._pending = b""
                raise self._send_failed() from None
            except OSError as exc:
                raise system_error(exc, "send") from None
            self._pending = self._pending[n:]

    def flush(self, timeout: Optional[float] = None) -> None:
        """Write the rest of a committed frame (see :meth:`send`), and the control
        frames this side owes its peer (a HELLO answer, a channel close)."""
        deadline = _deadline(timeout)
        with self._send_lock:
            self._flush_owed(deadline, timeout)

    def _flush_owed(self, deadline: Optional[float], timeout: Optional[float]) -> None:
        """Under the send lock: the committed rest, then the owed control frames
        (written as committed frames: each is whole, nothing else comes between)."""
        if self._pending:
            self._flush(deadline, timeout)
        x = self._x
        if x is not None and x.owed:
            self._pending = b"".join(x.owed)
            x.owed = []
            self._flush(deadline, timeout)

    @property
    def pending(self) -> bool:
        """True while a committed frame still has bytes to write."""
        return bool(self._pending)

    def _check_self_send(self, objs: List[Any], kinds: List[int], fds: List[int]) -> None:
        me = self._identity()
        peer: Optional[int] = None
        peer_asked = False
        for o, k, fd in zip(objs, kinds, fds):
            if k != KIND_CONN:
                # SPEC.md §10.6 rule 2: an fd handle that is an AF_UNIX socket gets the
                # same check (only sockets can equal this socket or its peer).
                st = os.fstat(fd)
                if not stat.S_ISSOCK(st.st_mode):
                    continue
                ident = (st.st_dev, st.st_ino)
            elif o is self:
                raise error("SELF_SEND", "a connection cannot be sent over itself")
            elif type(o) is Connection and o._fresh is not None and self._created < o._fresh:
                continue  # born after this connection existed: not it, not its peer
            else:
                ident = o._identity() if isinstance(o, Connection) else _sock_ident(fd)
            if ident == me:
                raise error("SELF_SEND", "a connection cannot be sent over itself")
            if not peer_asked:
                peer = self._peer_inode()
                peer_asked = True
            if peer is not None and ident[1] == peer and ident[0] == me[0]:
                raise error("SELF_SEND", "a connection cannot be sent over its own peer")

    # -- receiving -------------------------------------------------------------

    def poll(self, timeout: Optional[float] = 0.0) -> bool:
        """True if recv() would not block (data, end of stream or an error is there)."""
        if self._fatal is not None:
            return True
        if self._x is not None and self._x.main_q:
            return True
        fd = self.fileno()
        p = select.poll()
        p.register(fd, select.POLLIN)
        ms = -1 if timeout is None else max(0, int(timeout * 1000 + 0.999))
        return bool(p.poll(ms))

    def _fail(self, exc: ChanError) -> ChanError:
        """A fatal error (SPEC.md §9.2): close the frame's descriptors and the
        connection; every later receive or send reports the same error.  Revision
        1.1: an error the peer caused is first explained with an epitaph when the
        peer announced ``epitaph`` (§17.3 rule 2)."""
        if self._x is not None and exc.name in _PEER_CAUSED:
            self._auto_epitaph(exc)
        cls = BY_CODE.get(exc.code) if exc.code is not None else None
        if cls is not None and cls.scope != "fatal":
            # An error whose registry scope is not fatal (an unmet require,
            # the main stream's overflow) is raised once; every later call
            # says CONNECTION_CLOSED, so no loop mistakes it for "keep
            # reading" (SPEC.md §9.4, as libchan).
            self._fatal = error("CONNECTION_CLOSED", f"the connection ended with {exc.name}")
        else:
            self._fatal = exc
        self.close()
        return exc

    def _send_failed(self) -> ChanError:
        """EPIPE/ECONNRESET on send: CONNECTION_CLOSED (fatal, SPEC.md §9.2 rule 3).
        Every later send reports it; receiving goes on, so frames the peer sent
        before it closed can still be read (as libchan does)."""
        exc = error("CONNECTION_CLOSED", "the peer closed the connection")
        self._send_fatal = exc
        return exc

    def _raise_fatal(self) -> None:
        f = self._fatal
        assert f is not None
        raise type(f)(f.args[0] if f.args else None, scope=f.scope)

    def recv(self, timeout: Optional[float] = None) -> Any:
        """Receive one frame and return its value (SPEC.md §10.3-10.5).

        Received descriptors come back as owned :class:`Fd` objects and live
        :class:`Connection` objects, all close-on-exec.  timeout None blocks; 0
        never waits (WOULD_BLOCK); otherwise TIMEOUT.  A partly received frame is
        kept across timeouts: nothing is lost.  Frame-scope errors reject one
        frame (its descriptors closed) and the next recv reads the next frame;
        fatal errors close the connection and stick.  CONNECTION_CLOSED: the peer
        closed at a frame boundary.  Revision 1.1: control frames are consumed
        here (a HELLO is answered), frames of channels are queued for their
        endpoints, and an epitaph is raised as its code (``from_peer``).
        """
        deadline = None if timeout is None else _deadline(timeout)
        with self._recv_lock:
            if self._x is None:
                r = self._recv_plain(deadline, timeout)
                if r is not _NOTHING:
                    return r
            return self._recv_x(None, deadline, timeout)

    def _recv_plain(self, deadline: Optional[float], timeout: Optional[float]) -> Any:
        """Receive on a connection with no revision 1.1 state (the 1.0 path)."""
        if timeout is not None or self._fatal is not None or self._fd < 0 or self._hdr or self._head is not None:
            return self._deliver(*self._read_raw(deadline, timeout))
        # Fast path: a whole header, then a whole payload, no surprises.
        sock = self._sock
        try:
            data, anc, mflags, _a = sock.recvmsg(HEADER_SIZE, _ANCBUF, _MSG_CMSG_CLOEXEC)
        except OSError:
            return self._deliver(*self._read_raw(None, None))  # the general path reads again and names it
        if mflags & _MSG_CTRUNC or len(data) != HEADER_SIZE:
            if self._absorb(data, anc, mflags):
                return self._deliver(*self._take_frame())
            return self._deliver(*self._read_raw(None, None))
        fds = fds_from_ancillary(anc) if anc else []
        try:
            head = parse_header(data, self._limits)
        except ChanError as exc:
            close_all(fds)
            raise self._fail(exc) from None
        plen = head.payload_length
        if plen:
            try:
                payload, anc, mflags, _a = sock.recvmsg(plen, _ANCBUF, _MSG_CMSG_CLOEXEC)
            except OSError:
                payload, anc, mflags = None, [], 0
            if payload is None or anc or mflags & _MSG_CTRUNC or len(payload) != plen:
                self._hdr, self._head, self._ffds = data, head, fds
                if payload is not None and self._absorb(payload, anc, mflags):
                    return self._deliver(*self._take_frame())
                return self._deliver(*self._read_raw(None, None))
            data += payload
        return self._deliver(head, data, fds)

    def _deliver(self, head: Header, frame: bytes, fds: List[int]) -> Any:
        """A whole frame read by the 1.0 path: decoded as 1.0 unless it may be a
        HELLO (revision 1.1, SPEC.md §16.2 rule 2) or 1.1 state exists."""
        if self._x is None and (not (head.flags or head.channel) or not self._rev11):
            return decode_frame(frame, fds, limits=self._limits, header_checked=head,
                                self_ino=self._identity() if fds else None, conn_factory=self._child)[0]
        return self._dispatch(head, frame, fds, None)

    def _absorb(self, data: bytes, anc: List[Any], mflags: int) -> bool:
        """Take the result of one read into the frame in progress (SPEC.md §10.3-10.5).
        True when the whole frame is buffered."""
        head = self._head
        first = head is None and not self._hdr
        if anc:
            fds = fds_from_ancillary(anc)
            if mflags & _MSG_CTRUNC:
                close_all(fds)
                raise self._fail(error("HANDLES_TRUNCATED", "the kernel dropped descriptors (MSG_CTRUNC)"))
            if fds:
                if not first:
                    close_all(fds)
                    raise self._fail(error("MISATTACHED_HANDLES",
                                           "descriptors arrived with a read that does not start a frame"))
                self._ffds = fds
        elif mflags & _MSG_CTRUNC:
            raise self._fail(error("HANDLES_TRUNCATED", "the kernel dropped descriptors (MSG_CTRUNC)"))
        if not data:
            if first:
                raise self._fail(error("CONNECTION_CLOSED", "the peer closed the connection"))
            raise self._fail(error("TRUNCATED", "the stream ended inside a frame"))
        if head is None:
            self._hdr += data
            if len(self._hdr) < HEADER_SIZE:
                return False
            try:
                head = parse_header(self._hdr, self._limits)
            except ChanError as exc:
                raise self._fail(exc) from None
            self._head = head
            return head.payload_length == 0
        self._parts.append(data)
        self._have += len(data)
        return self._have == head.payload_length

    def _take_frame(self) -> Tuple[Header, bytes, List[int]]:
        """The buffered whole frame (header, bytes, descriptors); resets the state."""
        head = self._head
        assert head is not None
        frame = self._hdr + b"".join(self._parts)
        ffds = self._ffds
        self._hdr = b""
        self._head = None
        self._parts = []
        self._have = 0
        self._ffds = []
        return head, frame, ffds

    def _read_raw(self, deadline: Optional[float], timeout: Optional[float]) -> Tuple[Header, bytes, List[int]]:
        """Read one whole frame (fatal and transport errors raised here)."""
        if self._fatal is not None:
            self._raise_fatal()
        if self._fd < 0:
            raise error("INVALID_ARGUMENT", "connection is closed")
        sock = self._sock
        flags = _MSG_CMSG_CLOEXEC if deadline is None else _MSG_CMSG_CLOEXEC | _MSG_DONTWAIT
        while True:
            head = self._head
            want = HEADER_SIZE - len(self._hdr) if head is None else head.payload_length - self._have
            if not want:  # a header with payload_length 0, buffered earlier
                return self._take_frame()
            if deadline is not None:
                _wait(self._fd, _POLLIN, deadline, timeout)
            try:
                data, anc, mflags, _addr = sock.recvmsg(want, _ANCBUF, flags)
            except BlockingIOError:
                continue
            except ConnectionResetError:  # SPEC.md §10.5 rule 3: end of stream
                data, anc, mflags = b"", [], 0
            except OSError as exc:
                raise system_error(exc, "recvmsg") from None
            if self._absorb(data, anc, mflags):
                return self._take_frame()

    # -- revision 1.1: features, control frames, epitaphs, channels (SPEC.md §16-§18)

    @property
    def revision(self) -> str:
        """``"1.1"`` (the default) or ``"1.0"``: the revision of SPEC.md this
        connection implements (SPEC.md §16: a 1.0 connection never answers a HELLO,
        rejects every non-zero flags and channel with RESERVED_FIELD_NONZERO and
        treats Value field 10 as UNKNOWN_FIELD)."""
        return "1.1" if self._rev11 else "1.0"

    @property
    def features(self) -> Tuple[str, ...]:
        """The features this side implements and announces in its HELLO."""
        return self._implemented

    def set_features(self, features: Sequence[str]) -> None:
        """Implement (and announce) only these features (names of spec/features.tsv),
        before any HELLO was sent or received on this connection; for tests and
        for peers that want less."""
        if self._x is not None:
            raise error("INVALID_ARGUMENT", "features are set before any HELLO")
        feats = tuple(f for f in FEATURES if f in features)
        if len(feats) != len(set(features)):
            raise error("INVALID_ARGUMENT", f"features are names of {FEATURES}, not {features!r}")
        self._implemented = feats

    @property
    def peer_features(self) -> Optional[FrozenSet[str]]:
        """The features the peer's HELLO announced (None: no HELLO received yet)."""
        return self._x.peer_features if self._x is not None else None

    @property
    def usable_features(self) -> FrozenSet[str]:
        """The features this side may use when sending (SPEC.md §16.1 rule 4)."""
        return frozenset(f for f in self._implemented if self._usable(f))

    def _usable(self, name: str) -> bool:
        x = self._x
        if x is None or name not in self._implemented:
            return False
        return (name in x.required or name in x.peer_required
                or (x.peer_features is not None and name in x.peer_features))

    @property
    def epitaph(self) -> Optional[ChanError]:
        """The error of the epitaph the peer sent (``from_peer``, ``peer_message``),
        or None (SPEC.md §17.3 rule 3)."""
        return self._x.epitaph if self._x is not None else None

    @property
    def channel_limits(self) -> Tuple[int, int]:
        """(max_channels, max_queued_bytes) in force (SPEC.md §18.6)."""
        return self._max_channels, self._max_queued

    def set_channel_limits(self, max_channels: Optional[int] = None, max_queued_bytes: Optional[int] = None) -> None:
        """Set the channel limits of SPEC.md §18.6 (None: the default); above the
        hard maximum: INVALID_ARGUMENT."""
        out = []
        for value, default, hard, what in (
                (max_channels, _codec.DEFAULT_MAX_CHANNELS, _codec.HARD_MAX_CHANNELS, "max_channels"),
                (max_queued_bytes, _codec.DEFAULT_MAX_QUEUED_BYTES, _codec.HARD_MAX_QUEUED_BYTES, "max_queued_bytes")):
            if value is None:
                value = default
            if type(value) is not int or value < 0 or value > hard:
                raise error("INVALID_ARGUMENT", f"{what} must be an int in 0..{hard}, not {value!r}")
            out.append(value)
        self._max_channels, self._max_queued = out

    def _ext(self) -> "_Ext":
        if self._x is None:
            self._x = _Ext(self._recv_lock)
        return self._x

    def _hello_frame(self, require: Sequence[str] = ()) -> bytes:
        msg: Dict[str, Any] = {"op": "hello", "features": {f: {} for f in self._implemented}}
        if require:
            msg["require"] = list(require)
        payload = encode_payload(msg)[0]
        return _codec.header(0, len(payload), CONTROL, 0) + payload

    def hello(self, require: Sequence[str] = (), timeout: Optional[float] = None) -> None:
        """Send this side's HELLO (SPEC.md §16.2): only when the application knows
        the peer implements revision 1.1 (a 1.0 peer rejects it).  Features listed
        in ``require`` are usable at once; a peer that lacks one fails the
        connection with UNSUPPORTED_FEATURE (and an epitaph).  A HELLO is sent at
        most once per connection: a second call (or one after the automatic
        answer to the peer's HELLO) sends nothing.  1.0 mode: UNSUPPORTED_FEATURE."""
        if not self._rev11:
            raise error("UNSUPPORTED_FEATURE", "a revision 1.0 connection has no HELLO", scope="local")
        req = list(require)
        for name in req:
            if type(name) is not str or not _FEATURE_NAME.match(name):
                raise error("INVALID_ARGUMENT", f"{name!r} is not a feature name (SPEC.md §16.3)")
        deadline = _deadline(timeout)
        x = self._ext()
        with self._send_lock:
            self._check_sendable()
            if x.hello_sent:
                return
            frame = self._hello_frame(req)
            self._flush_owed(deadline, timeout)
            n = self._sendmsg(frame, (), deadline, timeout)
            x.hello_sent = True
            x.required = frozenset(req)
            if n < len(frame):
                self._pending = frame[n:]
                self._flush(deadline, timeout, committed=True)

    def send_epitaph(self, code: Any, message: Optional[str] = None, timeout: Optional[float] = None) -> None:
        """Send an epitaph (SPEC.md §17.3): the last frame of this side, saying why
        it stops; then sending is shut down (later sends: CONNECTION_CLOSED) while
        receiving goes on.  ``code``: a registry code (1..255), a ChanError class or
        instance.  The peer must have announced ``epitaph``, else
        UNSUPPORTED_FEATURE (nothing sent)."""
        if isinstance(code, ChanError) or (isinstance(code, type) and issubclass(code, ChanError)):
            code = code.code
        if type(code) is not int or not 1 <= code <= 255:
            raise error("INVALID_ARGUMENT", f"an epitaph's code is a registry code 1..255, not {code!r}")
        if message is not None and type(message) is not str:
            raise error("INVALID_ARGUMENT", "an epitaph's message is a str")
        if not self._usable("epitaph"):
            raise error("UNSUPPORTED_FEATURE", "the peer has not announced 'epitaph'", scope="local")
        frame = self._epitaph_frame(code, message)
        deadline = _deadline(timeout)
        with self._send_lock:
            self._check_sendable()
            self._flush_owed(deadline, timeout)
            n = self._sendmsg(frame, (), deadline, timeout)
            if n < len(frame):
                self._pending = frame[n:]
                self._flush(None, None, committed=True)
            self._send_fatal = error("CONNECTION_CLOSED", "this side sent an epitaph")
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    @staticmethod
    def _epitaph_frame(code: int, message: Optional[str]) -> bytes:
        msg: Dict[str, Any] = {"op": "epitaph", "code": code}
        if message is not None:
            msg["message"] = message
        payload = encode_payload(msg)[0]
        return _codec.header(0, len(payload), CONTROL, 0) + payload

    def _auto_epitaph(self, exc: ChanError) -> None:
        """SPEC.md §17.3 rule 2: an epitaph for a fatal error the peer caused, when it
        announced ``epitaph`` and no committed frame of ours is unfinished; written
        without blocking, dropped when it does not fit."""
        x = self._x
        if x is None or self._fd < 0 or x.peer_features is None or "epitaph" not in x.peer_features \
                or "epitaph" not in self._implemented:
            return
        if not self._send_lock.acquire(blocking=False):
            return
        try:
            if self._pending or self._send_fatal is not None:
                return
            msg = str(exc)
            data = b"".join(x.owed) + self._epitaph_frame(exc.code, msg[:1000])
            x.owed = []
            try:
                self._sock.send(data, _MSG_NOSIGNAL | _MSG_DONTWAIT)
            except OSError:
                pass
        finally:
            self._send_lock.release()

    def _queue_control(self, frame: bytes) -> None:
        """A control frame this side owes the peer (a HELLO answer, a close): written
        before any later frame; tried now without blocking."""
        x = self._ext()
        x.owed.append(frame)
        self._try_flush_owed()

    def _try_flush_owed(self) -> None:
        x = self._x
        if x is None or not x.owed or not self._send_lock.acquire(blocking=False):
            return
        try:
            if self._pending or self._fd < 0 or self._send_fatal is not None or self._fatal is not None:
                return
            while x.owed and not self._pending:
                f = x.owed[0]
                try:
                    n = self._sock.send(f, _MSG_NOSIGNAL | _MSG_DONTWAIT)
                except BlockingIOError:
                    return
                except (BrokenPipeError, ConnectionResetError):
                    x.owed = []
                    self._send_failed()
                    return
                except OSError:
                    return
                del x.owed[0]
                if n < len(f):
                    self._pending = f[n:]
        finally:
            self._send_lock.release()

    # -- revision 1.1 receiving

    def _recv_x(self, st: Optional["_ChanState"], deadline: Optional[float], timeout: Optional[float]) -> Any:
        """Receive for the main stream (st None) or a channel endpoint, with the
        receive lock held: take what is queued for it, else read frames (one
        reader at a time; the others wait) and dispatch them."""
        x = self._x
        if x is None:
            raise error("INVALID_ARGUMENT", "no channel is open on this connection")
        cond = x.cond
        while True:
            r = self._take(st)
            if r is not _NOTHING:
                return r
            if self._fatal is not None:
                self._raise_fatal()
            if self._fd < 0:
                raise error("INVALID_ARGUMENT", "connection is closed")
            if x.pumping:
                if deadline is None:
                    cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        if timeout == 0:
                            raise error("WOULD_BLOCK", "the operation cannot proceed now")
                        raise error("TIMEOUT", f"not done within {timeout} s")
                    cond.wait(left)
                continue
            x.pumping = True
            self._recv_lock.release()
            try:
                raw = self._read_raw(deadline, timeout)
            except BaseException:
                self._recv_lock.acquire()
                x.pumping = False
                cond.notify_all()
                raise
            self._recv_lock.acquire()
            x.pumping = False
            try:
                r = self._dispatch(raw[0], raw[1], raw[2], st)
            finally:
                cond.notify_all()
                self._try_flush_owed()
            if r is not _NOTHING:
                return r

    def _take(self, st: Optional["_ChanState"]) -> Any:
        """The next queued value of the main stream or an endpoint (errors raised);
        _NOTHING when there is none."""
        x = self._x
        assert x is not None
        if st is None:
            if not x.main_q:
                return _NOTHING
            is_err, obj, cost = x.main_q.popleft()
            x.main_qbytes -= cost
            x.queued -= cost
        else:
            if not st.q:
                if st.note is not None:
                    e, st.note = st.note, None
                    raise e
                if st.end_recv or st.closed:
                    raise error("CHANNEL_CLOSED", "the channel is closed")
                if st.mine and not st.sent:
                    raise error("INVALID_ARGUMENT", "this channel's handle has not been sent yet (SPEC.md §18.3)")
                return _NOTHING
            is_err, obj, cost = st.q.popleft()
            st.qbytes -= cost
            x.queued -= cost
            if not st.q:
                x.queued_states.discard(st)
        if is_err:
            raise obj
        return obj

    def _route(self, target: Optional["_ChanState"], item: Any, is_err: bool, cost: int,
               reader: Optional["_ChanState"]) -> Any:
        """Give a frame's value (or its frame-scope error) to its endpoint: returned
        (raised) when that is the reader, else queued (SPEC.md §18.6 rule 2)."""
        if target is reader:
            if is_err:
                raise item
            return item
        self._enqueue(target, is_err, item, cost)
        return _NOTHING

    def _enqueue(self, target: Optional["_ChanState"], is_err: bool, item: Any, cost: int) -> None:
        x = self._x
        assert x is not None
        if target is not None and target.closed:
            if not is_err:
                release_value(item)
            return
        if target is None:
            x.main_q.append((is_err, item, cost))
            x.main_qbytes += cost
        else:
            target.q.append((is_err, item, cost))
            target.qbytes += cost
            x.queued_states.add(target)
        x.queued += cost
        if x.queued <= self._max_queued:
            return
        # SPEC.md §18.6 rule 3: reset the endpoint with the most queued bytes.
        big = max(x.queued_states, key=lambda s: s.qbytes) if x.queued_states else None
        if big is None or big.qbytes < x.main_qbytes:
            q, x.main_q = x.main_q, deque()
            x.queued -= x.main_qbytes
            x.main_qbytes = 0
            for e, v, _c in q:
                if not e:
                    release_value(v)
            raise self._fail(error("CHANNEL_LIMIT_EXCEEDED", "the main stream's queue exceeds max_queued_bytes",
                                   scope="fatal"))
        self._reset(big)

    def _drop_queue(self, st: "_ChanState") -> None:
        x = self._x
        assert x is not None
        q, st.q = st.q, deque()
        x.queued -= st.qbytes
        st.qbytes = 0
        x.queued_states.discard(st)
        for e, v, _c in q:
            if not e:
                release_value(v)

    def _reset(self, st: "_ChanState") -> None:
        self._drop_queue(st)
        st.note = error("CHANNEL_LIMIT_EXCEEDED", "the channel was reset: its queue exceeded max_queued_bytes")
        was_open = self._unregister_open(st)
        st.closed = True
        if was_open:
            self._queue_control(_close_frame(st.out_wire, _CHANNEL_LIMIT_EXCEEDED_CODE))

    def _unregister_open(self, st: "_ChanState") -> bool:
        """Remove an open channel from the table; False if it was not open."""
        x = self._x
        assert x is not None
        with x.lock:
            if x.table.get(st.in_wire) is st:
                del x.table[st.in_wire]
                x.open_count -= 1
                return True
        return False

    def _decode(self, head: Header, frame: bytes, fds: List[int], check_reserved: bool, channels: bool,
                chan_slots: Optional[List[Any]] = None, post_walk: Any = None) -> Any:
        return decode_frame(frame, fds, limits=self._limits, header_checked=head,
                            self_ino=self._identity() if fds else None, conn_factory=self._child,
                            channels=channels, check_reserved=check_reserved, post_walk=post_walk,
                            chan_slots=chan_slots)[0]

    def _dispatch(self, head: Header, frame: bytes, fds: List[int], reader: Optional["_ChanState"]) -> Any:
        """Check one whole frame as revision 1.1 says (SPEC.md §9.3, §16.2, §17, §18)
        and give it to its endpoint; with the receive lock held."""
        x = self._x
        flags = head.flags
        wire = head.channel
        cost = HEADER_SIZE + head.payload_length + 64
        if x is None or x.peer_features is None:
            # Nothing agreed: only a HELLO is more than a 1.0 frame (§16.2 rule 2).
            if (flags or wire) and self._rev11 and self._try_hello(head, frame, fds):
                return _NOTHING
            try:
                value = self._decode(head, frame, fds, True, False)
            except ChanError as exc:
                if exc.scope == "fatal":
                    raise
                return self._route(None, exc, True, _ERR_COST, reader)
            return self._route(None, value, False, cost, reader)
        # Agreed: the flag checks of §17.1 rule 1, then the channel checks of §18.4.
        chans_ok = "channels" in self._implemented
        why = None
        if flags & _CRITICAL_RESERVED:
            why = f"flags {flags:#04x}: a critical reserved bit"
        elif flags & END and not wire:
            why = "END on channel 0"
        elif flags & END and not chans_ok:
            why = "END, and 'channels' is not implemented"
        elif wire and not chans_ok:
            why = f"channel {wire:#x}, and 'channels' is not implemented"
        if why is not None:
            close_all(fds)
            return self._route(None, error("RESERVED_FIELD_NONZERO", why), True, _ERR_COST, reader)
        target: Optional[_ChanState] = None
        if wire:
            target = x.table.get(wire)
            if target is None or target.end_recv:
                cid = wire & MAX_CHANNEL_ID
                if cid == 0:
                    unknown = "channel 0x80000000"
                elif wire & 0x80000000:
                    unknown = f"channel {cid} of this side was never opened" if cid >= x.next_id else ""
                else:
                    unknown = f"channel {cid} of the peer was never opened" if cid > x.peer_max else ""
                if unknown:
                    close_all(fds)
                    return self._route(None, error("UNKNOWN_CHANNEL", unknown), True, _ERR_COST, reader)
                self._discard(head, frame, fds)  # §18.4 rule 2: closed by this side
                return _NOTHING
        control = flags & CONTROL
        slots: List[Any] = []
        try:
            value = self._decode(head, frame, fds, False, chans_ok, slots,
                                 (lambda v: _check_control(v, head)) if control else None)
            if slots and not control:
                value = self._open_received(value, slots)
        except ChanError as exc:
            if slots:
                self._refuse(slots, exc.code)
            if exc.scope == "fatal":
                raise
            return self._route(target, exc, True, _ERR_COST, reader)
        if control:
            if slots:
                self._refuse(slots, None)
            try:
                return self._control(value, head, target)
            except ChanError as exc:
                if exc.scope == "fatal" or exc.from_peer:
                    raise
                return self._route(target, exc, True, _ERR_COST, reader)
        r = self._route(target, value, False, cost, reader)
        if flags & END and target is not None:
            self._end_received(target, None)
        return r

    def _try_hello(self, head: Header, frame: bytes, fds: List[int]) -> bool:
        """A well-formed HELLO before agreement (SPEC.md §16.2 rules 1, 2, 5):
        consumed, answered; anything else is not a HELLO."""
        if head.flags & 0x0F != CONTROL or head.channel or head.handle_count or fds:
            return False
        try:
            value = decode_payload(frame, 0, limits=self._limits, header_checked=head, check_reserved=False)[0]
        except ChanError:
            return False
        parsed = _parse_hello(value)
        if parsed is None:
            return False
        self._hello_received(*parsed)
        return True

    def _hello_received(self, features: FrozenSet[str], require: List[str]) -> None:
        x = self._ext()
        x.peer_features = features
        x.peer_required = frozenset(require)
        if not x.hello_sent:  # §16.2 rule 4: answer before any other frame
            x.hello_sent = True
            x.owed.insert(0, self._hello_frame())
            self._try_flush_owed()
        unmet = [r for r in require if r not in self._implemented]
        if unmet:
            raise self._fail(error("UNSUPPORTED_FEATURE", f"the peer requires {', '.join(unmet)}", scope="fatal"))

    def _control(self, value: Dict[str, Any], head: Header, target: Optional["_ChanState"]) -> Any:
        """A control frame that passed every check (SPEC.md §17.2): consumed."""
        op = value["op"]
        wire = head.channel
        if op == "hello":
            if wire:
                raise error("UNSUPPORTED_FEATURE", "a HELLO on a channel")
            if _parse_hello(value) is None:
                raise error("UNSUPPORTED_FEATURE", "a HELLO that is not well-formed")
            return _NOTHING  # §16.2 rule 5: a second HELLO is ignored
        if op == "epitaph":
            if wire:
                raise error("UNSUPPORTED_FEATURE", "an epitaph on a channel")
            self._epitaph_received(value)
        if op == "close":
            if not wire or not head.flags & END or target is None:
                raise error("UNSUPPORTED_FEATURE", "close is sent on a channel, with END")
            code = value.get("code")
            self._end_received(target, code if type(code) is int and 1 <= code <= 255 else None)
            return _NOTHING
        if value.get("critical") is True:
            raise error("UNSUPPORTED_FEATURE", f"unknown critical control operation {op!r}")
        return _NOTHING  # unknown operations are ignored

    def _epitaph_received(self, value: Dict[str, Any]) -> None:
        """SPEC.md §17.3 rule 3: raise the epitaph's code; the connection is over."""
        x = self._x
        assert x is not None
        code = value.get("code")
        msg = value.get("message")
        msg = msg if type(msg) is str else None
        text = "the peer's epitaph" + (f": {msg}" if msg else "")
        if type(code) is int and 1 <= code <= 255:
            exc = error_for_code(code, text, scope="fatal")
        else:
            exc = error("CONNECTION_CLOSED", text)
        exc.from_peer = True
        exc.peer_message = msg
        x.epitaph = exc
        cls = BY_CODE.get(exc.code) if exc.code is not None else None
        if cls is not None and cls.scope == "local":
            # A local-scope code means something only where it was raised
            # (a blocking receive must not say WOULD_BLOCK): the receive
            # reports CONNECTION_CLOSED; conn.epitaph has the code (§17.3 r3).
            closed = error("CONNECTION_CLOSED", text + f" ({exc.name})")
            closed.from_peer = True
            closed.peer_message = msg
            exc = closed
        self._fatal = error("CONNECTION_CLOSED", "the peer sent an epitaph and closed the connection")
        self.close()
        raise exc

    def _end_received(self, st: "_ChanState", code: Optional[int]) -> None:
        """END from the peer (SPEC.md §18.5 rule 2)."""
        if st.end_recv or st.closed:
            return
        self._unregister_open(st)
        st.end_recv = True
        cls = BY_CODE.get(code) if code is not None else None
        if cls is not None and cls.scope in ("fatal", "local"):
            code = None  # it would misstate the connection's state (SPEC.md §18.5 rule 2)
        if code is not None:
            e = error_for_code(code, "the peer closed the channel with this code", scope="local")
            e.from_peer = True
            st.note = e

    def _open_received(self, value: Any, slots: List[Any]) -> Any:
        """Item 14 of SPEC.md §9.3 and §18.3 rule 2: open the channels a frame
        names, in walk order, or reject the frame."""
        x = self._x
        assert x is not None
        running = x.peer_max
        try:
            for n, (_c, _k, ch) in enumerate(slots, 1):
                if ch.id <= running:
                    raise error("UNKNOWN_CHANNEL", f"channel {ch.id} is not above the peer's previous id {running}")
                running = ch.id
                if x.open_count + n > self._max_channels:
                    raise error("CHANNEL_LIMIT_EXCEEDED", f"more than max_channels = {self._max_channels} open")
        except ChanError:
            release_value(value)
            raise
        with x.lock:
            for c, k, ch in slots:
                st = _ChanState(False)
                st.id = ch.id
                st.in_wire = ch.id
                st.out_wire = ch.id | 0x80000000
                st.sent = True
                x.table[st.in_wire] = st
                x.open_count += 1
                ep = ChannelEndpoint._make(self, st)
                if c is None:
                    value = ep
                else:
                    c[k] = ep
            x.peer_max = running
        return value

    def _refuse(self, slots: List[Any], code: Optional[int]) -> None:
        """Close the channels a rejected or discarded frame opened (SPEC.md §18.3
        rule 2, §18.4 rule 2): only ids above every id the peer opened before."""
        x = self._x
        assert x is not None
        for _c, _k, ch in slots:
            if ch.id > x.peer_max:
                x.peer_max = ch.id
                if self._fd >= 0 and self._fatal is None:
                    self._queue_control(_close_frame(ch.id | 0x80000000, code))

    def _discard(self, head: Header, frame: bytes, fds: List[int]) -> None:
        """A frame on a channel this side closed: its descriptors and channel
        handles are closed, no error (SPEC.md §18.4 rule 2)."""
        slots: List[Any] = []
        try:
            value = self._decode(head, frame, fds, False, True, slots)
        except ChanError:
            return
        release_value(value)
        if slots and not head.flags & CONTROL:
            self._refuse(slots, None)

    # -- revision 1.1 channels: opening, sending, closing

    def open_channel(self) -> "ChannelEndpoint":
        """A new channel endpoint of this connection (SPEC.md §18.3).  Put it in a
        message sent on this connection (once) to open the channel: its id is
        allocated when that message is sent, so ids go out in increasing order.
        The peer receives an endpoint too; both then send and receive on it like
        on a connection.  Needs the feature ``channels`` when it is sent."""
        if not self._rev11:
            raise error("UNSUPPORTED_FEATURE", "a revision 1.0 connection has no channels", scope="local")
        if "channels" not in self._implemented:
            raise error("UNSUPPORTED_FEATURE", "'channels' is not implemented on this connection", scope="local")
        return ChannelEndpoint._make(self, _ChanState(True))

    def _no_channels(self, o: Any) -> int:
        """Channel handles where 'channels' is not usable: an endpoint of another
        connection is CHANNEL_NOT_TRANSFERABLE whatever this one agreed (§18.7)."""
        if type(o) is ChannelEndpoint and (o._conn is not self or not o._st.mine or o._st.sent):
            raise error("CHANNEL_NOT_TRANSFERABLE", "a channel endpoint can be sent only on its own connection, once")
        raise error("UNSUPPORTED_FEATURE", "channel handles need the feature 'channels' (SPEC.md §16.1 rule 2)")

    def _chan_id_for(self, new: List["_ChanState"]) -> Callable[[Any], int]:
        x0 = self._x
        assert x0 is not None
        x: _Ext = x0

        def cid(o: Any) -> int:
            if type(o) is Channel:
                raise error("INVALID_ARGUMENT", "a detached chan.Channel cannot be sent; use open_channel()")
            if type(o) is not ChannelEndpoint or o._conn is not self:
                raise error("CHANNEL_NOT_TRANSFERABLE", "a channel endpoint can be sent only on its own connection")
            s = o._st
            if not s.mine:
                raise error("CHANNEL_NOT_TRANSFERABLE", "a channel the peer opened cannot be sent")
            if s.sent or any(s is t for t in new):
                raise error("CHANNEL_NOT_TRANSFERABLE", "a channel's handle is sent once")
            if s.closed:
                raise error("CHANNEL_CLOSED", "the channel was closed before its handle was sent")
            i = x.next_id + len(new)
            if i > MAX_CHANNEL_ID:
                raise error("CHANNEL_LIMIT_EXCEEDED", "every channel id of this connection was used")
            if x.open_count + len(new) + 1 > self._max_channels:
                raise error("CHANNEL_LIMIT_EXCEEDED", f"more than max_channels = {self._max_channels} open")
            new.append(s)
            return i
        return cid

    def _send_x(self, obj: Any, timeout: Optional[float], st: Optional["_ChanState"], flags: int) -> None:
        """Send with revision 1.1 state: channel handles get their ids here, under
        the send lock, in walk and stream order (SPEC.md §18.3 rule 1)."""
        x = self._x
        assert x is not None
        deadline = None if timeout is None else _deadline(timeout)
        with self._send_lock:
            self._check_sendable()
            if st is not None:
                if st.closed or st.end_recv:
                    raise error("CHANNEL_CLOSED", "the channel is closed")
                if not st.sent:
                    raise error("INVALID_ARGUMENT", "send the channel's handle before sending on it (SPEC.md §18.3)")
            new: List[_ChanState] = []
            chan_id = self._chan_id_for(new) if self._usable("channels") else self._no_channels
            payload, objs, kinds = encode_payload(obj, allow_detached=False, chan_id=chan_id)
            if objs:
                fds = [handle_fd(o) for o in objs]
                self._check_self_send(objs, kinds, fds)
                anc: Any = [(_SOL_SOCKET, _SCM_RIGHTS, array("i", fds).tobytes())]
            else:
                anc = ()
            frame = _HEADER_PACK(_codec.MAGIC, 1, flags, len(objs), st.out_wire if st is not None else 0,
                                 len(payload)) + payload
            self._flush_owed(deadline, timeout)
            if new:  # registered before the frame can be answered
                with x.lock:
                    for i, s in enumerate(new):
                        s.id = x.next_id + i
                        s.out_wire = s.id
                        s.in_wire = s.id | 0x80000000
                        s.sent = True
                        x.table[s.in_wire] = s
                    x.open_count += len(new)
                    x.next_id += len(new)
            try:
                n = self._sendmsg(frame, anc, deadline, timeout)
            except BaseException:
                if new:  # not committed: as if never sent
                    with x.lock:
                        for s in new:
                            del x.table[s.in_wire]
                            s.sent = False
                            s.id = s.in_wire = s.out_wire = 0
                        x.open_count -= len(new)
                        x.next_id -= len(new)
                raise
            if st is not None and flags & END:
                self._end_sent(st)
            if n < len(frame):
                self._pending = frame[n:]
                self._flush(deadline, timeout, committed=True)

    def _end_sent(self, st: "_ChanState") -> None:
        # Frames that arrived before this END are still delivered; those
        # that arrive after it are discarded (SPEC.md §18.5 rule 1).
        self._unregister_open(st)
        st.closed = True

    def _close_channel(self, st: "_ChanState", code: Optional[int], blocking: bool) -> None:
        """Release an endpoint (SPEC.md §18.5 rules 1, 3): send close when the
        channel has seen no END either way."""
        if st.closed:
            return
        x = self._x
        st.closed = True
        if x is None:
            return
        was_open = self._unregister_open(st)
        self._drop_queue(st)
        if not was_open or self._fd < 0 or self._fatal is not None or self._send_fatal is not None:
            return
        frame = _close_frame(st.out_wire, code)
        if not blocking:
            self._queue_control(frame)
            return
        try:
            with self._send_lock:
                self._check_sendable()
                self._flush_owed(None, None)
                n = self._sendmsg(frame, (), None, None)
                if n < len(frame):
                    self._pending = frame[n:]
                    self._flush(None, None, committed=True)
        except ChanError:
            pass

    def _send_x_chan(self, obj: Any, timeout: Optional[float], st: "_ChanState", flags: int) -> None:
        if self._x is None:
            self._take_unsent(st)
        self._send_x(obj, timeout, st, flags)

    def _recv_chan(self, st: "_ChanState", timeout: Optional[float]) -> Any:
        deadline = None if timeout is None else _deadline(timeout)
        with self._recv_lock:
            if self._x is None:
                self._take_unsent(st)
            return self._recv_x(st, deadline, timeout)

    @staticmethod
    def _take_unsent(st: "_ChanState") -> None:
        if st.closed:
            raise error("CHANNEL_CLOSED", "the channel is closed")
        raise error("INVALID_ARGUMENT", "this channel's handle has not been sent yet (SPEC.md §18.3)")



# -- revision 1.1 (SPEC.md §16-§18) ------------------------------------------

CONTROL = 0x01  # flags bit 0 (SPEC.md §17.1)
END = 0x02      # flags bit 1, feature channels (§18.5)
_CRITICAL_RESERVED = 0x0C
#: The features of spec/features.tsv this binding implements, in registry order.
FEATURES: Tuple[str, ...] = ("epitaph", "channels")
_FEATURE_NAME = re.compile(r"[a-z0-9_]{1,32}\Z")
_PEER_CAUSED = frozenset(("BAD_MAGIC", "UNSUPPORTED_VERSION", "PAYLOAD_TOO_LARGE", "HANDLES_TRUNCATED",
                          "MISATTACHED_HANDLES", "UNSUPPORTED_FEATURE", "CHANNEL_LIMIT_EXCEEDED"))
_CHANNEL_LIMIT_EXCEEDED_CODE = 39
_ERR_COST = HEADER_SIZE + 64  # a queued frame-scope error: a frame with no payload kept
_NOTHING: Any = object()
_DEFAULT_REVISION = ["1.1"]


def _revision11(revision: Optional[str]) -> bool:
    if revision is None:
        revision = _DEFAULT_REVISION[0]
    if revision not in ("1.0", "1.1"):
        raise error("INVALID_ARGUMENT", f"revision is '1.0' or '1.1', not {revision!r}")
    return revision == "1.1"


def set_default_revision(revision: str) -> None:
    """The revision of SPEC.md new connections implement when none is given:
    ``"1.1"`` (the default) or ``"1.0"`` (compatibility testing: exactly the 1.0
    behaviour).  Connections received in a message take the receiving one's."""
    _revision11(revision)
    _DEFAULT_REVISION[0] = revision


def default_revision() -> str:
    return _DEFAULT_REVISION[0]


def _parse_hello(v: Any) -> Optional[Tuple[FrozenSet[str], List[str]]]:
    """(announced features, required names) of a well-formed HELLO map (SPEC.md
    §16.2 rules 1, 5), else None.  A feature whose parameters are not a map is
    treated as not announced (§17.2 rule 4: wrong type = absent)."""
    if type(v) is not dict or not v:
        return None
    first = next(iter(v.items()))
    if first != ("op", "hello"):
        return None
    feats = v.get("features")
    if type(feats) is not dict:
        return None
    req = v.get("require", [])
    if type(req) is not list or any(type(r) is not str for r in req):
        return None
    return frozenset(k for k, p in feats.items() if type(p) is dict), req


def _check_control(v: Any, head: Header) -> None:
    """SPEC.md §17.1 rule 1 (CONTROL with END on an operation other than close)
    and §17.2 rules 1-2, after the payload walk (§9.3)."""
    is_op = type(v) is dict and bool(v) and next(iter(v)) == "op" and type(v["op"]) is str
    if is_op and head.flags & END and v["op"] != "close":
        raise error("RESERVED_FIELD_NONZERO", f"CONTROL with END on operation {v['op']!r}")
    if not is_op:
        raise error("UNSUPPORTED_FEATURE", "a control message is a map whose first entry is \"op\": a string")
    if head.handle_count:
        raise error("UNSUPPORTED_FEATURE", "a control frame carries no handles")


def _close_frame(wire: int, code: Optional[int]) -> bytes:
    msg: Dict[str, Any] = {"op": "close"}
    if code is not None:
        msg["code"] = code
    payload = encode_payload(msg)[0]
    return _codec.header(0, len(payload), CONTROL | END, wire) + payload


class _Ext:
    """A connection's revision 1.1 state, made by the first HELLO sent or received."""

    __slots__ = ("cond", "lock", "pumping", "hello_sent", "required", "peer_features", "peer_required", "owed",
                 "epitaph", "table", "next_id", "peer_max", "open_count", "queued", "main_q", "main_qbytes",
                 "queued_states")

    def __init__(self, recv_lock: threading.Lock) -> None:
        self.cond = threading.Condition(recv_lock)
        self.lock = threading.RLock()
        self.pumping = False
        self.hello_sent = False
        self.required: FrozenSet[str] = frozenset()
        self.peer_features: Optional[FrozenSet[str]] = None
        self.peer_required: FrozenSet[str] = frozenset()
        self.owed: List[bytes] = []
        self.epitaph: Optional[ChanError] = None
        # open channels by the header channel value of the frames that arrive on them
        self.table: Dict[int, _ChanState] = {}
        self.next_id = 1   # this side's next channel id (§18.1 rule 1)
        self.peer_max = 0  # the highest id the peer opened
        self.open_count = 0
        self.queued = 0    # bytes queued on the connection (§18.6 rule 2)
        self.main_q: Deque[Tuple[bool, Any, int]] = deque()
        self.main_qbytes = 0
        self.queued_states: Set[_ChanState] = set()


class _ChanState:
    """One channel endpoint's state, held by the connection's table while open
    and by the endpoint object for as long as it lives."""

    __slots__ = ("mine", "id", "in_wire", "out_wire", "sent", "closed", "end_recv", "note", "q", "qbytes")

    def __init__(self, mine: bool) -> None:
        self.mine = mine      # opened by this side
        self.id = 0           # 0: not allocated yet (a handle not sent)
        self.in_wire = 0      # the header channel of frames that arrive on it
        self.out_wire = 0     # the header channel of frames sent on it
        self.sent = False     # its handle went out (or came in)
        self.closed = False   # this side closed it (END or close sent, reset, released)
        self.end_recv = False  # the peer closed it
        self.note: Optional[ChanError] = None  # reported once, before CHANNEL_CLOSED
        self.q: Deque[Tuple[bool, Any, int]] = deque()
        self.qbytes = 0


class ChannelEndpoint:
    """One endpoint of a logical channel (SPEC.md §18): frames multiplexed over a
    connection, no descriptor of its own.

    Made by :meth:`Connection.open_channel` (then put in a message sent on that
    connection, once, to open it) or received in a message.  ``send``/``recv``
    work as on a connection; ``send(obj, last=True)`` closes this side with its
    last frame (END); ``close()`` sends a close when the channel saw no END either
    way, and so does dropping the endpoint.  A channel endpoint cannot be sent on
    another connection, a second time, or as a conn/fd
    (CHANNEL_NOT_TRANSFERABLE).
    """

    __slots__ = ("_conn", "_st", "__weakref__")
    _chan_kind = _codec.KIND_CHANNEL
    _conn: Connection
    _st: _ChanState

    def __init__(self, *_a: Any, **_k: Any) -> None:
        raise TypeError("use Connection.open_channel(), or receive a channel in a message")

    @classmethod
    def _make(cls, conn: Connection, st: _ChanState) -> "ChannelEndpoint":
        self = object.__new__(cls)
        self._conn = conn
        self._st = st
        return self

    @property
    def id(self) -> Optional[int]:
        """The channel's id (SPEC.md §18.1); None until its handle is sent."""
        return self._st.id or None

    @property
    def connection(self) -> Connection:
        return self._conn

    @property
    def opened_here(self) -> bool:
        """True for a channel this side opened, False for one received."""
        return self._st.mine

    @property
    def closed(self) -> bool:
        """True once this side closed it or the peer did (END received)."""
        return self._st.closed or self._st.end_recv

    def send(self, obj: Any, timeout: Optional[float] = None, *, last: bool = False) -> None:
        """Send obj as one frame on the channel; ``last=True`` sets END: this side's
        last frame (SPEC.md §18.5 rule 1).  CHANNEL_CLOSED once either side closed it."""
        self._conn._send_x_chan(obj, timeout, self._st, END if last else 0)

    def recv(self, timeout: Optional[float] = None) -> Any:
        """The next value sent on the channel (timeouts as Connection.recv); after
        the peer's END: its close code once (if any), then CHANNEL_CLOSED."""
        return self._conn._recv_chan(self._st, timeout)

    def close(self, code: Any = None) -> None:
        """Close this side (SPEC.md §18.5): sends ``close`` (with ``code``, a
        registry code or ChanError, if given) unless END was already sent or
        received.  Idempotent."""
        if isinstance(code, ChanError) or (isinstance(code, type) and issubclass(code, ChanError)):
            code = code.code
        if code is not None and (type(code) is not int or not 1 <= code <= 255):
            raise error("INVALID_ARGUMENT", f"a close code is a registry code 1..255, not {code!r}")
        self._conn._close_channel(self._st, code, True)

    def _release(self) -> None:
        self._conn._close_channel(self._st, None, False)

    def fileno(self) -> int:
        raise error("CHANNEL_NOT_TRANSFERABLE", "a channel endpoint has no descriptor (SPEC.md §18.7)")

    def __enter__(self) -> "ChannelEndpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._release()
        except Exception:
            pass

    def __reduce__(self) -> Any:
        raise TypeError("a channel endpoint cannot be pickled")

    def __repr__(self) -> str:
        st = self._st
        state = "closed" if self.closed else ("open" if st.sent else "not sent")
        return f"<chan.ChannelEndpoint id={st.id or '-'} {'opened here' if st.mine else 'received'} {state}>"


def Pipe(duplex: bool = True, revision: Optional[str] = None) -> Tuple[Connection, Connection]:
    """Two connected endpoints (socketpair), like ``multiprocessing.Pipe``.

    chan connections are always duplex; ``duplex=False`` is accepted for
    familiarity and changes nothing.  ``revision``: see :func:`set_default_revision`
    (both ends)."""
    rev11 = _revision11(revision)
    try:
        # _socket objects: the same calls as socket.socket without its Python-level
        # wrapper; created close-on-exec (SOCK_CLOEXEC) like every socket of Python's.
        a, b = _socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:
        raise system_error(exc, "socketpair") from None
    ca = Connection._from_socket(a, rev11)
    cb = Connection._from_socket(b, rev11)
    # Each end knows its peer without asking sock_diag (SPEC.md §10.6).
    ca._pipe_peer = weakref.ref(cb)
    cb._pipe_peer = weakref.ref(ca)
    ca._fresh = cb._fresh = ca._created  # the pair itself is not "older" than its sockets
    return ca, cb


def _sockaddr(path: str) -> Any:
    """The sun_path of a name (SPEC.md §10.1 rule 3): "@name" is abstract."""
    if not isinstance(path, str) or path in ("", "@"):
        raise error("INVALID_ARGUMENT", f"a socket name is a non-empty path or '@name', not {path!r}")
    raw = os.fsencode(path)
    # sun_path has 108 bytes: a path needs its NUL, an abstract name its leading 0
    if len(raw) > 107 + (1 if path.startswith("@") else 0) or b"\0" in raw:
        raise error("INVALID_ARGUMENT", f"socket name {path!r} does not fit in sun_path")
    if path.startswith("@"):
        return b"\0" + raw[1:]
    return raw


class Listener:
    """A listening socket at a filesystem path or a Linux abstract name ("@name").

    An existing socket file at path is not removed (SYSTEM, errno EADDRINUSE); the
    path this listener bound is unlinked when it is closed.
    """

    def __init__(self, path: str, backlog: int = 128) -> None:
        addr = _sockaddr(path)
        self.address = path
        self._unlink: Optional[Tuple[str, Tuple[int, int]]] = None
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as exc:
            raise system_error(exc, "socket") from None
        try:
            s.bind(addr)
            if not path.startswith("@"):
                st = os.stat(path)
                self._unlink = (path, (st.st_dev, st.st_ino))
            s.listen(backlog)
        except OSError as exc:
            s.close()
            if self._unlink:
                os.unlink(path)
            raise system_error(exc, f"listen on {path!r}") from None
        self._sock: Optional[socket.socket] = s

    def fileno(self) -> int:
        if self._sock is None:
            raise error("INVALID_ARGUMENT", "listener is closed")
        return self._sock.fileno()

    def accept(self, timeout: Optional[float] = None, revision: Optional[str] = None) -> Connection:
        """The next incoming connection; TIMEOUT / WOULD_BLOCK as for recv."""
        rev11 = _revision11(revision)
        deadline = _deadline(timeout)
        fd = self.fileno()
        assert self._sock is not None
        if deadline is not None:
            _wait(fd, _POLLIN, deadline, timeout)
        try:
            s, _ = self._sock.accept()  # accept4(SOCK_CLOEXEC)
        except OSError as exc:
            raise system_error(exc, "accept") from None
        return Connection._from_socket(s, rev11)

    def close(self) -> None:
        s, self._sock = self._sock, None
        if s is None:
            return
        s.close()
        if self._unlink:
            path, ident = self._unlink
            self._unlink = None
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == ident:
                    os.unlink(path)
            except OSError:
                pass

    @property
    def closed(self) -> bool:
        return self._sock is None

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<chan.Listener {self.address!r}{' closed' if self._sock is None else ''}>"


def Client(path: str, revision: Optional[str] = None) -> Connection:
    """Connect to a listener at path ("@name" for an abstract name)."""
    rev11 = _revision11(revision)
    addr = _sockaddr(path)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:
        raise system_error(exc, "socket") from None
    try:
        s.connect(addr)
    except OSError as exc:
        s.close()
        raise system_error(exc, f"connect to {path!r}") from None
    return Connection._from_socket(s, rev11)
