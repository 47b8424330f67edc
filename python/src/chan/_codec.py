"""chan/1 frames in memory: header (SPEC.md §5), handle table (§6), payload (§7).

The payload codec is written here, not generated: it writes the canonical protobuf
encoding of proto/chan/v1/chan.proto directly and parses it with the one
front-to-back validation walk of SPEC.md §7.3, so every rejection carries the
registry NAME the spec assigns and the first failing check wins.  (The choice
against Google's python3-protobuf runtime was measured; see python/README.md.)

Python values map to the data model (§4.1) as follows:

  None -> null, bool -> bool, int -> int (signed 64-bit), float -> float,
  str -> string, bytes/bytearray/memoryview -> bytes (decoded as bytes),
  list/tuple -> list (decoded as list), dict (str keys) -> map (insertion order),
  Connection -> handle kind conn, Fd or any object with fileno() -> handle kind fd,
  Handle -> a handle with no descriptor (detached encode/decode, for tools),
  Channel -> a channel handle by its id (revision 1.1, SPEC.md §18.2; only where
  the feature ``channels`` is accepted: a decode option, or a connection that
  agreed on it, where live channel endpoints take its place).
"""

from __future__ import annotations

import fcntl
import math
import os
import struct
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ._errors import ChanError, error, system_error

MAGIC = b"CHAN"
VERSION = 1
HEADER_SIZE = 16

KIND_FD = 1
KIND_CONN = 2
KIND_NAMES = {KIND_FD: "fd", KIND_CONN: "conn"}
#: Not a wire kind: what channel handles (Channel, channel endpoints) carry as
#: ``_chan_kind`` so that the encoder and the text form recognise them.
KIND_CHANNEL = -1
MAX_CHANNEL_ID = 0x7FFFFFFF  # SPEC.md §18.1: ids 1 .. 2^31-1

# Revision 1.1 limits (SPEC.md §18.6, spec/limits.tsv)
DEFAULT_MAX_CHANNELS = 1048576
HARD_MAX_CHANNELS = 2147483647
DEFAULT_MAX_QUEUED_BYTES = 67108864
HARD_MAX_QUEUED_BYTES = 4294967295

DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024
HARD_MAX_PAYLOAD = 1024 * 1024 * 1024
DEFAULT_MAX_HANDLES = 64
HARD_MAX_HANDLES = 253
DEFAULT_MAX_DEPTH = 32
HARD_MAX_DEPTH = 32

_HEADER = struct.Struct("<4sBBHII")
_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")
_CANONICAL_NAN = b"\x00\x00\x00\x00\x00\x00\xf8\x7f"
_CANONICAL_NAN_BITS = 0x7FF8000000000000
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


class Limits(NamedTuple):
    """Receive limits (SPEC.md §8).  ``None`` in a field means the spec default."""

    max_payload: Optional[int] = None
    max_handles: Optional[int] = None
    max_depth: Optional[int] = None

    def resolved(self) -> "Limits":
        """The limits with defaults filled in, checked against the hard maxima."""
        out = []
        for value, default, hard, what in (
            (self.max_payload, DEFAULT_MAX_PAYLOAD, HARD_MAX_PAYLOAD, "max_payload"),
            (self.max_handles, DEFAULT_MAX_HANDLES, HARD_MAX_HANDLES, "max_handles"),
            (self.max_depth, DEFAULT_MAX_DEPTH, HARD_MAX_DEPTH, "max_depth"),
        ):
            if value is None:
                value = default
            low = 1 if what == "max_depth" else 0
            if type(value) is not int or value < low or value > hard:
                raise error("INVALID_ARGUMENT", f"{what} must be an int in {low}..{hard}, not {value!r}")
            out.append(value)
        return Limits(*out)


DEFAULT_LIMITS = Limits().resolved()


class Handle:
    """A handle with no descriptor: what a detached decode returns (kind + index).

    Encoding a Handle writes a handle of its kind with no descriptor behind it;
    only :func:`encode` (never a connection) accepts it, for tools and tests.
    """

    __slots__ = ("kind", "index")

    def __init__(self, kind: int, index: int = 0) -> None:
        self.kind = kind
        self.index = index

    @property
    def _chan_kind(self) -> int:
        return self.kind

    def __repr__(self) -> str:
        return f"Handle({KIND_NAMES.get(self.kind, self.kind)}, {self.index})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Handle) and other.kind == self.kind and other.index == self.index

    def __hash__(self) -> int:
        return hash((self.kind, self.index))


class Channel:
    """A channel handle with no endpoint behind it: the data model's ``channel``
    value (SPEC.md §4.1, §18.2), an id in 1 .. 2^31-1.

    What a buffer decode with ``channels=True`` and the text form (``{"$channel":ID}``)
    return, and what :func:`encode` accepts.  A connection never sends one (it sends
    the live endpoints of :meth:`Connection.open_channel` instead) and never returns
    one (it returns live endpoints).
    """

    __slots__ = ("id",)
    _chan_kind = KIND_CHANNEL

    def __init__(self, id: int) -> None:
        if type(id) is not int or not 1 <= id <= MAX_CHANNEL_ID:
            raise error("INVALID_ARGUMENT", f"a channel id is an int in 1..{MAX_CHANNEL_ID}, not {id!r}")
        self.id = id

    def __repr__(self) -> str:
        return f"Channel({self.id})"

    def __eq__(self, other: object) -> bool:
        return type(other) is Channel and other.id == self.id

    def __hash__(self) -> int:
        return hash(("channel", self.id))


class Fd:
    """A file descriptor inside a message (handle kind fd) that this object owns.

    ``Fd(fd)`` DUPLICATES fd (``F_DUPFD_CLOEXEC``): the caller keeps its own
    descriptor and closes it as usual (SPEC.md §11.1 rule 1).  ``Fd.adopt(fd)``
    TAKES fd instead.  Descriptors that arrive in a message come back as Fd
    objects too.  An Fd closes its descriptor on :meth:`close`, when a ``with``
    block ends, or when it is garbage collected; :meth:`detach` hands the raw fd
    over to the caller instead.  Sending an Fd passes a copy (the kernel
    duplicates it into the receiver) and changes nothing here.
    """

    __slots__ = ("_fd", "__weakref__")
    _chan_kind = KIND_FD

    def __init__(self, fd: Any) -> None:
        self._fd = -1
        if type(fd) is not int:
            if hasattr(fd, "fileno"):
                fd = fd.fileno()
            if type(fd) is not int:
                raise error("INVALID_ARGUMENT", f"not a file descriptor: {fd!r}")
        if fd < 0:
            raise error("INVALID_ARGUMENT", f"not a file descriptor: {fd}")
        try:
            self._fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 0)
        except OSError as exc:
            raise system_error(exc, f"F_DUPFD_CLOEXEC of fd {fd}") from None

    @classmethod
    def adopt(cls, fd: int) -> "Fd":
        """An Fd that takes fd itself (no duplicate): the caller must not close it."""
        if type(fd) is not int or fd < 0:
            raise error("INVALID_ARGUMENT", f"not a file descriptor: {fd!r}")
        self = object.__new__(cls)
        self._fd = fd
        return self

    def fileno(self) -> int:
        if self._fd < 0:
            raise error("INVALID_ARGUMENT", "Fd is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def detach(self) -> int:
        """Give the raw fd to the caller, who must close it; this object forgets it."""
        fd = self.fileno()
        self._fd = -1
        return fd

    def dup(self) -> "Fd":
        """A new Fd for a close-on-exec duplicate of this descriptor."""
        return Fd(self.fileno())

    def open(self, mode: str = "rb", **kwargs: Any) -> Any:
        """``os.fdopen`` on this descriptor: the file object takes it over (detach)."""
        return os.fdopen(self.detach(), mode, **kwargs)

    def __enter__(self) -> "Fd":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        except (AttributeError, OSError):
            pass

    def __repr__(self) -> str:
        return f"Fd({'closed' if self._fd < 0 else self._fd})"

    def __reduce__(self) -> Any:
        raise TypeError("an Fd cannot be pickled: send it over a chan connection")


# --------------------------------------------------------------------------
# Encoding (SPEC.md §7.2): canonical form only.

_VARINT1 = [bytes((i,)) for i in range(128)]
_VARINT2 = [bytes(((i & 0x7F) | 0x80, i >> 7)) for i in range(128 * 128)]


def _varint(n: int) -> bytes:
    if n < 128:
        return _VARINT1[n]
    if n < 16384:
        return _VARINT2[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_NULL = b"\x0a\x00"
_FALSE = b"\x10\x00"
_TRUE = b"\x10\x01"
_SMALL_INTS = {i: b"\x18" + _varint((i << 1) ^ (i >> 63)) for i in range(-64, 64)}


_KEY_CACHE: Dict[str, bytes] = {}


def _key_prefix(k: Any) -> bytes:
    """The bytes of an Entry before its value's length: key field (omitted for "")
    and the value's tag.  Cached for short str keys (keys repeat across messages)."""
    if type(k) is not str:
        if not isinstance(k, str):
            raise error("INVALID_ARGUMENT", f"map keys must be str, not {type(k).__name__}")
        k = str(k)
    try:
        kb = k.encode("utf-8")
    except UnicodeEncodeError:
        raise error("INVALID_UTF8", "map key holds a lone surrogate") from None
    if b"\x00" in kb:
        raise error("INVALID_KEY", "map keys cannot contain U+0000", scope="local")
    kn = len(kb)
    prefix = (b"\x0a" + _varint(kn) + kb + b"\x12") if kn else b"\x12"
    if kn <= 64 and len(_KEY_CACHE) < 4096:
        _KEY_CACHE[k] = prefix
    return prefix


class _Enc:
    """Encoder state: the handle table being built (wire order)."""

    __slots__ = ("objs", "kinds", "allow_detached", "chan_id")

    def __init__(self, allow_detached: bool, chan_id: Optional[Callable[[Any], int]]) -> None:
        self.objs: List[Any] = []
        self.kinds: List[int] = []
        self.allow_detached = allow_detached
        self.chan_id = chan_id


def _buffer_chan_id(obj: Any) -> int:
    """The id of a channel handle in a frame built in memory: Channel objects only
    (a live endpoint is sent by its connection, SPEC.md §18.7)."""
    if type(obj) is Channel:
        cid: int = obj.id
        return cid
    raise error("CHANNEL_NOT_TRANSFERABLE", "a channel endpoint is sent only by send() on its own connection")


def _enc_channel(obj: Any, enc: _Enc) -> bytes:
    """Value.channel_value (field 10): Channel{uint64 id = 1} (SPEC.md §18.2)."""
    if enc.chan_id is None:
        raise error("UNSUPPORTED_FEATURE", "channel handles need the feature 'channels' (SPEC.md §16.1 rule 2)")
    cid = enc.chan_id(obj)
    body = b"\x08" + _varint(cid)
    return b"\x52" + _VARINT1[len(body)] + body


def _enc_handle(obj: Any, kind: int, enc: _Enc) -> bytes:
    if kind != KIND_FD and kind != KIND_CONN:
        raise error("UNKNOWN_HANDLE_KIND", f"handle kind {kind!r} is not in the registry")
    if type(obj) is Handle and not enc.allow_detached:
        raise error("INVALID_ARGUMENT", "a detached Handle cannot be sent")
    index = len(enc.objs)
    if index >= HARD_MAX_HANDLES:
        raise error("HANDLE_LIMIT_EXCEEDED", f"more than {HARD_MAX_HANDLES} handles in one message")
    enc.objs.append(obj)
    enc.kinds.append(kind)
    if index:
        body = b"\x08" + _varint(index) + b"\x10" + _VARINT1[kind]
    else:
        body = b"\x10" + _VARINT1[kind]
    return b"\x4a" + _VARINT1[len(body)] + body


def _enc_value(obj: Any, depth: int, enc: _Enc) -> bytes:
    """The encoded body of one Value (tag + member)."""
    t = type(obj)
    if t is str:
        try:
            b = obj.encode("utf-8")
        except UnicodeEncodeError:
            raise error("INVALID_UTF8", "string holds a lone surrogate") from None
        n = len(b)
        out: bytes = b"\x2a" + (_VARINT1[n] if n < 128 else _varint(n)) + b
        return out
    if t is int:
        r = _SMALL_INTS.get(obj)
        if r is not None:
            return r
        if obj < _INT64_MIN or obj > _INT64_MAX:
            raise error("INVALID_ARGUMENT", f"int {obj} does not fit in 64 bits")
        return b"\x18" + _varint(((obj << 1) ^ (obj >> 63)) & 0xFFFFFFFFFFFFFFFF)
    if t is dict:
        if depth >= HARD_MAX_DEPTH and obj:
            raise error("DEPTH_EXCEEDED", f"values nest deeper than {HARD_MAX_DEPTH}")
        parts: List[bytes] = []
        d1 = depth + 1
        for k, v in obj.items():
            kp = _KEY_CACHE.get(k)
            if kp is None:
                kp = _key_prefix(k)
            # the commonest scalars inline (same bytes as _enc_value)
            tv = type(v)
            if tv is str and v.isascii() and len(v) < 128:
                vb = b"\x2a" + _VARINT1[len(v)] + v.encode("ascii")
            elif tv is int and -64 <= v < 64:
                vb = _SMALL_INTS[v]
            else:
                vb = _enc_value(v, d1, enc)
            vn = len(vb)
            if vn < 128:
                en = len(kp) + 1 + vn
                if en < 128:
                    parts.append(b"\x0a" + _VARINT1[en] + kp + _VARINT1[vn] + vb)
                    continue
                parts.append(b"\x0a" + _varint(en) + kp + _VARINT1[vn] + vb)
            else:
                vv = _varint(vn)
                parts.append(b"\x0a" + _varint(len(kp) + len(vv) + vn) + kp + vv + vb)
        body = b"".join(parts)
        return b"\x42" + _varint(len(body)) + body
    if t is list or t is tuple:
        if depth >= HARD_MAX_DEPTH and obj:
            raise error("DEPTH_EXCEEDED", f"values nest deeper than {HARD_MAX_DEPTH}")
        parts = []
        d1 = depth + 1
        for item in obj:
            if type(item) is int and -64 <= item < 64:
                parts.append(b"\x0a\x02" + _SMALL_INTS[item])
                continue
            ib = _enc_value(item, d1, enc)
            n = len(ib)
            parts.append(b"\x0a" + (_VARINT1[n] if n < 128 else _varint(n)) + ib)
        body = b"".join(parts)
        return b"\x3a" + _varint(len(body)) + body
    if obj is None:
        return _NULL
    if t is bool:
        return _TRUE if obj else _FALSE
    if t is float:
        if obj != obj:
            return b"\x21" + _CANONICAL_NAN
        return b"\x21" + _F64.pack(obj)
    if t is bytes:
        n = len(obj)
        framed: bytes = b"\x32" + (_VARINT1[n] if n < 128 else _varint(n)) + obj
        return framed
    kind = getattr(t, "_chan_kind", None)
    if kind is not None:
        if t is Handle:
            kind = obj.kind
        elif kind == KIND_CHANNEL:
            return _enc_channel(obj, enc)
        return _enc_handle(obj, kind, enc)
    # Less common types, by their abstract type.
    if isinstance(obj, bool):
        return _TRUE if obj else _FALSE
    if isinstance(obj, int):
        return _enc_value(int(obj), depth, enc)
    if isinstance(obj, float):
        return _enc_value(float(obj), depth, enc)
    if isinstance(obj, str):
        return _enc_value(str(obj), depth, enc)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _enc_value(bytes(obj), depth, enc)
    if isinstance(obj, dict):
        return _enc_value(dict(obj), depth, enc)
    if isinstance(obj, (list, tuple)):
        return _enc_value(list(obj), depth, enc)
    if hasattr(obj, "fileno"):
        return _enc_handle(obj, KIND_FD, enc)
    raise error("INVALID_ARGUMENT", f"cannot encode a {t.__name__} (chan carries None, bool, int, float, "
                "str, bytes, list, dict, Connection, Fd and file objects)")


def encode_payload(obj: Any, *, allow_detached: bool = True,
                   chan_id: Optional[Callable[[Any], int]] = _buffer_chan_id
                   ) -> Tuple[bytes, List[Any], List[int]]:
    """Encode obj as one canonical Value.

    Returns (payload, handle objects in wire order, their kinds).  The payload does
    not include the frame header.  Local errors: INVALID_ARGUMENT, INVALID_UTF8,
    DEPTH_EXCEEDED, HANDLE_LIMIT_EXCEEDED, PAYLOAD_TOO_LARGE.  ``chan_id`` gives the
    id written for each channel handle met, in walk order (None: channel handles
    are UNSUPPORTED_FEATURE); the default takes :class:`Channel` objects only.
    """
    enc = _Enc(allow_detached, chan_id)
    try:
        payload = _enc_value(obj, 1, enc)
    except RecursionError:
        raise error("DEPTH_EXCEEDED", "value nests too deeply", scope="local") from None
    except ChanError as exc:
        exc.scope = "local"  # nothing reached the wire (SPEC.md §9.2 rule 1)
        raise
    if len(payload) > HARD_MAX_PAYLOAD:
        raise error("PAYLOAD_TOO_LARGE", f"payload of {len(payload)} bytes exceeds {HARD_MAX_PAYLOAD}",
                    scope="local")
    return payload, enc.objs, enc.kinds


def header(handle_count: int, payload_length: int, flags: int = 0, channel: int = 0) -> bytes:
    """The 16-byte header of a v1 frame (flags and channel zero unless a feature
    in use defines them, SPEC.md §17.1, §18.1)."""
    return _HEADER.pack(MAGIC, VERSION, flags, handle_count, channel, payload_length)


def handle_fd(obj: Any) -> int:
    """The descriptor number behind a handle object of a message being sent."""
    try:
        fd = obj.fileno()
    except (ValueError, OSError, ChanError) as exc:
        raise error("INVALID_ARGUMENT", f"{obj!r} has no open descriptor") from exc
    if type(fd) is not int or fd < 0:
        raise error("INVALID_ARGUMENT", f"{obj!r} has no open descriptor")
    return fd


def encode(obj: Any) -> Tuple[bytes, List[int]]:
    """Encode obj as one whole frame.  Returns (frame bytes, fds in wire order).

    The fds are borrowed from the handle objects in obj (nothing is duplicated,
    nothing changes owner).  A detached :class:`Handle` yields fd -1.
    """
    payload, objs, _kinds = encode_payload(obj)
    fds = [-1 if type(o) is Handle else handle_fd(o) for o in objs]
    return header(len(objs), len(payload)) + payload, fds


# --------------------------------------------------------------------------
# Decoding (SPEC.md §7.3, §9.3): the single validation walk.

def _err(name: str, what: str) -> ChanError:
    return error(name, what)


# Field tables: field number -> wire type, per message.
_VALUE_WT = (None, 2, 0, 0, 1, 2, 2, 2, 2, 2)
_VALUE_WT11 = (None, 2, 0, 0, 1, 2, 2, 2, 2, 2, 2)  # where 'channels' is accepted: field 10
_WT_INVALID = (False, False, False, True, True, False, True, True)


class _Dec:
    __slots__ = ("buf", "hc", "prev", "refs", "dup", "maxd", "handles", "vwt", "chans")

    def __init__(self, buf: bytes, hc: int, maxd: int, channels: bool = False) -> None:
        self.buf = buf
        self.hc = hc
        self.prev = -1
        self.refs = 0
        self.dup = False
        self.maxd = maxd
        # (container, key, Handle) for every handle met, in index order.
        self.handles: List[Tuple[Any, Any, Handle]] = []
        self.vwt: Tuple[Optional[int], ...] = _VALUE_WT11 if channels else _VALUE_WT
        # (container, key, Channel) for every channel handle met, in walk order.
        self.chans: List[Tuple[Any, Any, Channel]] = []


def _read_varint(buf: bytes, pos: int, end: int) -> Tuple[int, int, bool]:
    """(value, new position, minimal).  MALFORMED if it runs past end or past 10 bytes
    or its 10th byte is above 1."""
    result = 0
    shift = 0
    i = pos
    while True:
        if i >= end:
            raise _err("MALFORMED", f"varint at payload offset {pos} runs past its range")
        b = buf[i]
        i += 1
        if i - pos == 10:
            if b > 1:
                raise _err("MALFORMED", f"varint at payload offset {pos} is longer than 64 bits")
            result |= b << 63
            break
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            break
    return result, i, (i - pos == 1 or b != 0)


def _read_tag(buf: bytes, pos: int, end: int) -> Tuple[int, int]:
    """Step 1 of §7.3: read a tag.  Returns (tag, new position)."""
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    tag, npos, minimal = _read_varint(buf, pos, end)
    if tag > 0xFFFFFFFF:
        raise _err("MALFORMED", f"tag at offset {pos} exceeds 32 bits")
    if not minimal:
        raise _err("NONCANONICAL", f"tag at offset {pos} is not a minimal varint")
    return tag, npos


def _check_field(tag: int, pos: int, wts: Sequence[Optional[int]], msg: str) -> int:
    """Steps 2-4 of §7.3 for a tag; returns the field number."""
    fn = tag >> 3
    wt = tag & 7
    if fn == 0 or _WT_INVALID[wt]:
        raise _err("MALFORMED", f"invalid tag {tag:#x} at offset {pos} in {msg}")
    if fn >= len(wts) or wts[fn] is None:
        raise _err("UNKNOWN_FIELD", f"field {fn} is not defined in {msg} (offset {pos})")
    if wt != wts[fn]:
        raise _err("MALFORMED", f"field {fn} of {msg} has wire type {wt}, not {wts[fn]} (offset {pos})")
    return fn


def _read_value_varint(buf: bytes, pos: int, end: int) -> Tuple[int, int]:
    """Step 6 for a varint field value or a LEN length."""
    if pos < end:
        b = buf[pos]
        if b < 0x80:
            return b, pos + 1
    v, npos, minimal = _read_varint(buf, pos, end)
    if not minimal:
        raise _err("NONCANONICAL", f"varint at offset {pos} is not minimal")
    return v, npos


def _read_len(buf: bytes, pos: int, end: int) -> Tuple[int, int]:
    """Step 6 for a LEN field: (start, stop) of its bytes."""
    n, p = _read_value_varint(buf, pos, end)
    if n > end - p:
        raise _err("MALFORMED", f"length {n} at offset {pos} runs past its range")
    return p, p + n


_NULL_WT: Tuple[Optional[int], ...] = (None,)
_LIST_WT: Tuple[Optional[int], ...] = (None, 2)
_ENTRY_WT: Tuple[Optional[int], ...] = (None, 2, 2)
_HANDLE_WT: Tuple[Optional[int], ...] = (None, 0, 0)
_CHANNEL_WT: Tuple[Optional[int], ...] = (None, 0)


def _dec_value(st: _Dec, pos: int, end: int, depth: int) -> Any:
    buf = st.buf
    if pos >= end:
        raise _err("EMPTY_VALUE", f"Value with no member at offset {pos}")
    tag = buf[pos]
    p = pos + 1
    obj: Any
    if tag in _LEN_TAGS:
        # Step 6 for a LEN member, fast when the length is one byte.
        if p < end:
            n = buf[p]
            if n < 0x80 and n < end - p:
                a = p + 1
                p = a + n
            else:
                a, p = _read_len(buf, p, end)
        else:
            a, p = _read_len(buf, p, end)
        if tag == 0x2A:
            try:
                obj = str(buf[a:p], "utf-8")
            except UnicodeDecodeError:
                raise _err("INVALID_UTF8", f"string at offset {a} is not valid UTF-8") from None
        elif tag == 0x42:
            obj = _dec_map(st, a, p, depth)
        elif tag == 0x3A:
            obj = _dec_list(st, a, p, depth)
        elif tag == 0x32:
            obj = buf[a:p]
        elif tag == 0x4A:
            obj = _dec_handle(st, a, p)
        else:  # 0x0A null
            if a < p:
                t, q = _read_tag(buf, a, p)
                _check_field(t, a, _NULL_WT, "Null")
            obj = None
    elif tag == 0x18:
        v, p = _read_value_varint(buf, p, end)
        obj = (v >> 1) ^ -(v & 1)
    elif tag == 0x10:
        v, p = _read_value_varint(buf, p, end)
        if v > 1:
            raise _err("NONCANONICAL", f"bool {v} at offset {pos}")
        obj = v == 1
    elif tag == 0x21:
        if end - p < 8:
            raise _err("MALFORMED", f"fixed64 at offset {p} runs past its range")
        obj = _F64.unpack_from(buf, p)[0]
        if obj != obj and buf[p:p + 8] != _CANONICAL_NAN:
            raise _err("NONCANONICAL", f"NaN at offset {p} is not 0x7FF8000000000000")
        p += 8
    elif tag == 0x52 and st.vwt is _VALUE_WT11:
        a, p = _read_len(buf, p, end)
        obj = _dec_channel(st, a, p)
    else:
        # Not a one-byte tag of a Value member: steps 1-4 name the error.
        if tag >= 0x80:
            tag, p = _read_tag(buf, pos, end)
        _check_field(tag, pos, st.vwt, "Value")
        raise AssertionError("unreachable: _check_field accepted a tag the fast path rejected")
    if p < end:
        # Steps 1-4 for the next tag, then step 5: a second member.
        t, q = _read_tag(buf, p, end)
        _check_field(t, p, st.vwt, "Value")
        raise _err("NONCANONICAL", f"second member in a Value at offset {p}")
    return obj


_LEN_TAGS = frozenset((0x0A, 0x2A, 0x32, 0x3A, 0x42, 0x4A))


def _dec_list(st: _Dec, pos: int, end: int, depth: int) -> List[Any]:
    buf = st.buf
    out: List[Any] = []
    d1 = depth + 1
    maxd = st.maxd
    while pos < end:
        if buf[pos] == 0x0A:
            pos += 1
        else:
            t, q = _read_tag(buf, pos, end)
            _check_field(t, pos, _LIST_WT, "List")
            pos = q
        b = buf[pos] if pos < end else 0x80
        if b < 0x80 and b < end - pos:
            a = pos + 1
            pos = a + b
        else:
            a, pos = _read_len(buf, pos, end)
        if d1 > maxd:
            raise _err("DEPTH_EXCEEDED", f"list item at offset {a} is at depth {d1} > {maxd}")
        n = pos - a
        if n == 2 and buf[a] == 0x18 and buf[a + 1] < 0x80:  # a small int, inline
            x = buf[a + 1]
            out.append((x >> 1) ^ -(x & 1))
            continue
        item = _dec_value(st, a, pos, d1)
        if type(item) is Handle:
            st.handles.append((out, len(out), item))
        elif type(item) is Channel:
            st.chans.append((out, len(out), item))
        out.append(item)
    return out


def _dec_map(st: _Dec, pos: int, end: int, depth: int) -> Dict[str, Any]:
    buf = st.buf
    out: Dict[str, Any] = {}
    d1 = depth + 1
    maxd = st.maxd
    while pos < end:
        if buf[pos] == 0x0A:
            pos += 1
        else:
            t, q = _read_tag(buf, pos, end)
            _check_field(t, pos, _LIST_WT, "Map")
            pos = q
        b = buf[pos] if pos < end else 0x80
        if b < 0x80 and b < end - pos:
            a = pos + 1
            pos = a + b
        else:
            a, pos = _read_len(buf, pos, end)
        # The Entry body [a, pos).  Fast path: 0a <klen> key 12 <vlen> value with
        # one-byte lengths filling the body exactly; anything else takes the
        # generic walk, which names the error.
        value: Any = _MISSING
        if pos - a >= 4 and buf[a] == 0x0A:
            kn = buf[a + 1]
            q = a + 2 + kn
            if 0 < kn < 0x80 and q + 2 <= pos and buf[q] == 0x12 and buf[q + 1] == pos - q - 2 < 0x80:
                kb = buf[a + 2:q]
                cached = _KEY_NAMES.get(kb)
                if cached is not None:
                    key = cached
                else:
                    try:
                        key = str(kb, "utf-8")
                    except UnicodeDecodeError:
                        raise _err("INVALID_UTF8", f"map key at offset {a + 2} is not valid UTF-8") from None
                    if b"\x00" in kb:
                        raise _err("INVALID_KEY", f"map key at offset {a + 2} contains U+0000")
                    if kn <= 64 and len(_KEY_NAMES) < 4096:
                        _KEY_NAMES[kb] = key
                if d1 > maxd:
                    raise _err("DEPTH_EXCEEDED", f"map value at offset {q + 2} is at depth {d1} > {maxd}")
                # Inline the commonest scalars; the general walk gives the same result.
                v = q + 2
                n = pos - v
                t = buf[v] if n else 0
                if n == 2 and t == 0x18 and buf[v + 1] < 0x80:
                    x = buf[v + 1]
                    value = (x >> 1) ^ -(x & 1)
                elif t == 0x2A and 2 <= n < 0x82 and buf[v + 1] == n - 2:
                    try:
                        value = str(buf[v + 2:pos], "utf-8")
                    except UnicodeDecodeError:
                        raise _err("INVALID_UTF8", f"string at offset {v + 2} is not valid UTF-8") from None
                else:
                    value = _dec_value(st, v, pos, d1)
        if value is _MISSING:
            key, value = _dec_entry(st, a, pos, depth)
        if key in out:
            st.dup = True
        elif type(value) is Handle:
            st.handles.append((out, key, value))
        elif type(value) is Channel:
            st.chans.append((out, key, value))
        out[key] = value
    return out


_MISSING = object()
_KEY_NAMES: Dict[bytes, str] = {}  # decoded short map keys (valid UTF-8, no U+0000)


def _dec_entry(st: _Dec, pos: int, end: int, depth: int) -> Tuple[str, Any]:
    buf = st.buf
    key = ""
    value: Any = _MISSING
    last = 0
    while pos < end:
        tag = buf[pos]
        if tag == 0x0A or tag == 0x12:
            fn = tag >> 3
            p = pos + 1
        else:
            tag, p = _read_tag(buf, pos, end)
            fn = _check_field(tag, pos, _ENTRY_WT, "Entry")
        if fn <= last:
            raise _err("NONCANONICAL", f"Entry field {fn} out of order at offset {pos}")
        last = fn
        a, pos = _read_len(buf, p, end)
        if fn == 1:
            kb = buf[a:pos]
            try:
                key = str(kb, "utf-8")
            except UnicodeDecodeError:
                raise _err("INVALID_UTF8", f"map key at offset {a} is not valid UTF-8") from None
            if b"\x00" in kb:
                raise _err("INVALID_KEY", f"map key at offset {a} contains U+0000")
            if a == pos:
                raise _err("NONCANONICAL", f"empty Entry.key present at offset {a}")
        else:
            d1 = depth + 1
            if d1 > st.maxd:
                raise _err("DEPTH_EXCEEDED", f"map value at offset {a} is at depth {d1} > {st.maxd}")
            value = _dec_value(st, a, pos, d1)
    if value is _MISSING:
        raise _err("EMPTY_VALUE", f"map Entry without a value ending at offset {end}")
    return key, value


def _dec_handle(st: _Dec, pos: int, end: int) -> Handle:
    buf = st.buf
    index = 0
    kind = 0
    last = 0
    while pos < end:
        tag, p = _read_tag(buf, pos, end)
        fn = _check_field(tag, pos, _HANDLE_WT, "Handle")
        if fn <= last:
            raise _err("NONCANONICAL", f"Handle field {fn} out of order at offset {pos}")
        last = fn
        v, p = _read_value_varint(buf, p, end)
        if v == 0:
            raise _err("NONCANONICAL", f"Handle.{'index' if fn == 1 else 'kind'} 0 present at offset {pos}")
        if fn == 1:
            index = v
        else:
            kind = v
        pos = p
    if kind != KIND_FD and kind != KIND_CONN:
        raise _err("UNKNOWN_HANDLE_KIND", f"handle kind {kind} is not in the registry")
    if index >= st.hc:
        raise _err("HANDLE_INDEX_OUT_OF_RANGE", f"handle index {index} >= handle count {st.hc}")
    if index <= st.prev:
        raise _err("HANDLE_INDEX_OUT_OF_ORDER", f"handle index {index} after {st.prev}")
    st.prev = index
    st.refs += 1
    return Handle(kind, index)


def _dec_channel(st: _Dec, pos: int, end: int) -> Channel:
    """A Channel body (SPEC.md §18.2 rule 2, §7.3 steps 1-8)."""
    buf = st.buf
    cid = 0
    last = 0
    while pos < end:
        tag, p = _read_tag(buf, pos, end)
        fn = _check_field(tag, pos, _CHANNEL_WT, "Channel")
        if fn <= last:
            raise _err("NONCANONICAL", f"Channel field {fn} repeated at offset {pos}")
        last = fn
        v, p = _read_value_varint(buf, p, end)
        if v == 0:
            raise _err("NONCANONICAL", f"Channel.id 0 present at offset {pos}")
        cid = v
        pos = p
    if cid == 0 or cid > MAX_CHANNEL_ID:
        raise _err("UNKNOWN_CHANNEL", f"channel id {cid} is not in 1..{MAX_CHANNEL_ID}")
    ch = object.__new__(Channel)
    ch.id = cid
    return ch


class Header(NamedTuple):
    version: int
    flags: int
    handle_count: int
    channel: int
    payload_length: int


def parse_header(buf: bytes, limits: Limits = DEFAULT_LIMITS) -> Header:
    """The fatal header checks of §9.3, in order: TRUNCATED (< 16 bytes), BAD_MAGIC,
    UNSUPPORTED_VERSION, PAYLOAD_TOO_LARGE."""
    if len(buf) < HEADER_SIZE:
        raise _err("TRUNCATED", f"{len(buf)} bytes cannot hold a 16-byte header")
    magic, version, flags, hc, channel, plen = _HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise _err("BAD_MAGIC", f"header starts with {bytes(magic).hex()}, not 4348414e")
    if version != VERSION:
        raise _err("UNSUPPORTED_VERSION", f"frame version {version}")
    if plen > limits.max_payload:
        raise _err("PAYLOAD_TOO_LARGE", f"payload of {plen} bytes exceeds the limit {limits.max_payload}")
    return Header(version, flags, hc, channel, plen)


def decode_payload(buf: bytes, fd_count: int = 0, *, limits: Limits = DEFAULT_LIMITS,
                   detached: bool = False, header_checked: Optional[Header] = None,
                   channels: bool = False, check_reserved: bool = True,
                   post_walk: Optional[Callable[[Any], None]] = None,
                   chan_slots: Optional[List[Tuple[Any, Any, Channel]]] = None,
                   ) -> Tuple[Any, int, List[Tuple[Any, Any, Handle]]]:
    """Validate the frame at the start of buf and build its value (SPEC.md §7.3).

    ``fd_count`` descriptors came with the frame (TOO_FEW / TOO_MANY are checked in
    their §9.3 place, unless ``detached``).  Touches no descriptor: handles come back
    as :class:`Handle` placeholders, with the slots (container, key, handle) in wire
    order that the descriptor layer (``_handles.attach``) fills.  Returns (value,
    frame size, slots).

    Revision 1.1: ``channels`` makes ``Value.channel_value`` a known field (SPEC.md
    §18.2 rule 2); channel handles come back as :class:`Channel` and, when
    ``chan_slots`` is given, their (container, key, Channel) are appended to it in
    walk order.  ``check_reserved=False``: the caller has checked flags and channel
    (a connection, §17.1, §18.4).  ``post_walk(value)`` runs after the walk and
    before UNREFERENCED_HANDLE (a control frame's checks, §9.3).
    """
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    h = header_checked or parse_header(buf, limits)
    plen = h.payload_length
    if len(buf) - HEADER_SIZE < plen:
        raise _err("TRUNCATED", f"payload has {len(buf) - HEADER_SIZE} of {plen} bytes")
    if check_reserved and channels:
        # A buffer read as revision 1.1, as a receiver that has the peer's
        # HELLO (SPEC.md §9.3 note: §17.1 rule 1, then §18.1 rule 2).
        if h.flags & 0x0C:
            raise _err("RESERVED_FIELD_NONZERO", f"flags = {h.flags:#x}: a critical reserved bit")
        if h.flags & 0x02 and not h.channel:
            raise _err("RESERVED_FIELD_NONZERO", "END on channel 0")
        if h.channel == 0x80000000:
            raise _err("UNKNOWN_CHANNEL", "channel 0x80000000 (bit 31 with id 0)")
    elif check_reserved:
        if h.flags:
            raise _err("RESERVED_FIELD_NONZERO", f"flags = {h.flags:#x}")
        if h.channel:
            raise _err("RESERVED_FIELD_NONZERO", f"channel = {h.channel}")
    hc = h.handle_count
    assert limits.max_handles is not None and limits.max_depth is not None  # resolved limits
    if hc > limits.max_handles:
        raise _err("HANDLE_LIMIT_EXCEEDED", f"{hc} handles exceed the limit {limits.max_handles}")
    if detached:
        if fd_count:
            raise error("INVALID_ARGUMENT", "a detached decode takes no descriptors")
    elif fd_count < hc:
        raise _err("TOO_FEW_HANDLES", f"{fd_count} descriptors arrived, the header declares {hc}")
    elif fd_count > hc:
        raise _err("TOO_MANY_HANDLES", f"{fd_count} descriptors arrived, the header declares {hc}")
    st = _Dec(buf, hc, limits.max_depth, channels)
    try:
        value = _dec_value(st, HEADER_SIZE, HEADER_SIZE + plen, 1)
    except RecursionError:  # cannot happen within max_depth 32, kept as a guard
        raise _err("DEPTH_EXCEEDED", "values nest too deeply") from None
    if type(value) is Handle:
        st.handles.append((None, None, value))
    elif type(value) is Channel:
        st.chans.append((None, None, value))
    if post_walk is not None:
        post_walk(value)
    if st.refs < hc:
        raise _err("UNREFERENCED_HANDLE", f"{hc - st.refs} of {hc} handle table entries are never referenced")
    if st.dup:
        raise _err("DUPLICATE_KEY", "a map holds the same key twice")
    if chan_slots is not None:
        chan_slots.extend(st.chans)
    return value, HEADER_SIZE + plen, st.handles


def is_canonical_nan(x: float) -> bool:
    return math.isnan(x) and _F64.pack(x) == _CANONICAL_NAN


def control_check(flags: int, channel: int, handle_count: int, value: Any) -> Optional[Tuple[str, str]]:
    """What a control frame's value must be once the peer is agreed (SPEC.md
    §17.1 rule 1, last clause; §17.2 rules 1-3; §16.2 rule 5): None, or (NAME,
    why).  Shared by the buffer decoder read as 1.1 and the connection."""
    if handle_count:
        return "UNSUPPORTED_FEATURE", "a control frame carries no handles"
    if type(value) is not dict or not value or next(iter(value)) != "op" or type(value["op"]) is not str:
        return "UNSUPPORTED_FEATURE", "a control message is a map whose first key is 'op'"
    op = value["op"]
    if flags & 0x02 and op != "close":
        return "RESERVED_FIELD_NONZERO", f"END on the control operation {op!r}"
    if op == "hello":
        req = value.get("require", [])
        if channel or type(value.get("features")) is not dict or type(req) is not list or \
                any(type(r) is not str for r in req):
            return "UNSUPPORTED_FEATURE", "not a well-formed HELLO"
        return None
    if op == "epitaph":
        return ("UNSUPPORTED_FEATURE", "an epitaph on a channel") if channel else None
    if op == "close":
        return None if channel and flags & 0x02 else ("UNSUPPORTED_FEATURE", "close needs a channel and END")
    if value.get("critical") is True:
        return "UNSUPPORTED_FEATURE", f"unknown critical control operation {op!r}"
    return None

