#!/usr/bin/python3
"""vecgen: writes conformance/vectors/*.vec.

Every byte is computed here, from the rules of SPEC.md
(§5-§8), by a small annotated encoder that knows nothing of libchan.
vecheck.py then re-verifies every file independently (Google's protobuf
runtime for the payload bytes, a reference decoder for every verdict).

Usage: vecgen.py [OUTDIR]   (default: conformance/vectors next to this file)
"""

import math
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chanvec import Bytes, Channel, Handle, Map, render_text  # noqa: E402

# --------------------------------------------------------------------------
# Annotated encoding: a "line" is (bytes, comment, indent).


def vint(n):
    assert n >= 0
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zz(i):
    return (i << 1) ^ (i >> 63) if i < 0 else i << 1


def tag(num, wt):
    return vint((num << 3) | wt)


def blen(lines):
    return sum(len(b) for b, _, _ in lines)


def indent(lines, n=1):
    return [(b, c, i + n) for b, c, i in lines]


def data_lines(b, what):
    """Split raw data into lines of at most 16 bytes, each with its own comment."""
    out = []
    for off in range(0, len(b), 16):
        chunk = b[off:off + 16]
        cm = what + " " + qstr(chunk) if what else ("bytes %d-%d" % (off, off + len(chunk) - 1))
        if len(b) > 16:
            cm += " [%d..%d]" % (off, off + len(chunk) - 1)
        out.append((chunk, cm, 0))
    return out


def qstr(b):
    s = ""
    for ch in b:
        s += chr(ch) if 0x20 <= ch < 0x7F and ch not in (0x22, 0x5C) else "\\x%02x" % ch
    return '"' + s + '"'


VALUE_FIELDS = {1: "null_value", 2: "bool_value", 3: "int_value", 4: "float_value",
                5: "string_value", 6: "bytes_value", 7: "list_value", 8: "map_value",
                9: "handle_value"}


def enc_value(v):
    """Lines of a Value message body."""
    if v is None:
        return [(tag(1, 2) + vint(0), "Value.null_value (1:LEN) len 0 = Null{}", 0)]
    if v is True or v is False:
        return [(tag(2, 0) + vint(int(v)), "Value.bool_value (2:VARINT) = %s" % str(v).lower(), 0)]
    if isinstance(v, int):
        return [(tag(3, 0) + vint(zz(v)), "Value.int_value (3:VARINT) zigzag(%d) = %d" % (v, zz(v)), 0)]
    if isinstance(v, float):
        bits = struct.unpack("<Q", struct.pack("<d", v))[0]
        if math.isnan(v):
            bits = 0x7FF8000000000000
        return [(tag(4, 1), "Value.float_value (4:I64)", 0),
                (struct.pack("<Q", bits), "binary64 0x%016x = %s" % (bits, render_text(v)), 1)]
    if isinstance(v, str):
        b = v.encode("utf-8")
        return [(tag(5, 2) + vint(len(b)), "Value.string_value (5:LEN) len %d" % len(b), 0)] + \
            indent(data_lines(b, "UTF-8"))
    if isinstance(v, Bytes):
        return [(tag(6, 2) + vint(len(v.b)), "Value.bytes_value (6:LEN) len %d" % len(v.b), 0)] + \
            indent(data_lines(v.b, None))
    if isinstance(v, list):
        body = []
        for i, x in enumerate(v):
            sub = enc_value(x)
            body.append((tag(1, 2) + vint(blen(sub)), "List.items[%d] (1:LEN) len %d" % (i, blen(sub)), 0))
            body += indent(sub)
        return [(tag(7, 2) + vint(blen(body)), "Value.list_value (7:LEN) len %d" % blen(body), 0)] + indent(body)
    if isinstance(v, Map):
        body = []
        for i, (k, x) in enumerate(v.items):
            ent = enc_entry(k, x)
            body.append((tag(1, 2) + vint(blen(ent)), "Map.entries[%d] (1:LEN) len %d" % (i, blen(ent)), 0))
            body += indent(ent)
        return [(tag(8, 2) + vint(blen(body)), "Value.map_value (8:LEN) len %d" % blen(body), 0)] + indent(body)
    if isinstance(v, Handle):
        body = enc_handle(v.index, v.kind)
        return [(tag(9, 2) + vint(blen(body)), "Value.handle_value (9:LEN) len %d" % blen(body), 0)] + indent(body)
    if isinstance(v, Channel):
        body = [(tag(1, 0) + vint(v.id), "Channel.id (1:VARINT) = %d" % v.id, 0)]
        return [(tag(10, 2) + vint(blen(body)), "Value.channel_value (10:LEN) len %d" % blen(body), 0)] + indent(body)
    raise TypeError(repr(v))


def enc_entry(k, x):
    kb = k.encode("utf-8")
    out = []
    if kb:
        out.append((tag(1, 2) + vint(len(kb)), "Entry.key (1:LEN) len %d" % len(kb), 0))
        out += indent(data_lines(kb, "UTF-8"))
    sub = enc_value(x)
    out.append((tag(2, 2) + vint(blen(sub)), "Entry.value (2:LEN) len %d" % blen(sub), 0))
    out += indent(sub)
    return out


def enc_handle(index, kind):
    out = []
    if index:
        out.append((tag(1, 0) + vint(index), "Handle.index (1:VARINT) = %d" % index, 0))
    out.append((tag(2, 0) + vint(kind), "Handle.kind (2:VARINT) = %d (%s)" % (
        kind, {1: "fd", 2: "conn"}.get(kind, "unregistered")), 0))
    return out


FLAG_NAMES = {0x01: "CONTROL", 0x02: "END", 0x04: "reserved critical", 0x08: "reserved critical",
              0x10: "reserved optional", 0x80: "reserved optional"}


R11_COMMENTS = [False]  # revision 1.1 names in header comments (revision11.vec only)


def flags_comment(flags):
    if not flags or not R11_COMMENTS[0]:
        return "flags 0x%02x" % flags
        return "flags 0x00"
    return "flags 0x%02x (%s)" % (flags, ", ".join(FLAG_NAMES.get(1 << b, "bit %d" % b)
                                                  for b in range(8) if flags & (1 << b)))


def channel_comment(channel):
    if not channel or not R11_COMMENTS[0]:
        return "channel %d" % channel
    if channel & 0x80000000:
        return "channel 0x%08x (id %d, opened by the receiver)" % (channel, channel & 0x7FFFFFFF)
    return "channel %d (opened by the sender)" % channel


def header(plen, nh=0, magic=b"CHAN", version=1, flags=0, channel=0):
    return [
        (magic, "magic " + qstr(magic), 0),
        (bytes([version]), "version %d" % version, 0),
        (bytes([flags]), flags_comment(flags), 0),
        (struct.pack("<H", nh), "handle_count %d" % nh, 0),
        (struct.pack("<I", channel), channel_comment(channel), 0),
        (struct.pack("<I", plen), "payload_length %d" % plen, 0),
    ]


def R(hexstr, comment, ind=0):
    """A raw line, for payloads no encoder would write."""
    return (bytes.fromhex(hexstr), comment, ind)


# --------------------------------------------------------------------------
# Cases

FILES = {}
ORDER = ["framing", "versions", "scalars", "strings", "floats", "containers",
         "handles", "limits", "canonical", "unknown_fields", "transport", "revision11", "large"]
TITLES = {
    "framing": "frame header, boundaries, truncation, trailing bytes, error precedence (SPEC.md §5, §9.3)",
    "versions": "the version byte and reserved header fields (SPEC.md §5.2, §14)",
    "scalars": "null, bool, int (SPEC.md §4.1, §7.2)",
    "strings": "strings (UTF-8, RFC 3629) and bytes (SPEC.md §4.1, §7.2, §12)",
    "floats": "IEEE binary64, -0, infinities, the one NaN (SPEC.md §4.1, §7.2, §12)",
    "containers": "lists and maps: order, keys, entries, duplicate keys (SPEC.md §4.1, §7)",
    "handles": "handle values, the handle table, kinds (SPEC.md §4.2, §6)",
    "limits": "payload bytes, handles per frame, nesting depth: at and one past (SPEC.md §8)",
    "canonical": "the canonical encoding and the decoding algorithm step by step (SPEC.md §7.2, §7.3)",
    "unknown_fields": "field numbers the schema does not define (SPEC.md §7.3 step 3)",
    "transport": "frames over a real AF_UNIX stream connection (SPEC.md §10)",
    "large": "frames of several hundred KiB or MiB: a partial send with descriptors, nesting far past the limit "
             "(SPEC.md §7.3, §10.2, §15)",
    "revision11": "revision 1.1: HELLO, control frames, epitaphs, channels, read-ahead (SPEC.md §10.3, §16-§18)",
}


def add(file, name, kind, sections, *, value=None, payload=None, handles=(), limits=None,
        error=None, hdr=None, trailing=None, transport=None, note=None, canonical=None,
        handle_ranges=None, no_bytes=False, raw_text=None, revision=None, frames=None):
    """payload: list of lines (None: encode value). hdr: header overrides.
    trailing: extra lines after the payload (beyond payload_length)."""
    assert name.startswith(file + "."), name
    c = {"name": name, "kind": kind, "sections": sections, "handles": list(handles),
         "limits": limits or {}, "error": error, "transport": transport, "note": note,
         "handle_ranges": handle_ranges, "revision": revision}
    if value is not None or kind in ("success", "decode_success", "encode_failure"):
        c["value"] = value
        c["value_text"] = render_text(value) if raw_text is None else raw_text
    if frames is not None:
        c["lines"] = [ln for fr in frames for ln in fr]
    elif kind != "encode_failure" and not no_bytes:
        if payload is None:
            payload = enc_value(value)
        h = dict(hdr or {})
        if "plen" not in h:
            h["plen"] = blen(payload)
        if "nh" not in h:
            h["nh"] = len(handles) if not handle_ranges else sum(n for n, _ in handle_ranges)
        full = header(**h) + payload + (trailing or [])
        if "cut" in c["limits"]:
            raise AssertionError
        c["lines"] = full
    if canonical is not None:
        c["canonical"] = canonical
    FILES.setdefault(file, []).append(c)
    return c


def cut(lines, n):
    """The first n bytes of a line list."""
    out = []
    for b, cm, i in lines:
        if n <= 0:
            break
        if len(b) <= n:
            out.append((b, cm, i))
            n -= len(b)
        else:
            out.append((b[:n], cm + " (cut after %d of %d bytes)" % (n, len(b)), i))
            n = 0
    return out


def frame_lines(value, nh=None):
    p = enc_value(value)
    return header(blen(p), len(handles_of(value)) if nh is None else nh) + p


def handles_of(v):
    from chanvec import handles_in
    return handles_in(v)


def M(*pairs):
    return Map(list(pairs))


def fd(i):
    return Handle(1, i)


def conn(i):
    return Handle(2, i)


def nest_list(n, inner):
    v = inner
    for _ in range(n):
        v = [v]
    return v


def nest_map(n, inner, key="a"):
    v = inner
    for _ in range(n):
        v = M((key, v))
    return v


def build():
    # ---------------------------------------------------------------- framing
    F = "framing"
    add(F, "framing.minimal.null", "success", ["5.1", "5.4", "7.2"], value=None,
        note="the smallest valid frame: 16-byte header, payload Value{null_value: Null{}}")
    add(F, "framing.minimal.int_zero", "success", ["5.1", "7.2"], value=0,
        note="int 0 is emitted (18 00): a Value always has its member")
    add(F, "framing.example.reply_to", "success", ["5.4", "6.1", "12"],
        value=M(("reply_to", conn(0))), handles=["conn"],
        note="the example of SPEC.md Appendix A: {\"reply_to\":{\"$conn\":0}}")
    add(F, "framing.payload_length.little_endian", "success", ["5.1", "5.2"], value="x" * 300,
        note="payload_length 303 = 2f 01 00 00: a big-endian reader sees a huge length")
    whole = frame_lines(None)
    add(F, "framing.truncated.one_byte", "decode_failure", ["5.3", "9.3"], error="TRUNCATED",
        payload=[], hdr=None, no_bytes=True)
    FILES[F][-1]["lines"] = cut(whole, 1)
    add(F, "framing.truncated.header_15_bytes", "decode_failure", ["5.3", "9.3"], error="TRUNCATED",
        no_bytes=True)
    FILES[F][-1]["lines"] = cut(whole, 15)
    add(F, "framing.truncated.header_only", "decode_failure", ["5.3"], error="TRUNCATED",
        no_bytes=True, note="payload_length 2 but no payload byte")
    FILES[F][-1]["lines"] = cut(whole, 16)
    add(F, "framing.truncated.payload_short", "decode_failure", ["5.3"], error="TRUNCATED",
        no_bytes=True, note="one payload byte of two")
    FILES[F][-1]["lines"] = cut(whole, 17)
    big = frame_lines(M(("k", Bytes(bytes(range(40))))))
    add(F, "framing.truncated.payload_one_short", "decode_failure", ["5.3"], error="TRUNCATED",
        no_bytes=True, note="the last payload byte is missing")
    FILES[F][-1]["lines"] = cut(big, blen(big) - 1)
    add(F, "framing.magic.lowercase", "decode_failure", ["5.2"], error="BAD_MAGIC",
        hdr={"magic": b"chan"}, payload=enc_value(None))
    add(F, "framing.magic.last_byte", "decode_failure", ["5.2"], error="BAD_MAGIC",
        hdr={"magic": b"CHAM"}, payload=enc_value(None))
    add(F, "framing.magic.zero", "decode_failure", ["5.2"], error="BAD_MAGIC",
        hdr={"magic": b"\0\0\0\0", "version": 0, "plen": 0}, payload=[],
        note="sixteen zero bytes")
    add(F, "framing.magic.http", "decode_failure", ["5.2"], error="BAD_MAGIC", no_bytes=True,
        note="a non-chan peer: an HTTP request line")
    FILES[F][-1]["lines"] = [(b"GET / HTTP/1.1\r\n", "ASCII \"GET / HTTP/1.1\\r\\n\"", 0)]
    add(F, "framing.magic.byte_swapped", "decode_failure", ["5.2"], error="BAD_MAGIC",
        hdr={"magic": b"NAHC"}, payload=enc_value(None))
    add(F, "framing.flags.bit0", "decode_failure", ["5.2", "9.2"], error="RESERVED_FIELD_NONZERO",
        hdr={"flags": 1}, payload=enc_value(None))
    add(F, "framing.flags.bit7", "decode_failure", ["5.2"], error="RESERVED_FIELD_NONZERO",
        hdr={"flags": 0x80}, payload=enc_value(None))
    add(F, "framing.channel.one", "decode_failure", ["5.2"], error="RESERVED_FIELD_NONZERO",
        hdr={"channel": 1}, payload=enc_value(None))
    add(F, "framing.channel.high_byte", "decode_failure", ["5.2"], error="RESERVED_FIELD_NONZERO",
        hdr={"channel": 0x01000000}, payload=enc_value(None))
    add(F, "framing.flags.with_handles", "decode_failure", ["5.2", "9.2", "4.3"],
        error="RESERVED_FIELD_NONZERO", hdr={"flags": 2}, value=None, handles=["pipe_read"],
        payload=enc_value(fd(0)), note="the frame's descriptor is closed by the receiver")
    add(F, "framing.empty_payload", "decode_failure", ["5.1", "7.3"], error="EMPTY_VALUE",
        payload=[], note="payload_length 0: a Value with no member")
    add(F, "framing.trailing.next_frame", "decode_success", ["5.3"], value=None,
        trailing=[(b, "next frame: " + c, i) for b, c, i in frame_lines(True)],
        canonical=frame_lines(None),
        note="a decoder reads exactly one frame: the bytes after payload_length are not its own")
    add(F, "framing.trailing.garbage", "decode_success", ["5.3"], value=7,
        trailing=[R("ff ff ff", "bytes after the frame (not read)")],
        canonical=frame_lines(7))
    # precedence (SPEC.md §9.3)
    P = "framing.precedence."
    add(F, P + "short_before_magic", "decode_failure", ["9.3", "5.3"], error="TRUNCATED", no_bytes=True,
        note="fewer than 16 bytes: TRUNCATED even though the magic is wrong")
    FILES[F][-1]["lines"] = [R("58 58 58 58", "not a magic (but the buffer is short)"),
                             R("01 00", "version 1, flags 0")]
    add(F, P + "magic_before_version", "decode_failure", ["9.3"], error="BAD_MAGIC",
        hdr={"magic": b"XHAN", "version": 9}, payload=enc_value(None))
    add(F, P + "version_before_payload_limit", "decode_failure", ["9.3"], error="UNSUPPORTED_VERSION",
        hdr={"version": 2, "plen": 100}, payload=[], limits={"max_payload": 64})
    add(F, P + "payload_limit_before_truncated", "decode_failure", ["9.3", "8.1"],
        error="PAYLOAD_TOO_LARGE", hdr={"plen": 65}, payload=[], limits={"max_payload": 64},
        note="the receiver refuses without reading the payload")
    add(F, P + "truncated_before_reserved", "decode_failure", ["9.3", "5.3"], error="TRUNCATED",
        hdr={"flags": 1, "plen": 4}, payload=enc_value(None))
    add(F, P + "reserved_before_handle_limit", "decode_failure", ["9.3"], error="RESERVED_FIELD_NONZERO",
        hdr={"channel": 5, "nh": 3}, payload=enc_value(None), limits={"max_handles": 2})
    add(F, P + "handle_limit_before_too_few", "decode_failure", ["9.3", "8.2"],
        error="HANDLE_LIMIT_EXCEEDED", hdr={"nh": 3}, payload=enc_value(None), limits={"max_handles": 2})
    add(F, P + "handle_limit_before_too_many", "decode_failure", ["9.3", "8.2"],
        error="HANDLE_LIMIT_EXCEEDED", hdr={"nh": 3}, handles=["pipe_read"] * 4,
        payload=enc_value(None), limits={"max_handles": 2})
    add(F, P + "too_few_before_payload", "decode_failure", ["9.3", "6.3"], error="TOO_FEW_HANDLES",
        hdr={"nh": 2}, handles=["pipe_read"], payload=[R("0a 05", "Value.null_value len 5 > range")])
    add(F, P + "too_many_before_payload", "decode_failure", ["9.3", "6.3"], error="TOO_MANY_HANDLES",
        hdr={"nh": 1}, handles=["pipe_read", "pipe_write"], payload=[R("0a 05", "Value.null_value len 5 > range")])
    add(F, P + "walk_before_unreferenced", "decode_failure", ["9.3", "7.3"], error="MALFORMED",
        hdr={"nh": 1}, handles=["memfd"], payload=[R("0a 05", "Value.null_value len 5 > range")])
    add(F, P + "unreferenced_before_duplicate_key", "decode_failure", ["9.3", "6.2"],
        error="UNREFERENCED_HANDLE", hdr={"nh": 1}, handles=["memfd"],
        payload=enc_value(M(("a", 1), ("a", 2))))
    add(F, P + "duplicate_key_before_wrong_kind", "decode_failure", ["9.3", "4.1"],
        error="DUPLICATE_KEY", handles=["pipe_read"],
        payload=enc_value(M(("a", conn(0)), ("a", 1))))
    add(F, P + "first_error_in_walk_order", "decode_failure", ["9.3", "7.3"], error="INVALID_UTF8",
        payload=[
            R("3a 09", "Value.list_value len 9"),
            R("0a 03", "List.items[0] len 3", 1), R("2a 01 ff", "Value.string_value len 1: ff (not UTF-8)", 2),
            R("0a 02", "List.items[1] len 2", 1), R("50 00", "Value field 10: unknown (later, loses)", 2)])
    add(F, P + "depth_before_inner_error", "decode_failure", ["9.3", "8.3"], error="DEPTH_EXCEEDED",
        payload=enc_value(nest_list(2, True))[:-1] + [R("10 02", "Value.bool_value = 2 at depth 3 (never reached)", 4)],
        limits={"max_depth": 2})
    add(F, P + "empty_value_before_duplicate_key", "decode_failure", ["9.3", "7.3"], error="EMPTY_VALUE",
        payload=[R("42 0e", "Value.map_value len 14"),
                 R("0a 05", "Map.entries[0] len 5", 1), R("0a 01 61", "Entry.key \"a\"", 2),
                 R("12 00", "Entry.value len 0: Value with no member", 2),
                 R("0a 05", "Map.entries[1] len 5", 1), R("0a 01 61", "Entry.key \"a\" (duplicate)", 2),
                 R("12 00", "Entry.value len 0", 2)])

    # ---------------------------------------------------------------- versions
    V = "versions"
    for ver in (0, 2, 255):
        add(V, "versions.version.%d" % ver, "decode_failure", ["5.2", "14"], error="UNSUPPORTED_VERSION",
            hdr={"version": ver}, payload=enc_value(None))
    add(V, "versions.version.2_short_payload", "decode_failure", ["5.2", "9.3", "14"],
        error="UNSUPPORTED_VERSION", hdr={"version": 2, "plen": 1000}, payload=enc_value(None),
        note="a later version may change framing: nothing after the version byte is interpreted")
    add(V, "versions.version.2_with_flags", "decode_failure", ["5.2", "14"], error="UNSUPPORTED_VERSION",
        hdr={"version": 2, "flags": 0xff, "channel": 7}, payload=enc_value(None))
    add(V, "versions.version.2_with_handles", "decode_failure", ["5.2", "14", "4.3"],
        error="UNSUPPORTED_VERSION", hdr={"version": 2}, handles=["pipe_read"], payload=enc_value(fd(0)),
        note="the descriptor that came with the rejected frame is closed")
    add(V, "versions.version.1_reserved_channel_max", "decode_failure", ["5.2", "14"],
        error="RESERVED_FIELD_NONZERO", hdr={"channel": 0xFFFFFFFF}, payload=enc_value(None),
        note="channel is reserved for multiplexing in a later version")
    add(V, "versions.version.1_reserved_flags_max", "decode_failure", ["5.2", "14"],
        error="RESERVED_FIELD_NONZERO", hdr={"flags": 0xff}, payload=enc_value(None))
    add(V, "versions.version.1_ok", "success", ["5.2", "14"], value="chan/1")
    add(V, "versions.handle_count.u16", "decode_failure", ["5.1", "8.2"], error="HANDLE_LIMIT_EXCEEDED",
        hdr={"nh": 256}, payload=enc_value(None),
        note="handle_count 256 (00 01 LE) is more than the default max_handles 64")

    # ---------------------------------------------------------------- scalars
    S = "scalars"
    add(S, "scalars.null", "success", ["4.1", "7.2"], value=None)
    add(S, "scalars.bool.true", "success", ["4.1", "7.2"], value=True)
    add(S, "scalars.bool.false", "success", ["4.1", "7.2"], value=False,
        note="false is emitted as 10 00, not omitted")
    ints = [("zero", 0), ("one", 1), ("minus_one", -1), ("63", 63), ("64", 64), ("minus_64", -64),
            ("minus_65", -65), ("300", 300), ("8191", 8191), ("8192", 8192),
            ("int32_max", 2**31 - 1), ("int32_min", -2**31), ("uint32_max", 2**32 - 1),
            ("safe_max", 2**53 - 1), ("safe_min", -(2**53 - 1)), ("safe_max_plus_1", 2**53),
            ("safe_min_minus_1", -2**53), ("int64_max", 2**63 - 1), ("int64_min", -2**63)]
    for nm, i in ints:
        add(S, "scalars.int." + nm, "success", ["4.1", "7.2", "12"], value=i)
    add(S, "scalars.bool.two", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("10 02", "Value.bool_value = 2 (only 0 and 1)")])
    add(S, "scalars.bool.255", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("10 ff 01", "Value.bool_value = 255")])
    add(S, "scalars.bool.nonminimal_zero", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("10 80 00", "Value.bool_value = 0 in two bytes")])
    # $int and bare ints that are JSON but not the text form (SPEC.md §12.1 rule 2) -> INVALID_TEXT
    for nm, txt in (("dollar_int_above_max", '{"$int":"9223372036854775808"}'),
                    ("dollar_int_below_min", '{"$int":"-9223372036854775809"}'),
                    ("dollar_int_minus_zero", '{"$int":"-0"}'),
                    ("dollar_int_plus", '{"$int":"+1"}'),
                    ("dollar_int_leading_zero", '{"$int":"01"}'),
                    ("dollar_int_negative_leading_zero", '{"$int":"-01"}'),
                    ("dollar_int_space", '{"$int":" 1"}'),
                    ("dollar_int_empty", '{"$int":""}'),
                    ("dollar_int_hex", '{"$int":"0x10"}'),
                    ("dollar_int_number", '{"$int":1}'),
                    ("bare_above_max", "9223372036854775808"),
                    ("bare_below_min", "-9223372036854775809")):
        add(S, "scalars.text." + nm, "encode_failure", ["12"], error="INVALID_TEXT", value="", raw_text=txt,
            note="JSON, but not the text form of an int (SPEC.md §12.1 rule 2, §12.4 rule 4)")
    add(S, "scalars.int.nonminimal_zero", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("18 80 00", "Value.int_value = 0 in two bytes")])
    add(S, "scalars.int.nonminimal_padded", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("18 82 80 80 00", "Value.int_value = 2 padded to four bytes")])
    add(S, "scalars.int.varint_11_bytes", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("18", "Value.int_value (3:VARINT)"),
                 R("ff ff ff ff ff ff ff ff ff ff 01", "eleven varint bytes", 1)])
    add(S, "scalars.int.varint_10th_byte_2", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("18", "Value.int_value (3:VARINT)"),
                 R("ff ff ff ff ff ff ff ff ff 02", "10th byte 02: more than 64 bits", 1)])
    add(S, "scalars.int.varint_past_end", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("18 80", "Value.int_value: the varint continues past the payload")])
    add(S, "scalars.int.missing_value", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("18", "Value.int_value tag, then the payload ends")])
    add(S, "scalars.null.with_field", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("0a 02", "Value.null_value len 2"), R("08 00", "Null has no field 1", 1)])
    add(S, "scalars.null.as_varint", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("08 00", "Value.null_value with wire type VARINT")])
    add(S, "scalars.bool.as_len", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("12 01 01", "Value.bool_value with wire type LEN")])
    add(S, "scalars.int.as_fixed64", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("19 00 00 00 00 00 00 00 00", "Value.int_value with wire type I64")])

    # ---------------------------------------------------------------- strings
    T = "strings"
    strs = [("empty", ""), ("ascii", "a"), ("two_byte", "h\u00e9llo"), ("three_byte", "\u20ac"),
            ("four_byte", "\U0001F600"), ("nul_inside", "a\u0000b"), ("max_scalar", "\U0010FFFF"),
            ("before_surrogates", "\uD7FF"), ("after_surrogates", "\uE000"), ("bom", "\uFEFF"),
            ("escapes", "\"\\/\n\r\t\b\f"), ("controls", "\u0001\u001f\u007f"),
            ("dollar", "$int"), ("long_300", "y" * 300)]
    for nm, s in strs:
        add(T, "strings.string." + nm, "success", ["4.1", "7.2", "12"], value=s)
    bad = [("lone_continuation", "80", "continuation byte without a lead"),
           ("overlong_nul", "c0 80", "overlong encoding of U+0000"),
           ("overlong_c1", "c1 bf", "overlong two-byte form"),
           ("overlong_three", "e0 80 af", "overlong three-byte form"),
           ("overlong_four", "f0 80 80 af", "overlong four-byte form"),
           ("surrogate_low", "ed a0 80", "U+D800 (surrogate)"),
           ("surrogate_high", "ed bf bf", "U+DFFF (surrogate)"),
           ("above_max", "f4 90 80 80", "U+110000 (> U+10FFFF)"),
           ("f5_lead", "f5 80 80 80", "lead byte f5"),
           ("ff_byte", "ff", "byte ff"),
           ("truncated_at_end", "61 e2 82", "three-byte sequence cut at the end"),
           ("truncated_in_middle", "e2 28 a1", "three-byte sequence broken by ASCII")]
    for nm, hx, why in bad:
        n = len(bytes.fromhex(hx))
        add(T, "strings.invalid_utf8." + nm, "decode_failure", ["4.1", "7.3"], error="INVALID_UTF8",
            payload=[R("2a %02x" % n, "Value.string_value len %d" % n), R(hx, why, 1)])
    for nm, b in [("empty", b""), ("one", b"\x00"), ("two", b"\x00\xff"), ("three", b"abc"),
                  ("not_utf8", b"\xff\xfe\xc0\x80"), ("all_256", bytes(range(256)))]:
        add(T, "strings.bytes." + nm, "success", ["4.1", "7.2", "12"], value=Bytes(b))
    add(T, "strings.text.lone_surrogate", "encode_failure", ["12", "4.1"], error="INVALID_UTF8",
        value="", raw_text='"\\ud800"', note="text input: a \\u escape that yields a lone surrogate")
    add(T, "strings.text.lone_low_surrogate_key", "encode_failure", ["12", "4.1"], error="INVALID_UTF8",
        value="", raw_text='{"a\\udc00":1}', note="text input: a lone surrogate in a key")
    # $bytes that is not base64 as SPEC.md §12.1 rule 4 says (INVALID_TEXT): a
    # lenient base64 decoder accepts every one of these
    for nm, b64, why in (("no_padding", "QQ", "padding missing"),
                         ("short_padding", "QQ=", "padded to 3, not 4"),
                         ("pad_inside", "QQ=A", "= then a symbol"),
                         ("pad_first", "=QQA", "= first"),
                         ("extra_padding", "QUJD====", "a quantum of padding only"),
                         ("urlsafe", "-_-_", "the URL-safe alphabet (RFC 4648 §5)"),
                         ("whitespace", "QU JD", "a space inside"),
                         ("newline", "QUJD\\nQUJD", "an escaped line feed inside (MIME style)"),
                         ("unused_bits_two_pad", "QR==", "the 4 unused bits of R are 0001"),
                         ("unused_bits_one_pad", "QUJ=", "the 2 unused bits of J are 01"),
                         ("non_ascii", "QUJ\u00e9", "a non-ASCII symbol")):
        add(T, "strings.text.bytes_" + nm, "encode_failure", ["12"], error="INVALID_TEXT", value="",
            raw_text='{"$bytes":"%s"}' % b64, note="not canonical base64: " + why)
    add(T, "strings.text.lone_surrogate_in_invalid_json", "encode_failure", ["12"], error="INVALID_JSON",
        value="", raw_text='["\\ud800",]', note="INVALID_JSON wins over INVALID_UTF8 (SPEC.md §12.4 rule 4)")
    add(T, "strings.text.control_character", "encode_failure", ["12"], error="INVALID_JSON",
        value="", raw_text='"a\tb"', note="an unescaped U+0009 inside a string (RFC 8259 §7)")
    add(T, "strings.text.single_quotes", "encode_failure", ["12"], error="INVALID_JSON",
        value="", raw_text="'a'")
    add(T, "strings.text.bad_escape", "encode_failure", ["12"], error="INVALID_JSON",
        value="", raw_text='"\\x41"')
    add(T, "strings.string.len_past_end", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("2a 05 61", "Value.string_value len 5, one byte present")])
    add(T, "strings.string.len_nonminimal", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("2a 81 00 61", "Value.string_value len 1 in two bytes")])
    add(T, "strings.bytes.as_varint", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("30 00", "Value.bytes_value with wire type VARINT")])

    # ---------------------------------------------------------------- floats
    FL = "floats"
    fls = [("zero", 0.0), ("minus_zero", -0.0), ("one", 1.0), ("half", 0.5), ("minus_1_5", -1.5),
           ("tenth", 0.1), ("third", 1 / 3), ("hundred", 100.0), ("1e21", 1e21), ("1e20", 1e20),
           ("1e_7", 1e-7), ("1e_6", 1e-6), ("big_integer", 123456789012345680000.0),
           ("min_subnormal", 5e-324), ("min_normal", 2.2250738585072014e-308),
           ("max", 1.7976931348623157e308), ("two_pow_53", 9007199254740992.0),
           ("inf", math.inf), ("minus_inf", -math.inf), ("nan", math.nan)]
    for nm, f in fls:
        add(FL, "floats.float." + nm, "success", ["4.1", "7.2", "12"], value=f)
    for nm, bits, why in [("nan_payload", 0x7FF8000000000001, "quiet NaN with a payload"),
                          ("nan_negative", 0xFFF8000000000000, "quiet NaN with the sign bit"),
                          ("nan_signaling", 0x7FF0000000000001, "signaling NaN"),
                          ("nan_all_ones", 0xFFFFFFFFFFFFFFFF, "NaN, all bits set")]:
        add(FL, "floats.noncanonical." + nm, "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
            payload=[R("21", "Value.float_value (4:I64)"),
                     (struct.pack("<Q", bits), "0x%016x: %s" % (bits, why), 1)])
    add(FL, "floats.truncated_fixed64", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("21", "Value.float_value (4:I64)"), R("00 00 00 00", "four of eight bytes", 1)])
    add(FL, "floats.as_varint", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("20 00", "Value.float_value with wire type VARINT")])
    add(FL, "floats.as_fixed32", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("25 00 00 80 3f", "Value.float_value with wire type I32")])

    # ---------------------------------------------------------------- containers
    C = "containers"
    add(C, "containers.list.empty", "success", ["4.1", "7.2"], value=[])
    add(C, "containers.map.empty", "success", ["4.1", "7.2"], value=M())
    add(C, "containers.list.ints", "success", ["4.1"], value=[1, 2, 3])
    add(C, "containers.list.mixed", "success", ["4.1"],
        value=[None, True, False, 0, -7, 2.5, "s", Bytes(b"\x01"), [], M()])
    add(C, "containers.list.nested", "success", ["4.1"], value=[[[]], [[], [1]]])
    add(C, "containers.list.empty_items", "success", ["4.1", "7.2"], value=["", [], M(), 0])
    add(C, "containers.map.one", "success", ["4.1"], value=M(("a", 1)))
    add(C, "containers.map.order_ba", "success", ["4.1"], value=M(("b", 1), ("a", 2)),
        note="insertion order is part of the value: not sorted")
    add(C, "containers.map.order_ab", "success", ["4.1"], value=M(("a", 2), ("b", 1)),
        note="same entries as containers.map.order_ba, other order: other bytes")
    add(C, "containers.map.empty_key", "success", ["4.1", "7.2"], value=M(("", 1)),
        note="the empty key is omitted (implicit presence)")
    add(C, "containers.map.dollar_key", "success", ["4.1", "12"], value=M(("$x", 1)),
        note="text form doubles a leading $ in keys")
    add(C, "containers.map.dollar_only_keys", "success", ["4.1", "12"], value=M(("$", 1), ("$$", 2)))
    add(C, "containers.map.marker_named_key", "success", ["4.1", "12"], value=M(("$int", "5")),
        note="a map whose key is \"$int\" is not an int marker")
    add(C, "containers.map.unicode_keys", "success", ["4.1"], value=M(("\u00e9", 1), ("\U0001F600", 2), ("a\u0001", 3)))
    add(C, "containers.map.key_with_nul", "decode_failure", ["4.1", "7.3"], error="INVALID_KEY",
        payload=[R("42 0a", "Value.map_value len 10"), R("0a 08", "Map.entries[0] len 8", 1),
                 R("0a 02 61 00", "Entry.key len 2: 'a' U+0000 (not a valid key)", 2), R("12 02 0a 00", "Entry.value null", 2)])
    add(C, "containers.map.key_nul_before_missing_value", "decode_failure", ["4.1", "7.3", "9.3"], error="INVALID_KEY",
        payload=[R("42 06", "Value.map_value len 6"), R("0a 04", "Map.entries[0] len 4", 1),
                 R("0a 02 00 61", "Entry.key len 2: U+0000 'a'; no value follows", 2)])
    add(C, "containers.map.key_utf8_before_nul", "decode_failure", ["4.1", "7.3", "9.3"], error="INVALID_UTF8",
        payload=[R("42 0a", "Value.map_value len 10"), R("0a 08", "Map.entries[0] len 8", 1),
                 R("0a 02 ff 00", "Entry.key len 2: ff (not UTF-8) then U+0000", 2), R("12 02 0a 00", "Entry.value null", 2)])
    add(C, "containers.map.same_key_other_maps", "success", ["4.1"], value=M(("a", M(("a", M(("a", 1)))))),
        note="keys are unique per map only")
    add(C, "containers.map.nested_mix", "success", ["4.1"],
        value=M(("list", [M(("x", 1.5)), M(("y", None))]), ("map", M(("z", [True])))))
    add(C, "containers.map.twenty", "success", ["4.1"], value=M(*[("k%02d" % i, i) for i in range(20)]))
    add(C, "containers.text.key_with_nul", "encode_failure", ["12", "4.1"], error="INVALID_KEY",
        value=M(), raw_text='{"a\\u0000b":1}', note="text input: U+0000 in an object key")
    add(C, "containers.text.duplicate_key", "encode_failure", ["12", "4.1"], error="DUPLICATE_KEY",
        value=M(), raw_text='{"a":1,"b":2,"a":3}', note="text input: a key twice in one object")
    for nm, txt, why in (("trailing_comma_list", "[1,2,]", ""),
                         ("trailing_comma_map", '{"a":1,}', ""),
                         ("nan_literal", "[NaN]", "write {\"$float\":\"NaN\"}"),
                         ("infinity_literal", "-Infinity", ""),
                         ("comment", "[1/*x*/]", ""),
                         ("bytes_after_value", "[] []", "two documents"),
                         ("unclosed", '{"a":[1,2}', ""),
                         ("leading_zero", "[01]", ""),
                         ("plus_sign", "[+1]", ""),
                         ("bare_key", "{a:1}", ""),
                         ("duplicate_key_then_trailing_comma", '[{"a":1,"a":2},]',
                          "INVALID_JSON wins over DUPLICATE_KEY"),
                         ("huge_number_then_trailing_comma", "[1e400,]", "INVALID_JSON wins over INVALID_TEXT"),
                         ("marker_then_trailing_comma", '[{"$int":"-0"},]', "INVALID_JSON wins over INVALID_TEXT"),
                         ("deep_then_trailing_comma", "[" * 40 + "1," + "]" * 40,
                          "40 levels, past the depth limit: INVALID_JSON wins over DEPTH_EXCEEDED"),
                         ("deep_unclosed", "[" * 5000, "5,000 [ and no ]: INVALID_JSON, whatever the reader's recursion")):
        add(C, "containers.text." + nm, "encode_failure", ["12"], error="INVALID_JSON", value="",
            raw_text=txt, note=("not RFC 8259 JSON" + (": " + why if why else "")))
    add(C, "containers.text.deep_closed", "encode_failure", ["12", "8.3"], error="DEPTH_EXCEEDED", value="",
        raw_text="[" * 5000 + "]" * 5000,
        note="5,000 [ closed by 5,000 ]: JSON, too deep (SPEC.md §12.4 rules 3-4): not INVALID_JSON")
    for nm, txt, why in (("unknown_marker", '{"$foo":1}', "an unknown $ marker"),
                         ("marker_two_members", '{"$int":"1","a":2}', "a marker with a second member"),
                         ("marker_second_member_first", '{"a":2,"$int":"1"}', "a $ key that is not a marker's"),
                         ("float_marker_lowercase", '{"$float":"nan"}', "$float takes NaN, Infinity, -Infinity"),
                         ("float_marker_number", '{"$float":1.5}', "$float takes a string"),
                         ("number_infinite", "[1e400]", "a number that rounds to infinity")):
        add(C, "containers.text." + nm, "encode_failure", ["12"], error="INVALID_TEXT", value="",
            raw_text=txt, note="JSON, but not the text form: " + why)
    add(C, "containers.text.duplicate_key_nested", "encode_failure", ["12", "4.1"], error="DUPLICATE_KEY",
        value=M(), raw_text='[{"x":{"k":1,"k":1}}]')
    add(C, "containers.list.empty_item", "decode_failure", ["7.3"], error="EMPTY_VALUE",
        payload=[R("3a 02", "Value.list_value len 2"), R("0a 00", "List.items[0] len 0: no member", 1)])
    add(C, "containers.entry.no_value", "decode_failure", ["7.3"], error="EMPTY_VALUE",
        payload=[R("42 05", "Value.map_value len 5"), R("0a 03", "Map.entries[0] len 3", 1),
                 R("0a 01 61", "Entry.key \"a\", no value", 2)])
    add(C, "containers.entry.empty", "decode_failure", ["7.3"], error="EMPTY_VALUE",
        payload=[R("42 02", "Value.map_value len 2"), R("0a 00", "Map.entries[0] len 0", 1)])
    add(C, "containers.entry.empty_key_present", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("42 08", "Value.map_value len 8"), R("0a 06", "Map.entries[0] len 6", 1),
                 R("0a 00", "Entry.key len 0: present but empty", 2), R("12 02 0a 00", "Entry.value null", 2)])
    add(C, "containers.entry.value_before_key", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("42 09", "Value.map_value len 9"), R("0a 07", "Map.entries[0] len 7", 1),
                 R("12 02 0a 00", "Entry.value null", 2), R("0a 01 61", "Entry.key \"a\" after value", 2)])
    add(C, "containers.entry.key_twice", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("42 0c", "Value.map_value len 12"), R("0a 0a", "Map.entries[0] len 10", 1),
                 R("0a 01 61", "Entry.key \"a\"", 2), R("0a 01 62", "Entry.key \"b\" again", 2),
                 R("12 02 0a 00", "Entry.value null", 2)])
    add(C, "containers.entry.value_twice", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("42 0d", "Value.map_value len 13"), R("0a 0b", "Map.entries[0] len 11", 1),
                 R("0a 01 61", "Entry.key \"a\"", 2), R("12 02 0a 00", "Entry.value null", 2),
                 R("12 02 0a 00", "Entry.value again", 2)])
    add(C, "containers.map.duplicate_key", "decode_failure", ["4.1", "7.3"], error="DUPLICATE_KEY",
        payload=enc_value(M(("a", 1), ("a", 2))))
    add(C, "containers.map.duplicate_key_nested", "decode_failure", ["4.1", "7.3"], error="DUPLICATE_KEY",
        payload=enc_value([M(("x", M(("k", 1), ("j", 2), ("k", 3))))]))
    add(C, "containers.map.duplicate_empty_key", "decode_failure", ["4.1", "7.3"], error="DUPLICATE_KEY",
        payload=enc_value(M(("", 1), ("", 2))), note="two entries whose key is omitted")
    add(C, "containers.map.key_invalid_utf8", "decode_failure", ["4.1", "7.3"], error="INVALID_UTF8",
        payload=[R("42 09", "Value.map_value len 9"), R("0a 07", "Map.entries[0] len 7", 1),
                 R("0a 01 ff", "Entry.key len 1: ff (not UTF-8)", 2), R("12 02 0a 00", "Entry.value null", 2)])
    add(C, "containers.list.item_as_varint", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("3a 02", "Value.list_value len 2"), R("08 00", "List.items with wire type VARINT", 1)])
    add(C, "containers.list.len_past_end", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("3a 04 0a 00", "Value.list_value len 4, two bytes present")])
    add(C, "containers.list.item_past_list_end", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("3a 02", "Value.list_value len 2"), R("0a 02", "List.items[0] len 2: past the list", 1),
                 R("0a 00", "(in the payload, but outside the list)", 0)])
    add(C, "containers.entry.key_as_varint", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("42 04", "Value.map_value len 4"), R("0a 02", "Map.entries[0] len 2", 1),
                 R("08 01", "Entry.key with wire type VARINT", 2)])
    add(C, "containers.value.two_members", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("0a 00", "Value.null_value"), R("10 01", "Value.bool_value: a second member")])
    add(C, "containers.value.members_reversed", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("10 01", "Value.bool_value"), R("0a 00", "Value.null_value: lower number after higher")])
    add(C, "containers.value.same_member_twice", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("18 02", "Value.int_value = 1"), R("18 04", "Value.int_value = 2 again")])

    # ---------------------------------------------------------------- handles
    H = "handles"
    add(H, "handles.fd.pipe_read", "success", ["4.2", "6.1", "7.2"], value=fd(0), handles=["pipe_read"],
        note="Handle.index 0 is omitted: 4a 02 10 01")
    for obj in ("pipe_write", "memfd", "eventfd", "file", "dgram", "seqpacket", "tcp"):
        add(H, "handles.fd." + obj, "success", ["4.2", "6.1"], value=fd(0), handles=[obj])
    add(H, "handles.fd.conn_object", "success", ["4.2"], value=fd(0), handles=["conn"],
        note="kind fd accepts any descriptor, a socket too")
    add(H, "handles.conn.one", "success", ["4.2", "6.1"], value=conn(0), handles=["conn"])
    add(H, "handles.table.three", "success", ["6.1", "6.2"], value=[fd(0), fd(1), conn(2)],
        handles=["pipe_read", "pipe_write", "conn"])
    add(H, "handles.table.depth_first", "success", ["6.2"],
        value=[fd(0), [fd(1), [fd(2)]], M(("x", fd(3)), ("y", [conn(4)])), fd(5)],
        handles=["memfd", "eventfd", "pipe_read", "file", "conn", "pipe_write"],
        note="indices follow the depth-first, front-to-back walk")
    add(H, "handles.table.map_order", "success", ["6.2", "4.1"],
        value=M(("b", fd(0)), ("a", fd(1))), handles=["pipe_read", "memfd"],
        note="map entries in insertion order, not key order")
    add(H, "handles.table.mixed_with_data", "success", ["6.1", "12"],
        value=M(("name", "job"), ("in", fd(0)), ("out", fd(1)), ("reply", conn(2)), ("n", 3)),
        handles=["pipe_read", "pipe_write", "conn"])
    hs = lambda x: [R("4a %02x" % len(bytes.fromhex(x)), "Value.handle_value len %d" % len(bytes.fromhex(x))),
                      R(x, "Handle fields", 1)]
    add(H, "handles.index.explicit_zero", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        handles=["pipe_read"], payload=hs("08 00 10 01"), note="index 0 must be omitted")
    add(H, "handles.kind.explicit_zero", "decode_failure", ["7.3", "4.2"], error="NONCANONICAL",
        handles=["pipe_read"], payload=hs("10 00"), note="kind 0 present: non-canonical (step 7 before 8)")
    add(H, "handles.kind.absent", "decode_failure", ["4.2", "7.3"], error="UNKNOWN_HANDLE_KIND",
        handles=["pipe_read"], payload=[R("4a 00", "Value.handle_value len 0: no kind")])
    add(H, "handles.kind.three", "decode_failure", ["4.2"], error="UNKNOWN_HANDLE_KIND",
        handles=["pipe_read"], payload=hs("10 03"))
    add(H, "handles.kind.huge", "decode_failure", ["4.2"], error="UNKNOWN_HANDLE_KIND",
        handles=["pipe_read"], payload=hs("10 81 80 80 80 10"), note="kind 2^32+1: no truncation to 1")
    add(H, "handles.kind.before_range", "decode_failure", ["4.2", "7.3"], error="UNKNOWN_HANDLE_KIND",
        handles=["pipe_read"], payload=hs("08 05 10 07"), note="kind checked before index (step 8)")
    add(H, "handles.index.out_of_range", "decode_failure", ["6.2"], error="HANDLE_INDEX_OUT_OF_RANGE",
        handles=["pipe_read"], payload=hs("08 01 10 01"))
    add(H, "handles.index.out_of_range_2_32", "decode_failure", ["6.2", "4.4"],
        error="HANDLE_INDEX_OUT_OF_RANGE", handles=["pipe_read"], payload=hs("08 80 80 80 80 10 10 01"),
        note="index 2^32: a 32-bit reader would see 0 and accept it")
    add(H, "handles.index.zero_handles", "decode_failure", ["6.2"], error="HANDLE_INDEX_OUT_OF_RANGE",
        hdr={"nh": 0}, payload=enc_value(fd(0)), note="handle_count 0, a handle value")
    add(H, "handles.index.repeat", "decode_failure", ["6.2"], error="HANDLE_INDEX_OUT_OF_ORDER",
        handles=["pipe_read", "pipe_write"], payload=enc_value([fd(0), fd(0), fd(1)]),
        note="the same index twice")
    add(H, "handles.index.decrease", "decode_failure", ["6.2"], error="HANDLE_INDEX_OUT_OF_ORDER",
        handles=["pipe_read", "pipe_write"], payload=enc_value([fd(1), fd(0)]))
    add(H, "handles.index.decrease_in_map", "decode_failure", ["6.2"], error="HANDLE_INDEX_OUT_OF_ORDER",
        handles=["pipe_read", "pipe_write"], payload=enc_value(M(("a", fd(1)), ("b", fd(0)))))
    add(H, "handles.index.skipped", "decode_failure", ["6.2"], error="UNREFERENCED_HANDLE",
        handles=["pipe_read", "memfd", "pipe_write"], payload=enc_value([fd(0), fd(2)]))
    add(H, "handles.index.none_referenced", "decode_failure", ["6.2"], error="UNREFERENCED_HANDLE",
        handles=["memfd"], payload=enc_value(None))
    add(H, "handles.index.last_unreferenced", "decode_failure", ["6.2"], error="UNREFERENCED_HANDLE",
        handles=["memfd", "eventfd"], payload=enc_value([fd(0)]))
    add(H, "handles.delivered.too_few", "decode_failure", ["6.3"], error="TOO_FEW_HANDLES",
        hdr={"nh": 2}, handles=["pipe_read"], payload=enc_value([fd(0), fd(1)]))
    add(H, "handles.delivered.none", "decode_failure", ["6.3"], error="TOO_FEW_HANDLES",
        hdr={"nh": 1}, handles=[], payload=enc_value(fd(0)))
    add(H, "handles.delivered.too_many", "decode_failure", ["6.3"], error="TOO_MANY_HANDLES",
        hdr={"nh": 1}, handles=["pipe_read", "memfd"], payload=enc_value(fd(0)))
    add(H, "handles.delivered.unexpected", "decode_failure", ["6.3"], error="TOO_MANY_HANDLES",
        hdr={"nh": 0}, handles=["eventfd"], payload=enc_value(None))
    for obj in ("pipe_read", "memfd", "eventfd", "file", "dgram", "seqpacket", "tcp"):
        add(H, "handles.wrong_kind." + obj, "decode_failure", ["4.2"], error="WRONG_HANDLE_KIND",
            handles=[obj], payload=enc_value(conn(0)))
    for obj, what in (("listener", "a listening AF_UNIX stream socket"),
                      ("unconnected", "an AF_UNIX stream socket that was never connected")):
        add(H, "handles.wrong_kind." + obj, "decode_failure", ["4.2"], error="WRONG_HANDLE_KIND",
            handles=[obj], payload=enc_value(conn(0)),
            note=what + ": family and type pass, it is not connected (SPEC.md §4.2 rule 2)")
    add(H, "handles.wrong_kind.second", "decode_failure", ["4.2"], error="WRONG_HANDLE_KIND",
        handles=["conn", "pipe_write"], payload=enc_value([conn(0), conn(1)]))
    add(H, "handles.field.kind_before_index", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        handles=["pipe_read", "pipe_write"],
        payload=[R("3a 0e", "Value.list_value len 14"),
         R("0a 04", "List.items[0] len 4", 1), R("4a 02 10 01", "Value.handle_value {kind 1}", 2),
         R("0a 06", "List.items[1] len 6", 1), R("4a 04", "Value.handle_value len 4", 2),
         R("10 01", "Handle.kind = 1", 3), R("08 01", "Handle.index = 1 after kind", 3)])
    add(H, "handles.field.unknown", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        handles=["pipe_read"], payload=hs("10 01 18 01"), note="Handle has no field 3")
    add(H, "handles.field.index_as_len", "decode_failure", ["7.3"], error="MALFORMED",
        handles=["pipe_read"], payload=hs("0a 00 10 01"))
    add(H, "handles.field.index_nonminimal", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        handles=["pipe_read", "pipe_write"],
        payload=[R("3a 0f", "Value.list_value len 15"),
                 R("0a 04", "List.items[0] len 4", 1), R("4a 02 10 01", "handle {kind 1}", 2),
                 R("0a 07", "List.items[1] len 7", 1), R("4a 05", "Value.handle_value len 5", 2),
                 R("08 81 00", "Handle.index = 1 in two bytes", 3), R("10 01", "Handle.kind = 1", 3)])
    add(H, "handles.encode.wrong_kind_pipe", "encode_failure", ["4.2", "11.3"], error="WRONG_HANDLE_KIND",
        value=conn(0), handles=["pipe_read"], note="a conn handle must be an AF_UNIX stream socket")
    add(H, "handles.encode.wrong_kind_dgram", "encode_failure", ["4.2"], error="WRONG_HANDLE_KIND",
        value=[fd(0), conn(1)], handles=["memfd", "dgram"])
    for obj in ("listener", "unconnected"):
        add(H, "handles.encode.wrong_kind_" + obj, "encode_failure", ["4.2"], error="WRONG_HANDLE_KIND",
            value=[fd(0), conn(1)], handles=["memfd", obj],
            note="not connected: a conn handle cannot be made of it (SPEC.md §4.2 rule 3)")
    # text form (SPEC.md §12.1 rule 5, §12.3 rule 1): JSON, but not a handle marker
    for nm, txt, hs_ in (("fd_float", '{"$fd":0.0}', ["pipe_read"]),
                         ("fd_float_one", '[{"$fd":0},{"$fd":1.0}]', ["pipe_read", "pipe_write"]),
                         ("fd_exponent", '{"$fd":0e0}', ["pipe_read"]),
                         ("fd_negative", '{"$fd":-1}', ["pipe_read"]),
                         ("fd_string", '{"$fd":"0"}', ["pipe_read"]),
                         ("conn_float", '{"$conn":0.0}', ["conn"]),
                         ("fd_two_members", '{"$fd":0,"x":1}', ["pipe_read"])):
        add(H, "handles.text." + nm, "encode_failure", ["12"], error="INVALID_TEXT", value="",
            raw_text=txt, handles=hs_, note="JSON, but not the text form of a value (SPEC.md §12.4 rule 4)")

    # ---------------------------------------------------------------- limits
    L = "limits"
    add(L, "limits.payload.at_max", "success", ["8.1"], value="z" * 14, limits={"max_payload": 16},
        note="payload of exactly max_payload bytes (16)")
    add(L, "limits.payload.one_past_max", "decode_failure", ["8.1"], error="PAYLOAD_TOO_LARGE",
        payload=enc_value("z" * 15), limits={"max_payload": 16})
    add(L, "limits.payload.header_only_one_past", "decode_failure", ["8.1", "9.3"], error="PAYLOAD_TOO_LARGE",
        hdr={"plen": 17}, payload=[], limits={"max_payload": 16},
        note="refused from the header alone: the payload is never read")
    add(L, "limits.payload.default_at_max", "decode_failure", ["8.1", "5.3"], error="TRUNCATED",
        hdr={"plen": 16 * 1024 * 1024}, payload=[],
        note="16 MiB is allowed by default, so the missing payload is what fails")
    add(L, "limits.payload.default_one_past", "decode_failure", ["8.1"], error="PAYLOAD_TOO_LARGE",
        hdr={"plen": 16 * 1024 * 1024 + 1}, payload=[])
    add(L, "limits.payload.u32_max", "decode_failure", ["8.1"], error="PAYLOAD_TOO_LARGE",
        hdr={"plen": 0xFFFFFFFF}, payload=[])
    add(L, "limits.payload.hard_max_plus_1", "decode_failure", ["8.1"], error="PAYLOAD_TOO_LARGE",
        hdr={"plen": (1 << 30) + 1}, payload=[], limits={"max_payload": 1 << 30},
        note="even a receiver at the hard maximum (1 GiB) refuses more")
    add(L, "limits.handles.default_at_max", "success", ["8.2"], value=[fd(i) for i in range(64)],
        handles=["eventfd"] * 64)
    add(L, "limits.handles.default_one_past", "decode_failure", ["8.2"], error="HANDLE_LIMIT_EXCEEDED",
        handles=["eventfd"] * 65, payload=enc_value([fd(i) for i in range(65)]))
    add(L, "limits.handles.hard_at_max", "success", ["8.2", "10.2"], value=[fd(i) for i in range(253)],
        handles=["eventfd"] * 253, limits={"max_handles": 253},
        note="253 = SCM_MAX_FD: one sendmsg carries them all")
    add(L, "limits.handles.hard_one_past", "decode_failure", ["8.2"], error="HANDLE_LIMIT_EXCEEDED",
        hdr={"nh": 254}, handles=["eventfd"] * 253, payload=enc_value([fd(i) for i in range(254)]),
        limits={"max_handles": 253}, note="254 declared; 253 delivered (one sendmsg cannot carry more)")
    add(L, "limits.handles.lowered_at_max", "success", ["8.2"], value=[fd(0), conn(1)],
        handles=["pipe_read", "conn"], limits={"max_handles": 2})
    add(L, "limits.handles.lowered_one_past", "decode_failure", ["8.2"], error="HANDLE_LIMIT_EXCEEDED",
        handles=["pipe_read", "pipe_write", "memfd"], payload=enc_value([fd(0), fd(1), fd(2)]),
        limits={"max_handles": 2})
    add(L, "limits.handles.encode_254", "encode_failure", ["8.2"], error="HANDLE_LIMIT_EXCEEDED",
        value=[fd(i) for i in range(254)], handles=["eventfd"] * 254,
        note="encoders refuse more than the hard maximum 253")
    add(L, "limits.depth.list_32", "success", ["8.3"], value=nest_list(31, []),
        note="32 nested lists: the innermost is at depth 32")
    add(L, "limits.depth.list_33", "decode_failure", ["8.3"], error="DEPTH_EXCEEDED",
        payload=enc_value(nest_list(32, [])))
    add(L, "limits.depth.map_32", "success", ["8.3"], value=nest_map(31, M()))
    add(L, "limits.depth.map_33", "decode_failure", ["8.3"], error="DEPTH_EXCEEDED",
        payload=enc_value(nest_map(32, M())))
    mixed32 = []
    for i in range(31):
        mixed32 = [mixed32] if i % 2 else M(("m", mixed32))
    add(L, "limits.depth.mixed_32", "success", ["8.3"], value=mixed32)
    add(L, "limits.depth.mixed_33", "decode_failure", ["8.3"], error="DEPTH_EXCEEDED",
        payload=enc_value([mixed32]))
    add(L, "limits.depth.scalar_at_32", "success", ["8.3"], value=nest_list(31, 1),
        note="a scalar at depth 32")
    add(L, "limits.depth.scalar_at_33", "decode_failure", ["8.3"], error="DEPTH_EXCEEDED",
        payload=enc_value(nest_list(32, 1)))
    add(L, "limits.depth.lowered_1_scalar", "success", ["8.3"], value=5, limits={"max_depth": 1})
    add(L, "limits.depth.lowered_1_empty_list", "success", ["8.3"], value=[], limits={"max_depth": 1},
        note="an empty list at depth 1 has no child")
    add(L, "limits.depth.lowered_1_one_item", "decode_failure", ["8.3"], error="DEPTH_EXCEEDED",
        payload=enc_value([None]), limits={"max_depth": 1})
    add(L, "limits.depth.lowered_1_map_entry", "decode_failure", ["8.3"], error="DEPTH_EXCEEDED",
        payload=enc_value(M(("a", None))), limits={"max_depth": 1})
    add(L, "limits.depth.encode_list_33", "encode_failure", ["8.3"], error="DEPTH_EXCEEDED",
        value=nest_list(32, []), note="encoders refuse more than the hard maximum 32")
    add(L, "limits.depth.encode_map_33", "encode_failure", ["8.3"], error="DEPTH_EXCEEDED",
        value=nest_map(32, 0))

    # ---------------------------------------------------------------- canonical
    K = "canonical"
    add(K, "canonical.tag.nonminimal", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("8a 00", "tag 0x0a (1:LEN) in two bytes"), R("00", "len 0")])
    add(K, "canonical.tag.past_end", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("8a", "tag varint continues past the payload")])
    add(K, "canonical.tag.eleven_bytes", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("8a 80 80 80 80 80 80 80 80 80 00", "tag varint of eleven bytes")])
    add(K, "canonical.tag.above_u32", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("8a 80 80 80 10", "tag 2^32 + 10: more than 32 bits"), R("00", "len 0")])
    add(K, "canonical.tag.field_zero_len", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("02 00", "field 0 (wire type LEN)")])
    add(K, "canonical.tag.field_zero_varint", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("00 00", "field 0 (wire type VARINT)")])
    for wt in (3, 4, 6, 7):
        add(K, "canonical.wire_type.%d" % wt, "decode_failure", ["7.3"], error="MALFORMED",
            payload=[(tag(1, wt), "field 1 with wire type %d" % wt, 0), R("00", "")])
    add(K, "canonical.wire_type.group_on_unknown_field", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("53", "field 10, wire type 3: step 2 before step 3"), R("00", "")])
    add(K, "canonical.wire_type.mismatch_int_len", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("1a 00", "Value.int_value with wire type LEN")])
    add(K, "canonical.wire_type.mismatch_string_varint", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("28 00", "Value.string_value with wire type VARINT")])
    add(K, "canonical.wire_type.mismatch_fixed32", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("0d 00 00 00 00", "Value.null_value with wire type I32")])
    add(K, "canonical.len.nonminimal", "decode_failure", ["7.2", "7.3"], error="NONCANONICAL",
        payload=[R("0a 80 00", "Value.null_value len 0 in two bytes")])
    add(K, "canonical.len.past_end", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("0a 01", "Value.null_value len 1, nothing follows")])
    add(K, "canonical.len.huge", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("2a ff ff ff ff 0f", "Value.string_value len 2^32-1")])
    add(K, "canonical.len.eleven_bytes", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("2a 80 80 80 80 80 80 80 80 80 80 00", "length varint of eleven bytes")])
    add(K, "canonical.len.past_end_varint", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("2a 80", "length varint continues past the payload")])
    add(K, "canonical.nonminimal_before_malformed", "decode_failure", ["7.3", "9.3"], error="NONCANONICAL",
        payload=[R("3a 06", "Value.list_value len 6"),
                 R("0a 03 18 80 00", "item 0: int 0 in two bytes (first error)", 1),
                 R("0a", "item 1: length missing (later)", 1)])
    add(K, "canonical.unknown_before_order", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("18 02", "Value.int_value = 1"), R("50 00", "field 10: unknown (step 3 before step 5)")])
    add(K, "canonical.order_before_value", "decode_failure", ["7.3"], error="NONCANONICAL",
        payload=[R("18 02", "Value.int_value = 1"), R("10 05", "Value.bool_value = 5: order fails first")])
    add(K, "canonical.wire_type_before_order", "decode_failure", ["7.3"], error="MALFORMED",
        payload=[R("18 02", "Value.int_value = 1"), R("08 00", "field 1 with VARINT: step 4 before step 5")])
    add(K, "canonical.empty_value_root", "decode_failure", ["7.3"], error="EMPTY_VALUE",
        payload=[], note="no member at all")
    add(K, "canonical.empty_value_nested", "decode_failure", ["7.3"], error="EMPTY_VALUE",
        payload=[R("42 07", "Value.map_value len 7"), R("0a 05", "Map.entries[0] len 5", 1),
                 R("0a 01 61", "Entry.key \"a\"", 2), R("12 00", "Entry.value: Value with no member", 2)])
    add(K, "canonical.varint_10_bytes_ok", "success", ["7.2", "7.3"], value=-2**63,
        note="zigzag(INT64_MIN) = 2^64-1: ten varint bytes, the 10th is 01")
    add(K, "canonical.float_bits_preserved", "success", ["7.2"], value=-0.0,
        note="-0.0 keeps its sign bit")

    # ---------------------------------------------------------------- unknown fields
    U = "unknown_fields"
    add(U, "unknown_fields.value.field_10_varint", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("50 00", "Value field 10 (VARINT): not in the schema")])
    add(U, "unknown_fields.value.field_15_len", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("7a 00", "Value field 15 (LEN)")])
    add(U, "unknown_fields.value.field_16_two_byte_tag", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("82 01 00", "Value field 16 (LEN), two-byte tag")])
    add(U, "unknown_fields.value.field_max", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("f8 ff ff ff 0f 00", "Value field 2^29-1 (VARINT)")])
    add(U, "unknown_fields.value.fixed32", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("55 00 00 00 00", "Value field 10 (I32)")])
    add(U, "unknown_fields.value.fixed64", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("51 00 00 00 00 00 00 00 00", "Value field 10 (I64)")])
    add(U, "unknown_fields.value.before_member", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("50 00", "Value field 10"), R("0a 00", "Value.null_value")])
    add(U, "unknown_fields.value.after_member", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("0a 00", "Value.null_value"), R("50 00", "Value field 10")])
    add(U, "unknown_fields.null.field_1", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("0a 02", "Value.null_value len 2"), R("0a 00", "Null field 1", 1)])
    add(U, "unknown_fields.list.field_2", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("3a 04", "Value.list_value len 4"), R("12 02 0a 00", "List field 2", 1)])
    add(U, "unknown_fields.map.field_2", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("42 02", "Value.map_value len 2"), R("10 00", "Map field 2", 1)])
    add(U, "unknown_fields.entry.field_3", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("42 0b", "Value.map_value len 11"), R("0a 09", "Map.entries[0] len 9", 1),
                 R("0a 01 61", "Entry.key \"a\"", 2), R("12 02 0a 00", "Entry.value null", 2),
                 R("18 00", "Entry field 3", 2)])
    add(U, "unknown_fields.handle.field_3_with_handle", "decode_failure", ["7.3", "4.3"],
        error="UNKNOWN_FIELD", handles=["pipe_read"], payload=hs("10 01 1a 00"),
        note="the frame's descriptor is closed")
    add(U, "unknown_fields.deep", "decode_failure", ["7.3"], error="UNKNOWN_FIELD",
        payload=[R("3a 06", "Value.list_value len 6"), R("0a 04", "List.items[0] len 4", 1),
                 R("3a 02", "Value.list_value len 2", 2), R("68 00", "List field 13", 3)])

    # ---------------------------------------------------------------- transport
    X = "transport"
    add(X, "transport.echo.handles", "success", ["10.2", "10.4", "4.3"],
        value=M(("in", fd(0)), ("peer", conn(1)), ("shm", fd(2))), handles=["pipe_read", "conn", "memfd"],
        transport=("echo", []), note="runner sends, testee receives and sends the value back")
    add(X, "transport.reply.through_received_conn", "success", ["10.2", "4.2"],
        value=M(("reply_to", conn(0))), handles=["conn"], transport=("reply", []),
        note="the testee answers on the conn it received, not on the one it read from")
    add(X, "transport.nested.three_levels", "success", ["10.2", "4.2"],
        value=M(("next", conn(0))), handles=["conn"], transport=("nested", [3]),
        note="a conn received over a conn received over a conn, each level used")
    add(X, "transport.max_handles.253", "success", ["8.2", "10.2", "10.4"],
        value=[fd(i) for i in range(253)], handles=["eventfd"] * 253, limits={"max_handles": 253},
        transport=("max_handles", []))
    add(X, "transport.bytewise.handles", "success", ["10.3", "10.4"],
        value=[fd(0), "abc", conn(1)], handles=["pipe_write", "conn"], transport=("bytewise", []),
        note="one byte per write, each consumed before the next; the fds ride with byte 0")
    add(X, "transport.bytewise.long", "success", ["10.4"], value=M(("s", "w" * 200)), transport=("bytewise", []))
    for at in (1, 5, 15, 16, 20):
        add(X, "transport.misattached.byte_%d" % at, "decode_failure", ["10.3"], error="MISATTACHED_HANDLES",
            payload=enc_value([fd(0), "0123456789"]), handles=["pipe_read"], transport=("fds_at", [at]),
            note="the descriptors ride with byte %d, not byte 0" % at)
    add(X, "transport.delivered.too_few", "decode_failure", ["6.3", "10.3"], error="TOO_FEW_HANDLES",
        hdr={"nh": 3}, handles=["pipe_read", "memfd"], payload=enc_value([fd(0), fd(1), fd(2)]),
        transport=("whole", []))
    add(X, "transport.delivered.too_many", "decode_failure", ["6.3", "10.3"], error="TOO_MANY_HANDLES",
        hdr={"nh": 1}, handles=["pipe_read", "memfd", "eventfd"], payload=enc_value([fd(0)]),
        transport=("whole", []))
    add(X, "transport.closed.mid_header", "decode_failure", ["10.5", "5.3"], error="TRUNCATED",
        value=None, handles=["memfd"], payload=enc_value(fd(0)), transport=("close_after", [7]),
        note="the peer closes after 7 bytes; the descriptor that arrived is closed")
    add(X, "transport.closed.mid_payload", "decode_failure", ["10.5", "5.3"], error="TRUNCATED",
        handles=["memfd"], payload=enc_value([fd(0), "payload"]), transport=("close_after", [19]))
    add(X, "transport.closed.at_boundary", "decode_failure", ["10.5"], error="CONNECTION_CLOSED",
        payload=enc_value("last"), transport=("closed_at_boundary", []),
        note="this frame arrives; the peer then closes at the frame boundary")
    add(X, "transport.fd_limit.ctrunc", "decode_failure", ["10.4"], error="HANDLES_TRUNCATED",
        handles=["eventfd"] * 8, payload=enc_value([fd(i) for i in range(8)]), transport=("fd_limit", [2]),
        note="the runner lowers the testee's RLIMIT_NOFILE so only 2 of 8 descriptors fit")
    add(X, "transport.self_send.receive_own_endpoint", "decode_failure", ["10.6"], error="SELF_SEND",
        handles=["conn"], payload=enc_value(conn(0)), transport=("self_send", []),
        note="#0 is replaced by the testee's own receiving endpoint (a copy the runner kept)")
    add(X, "transport.self_send.send_over_itself", "encode_failure", ["10.6"], error="SELF_SEND",
        value=conn(0), handles=["conn"], transport=("self_send", []),
        note="#0 is a copy of the testee's own endpoint; nothing may reach the wire")
    add(X, "transport.self_send.send_peer", "encode_failure", ["10.6"], error="SELF_SEND",
        value=[fd(0), conn(1)], handles=["pipe_read", "conn"], transport=("peer_send", []),
        note="#1 is the runner's end of the connection, i.e. the peer of the testee's endpoint")
    add(X, "transport.peer_closed.send", "encode_failure", ["10.2", "9.2"], error="CONNECTION_CLOSED",
        value=[fd(0), "after the peer closed"], handles=["pipe_read"], transport=("peer_closed", []),
        note="the runner closes its end first; the send must fail with EPIPE -> CONNECTION_CLOSED, "
             "MSG_NOSIGNAL: the testee must not die of SIGPIPE (SPEC.md §10.2 rule 3)")
    add(X, "transport.passcred.handles", "success", ["10.4"],
        value=[fd(0), "creds", conn(1)], handles=["pipe_read", "conn"], transport=("passcred", []),
        note="the testee's socket has SO_PASSCRED (and SO_PASSPIDFD where the kernel has it) set "
             "by the runner: SCM_CREDENTIALS/SCM_PIDFD come with every read (SPEC.md §10.4 rule 4)")
    add(X, "transport.passcred.max_handles", "success", ["10.4", "8.2"],
        value=[fd(i) for i in range(253)], handles=["eventfd"] * 253, limits={"max_handles": 253},
        transport=("passcred", []),
        note="253 descriptors with SCM_CREDENTIALS and SCM_PIDFD in the same read: a control "
             "buffer without room for them truncates (MSG_CTRUNC, a spurious HANDLES_TRUNCATED)")
    build_revision11()
    build_large()


def build_large():
    """issue 14 §5: frames too large to annotate line by line."""
    G = "large"
    # 1. a 1 MiB bytes value and two descriptors (five times a socket buffer), sent by the testee to a runner
    # that reads slowly: the testee's first sendmsg is partial (SPEC.md §10.2 r1-2)
    n = 1 << 20
    data = bytes(i % 251 for i in range(n))
    value = [fd(0), fd(1), Bytes(data)]
    h0 = enc_value(fd(0))
    h1 = enc_value(fd(1))
    blob_hdr = tag(6, 2) + vint(n)
    item2 = len(blob_hdr) + n
    body = (2 + blen(h0)) + (2 + blen(h1)) + len(tag(1, 2)) + len(vint(item2)) + item2
    lines = [(tag(7, 2) + vint(body), "Value.list_value (7:LEN) len %d" % body, 0),
             (tag(1, 2) + vint(blen(h0)), "List.items[0] len %d" % blen(h0), 1)] + indent(h0, 2) + \
            [(tag(1, 2) + vint(blen(h1)), "List.items[1] len %d" % blen(h1), 1)] + indent(h1, 2) + \
            [(tag(1, 2) + vint(item2), "List.items[2] len %d" % item2, 1),
             (blob_hdr, "Value.bytes_value (6:LEN) len %d: bytes i %% 251 for i in 0..%d, 64 a line"
              % (n, n - 1), 2)]
    lines += [(data[o:o + 64], "", 3) for o in range(0, n, 64)]
    add(G, "large.echo.bytes_1mib_two_fds", "success", ["10.2", "10.3", "10.4"], value=value,
        handles=["pipe_read", "memfd"], payload=lines, transport=("slow_read", []),
        note="the runner reads the testee's frame slowly: its first sendmsg is partial; the two "
             "descriptors must arrive once, with the frame's first byte (SPEC.md §10.2 rules 1-2)")
    # 2. 100,000 nested lists (about 790 KiB): DEPTH_EXCEEDED at depth 33, with the
    # decoder's stack bounded by max_depth (SPEC.md §7.3 notes, §15)
    levels = 100000
    inner = tag(7, 2) + vint(0)
    parts = []
    size = len(inner)
    for _ in range(levels - 1):
        item = tag(1, 2) + vint(size)
        lst = tag(7, 2) + vint(len(item) + size)
        parts.append(lst + item)
        size += len(item) + len(lst)
    parts.reverse()
    lines = [(parts[0], "level 1: Value.list_value, List.items[0] (%d payload bytes)" % size, 0),
             (parts[1], "level 2", 0)]
    chunk = b"".join(parts[2:])
    lines += [(chunk[o:o + 64], "", 0) for o in range(0, len(chunk), 64)]
    lines.append((inner, "level %d: Value.list_value, empty" % levels, 0))
    assert blen(lines) == size
    add(G, "large.depth.lists_100000", "decode_failure", ["7.3", "8.3", "15"], error="DEPTH_EXCEEDED",
        payload=lines,
        note="100,000 nested lists, %d payload bytes: DEPTH_EXCEEDED before list 33 is walked; "
             "a decoder that recurses before it checks the depth overflows its stack" % size)


def ch(i):
    return Channel(i)


def frame(value=None, *, payload=None, flags=0, channel=0, nh=None, title=None):
    """Lines of one whole frame (header + payload), with a comment line naming it."""
    p = enc_value(value) if payload is None else payload
    n = len(handles_of(value)) if nh is None else nh
    lines = header(blen(p), n, flags=flags, channel=channel) + p
    if title:
        b, cm, i = lines[0]
        lines[0] = (b, cm + "   <- frame: " + title, i)
    return lines


HELLO_ALL = M(("op", "hello"), ("features", M(("epitaph", M()), ("channels", M()))))


def hello_frame(msg=HELLO_ALL, title="the runner's HELLO"):
    return frame(msg, flags=0x01, title=title)


def build_revision11():
    X = "revision11"
    R11 = "1.1"
    R11_COMMENTS[0] = True
    # ---- codec level: a decoder that accepts revision 1.1 (as after the peer's HELLO)
    add(X, "revision11.channel.handle", "success", ["18.2", "7.3"], value=ch(1), revision=R11)
    add(X, "revision11.channel.in_map", "success", ["18.2", "7.3"],
        value=M(("reply_to", ch(1)), ("events", ch(2))), revision=R11)
    add(X, "revision11.channel.id_max", "success", ["18.1", "18.2"], value=ch((1 << 31) - 1), revision=R11)
    add(X, "revision11.channel.with_handles", "success", ["18.2", "6.1"],
        value=[fd(0), ch(1), conn(1)], handles=["pipe_read", "conn"], revision=R11)
    add(X, "revision11.channel.id_zero", "decode_failure", ["18.2", "7.3"], error="NONCANONICAL", revision=R11,
        payload=[R("52 02", "Value.channel_value (10:LEN) len 2"), R("08 00", "Channel.id = 0 written out", 1)])
    add(X, "revision11.channel.id_absent", "decode_failure", ["18.2", "7.3"], error="UNKNOWN_CHANNEL", revision=R11,
        payload=[R("52 00", "Value.channel_value (10:LEN) len 0: no id")])
    add(X, "revision11.channel.id_2_31", "decode_failure", ["18.1", "18.2"], error="UNKNOWN_CHANNEL", revision=R11,
        payload=[R("52 06", "Value.channel_value (10:LEN) len 6"),
                 R("08 80 80 80 80 08", "Channel.id = 2^31 (above 2^31-1)", 1)])
    add(X, "revision11.channel.id_zero_before_unknown_kind", "decode_failure", ["18.2", "7.3", "9.3"],
        error="NONCANONICAL", revision=R11,
        payload=[R("3a 08", "Value.list_value (7:LEN) len 8"),
                 R("0a 04", "List.items[0] len 4", 1), R("52 02 08 00", "Channel.id = 0 (step 7 first)", 2),
                 R("0a 00", "List.items[1] len 0: empty (later, loses)", 1)])
    add(X, "revision11.channel.field10_in_1_0", "decode_failure", ["18.2", "7.3"], error="UNKNOWN_FIELD",
        payload=[R("52 02", "Value field 10 (channel_value): unknown in a 1.0 decode"), R("08 01", "Channel.id = 1", 1)],
        note="no revision line: every testee, 1.0 rules (a 1.1 decoder told nothing of a HELLO)")
    add(X, "revision11.header.channel_bit31_only", "decode_failure", ["18.1", "9.3"], error="UNKNOWN_CHANNEL",
        revision=R11, hdr={"channel": 0x80000000}, value=None)
    for bit in (0x04, 0x08):
        add(X, "revision11.flags.critical_%02x" % bit, "decode_failure", ["17.1", "9.3"],
            error="RESERVED_FIELD_NONZERO", revision=R11, hdr={"flags": bit}, value=None)
    add(X, "revision11.flags.critical_before_channel", "decode_failure", ["17.1", "9.3"],
        error="RESERVED_FIELD_NONZERO", revision=R11, hdr={"flags": 0x04, "channel": 0x80000000}, value=None,
        note="flags are checked before the channel")
    add(X, "revision11.flags.end_on_channel_0", "decode_failure", ["17.1"], error="RESERVED_FIELD_NONZERO",
        revision=R11, hdr={"flags": 0x02}, value=None)
    for bit in (0x10, 0x80):
        add(X, "revision11.flags.optional_%02x" % bit, "decode_success", ["17.1"], revision=R11,
            hdr={"flags": bit}, value="x", canonical=frame("x"),
            note="an optional reserved bit is ignored; the re-encoding has flags 0")

    # ---- transport level: the runner is the peer (spec/vectors.md §3.3)
    V = M(("ping", 1))
    add(X, "revision11.peer10.echo", "success", ["16.1", "16.2"], value=[fd(0), "from a 1.0 peer"],
        handles=["pipe_read"], revision=R11, transport=("peer10", []),
        note="the runner is a 1.0 peer: no HELLO may reach it, before or after; the reply is a 1.0 frame")
    add(X, "revision11.hello.answered", "success", ["16.2"], value=V, revision=R11, transport=("hello", []),
        frames=[hello_frame(), frame(V, title="the request")],
        note="the testee must answer the HELLO with its own, before the reply")
    add(X, "revision11.hello.second_ignored", "success", ["16.2"], value=V, revision=R11, transport=("hello", []),
        frames=[hello_frame(), hello_frame(title="a second HELLO: ignored"), frame(V, title="the request")])
    add(X, "revision11.hello.unknown_entries_ignored", "success", ["16.2", "16.3"], value=V, revision=R11,
        transport=("hello", []),
        frames=[hello_frame(M(("op", "hello"), ("features", M(("x_later", M(("p", 1))), ("epitaph", M()))),
                              ("x_entry", True)), "a HELLO with an unknown feature and entry"),
                frame(V, title="the request")])
    add(X, "revision11.hello.require_unmet_epitaph", "decode_failure", ["16.2", "17.3"], error="UNSUPPORTED_FEATURE",
        revision=R11, transport=("hello_require", [1]),
        frames=[hello_frame(M(("op", "hello"), ("features", M(("epitaph", M()))), ("require", ["x_never"])),
                            "HELLO requiring an unknown feature, announcing epitaph")],
        note="fatal; the testee's HELLO may come first, then an epitaph with code 36 must arrive")
    add(X, "revision11.hello.require_unmet_silent", "decode_failure", ["16.2", "17.3"], error="UNSUPPORTED_FEATURE",
        revision=R11, transport=("hello_require", [0]),
        frames=[hello_frame(M(("op", "hello"), ("features", M()), ("require", ["x_never"])),
                            "HELLO requiring an unknown feature, without epitaph")],
        note="fatal; no epitaph may arrive: the runner did not announce epitaph")
    for code, name, msg in ((3, "PAYLOAD_TOO_LARGE", "your frame is too large"), (12, "EMPTY_VALUE", None)):
        em = M(("op", "epitaph"), ("code", code)) if msg is None else \
            M(("op", "epitaph"), ("code", code), ("message", msg))
        add(X, "revision11.epitaph.code_%d" % code, "decode_failure", ["17.3"], error=name, revision=R11,
            transport=("epitaph", []), frames=[hello_frame(), frame(em, flags=0x01, title="the epitaph")],
            note="the receive reports the code (from the peer), every later one CONNECTION_CLOSED")
    add(X, "revision11.epitaph.without_code", "decode_failure", ["17.3"], error="CONNECTION_CLOSED", revision=R11,
        transport=("epitaph", []),
        frames=[hello_frame(), frame(M(("op", "epitaph"), ("message", "bye")), flags=0x01, title="epitaph, no code")])
    RQ = M(("reply_to", ch(1)), ("q", "ping"))
    add(X, "revision11.channel.reply", "success", ["18.2", "18.3", "18.4", "18.5"], value=RQ, revision=R11,
        transport=("channel_reply", []),
        frames=[hello_frame(), frame(RQ, title="a request opening channel 1")],
        note="the testee answers \"done\" with END on channel 0x80000001 and sends nothing more")
    add(X, "revision11.channel.unknown_sender_id", "decode_failure", ["18.4"], error="UNKNOWN_CHANNEL",
        revision=R11, transport=("frames", []),
        frames=[hello_frame(), frame("on 5", channel=5, title="on channel 5, never opened")])
    add(X, "revision11.channel.unknown_receiver_id", "decode_failure", ["18.4"], error="UNKNOWN_CHANNEL",
        revision=R11, transport=("frames", []),
        frames=[hello_frame(), frame("on 0x80000003", channel=0x80000003, title="on a channel the testee never opened")])
    add(X, "revision11.channel.header_bit31_only", "decode_failure", ["18.1"], error="UNKNOWN_CHANNEL",
        revision=R11, transport=("frames", []),
        frames=[hello_frame(), frame("x", channel=0x80000000, title="channel 0x80000000")])
    add(X, "revision11.channel.ids_not_increasing", "decode_failure", ["18.3"], error="UNKNOWN_CHANNEL",
        revision=R11, transport=("frames", []),
        frames=[hello_frame(), frame([ch(2), ch(1)], title="channel handles 2 then 1")])
    add(X, "revision11.channel.limit", "decode_failure", ["18.3", "18.6"], error="CHANNEL_LIMIT_EXCEEDED",
        revision=R11, transport=("refused_channels", []), limits={"max_channels": 1},
        frames=[hello_frame(), frame([ch(1), ch(2)], title="opens channels 1 and 2, max_channels 1")],
        note="frame scope; the testee sends close with code 39 on 0x80000001 and 0x80000002")
    NOP = M(("op", "x_nop"))
    add(X, "revision11.control.unknown_ignored", "success", ["17.2"], value=V, revision=R11,
        transport=("frames", []),
        frames=[hello_frame(), frame(NOP, flags=0x01, title="unknown control op"), frame(V, title="the request")])
    add(X, "revision11.control.unknown_critical", "decode_failure", ["17.2"], error="UNSUPPORTED_FEATURE",
        revision=R11, transport=("frames", []),
        frames=[hello_frame(), frame(M(("op", "x_nop"), ("critical", True)), flags=0x01,
                                     title="unknown control op, critical")])
    add(X, "revision11.control.with_handles", "decode_failure", ["17.2"], error="UNSUPPORTED_FEATURE",
        revision=R11, transport=("frames", []), handles=["pipe_read"],
        frames=[hello_frame(), frame(M(("op", "x_nop"), ("fd", fd(0))), flags=0x01,
                                     title="a control frame with a descriptor")],
        note="its descriptor is closed; the stream goes on")
    add(X, "revision11.control.not_a_map", "decode_failure", ["17.2"], error="UNSUPPORTED_FEATURE",
        revision=R11, transport=("frames", []),
        frames=[hello_frame(), frame(["op", "x"], flags=0x01, title="a control frame whose value is a list")])
    add(X, "revision11.control.before_hello", "decode_failure", ["16.2", "17.1"], error="RESERVED_FIELD_NONZERO",
        revision=R11, transport=("frames", []),
        frames=[frame(NOP, flags=0x01, title="a control frame that is not a HELLO, before any HELLO")])
    add(X, "revision11.control.hello_with_handle_before_agreement", "decode_failure", ["16.2", "17.2"],
        error="RESERVED_FIELD_NONZERO", revision=R11, transport=("frames", []), handles=["pipe_read"],
        frames=[frame(M(("op", "hello"), ("features", M()), ("fd", fd(0))), flags=0x01,
                      title="a HELLO carrying a descriptor: not a HELLO, checked as 1.0")])
    add(X, "revision11.flags.critical_after_hello", "decode_failure", ["17.1"], error="RESERVED_FIELD_NONZERO",
        revision=R11, transport=("frames", []),
        frames=[hello_frame(), frame("x", flags=0x08, title="a critical reserved bit")])
    add(X, "revision11.flags.end_on_channel_0_after_hello", "decode_failure", ["17.1"],
        error="RESERVED_FIELD_NONZERO", revision=R11, transport=("frames", []),
        frames=[hello_frame(), frame("x", flags=0x02, title="END on channel 0")])
    add(X, "revision11.flags.optional_after_hello", "success", ["17.1"], value=V, revision=R11,
        transport=("frames", []),
        frames=[hello_frame(), frame(V, flags=0x10, title="an optional reserved bit")],
        note="ignored: the value is delivered (re-encoded with flags 0)")
    add(X, "revision11.flags.optional_before_hello", "decode_failure", ["16.2", "5.2"],
        error="RESERVED_FIELD_NONZERO", revision=R11, transport=("frames", []),
        frames=[frame(V, flags=0x10, title="an optional reserved bit, no HELLO yet")])
    add(X, "revision11.readahead.second_frame", "success", ["10.2", "10.3"], value=[fd(0), fd(1)],
        handles=["pipe_read", "pipe_read"], revision=R11, transport=("readahead", []),
        frames=[frame("no descriptors", title="frame 1, its own sendmsg"),
                frame([fd(0), fd(1)], title="frame 2, its own sendmsg with both descriptors")],
        note="both frames are queued before the first receive; the descriptors are frame 2's")


# --------------------------------------------------------------------------
# Output


def fmt_lines(lines):
    out = []
    for b, cm, ind in lines:
        hx = " ".join("%02x" % x for x in b)
        pad = "  " + "  " * ind
        if cm:
            out.append("%-44s # %s" % (pad + hx, cm) if len(pad + hx) <= 44 else pad + hx + "  # " + cm)
        else:
            out.append(pad + hx)
    return out


def check_lengths(c):
    """Warn when a hand-written 'len N' disagrees with the lines nested under it."""
    import re as _re
    lines = c.get("lines", [])
    for k, (b, cm, ind) in enumerate(lines):
        m = _re.search(r"\blen (\d+)\b", cm or "")
        if not m or any(w in cm for w in ("past", ">", "present", "then", "nothing", "cut")):
            continue
        n = int(m.group(1))
        tot = 0
        for b2, cm2, ind2 in lines[k + 1:]:
            if ind2 <= ind:
                break
            tot += len(b2)
        inline = len(b) - len(vint(n)) - 1
        if tot + max(inline, 0) != n and not (tot == 0 and inline == n):
            print("warning: %s: line %r says len %d, nested bytes %d" % (c["name"], cm, n, tot + max(inline, 0)))


def write(outdir):
    os.makedirs(outdir, exist_ok=True)
    build()
    names = set()
    total = 0
    for f in ORDER:
        cases = FILES[f]
        out = ["# %s.vec: %s" % (f, TITLES[f]),
               "# Generated by conformance/tools/vecgen.py; verified by conformance/tools/vecheck.py.",
               "# Grammar: spec/vectors.md.  Do not edit by hand: edit vecgen.py and re-run it.",
               ""]
        for c in cases:
            assert c["name"] not in names, c["name"]
            check_lengths(c)
            names.add(c["name"])
            out.append("case " + c["name"])
            out.append("kind " + c["kind"])
            out.append("section " + " ".join(c["sections"]))
            if c.get("note"):
                out.append("note " + c["note"])
            if "value_text" in c and c["kind"] != "decode_failure":
                out.append("value " + c["value_text"])
            if c.get("revision"):
                out.append("revision " + c["revision"])
            hl = c["handles"]
            i = 0
            while i < len(hl):
                j = i
                while j + 1 < len(hl) and hl[j + 1] == hl[i]:
                    j += 1
                if j - i >= 3:
                    out.append("handles #%d..#%d = %s" % (i, j, hl[i]))
                    i = j + 1
                else:
                    out.append("handle #%d = %s" % (i, hl[i]))
                    i += 1
            if c["limits"]:
                out.append("limits " + " ".join("%s=%d" % kv for kv in sorted(c["limits"].items())))
            if c["transport"]:
                out.append("transport " + " ".join([c["transport"][0]] + [str(a) for a in c["transport"][1]]))
            if c["error"]:
                out.append("error " + c["error"])
            if "lines" in c:
                out.append("bytes")
                out += fmt_lines(c["lines"])
            if "canonical" in c:
                out.append("canonical")
                out += fmt_lines(c["canonical"])
            out.append("end")
            out.append("")
            total += 1
        with open(os.path.join(outdir, f + ".vec"), "w") as fh:
            fh.write("\n".join(out))
        print("%-20s %4d cases" % (f + ".vec", len(cases)))
    print("%-20s %4d cases" % ("total", total))


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    write(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "vectors"))
