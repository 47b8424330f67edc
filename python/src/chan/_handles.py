"""Descriptors in values (SPEC.md §4.2, §4.3, §6, §10.6): the layer between the
codec and the transport.

The codec (``_codec``) validates bytes and builds values with :class:`Handle`
placeholders; it never touches a descriptor.  This module gives a frame's
descriptors to its value in one pass over the handle table (conn kind checks,
then the receive-side self-send rule, then the live objects), and owns every
descriptor it is given until it has handed it over or closed it.  The
transport (``_conn``) uses both; neither of them imports ``_conn``: the
connection class comes in as ``conn_factory``.
"""

from __future__ import annotations

import os
import _socket
import socket
from array import array
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ._codec import (DEFAULT_LIMITS, KIND_CONN, Channel, Fd, Handle, Header, Limits, _err, control_check,
                     decode_payload, parse_header)
from ._errors import error

_SOL_SOCKET = int(socket.SOL_SOCKET)
_SO_TYPE = int(socket.SO_TYPE)
_AF_UNIX = int(socket.AF_UNIX)
_SOCK_STREAM = int(socket.SOCK_STREAM)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)
_SCM_PIDFD = 0x04  # Linux: sent to a receiver that set SO_PASSPIDFD

#: Makes a connection object from a verified socket object (``Connection._from_socket``).
ConnFactory = Callable[[Any], Any]


def close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def verify_conn(fd: int, index: int = -1) -> Any:
    """A socket object for fd if it is a connected AF_UNIX SOCK_STREAM socket (SPEC.md
    §4.2 rule 2: a listening or unconnected socket is not a connection), else
    WRONG_HANDLE_KIND.  Takes fd on success only."""
    what = f"conn handle {index}" if index >= 0 else f"fd {fd}"
    try:
        s = _socket.socket(_AF_UNIX, _SOCK_STREAM, 0, fd)
    except OSError:
        raise _err("WRONG_HANDLE_KIND", f"{what} is not a socket") from None
    try:
        s.getpeername()  # ENOTCONN: listening or never connected; ENOTSOCK
        ok = (s.family == _AF_UNIX and s.getsockopt(_SOL_SOCKET, _SO_TYPE) == _SOCK_STREAM)
    except OSError:
        ok = False
    if not ok:
        s.detach()
        raise _err("WRONG_HANDLE_KIND", f"{what} is not a connected AF_UNIX SOCK_STREAM socket")
    return s


def attach(value: Any, slots: List[Tuple[Any, Any, Handle]], fds: List[int], *,
           self_ino: Optional[Tuple[int, int]] = None,
           conn_factory: ConnFactory) -> Any:
    """Give the frame's descriptors to the value decoded from it: ``slots`` are the
    codec's (container, key, placeholder) in wire order, ``fds[i]`` the descriptor of
    index i.  One pass: every conn handle is checked (WRONG_HANDLE_KIND, in index
    order), then compared with the receiving socket ``self_ino`` (st_dev, st_ino) if
    given (SELF_SEND, frame scope), then the live objects are made.  Takes every fd:
    on success they belong to the value, on error all are closed once.  Returns the
    value (a new object when the value itself is a handle)."""
    socks: Dict[int, Any] = {}
    try:
        try:
            for _c, _k, hd in slots:
                if hd.kind == KIND_CONN:
                    socks[hd.index] = verify_conn(fds[hd.index], hd.index)
            if self_ino is not None:
                for i in socks:
                    stt = os.fstat(fds[i])
                    if (stt.st_dev, stt.st_ino) == self_ino:
                        raise error("SELF_SEND", f"conn handle {i} is the receiving endpoint itself",
                                    scope="frame")
            for container, key, hd in slots:
                if hd.kind == KIND_CONN:
                    live: Any = conn_factory(socks.pop(hd.index))
                else:
                    live = Fd.adopt(fds[hd.index])
                fds[hd.index] = -1
                if container is None:
                    value = live
                else:
                    container[key] = live
        except BaseException:  # the sockets made so far give their fds back
            for s in socks.values():
                s.detach()
            raise
        return value
    except BaseException:
        close_all(fds)
        raise


def decode_frame(buf: bytes, fds: Optional[Sequence[int]] = None, *, limits: Limits = DEFAULT_LIMITS,
                 detached: bool = False, header_checked: Optional[Header] = None,
                 self_ino: Optional[Tuple[int, int]] = None,
                 conn_factory: ConnFactory, channels: bool = False, check_reserved: bool = True,
                 post_walk: Optional[Callable[[Any], None]] = None,
                 chan_slots: Optional[List[Tuple[Any, Any, Channel]]] = None) -> Tuple[Any, int]:
    """Decode the frame at the start of buf with its descriptors.  Returns (value,
    frame size).

    Takes ALL of ``fds``: on success they belong to the Fd and connection objects of
    the value; on any error every one of them has been closed once.  With
    ``detached=True`` no descriptors are expected and handles decode as
    :class:`Handle` objects, but every index rule is still checked.
    """
    fd_list = list(fds) if fds else []  # ours from here on: closed on any error
    try:
        value, size, slots = decode_payload(buf, len(fd_list), limits=limits, detached=detached,
                                            header_checked=header_checked, channels=channels,
                                            check_reserved=check_reserved, post_walk=post_walk,
                                            chan_slots=chan_slots)
    except BaseException:
        close_all(fd_list)
        raise
    if not (detached or not slots):
        value = attach(value, slots, fd_list, self_ino=self_ino, conn_factory=conn_factory)
    if channels and check_reserved and header_checked is None:
        # a buffer read as revision 1.1: a control frame's value must be a
        # control message (SPEC.md §17.2), after every check of §9.3
        h = parse_header(buf, limits)
        if h.flags & 0x01:
            bad = control_check(h.flags, h.channel, h.handle_count, value)
            if bad is not None:
                release_value(value)
                raise error(bad[0], bad[1], scope="frame")
    return value, size


def release_value(value: Any) -> None:
    """Close every handle object a received value holds (Fd, Connection, channel
    endpoint): what releasing a rejected, discarded or reset frame's value means
    (SPEC.md §4.3 rule 3, §18.4 rule 2, §18.6 rule 3).  Iterative: a value is at
    most max_depth deep, but this never recurses anyway."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is list:
            stack.extend(v)
        elif t is dict:
            stack.extend(v.values())
        elif hasattr(t, "_chan_kind") and t is not Handle and t is not Channel:
            try:
                v.close()
            except Exception:
                pass


def fds_from_ancillary(ancdata: List[Tuple[int, int, bytes]]) -> List[int]:
    """The SCM_RIGHTS descriptors of a recvmsg result, in order.  Other control
    messages carry no frame's descriptors: SCM_CREDENTIALS is skipped, and a pidfd
    (SCM_PIDFD) is closed, since nothing else would close it."""
    out: List[int] = []
    for level, typ, data in ancdata:
        if level != _SOL_SOCKET or typ not in (_SCM_RIGHTS, _SCM_PIDFD):
            continue
        a = array("i")
        a.frombytes(data[: len(data) - len(data) % a.itemsize])
        if typ == _SCM_RIGHTS:
            out.extend(a)
        else:
            close_all(list(a))
    return out
