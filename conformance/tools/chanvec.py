"""chanvec: read .vec files, the chan/1 text form, and a reference decoder.

Shared by vecgen.py (writes the vectors) and vecheck.py (re-verifies them).
Nothing here uses libchan: this is an independent second implementation of
the rules of SPEC.md (§5-§9, §12) written from the text,
so that the vectors are not just "whatever libchan does".

Grammar of .vec files: spec/vectors.md.
"""

import json
import math
import re
import struct

# --------------------------------------------------------------------------
# .vec parser (spec/vectors.md §2)

KINDS = ("success", "decode_success", "decode_failure", "encode_failure")
OBJECTS = ("conn", "pipe_read", "pipe_write", "memfd", "eventfd", "file",
           "dgram", "seqpacket", "tcp", "listener", "unconnected")
# objects that pass the check of SPEC.md §4.2 rule 2 (a connected AF_UNIX stream socket)
CONN_OBJECTS = ("conn",)
LIMIT_KEYS = ("max_payload", "max_handles", "max_depth", "max_channels")
DELIVERIES = ("whole", "bytewise", "fds_at", "close_after", "fd_limit",
              "echo", "reply", "nested", "self_send", "peer_send",
              "closed_at_boundary", "max_handles",
              # issue 14 §5: a large frame read slowly, a closed peer, SO_PASSCRED
              "slow_read", "peer_closed", "passcred",
              # revision 1.1 (spec/vectors.md §3.3)
              "peer10", "hello", "hello_require", "epitaph", "channel_reply", "frames",
              "refused_channels", "readahead")
R11_FIRST = DELIVERIES.index("peer10")
REVISIONS = ("1.0", "1.1")
NAME_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
ERR_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
SECTION_RE = re.compile(r"^[0-9]+(\.[0-9]+)?$")
HEX_RE = re.compile(r"^[0-9a-f]{2}$")


class VecError(Exception):
    pass


class Case:
    def __init__(self, name, path, line):
        self.name = name
        self.path = path
        self.line = line
        self.kind = None
        self.sections = []
        self.value = None        # text form, exactly as written
        self.handles = []        # object names, index = table position
        self.limits = {}
        self.error = None
        self.transport = None    # (delivery, [args])
        self.notes = []
        self.bytes = None        # bytes, or None when absent
        self.canonical = None    # decode_success: canonical re-encoding
        self.revision = "1.0"    # "1.1": run only against a testee that implements 1.1

    def __repr__(self):
        return "Case(%s)" % self.name


def _hexblock(lines, i, path, closer):
    out = bytearray()
    while i < len(lines):
        raw = lines[i]
        if not raw[:1].isspace():
            break
        body = raw.split("#", 1)[0].strip()
        for tok in body.split():
            if not HEX_RE.match(tok):
                raise VecError("%s:%d: bad hex byte %r" % (path, i + 1, tok))
            out.append(int(tok, 16))
        i += 1
    return bytes(out), i


def parse_vec(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    cases = []
    cur = None
    i = 0
    while i < len(lines):
        raw = lines[i]
        ln = i + 1
        if raw.strip() == "" or raw.startswith("#"):
            i += 1
            continue
        if raw[:1].isspace():
            raise VecError("%s:%d: indented line outside a bytes block" % (path, ln))
        key, _, rest = raw.partition(" ")
        if key == "case":
            if cur is not None:
                raise VecError("%s:%d: case inside case" % (path, ln))
            if not NAME_RE.match(rest):
                raise VecError("%s:%d: bad case name %r" % (path, ln, rest))
            cur = Case(rest, path, ln)
            i += 1
            continue
        if cur is None:
            raise VecError("%s:%d: %r outside a case" % (path, ln, key))
        if key == "end":
            _finish(cur)
            cases.append(cur)
            cur = None
        elif key == "kind":
            if rest not in KINDS:
                raise VecError("%s:%d: bad kind %r" % (path, ln, rest))
            cur.kind = rest
        elif key == "section":
            secs = rest.split()
            if not secs or not all(SECTION_RE.match(s) for s in secs):
                raise VecError("%s:%d: bad section list" % (path, ln))
            cur.sections = secs
        elif key == "value":
            cur.value = rest
        elif key == "handle":
            m = re.match(r"^#([0-9]+) = ([a-z_]+)$", rest)
            if not m or m.group(2) not in OBJECTS:
                raise VecError("%s:%d: bad handle line" % (path, ln))
            if int(m.group(1)) != len(cur.handles):
                raise VecError("%s:%d: handles must be numbered #0, #1, ..." % (path, ln))
            cur.handles.append(m.group(2))
        elif key == "handles":
            m = re.match(r"^#([0-9]+)\.\.#([0-9]+) = ([a-z_]+)$", rest)
            if not m or m.group(3) not in OBJECTS or int(m.group(1)) != len(cur.handles) \
                    or int(m.group(2)) < int(m.group(1)):
                raise VecError("%s:%d: bad handles range" % (path, ln))
            cur.handles += [m.group(3)] * (int(m.group(2)) - int(m.group(1)) + 1)
        elif key == "limits":
            for kv in rest.split():
                k, _, v = kv.partition("=")
                if k not in LIMIT_KEYS or not v.isdigit():
                    raise VecError("%s:%d: bad limit %r" % (path, ln, kv))
                cur.limits[k] = int(v)
        elif key == "error":
            if not ERR_RE.match(rest):
                raise VecError("%s:%d: bad error name" % (path, ln))
            cur.error = rest
        elif key == "transport":
            parts = rest.split()
            if not parts or parts[0] not in DELIVERIES:
                raise VecError("%s:%d: bad transport %r" % (path, ln, rest))
            cur.transport = (parts[0], [int(p) for p in parts[1:]])
        elif key == "note":
            cur.notes.append(rest)
        elif key == "revision":
            if rest not in REVISIONS:
                raise VecError("%s:%d: bad revision %r" % (path, ln, rest))
            cur.revision = rest
        elif key in ("bytes", "canonical"):
            if rest:
                raise VecError("%s:%d: %s takes no argument" % (path, ln, key))
            data, i = _hexblock(lines, i + 1, path, key)
            if key == "bytes":
                cur.bytes = data
            else:
                cur.canonical = data
            continue
        else:
            raise VecError("%s:%d: unknown key %r" % (path, ln, key))
        i += 1
    if cur is not None:
        raise VecError("%s: case %s has no end" % (path, cur.name))
    return cases


def _finish(c):
    where = "%s:%d: case %s" % (c.path, c.line, c.name)
    if c.kind is None or not c.sections:
        raise VecError(where + ": kind and section are required")
    need_value = c.kind in ("success", "decode_success", "encode_failure")
    if need_value and c.value is None:
        raise VecError(where + ": value required")
    if c.kind in ("success", "decode_success", "decode_failure") and c.bytes is None:
        raise VecError(where + ": bytes required")
    if c.kind == "encode_failure" and c.bytes is not None:
        raise VecError(where + ": encode_failure has no bytes")
    if c.kind in ("decode_failure", "encode_failure") and c.error is None:
        raise VecError(where + ": error required")
    if c.kind in ("success", "decode_success") and c.error is not None:
        raise VecError(where + ": success has no error")
    if c.kind == "decode_failure" and c.value is not None:
        raise VecError(where + ": decode_failure has no value")
    if c.kind == "decode_success" and c.canonical is None:
        raise VecError(where + ": decode_success needs canonical")
    if c.kind != "decode_success" and c.canonical is not None:
        raise VecError(where + ": only decode_success has canonical")
    if c.transport and c.transport[0] in DELIVERIES[R11_FIRST:] and c.revision != "1.1":
        raise VecError(where + ": delivery %s needs revision 1.1" % c.transport[0])
    if "max_channels" in c.limits and c.revision != "1.1":
        raise VecError(where + ": max_channels needs revision 1.1")


# --------------------------------------------------------------------------
# Values (SPEC.md §4) and the text form (SPEC.md §12)

class Handle:
    __slots__ = ("kind", "index")

    def __init__(self, kind, index):
        self.kind = kind      # 1 fd, 2 conn
        self.index = index

    def __eq__(self, o):
        return isinstance(o, Handle) and (o.kind, o.index) == (self.kind, self.index)

    def __repr__(self):
        return "Handle(%d,%d)" % (self.kind, self.index)


class Map:
    """A map: ordered (key, value) pairs. Keys are str."""
    __slots__ = ("items",)

    def __init__(self, items):
        self.items = list(items)

    def __eq__(self, o):
        return isinstance(o, Map) and o.items == self.items

    def __repr__(self):
        return "Map(%r)" % self.items


class Channel:
    """A channel handle (revision 1.1, SPEC.md §18.2): {"$channel":ID}."""
    __slots__ = ("id",)

    def __init__(self, cid):
        self.id = cid

    def __eq__(self, o):
        return isinstance(o, Channel) and o.id == self.id

    def __repr__(self):
        return "Channel(%d)" % self.id


class Bytes:
    __slots__ = ("b",)

    def __init__(self, b):
        self.b = bytes(b)

    def __eq__(self, o):
        return isinstance(o, Bytes) and o.b == self.b


class TextError(Exception):
    def __init__(self, name, msg):
        Exception.__init__(self, msg)
        self.name = name


MARKERS = ("$int", "$float", "$bytes", "$fd", "$conn", "$channel")
MAX_CHANNEL_ID = (1 << 31) - 1
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
SAFE = (1 << 53) - 1


def _utf8(s):
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise TextError("INVALID_UTF8", "lone surrogate")
    return s


def _conv(j, depth=1):
    if isinstance(j, str):
        return _utf8(j)
    if j is None or isinstance(j, bool):
        return j
    if isinstance(j, int):
        if not INT_MIN <= j <= INT_MAX:
            raise TextError("INVALID_TEXT", "int out of range")
        return j
    if isinstance(j, float):
        if math.isinf(j):
            raise TextError("INVALID_TEXT", "a number that rounds to infinity")
        return j
    if depth >= HARD_LIMITS["max_depth"] and (j if isinstance(j, list) else isinstance(j, tuple) and j[1]):
        # a container holding a value deeper than the hard maximum: the encoder's
        # check (SPEC.md §12.4 rule 3); markers are scalars and do not nest
        if not (isinstance(j, tuple) and len(j[1]) == 1 and j[1][0][0] in MARKERS):
            raise TextError("DEPTH_EXCEEDED", "nested deeper than %d" % HARD_LIMITS["max_depth"])
    if isinstance(j, list):
        return [_conv(x, depth + 1) for x in j]
    assert isinstance(j, tuple) and j[0] == "__obj__"
    pairs = j[1]
    if len(pairs) == 1 and pairs[0][0] in MARKERS:
        k, v = pairs[0]
        if k == "$int":
            if not isinstance(v, str) or not re.match(r"^-?(0|[1-9][0-9]*)\Z", v) or v == "-0":
                raise TextError("INVALID_TEXT", "bad $int")
            i = int(v)
            if not INT_MIN <= i <= INT_MAX:
                raise TextError("INVALID_TEXT", "$int out of range")
            return i
        if k == "$float":
            table = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
            if not isinstance(v, str) or v not in table:
                raise TextError("INVALID_TEXT", "bad $float")
            return table[v]
        if k == "$bytes":
            import base64
            import binascii
            try:
                raw = base64.b64decode(v.encode("ascii"), validate=True)
            except (binascii.Error, TypeError, AttributeError, UnicodeEncodeError, ValueError):
                raise TextError("INVALID_TEXT", "bad base64")
            # SPEC.md §12.1 rule 4: padded, unused bits zero: only the canonical spelling
            if base64.b64encode(raw).decode("ascii") != v:
                raise TextError("INVALID_TEXT", "bad base64 (padding or unused bits)")
            return Bytes(raw)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise TextError("INVALID_TEXT", "bad handle index")
        if k == "$channel":  # SPEC.md §18.2 rule 3
            if not 1 <= v <= MAX_CHANNEL_ID:
                raise TextError("INVALID_TEXT", "a channel id is in 1..2^31-1")
            return Channel(v)
        return Handle(1 if k == "$fd" else 2, v)
    items = []
    seen = set()
    for k, v in pairs:
        _utf8(k)
        if k.startswith("$$"):
            k = k[1:]
        elif k.startswith("$"):
            raise TextError("INVALID_TEXT", "bad $ key %r" % k)
        if k in seen:
            raise TextError("DUPLICATE_KEY", "duplicate key %r" % k)
        if "\x00" in k:
            raise TextError("INVALID_KEY", "map key contains U+0000")
        seen.add(k)
        items.append((k, _conv(v, depth + 1)))
    return Map(items)


_JTOK = re.compile(r"""[ \t\n\r]*(?:([\[{])|([\]}])|(,)|(:)|("(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*")"""
                   r"""|(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null))""")


def json_syntax_ok(text):
    """RFC 8259's grammar for one document, without recursion (SPEC.md §12.4
    rule 4: the document is parsed as JSON first, whatever its depth)."""
    stack = []
    pos = 0
    want = "value"
    while True:
        m = _JTOK.match(text, pos)
        if not m:
            return False
        pos = m.end()
        opened, closed, comma, colon, string, scalar = m.groups()
        if want in ("value", "value_or_close") and (opened or string or scalar):
            if opened:
                stack.append(opened)
                want = "value_or_close" if opened == "[" else "key_or_close"
                continue
        elif want in ("key", "key_or_close") and string:
            want = "colon"
            continue
        elif want == "colon" and colon:
            want = "value"
            continue
        elif want == "comma_or_close" and comma:
            want = "value" if stack[-1] == "[" else "key"
            continue
        elif want in ("value_or_close", "key_or_close", "comma_or_close") and closed \
                and closed == ("]" if stack[-1] == "[" else "}"):
            stack.pop()
        else:
            return False
        if not stack:
            return text[pos:].strip(" \t\n\r") == ""
        want = "comma_or_close"


def _max_depth(text):
    d = m = 0
    instr = esc = False
    for ch in text:
        if instr:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                instr = False
        elif ch == '"':
            instr = True
        elif ch in "[{":
            d += 1
            m = max(m, d)
        elif ch in "]}":
            d -= 1
    return m


def parse_text(s):
    """The text form (SPEC.md §12) -> a value; TextError with the NAME of §12.4:
    INVALID_JSON first (the document is parsed as JSON), then the first fault in
    document order (INVALID_TEXT, INVALID_UTF8, DUPLICATE_KEY, INVALID_KEY,
    DEPTH_EXCEEDED)."""
    if not json_syntax_ok(s):
        raise TextError("INVALID_JSON", "not RFC 8259 JSON")
    if _max_depth(s) > 500:
        # valid JSON too deep for the json module: deeper than any value
        raise TextError("DEPTH_EXCEEDED", "nested deeper than %d" % HARD_LIMITS["max_depth"])
    j = json.loads(s, object_pairs_hook=lambda pairs: ("__obj__", pairs))
    return _conv(j)


def render_float(f):
    if math.isnan(f):
        return '{"$float":"NaN"}'
    if math.isinf(f):
        return '{"$float":"Infinity"}' if f > 0 else '{"$float":"-Infinity"}'
    if f == 0:
        return "-0.0" if math.copysign(1, f) < 0 else "0.0"
    sign = "-" if f < 0 else ""
    from decimal import Decimal
    t = Decimal(repr(abs(f))).as_tuple()  # repr: shortest round-trip digits
    digits = "".join(str(d) for d in t.digits).lstrip("0")
    exp = t.exponent
    while digits.endswith("0"):
        digits = digits[:-1]
        exp += 1
    # value = digits * 10^exp = 0.digits * 10^n (ECMAScript Number::toString)
    n = len(digits) + exp
    k = len(digits)
    if k <= n <= 21:
        s = digits + "0" * (n - k)
    elif 0 < n <= 21:
        s = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        s = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        es = ("+" if e >= 0 else "-") + str(abs(e))
        s = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + es
    if "." not in s and "e" not in s:
        s += ".0"
    return sign + s


def render_str(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20:
            out.append({8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t"}.get(o, "\\u%04x" % o))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def render_text(v):
    import base64
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        if -SAFE <= v <= SAFE:
            return str(v)
        return '{"$int":"%d"}' % v
    if isinstance(v, float):
        return render_float(v)
    if isinstance(v, str):
        return render_str(v)
    if isinstance(v, Bytes):
        return '{"$bytes":"%s"}' % base64.b64encode(v.b).decode()
    if isinstance(v, Handle):
        return '{"%s":%d}' % ("$fd" if v.kind == 1 else "$conn", v.index)
    if isinstance(v, Channel):
        return '{"$channel":%d}' % v.id
    if isinstance(v, list):
        return "[" + ",".join(render_text(x) for x in v) + "]"
    if isinstance(v, Map):
        parts = []
        for k, x in v.items:
            if k.startswith("$"):
                k = "$" + k
            parts.append(render_str(k) + ":" + render_text(x))
        return "{" + ",".join(parts) + "}"
    raise TypeError(repr(v))


def handles_in(v, out=None):
    """Handles of a value in depth-first, front-to-back order."""
    if out is None:
        out = []
    if isinstance(v, Handle):
        out.append(v)
    elif isinstance(v, list):
        for x in v:
            handles_in(x, out)
    elif isinstance(v, Map):
        for _, x in v.items:
            handles_in(x, out)
    return out


def channels_in(v, out=None):
    """Channel handles of a value in walk order."""
    if out is None:
        out = []
    if isinstance(v, Channel):
        out.append(v)
    elif isinstance(v, list):
        for x in v:
            channels_in(x, out)
    elif isinstance(v, Map):
        for _, x in v.items:
            channels_in(x, out)
    return out


# --------------------------------------------------------------------------
# Reference decoder: SPEC.md §9.3 precedence, §7.3 algorithm.

DEFAULT_LIMITS = {"max_payload": 16 * 1024 * 1024, "max_handles": 64, "max_depth": 32}
HARD_LIMITS = {"max_payload": 1 << 30, "max_handles": 253, "max_depth": 32}
CANON_NAN = 0x7FF8000000000000


class DecodeError(Exception):
    def __init__(self, name):
        Exception.__init__(self, name)
        self.name = name


# field number -> (wire type, repeated, type)
SCHEMA = {
    "Value": {1: (2, False, "Null"), 2: (0, False, "bool"), 3: (0, False, "sint64"),
              4: (1, False, "double"), 5: (2, False, "string"), 6: (2, False, "bytes"),
              7: (2, False, "List"), 8: (2, False, "Map"), 9: (2, False, "Handle")},
    "Null": {},
    "List": {1: (2, True, "Value")},
    "Map": {1: (2, True, "Entry")},
    "Entry": {1: (2, False, "key"), 2: (2, False, "Value")},
    "Handle": {1: (0, False, "uint64"), 2: (0, False, "uint64")},
    "Channel": {1: (0, False, "uint64")},
}
# Revision 1.1 where `channels` is accepted (SPEC.md §18.2 rule 2): Value field 10.
SCHEMA_11 = dict(SCHEMA)
SCHEMA_11["Value"] = dict(SCHEMA["Value"])
SCHEMA_11["Value"][10] = (2, False, "Channel")


def _varint(buf, pos, end):
    """Returns (value, newpos, minimal) or raises MALFORMED."""
    val = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise DecodeError("MALFORMED")
        b = buf[pos]
        pos += 1
        n = pos - start
        if n == 10 and b > 1:
            raise DecodeError("MALFORMED")
        val |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
        if n == 10:
            raise DecodeError("MALFORMED")
    minimal = (pos - start == 1) or buf[pos - 1] != 0
    return val, pos, minimal


def valid_utf8(b):
    try:
        b.decode("utf-8", errors="strict")  # Python's codec follows RFC 3629
        return True
    except UnicodeDecodeError:
        return False


class _Walker:
    def __init__(self, payload, handle_count, max_depth, channels=False):
        self.schema = SCHEMA_11 if channels else SCHEMA
        self.channels = []  # channel handles in walk order
        self.p = payload
        self.n = handle_count
        self.max_depth = max_depth
        self.prev_index = -1
        self.refs = []
        self.maps = []

    def message(self, typ, start, end, depth):
        fields = {}
        prev = 0
        pos = start
        members = 0
        items = []
        while pos < end:
            # step 1
            tag, pos2, minimal = _varint(self.p, pos, end)
            if tag > 0xFFFFFFFF:
                raise DecodeError("MALFORMED")
            if not minimal:
                raise DecodeError("NONCANONICAL")
            pos = pos2
            num, wt = tag >> 3, tag & 7
            # step 2
            if num == 0 or wt in (3, 4, 6, 7):
                raise DecodeError("MALFORMED")
            # step 3
            spec = self.schema[typ].get(num)
            if spec is None:
                raise DecodeError("UNKNOWN_FIELD")
            fwt, repeated, ftype = spec
            # step 4
            if wt != fwt:
                raise DecodeError("MALFORMED")
            # step 5
            if num < prev or (num == prev and not repeated) or (typ == "Value" and members >= 1):
                raise DecodeError("NONCANONICAL")
            prev = num
            # step 6
            if wt == 0:
                val, pos, minimal = _varint(self.p, pos, end)
                if not minimal:
                    raise DecodeError("NONCANONICAL")
            elif wt == 1:
                if pos + 8 > end:
                    raise DecodeError("MALFORMED")
                val = struct.unpack_from("<Q", self.p, pos)[0]
                pos += 8
            else:
                ln, pos, minimal = _varint(self.p, pos, end)
                if not minimal:
                    raise DecodeError("NONCANONICAL")
                if ln > end - pos:
                    raise DecodeError("MALFORMED")
                sub = (pos, pos + ln)
                pos += ln
            # step 7
            if typ == "Value":
                members += 1
                fields["v"] = self.value_member(num, val if wt != 2 else sub, depth)
            elif typ == "List":
                self.check_depth(depth + 1)
                items.append(self.message("Value", sub[0], sub[1], depth + 1))
            elif typ == "Map":
                items.append(self.message("Entry", sub[0], sub[1], depth))
            elif typ == "Entry":
                if num == 1:
                    kb = bytes(self.p[sub[0]:sub[1]])
                    if not valid_utf8(kb):
                        raise DecodeError("INVALID_UTF8")
                    if len(kb) == 0:
                        raise DecodeError("NONCANONICAL")
                    if b"\x00" in kb:
                        raise DecodeError("INVALID_KEY")
                    fields["key"] = kb.decode()
                else:
                    self.check_depth(depth + 1)
                    fields["value"] = self.message("Value", sub[0], sub[1], depth + 1)
            elif typ == "Handle":
                if val == 0:
                    raise DecodeError("NONCANONICAL")
                fields["index" if num == 1 else "kind"] = val
            elif typ == "Channel":
                if val == 0:  # step 7: Channel.id present with value 0
                    raise DecodeError("NONCANONICAL")
                fields["id"] = val
        # step 8
        if typ == "Value":
            if "v" not in fields:
                raise DecodeError("EMPTY_VALUE")
            return fields["v"]
        if typ == "Null":
            return None
        if typ == "List":
            return items
        if typ == "Map":
            m = Map([(k, v) for k, v in items])
            self.maps.append(m)
            return m
        if typ == "Entry":
            if "value" not in fields:
                raise DecodeError("EMPTY_VALUE")
            return (fields.get("key", ""), fields["value"])
        if typ == "Handle":
            kind = fields.get("kind", 0)
            idx = fields.get("index", 0)
            if kind not in (1, 2):
                raise DecodeError("UNKNOWN_HANDLE_KIND")
            if idx >= self.n:
                raise DecodeError("HANDLE_INDEX_OUT_OF_RANGE")
            if idx <= self.prev_index:
                raise DecodeError("HANDLE_INDEX_OUT_OF_ORDER")
            self.prev_index = idx
            h = Handle(kind, idx)
            self.refs.append(h)
            return h
        if typ == "Channel":  # step 8, SPEC.md §18.2 rule 2
            cid = fields.get("id", 0)
            if cid == 0 or cid > MAX_CHANNEL_ID:
                raise DecodeError("UNKNOWN_CHANNEL")
            ch = Channel(cid)
            self.channels.append(ch)
            return ch
        raise AssertionError(typ)

    def check_depth(self, d):
        if d > self.max_depth:
            raise DecodeError("DEPTH_EXCEEDED")

    def value_member(self, num, val, depth):
        if num == 1:
            return self.message("Null", val[0], val[1], depth)
        if num == 2:
            if val > 1:
                raise DecodeError("NONCANONICAL")
            return bool(val)
        if num == 3:
            v = (val >> 1) ^ -(val & 1)
            return v
        if num == 4:
            f = struct.unpack("<d", struct.pack("<Q", val))[0]
            if math.isnan(f) and val != CANON_NAN:
                raise DecodeError("NONCANONICAL")
            return f
        if num in (5, 6):
            b = bytes(self.p[val[0]:val[1]])
            if num == 5:
                if not valid_utf8(b):
                    raise DecodeError("INVALID_UTF8")
                return b.decode()
            return Bytes(b)
        if num == 7:
            return self.message("List", val[0], val[1], depth)
        if num == 8:
            return self.message("Map", val[0], val[1], depth)
        if num == 9:
            return self.message("Handle", val[0], val[1], depth)
        if num == 10:
            return self.message("Channel", val[0], val[1], depth)
        raise AssertionError(num)


CONTROL, END = 0x01, 0x02          # flags bits of revision 1.1 (SPEC.md §17.1)
CRITICAL_RESERVED = 0x0C


def decode_frame(buf, objects, limits=None, revision="1.0", post_walk=None):
    """Decode one frame. objects: the object names of the delivered descriptors
    (table order). Returns (value, consumed); raises DecodeError.
    revision "1.1": as a decoder that has the peer's HELLO and accepts `channels`
    (SPEC.md §9.3 note: item 6 becomes the flag checks of §17.1 rule 1, then the
    channel checks of §18.1 rule 2; Value field 10 is known, §18.2).  post_walk(w,
    value, flags) runs after the walk, before UNREFERENCED_HANDLE (a control
    frame's checks)."""
    return decode_frame_ex(buf, objects, limits, revision, post_walk)[:2]


def parse_header(buf):
    version, flags, nh, channel, plen = struct.unpack_from("<BBHII", buf, 4)
    return version, flags, nh, channel, plen


def decode_frame_ex(buf, objects, limits=None, revision="1.0", post_walk=None):
    """decode_frame, also returning the walker (channel handles in walk order)."""
    lim = dict(DEFAULT_LIMITS)
    if limits:
        lim.update(limits)
    if len(buf) < 16:
        raise DecodeError("TRUNCATED")
    if bytes(buf[0:4]) != b"CHAN":
        raise DecodeError("BAD_MAGIC")
    version, flags, nh, channel, plen = parse_header(buf)
    if version != 1:
        raise DecodeError("UNSUPPORTED_VERSION")
    if plen > lim["max_payload"]:
        raise DecodeError("PAYLOAD_TOO_LARGE")
    if len(buf) - 16 < plen:
        raise DecodeError("TRUNCATED")
    if revision == "1.1":
        if flags & CRITICAL_RESERVED or (flags & END and channel == 0):
            raise DecodeError("RESERVED_FIELD_NONZERO")
        if channel == 0x80000000:
            raise DecodeError("UNKNOWN_CHANNEL")
    elif flags != 0 or channel != 0:
        raise DecodeError("RESERVED_FIELD_NONZERO")
    if nh > lim["max_handles"]:
        raise DecodeError("HANDLE_LIMIT_EXCEEDED")
    if len(objects) < nh:
        raise DecodeError("TOO_FEW_HANDLES")
    if len(objects) > nh:
        raise DecodeError("TOO_MANY_HANDLES")
    w = _Walker(bytes(buf[16:16 + plen]), nh, lim["max_depth"], channels=revision == "1.1")
    value = w.message("Value", 0, plen, 1)
    if post_walk:
        post_walk(w, value, flags)
    if len(w.refs) < nh:
        raise DecodeError("UNREFERENCED_HANDLE")
    for m in w.maps:
        keys = [k for k, _ in m.items]
        if len(set(keys)) != len(keys):
            raise DecodeError("DUPLICATE_KEY")
    for h in w.refs:
        if h.kind == 2 and objects[h.index] not in CONN_OBJECTS:
            raise DecodeError("WRONG_HANDLE_KIND")
    return value, 16 + plen, w


# --------------------------------------------------------------------------
# Reference receiver of revision 1.1 (SPEC.md §16-§18) for the frames a runner
# writes on a connection: what each receive returns.

ERROR_CODES = {}  # code -> NAME, filled by vecheck from spec/errors.tsv


def split_frames(buf):
    """The frames of a byte string written back to back (by payload_length)."""
    out = []
    pos = 0
    while pos < len(buf):
        plen = struct.unpack_from("<I", buf, pos + 12)[0]
        out.append(bytes(buf[pos:pos + 16 + plen]))
        pos += 16 + plen
    return out


def _mget(m, key):
    for k, v in m.items:
        if k == key:
            return v
    return None


def _hello(v):
    """(features, require) of a well-formed HELLO (SPEC.md §16.2 rules 1, 5), else None."""
    if not isinstance(v, Map) or not v.items or v.items[0] != ("op", "hello"):
        return None
    feats = _mget(v, "features")
    req = _mget(v, "require")
    if not isinstance(feats, Map):
        return None
    if req is None:
        req = []
    if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
        return None
    return [k for k, p in feats.items if isinstance(p, Map)], req


IMPLEMENTED = ("epitaph", "channels")


def receive11(frames, objects, limits=None, max_channels=1 << 20):
    """Outcomes of a 1.1 receiver (implementing every feature) fed `frames`;
    objects are delivered with the last frame.  Returns a list with one entry per
    frame a receive reports: ("value", v) or ("error", NAME); consumed control
    frames report nothing.  Stops after a fatal outcome."""
    agreed = False
    peer_max = 0
    open_count = 0
    out = []
    for n, f in enumerate(frames):
        objs = objects if n == len(frames) - 1 else []
        _v, flags, nh, channel, _p = parse_header(f)
        if not agreed:
            if flags or channel:  # §16.2 rule 2: only a well-formed HELLO is more than 1.0
                try:
                    if flags & 0x0F != CONTROL or channel or nh or objs:
                        raise DecodeError("x")
                    hv, _ = decode_frame(f, [], limits, "1.1")
                    h = _hello(hv)
                except DecodeError:
                    h = None
                if h is not None:
                    agreed = True
                    unmet = [r for r in h[1] if r not in IMPLEMENTED]
                    if unmet:
                        out.append(("error", "UNSUPPORTED_FEATURE"))
                        return out
                    continue
            try:
                out.append(("value", decode_frame(f, objs, limits)[0]))
            except DecodeError as e:
                out.append(("error", e.name))
            continue
        # agreed: §17.1 rule 1, §18.4, §17.2, §18.3
        if channel and channel != 0x80000000:
            cid = channel & 0x7FFFFFFF
            if channel & 0x80000000 or cid > peer_max:  # the receiver opened none
                if not flags & CRITICAL_RESERVED and not (flags & END and not channel):
                    out.append(("error", "UNKNOWN_CHANNEL"))
                    continue

        def control_checks(w, v, fl):
            if not fl & CONTROL:
                return
            is_op = isinstance(v, Map) and v.items and v.items[0][0] == "op" and isinstance(v.items[0][1], str)
            if is_op and fl & END and v.items[0][1] != "close":
                raise DecodeError("RESERVED_FIELD_NONZERO")
            if not is_op or w.n:
                raise DecodeError("UNSUPPORTED_FEATURE")
        try:
            v, _, w = decode_frame_ex(f, objs, limits, "1.1", control_checks)
        except DecodeError as e:
            out.append(("error", e.name))
            continue
        if flags & CONTROL:
            op = v.items[0][1]
            if op == "hello":
                if channel or _hello(v) is None:
                    out.append(("error", "UNSUPPORTED_FEATURE"))
                continue  # a second HELLO is ignored
            if op == "epitaph":
                if channel:
                    out.append(("error", "UNSUPPORTED_FEATURE"))
                    continue
                code = _mget(v, "code")
                ok = isinstance(code, int) and not isinstance(code, bool) and 1 <= code <= 255
                out.append(("error", ERROR_CODES.get(code, "CODE_%s" % code) if ok else "CONNECTION_CLOSED"))
                return out
            if op == "close":
                if not channel or not flags & END:
                    out.append(("error", "UNSUPPORTED_FEATURE"))
                continue
            if _mget(v, "critical") is True:
                out.append(("error", "UNSUPPORTED_FEATURE"))
            continue
        running = peer_max
        err = None
        for k, ch in enumerate(w.channels, 1):
            if ch.id <= running:
                err = "UNKNOWN_CHANNEL"
                break
            running = ch.id
            if open_count + k > max_channels:
                err = "CHANNEL_LIMIT_EXCEEDED"
                break
        if err:
            peer_max = max(peer_max, max(c.id for c in w.channels))
            out.append(("error", err))
            continue
        peer_max = running
        open_count += len(w.channels)
        out.append(("value", v))
    return out


def depth_of(v):
    if isinstance(v, list):
        return 1 + max([depth_of(x) for x in v] or [0])
    if isinstance(v, Map):
        return 1 + max([depth_of(x) for _, x in v.items] or [0])
    return 1


def encode_check(value, objects):
    """Encoder-side refusals (SPEC.md §8): returns an error NAME or None."""
    hs = handles_in(value)
    if len(hs) > HARD_LIMITS["max_handles"]:
        return "HANDLE_LIMIT_EXCEEDED"
    if depth_of(value) > HARD_LIMITS["max_depth"]:
        return "DEPTH_EXCEEDED"
    for h in hs:
        if h.index >= len(objects):
            return "INVALID_ARGUMENT"
        if h.kind == 2 and objects[h.index] not in CONN_OBJECTS:
            return "WRONG_HANDLE_KIND"
    return None
