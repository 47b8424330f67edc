"""chan/1 connections over Unix stream sockets (SPEC.md §10, §11).

The socket is never put in non-blocking mode (O_NONBLOCK lives in the open file
description, which every process holding a copy of the connection shares):
timeouts use poll() and MSG_DONTWAIT, exactly as libchan does.
"""

from __future__ import annotations

import itertools
import os
import select
import _socket
import socket
import stat
import struct
import threading
import time
import weakref
from array import array
from typing import Any, List, NamedTuple, Optional, Tuple

from . import _codec
from ._codec import HEADER_SIZE, KIND_CONN, Header, Limits, encode_payload, handle_fd, parse_header
from ._handles import close_all, decode_frame, fds_from_ancillary, verify_conn
from ._errors import ChanError, error, system_error

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
                 "_created", "_fresh", "__weakref__")
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

    def __init__(self, *_a: Any, **_k: Any) -> None:
        raise TypeError("use chan.Pipe(), chan.Client(), Listener.accept() or Connection.from_fd()")

    @classmethod
    def _from_socket(cls, sock: Any) -> "Connection":
        """Wrap a connected AF_UNIX stream socket object (socket.socket or _socket.socket)."""
        self = object.__new__(cls)
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
    def from_fd(cls, fd: int) -> "Connection":
        """Wrap an AF_UNIX SOCK_STREAM socket.  Takes fd on success only; anything
        else is WRONG_HANDLE_KIND (local scope, SPEC.md §4.2 rule 3)."""
        try:
            sock = verify_conn(fd)
        except ChanError as exc:
            exc.scope = "local"
            raise
        return cls._from_socket(sock)

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
        :meth:`flush`.
        """
        payload, objs, kinds = encode_payload(obj, allow_detached=False)
        if objs:
            fds = [handle_fd(o) for o in objs]
            self._check_self_send(objs, kinds, fds)
            anc: Any = [(_SOL_SOCKET, _SCM_RIGHTS, array("i", fds).tobytes())]
        else:
            anc = ()
        frame = _HEADER_PACK(_codec.MAGIC, 1, 0, len(objs), 0, len(payload)) + payload
        deadline = None if timeout is None else _deadline(timeout)
        with self._send_lock:
            sock = self._sock
            if self._fatal is not None:
                self._raise_fatal()
            if self._send_fatal is not None:
                f = self._send_fatal
                raise type(f)(f.args[0] if f.args else None, scope=f.scope)
            if self._fd < 0:
                raise error("INVALID_ARGUMENT", "connection is closed")
            if self._pending:
                self._flush(deadline, timeout)
            try:
                if deadline is None:
                    n = sock.sendmsg((frame,), anc, _MSG_NOSIGNAL)
                else:
                    while True:
                        _wait(self._fd, _POLLOUT, deadline, timeout)
                        try:
                            n = sock.sendmsg((frame,), anc, _MSG_NOSIGNAL | _MSG_DONTWAIT)
                            break
                        except BlockingIOError:
                            continue
            except ChanError:
                raise
            except (BrokenPipeError, ConnectionResetError):
                raise self._send_failed() from None
            except OSError as exc:
                raise system_error(exc, "sendmsg") from None  # ETOOMANYREFS, EINVAL: SPEC.md §10.2 rule 8
            if n < len(frame):
                # The descriptors went with the first byte; the rest is plain bytes.
                self._pending = frame[n:]
                self._flush(deadline, timeout, committed=True)

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
        """Write the rest of a committed frame (see :meth:`send`)."""
        deadline = _deadline(timeout)
        with self._send_lock:
            if self._pending:
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
        fd = self.fileno()
        p = select.poll()
        p.register(fd, select.POLLIN)
        ms = -1 if timeout is None else max(0, int(timeout * 1000 + 0.999))
        return bool(p.poll(ms))

    def _fail(self, exc: ChanError) -> ChanError:
        """A fatal error (SPEC.md §9.2): close the frame's descriptors and the
        connection; every later receive or send reports the same error."""
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
        closed at a frame boundary.
        """
        if timeout is not None:
            deadline = _deadline(timeout)
            with self._recv_lock:
                return self._recv_locked(deadline, timeout)
        with self._recv_lock:
            if self._fatal is not None or self._fd < 0 or self._hdr or self._head is not None:
                return self._recv_locked(None, None)
            # Fast path: a whole header, then a whole payload, no surprises.
            sock = self._sock
            try:
                data, anc, mflags, _a = sock.recvmsg(HEADER_SIZE, _ANCBUF, _MSG_CMSG_CLOEXEC)
            except OSError:
                return self._recv_locked(None, None)  # the general path reads again and names it
            if mflags & _MSG_CTRUNC or len(data) != HEADER_SIZE:
                if self._absorb(data, anc, mflags):
                    return self._finish()
                return self._recv_locked(None, None)
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
                        return self._finish()
                    return self._recv_locked(None, None)
                data += payload
            return decode_frame(data, fds, limits=self._limits, header_checked=head,
                                self_ino=self._identity() if fds else None,
                                conn_factory=Connection._from_socket)[0]

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

    def _finish(self) -> Any:
        """Decode the buffered frame (frame-scope errors only) and reset the state."""
        head = self._head
        assert head is not None
        frame = self._hdr + b"".join(self._parts)
        ffds = self._ffds
        self._hdr = b""
        self._head = None
        self._parts = []
        self._have = 0
        self._ffds = []
        return decode_frame(frame, ffds, limits=self._limits, header_checked=head,
                            self_ino=self._identity() if ffds else None,
                            conn_factory=Connection._from_socket)[0]

    def _recv_locked(self, deadline: Optional[float], timeout: Optional[float]) -> Any:
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
                return self._finish()
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
                return self._finish()


def Pipe(duplex: bool = True) -> Tuple[Connection, Connection]:
    """Two connected endpoints (socketpair), like ``multiprocessing.Pipe``.

    chan connections are always duplex; ``duplex=False`` is accepted for
    familiarity and changes nothing."""
    try:
        # _socket objects: the same calls as socket.socket without its Python-level
        # wrapper; created close-on-exec (SOCK_CLOEXEC) like every socket of Python's.
        a, b = _socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:
        raise system_error(exc, "socketpair") from None
    ca = Connection._from_socket(a)
    cb = Connection._from_socket(b)
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

    def accept(self, timeout: Optional[float] = None) -> Connection:
        """The next incoming connection; TIMEOUT / WOULD_BLOCK as for recv."""
        deadline = _deadline(timeout)
        fd = self.fileno()
        assert self._sock is not None
        if deadline is not None:
            _wait(fd, _POLLIN, deadline, timeout)
        try:
            s, _ = self._sock.accept()  # accept4(SOCK_CLOEXEC)
        except OSError as exc:
            raise system_error(exc, "accept") from None
        return Connection._from_socket(s)

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


def Client(path: str) -> Connection:
    """Connect to a listener at path ("@name" for an abstract name)."""
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
    return Connection._from_socket(s)
