"""chan: messages that carry connections and file descriptors (the chan/1 protocol).

An independent Python implementation of SPEC.md (it does not wrap libchan)::

    import chan
    a, b = chan.Pipe()
    reply, reply_peer = chan.Pipe()
    a.send({"op": "add", "args": [1, 2], "reply_to": reply_peer})
    reply_peer.close()                      # the message carried a copy
    req = b.recv()
    req["reply_to"].send(sum(req["args"]))  # a live Connection
    assert reply.recv() == 3

Values: None, bool, int (64-bit), float, str, bytes, list/tuple, dict with str keys,
and handles anywhere: :class:`Connection`, :class:`Fd` (a raw descriptor), or any
file object with ``fileno()``.  Errors are :class:`ChanError` subclasses named after
the registry of SPEC.md §9 (``chan.Malformed``, ``chan.ConnectionClosed``, ...).
"""

from typing import Any, Optional, Sequence

from ._codec import (DEFAULT_LIMITS, HARD_MAX_DEPTH, HARD_MAX_HANDLES, HARD_MAX_PAYLOAD, HEADER_SIZE, KIND_CONN,
                     KIND_FD, Channel, Fd, Handle, Header, Limits, encode, parse_header)
from ._conn import (CONTROL, END, FEATURES, ChannelEndpoint, Client, Connection, Listener, PeerCred, Pipe,
                    default_revision, set_default_revision)
from ._handles import decode_frame as _decode_frame
from . import aio  # noqa: E402  (asyncio: chan.aio.pipe, connect, listen)
from ._errors import (BY_CODE, BY_NAME, REGISTRY, BadMagic, BufferTooSmall, ChanError, ConnectionClosed,
                      DepthExceeded, DuplicateKey, EmptyValue, FatalError, FrameError, HandleIndexOutOfOrder,
                      HandleIndexOutOfRange, HandleLimitExceeded, HandlesTruncated, InvalidArgument, InvalidJson,
                      InvalidKey, InvalidText, InvalidUtf8, LocalError, Malformed, MisattachedHandles, NoMemory,
                      Noncanonical, NotFound, PayloadTooLarge, ReservedFieldNonzero, SelfSend, System, Timeout, TooFewHandles,
                      TooManyHandles, Truncated, UnknownField, UnknownHandleKind, UnreferencedHandle,
                      UnsupportedVersion, WouldBlock, WrongHandleKind, WrongType, UnsupportedFeature, ChannelClosed,
                      UnknownChannel, ChannelLimitExceeded, ChannelNotTransferable, UnknownError)

__version__ = "0.3.0"


def decode(frame: bytes, fds: Optional[Sequence[int]] = None, *, limits: Optional[Limits] = None,
           detached: bool = False, channels: bool = False) -> Any:
    """Decode one frame held in memory; returns the value.  Takes ALL of ``fds``: on
    success they belong to the value's Fd and Connection objects, on any error they
    are closed.  ``detached=True``: no descriptors, handles decode as Handle.
    ``channels=True`` (revision 1.1, SPEC.md §18.2 rule 2): Value field 10 is a
    channel handle, decoded as :class:`Channel`; otherwise it is UNKNOWN_FIELD, as
    in 1.0.  The header's flags and channel must be 0 either way."""
    lim = DEFAULT_LIMITS if limits is None else limits.resolved()
    return _decode_frame(frame, fds, limits=lim, detached=detached, channels=channels,
                         conn_factory=Connection._from_socket)[0]
WIRE_VERSION = 1

__all__ = [
    "aio", "Pipe", "Client", "Listener", "Connection", "PeerCred", "Fd", "Handle", "Limits", "Header",
    "Channel", "ChannelEndpoint", "FEATURES", "CONTROL", "END", "set_default_revision", "default_revision",
    "encode", "decode", "parse_header",
    "KIND_FD", "KIND_CONN", "HEADER_SIZE", "HARD_MAX_PAYLOAD", "HARD_MAX_HANDLES", "HARD_MAX_DEPTH",
    "DEFAULT_LIMITS", "WIRE_VERSION", "REGISTRY", "BY_NAME", "BY_CODE",
    "ChanError", "FatalError", "FrameError", "LocalError",
    "BadMagic", "UnsupportedVersion", "PayloadTooLarge", "Truncated", "ReservedFieldNonzero",
    "HandleLimitExceeded", "TooFewHandles", "TooManyHandles", "Malformed", "UnknownField", "Noncanonical",
    "EmptyValue", "DepthExceeded", "InvalidUtf8", "DuplicateKey", "UnknownHandleKind", "WrongHandleKind",
    "HandleIndexOutOfRange", "HandleIndexOutOfOrder", "UnreferencedHandle", "HandlesTruncated",
    "MisattachedHandles", "SelfSend", "ConnectionClosed", "Timeout", "WouldBlock", "NoMemory", "System",
    "InvalidArgument", "BufferTooSmall", "InvalidKey", "InvalidJson", "InvalidText", "NotFound",
    "WrongType", "UnsupportedFeature", "ChannelClosed", "UnknownChannel", "ChannelLimitExceeded",
    "ChannelNotTransferable", "UnknownError",
]
