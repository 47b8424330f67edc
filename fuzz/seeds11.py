#!/usr/bin/python3
"""seeds11.py - the revision 1.1 seeds of fuzz/corpus (SPEC.md §16-§18):
HELLO, epitaph, close and unknown control frames, channel handles, frames
on channels, in the input layouts of decode_fuzz (byte 0 = 33 + fds:
revision 1.1; byte 0 < 33: the same frame read as 1.0) and of stream_fuzz's
1.1 mode (config bit 3, see stream_fuzz.c rev11_run).

usage: seeds11.py  (writes fuzz/corpus/{decode,stream}_fuzz/r11-*)
"""
import os
import struct


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def ld(field, body):
    return varint(field << 3 | 2) + varint(len(body)) + body


def v_int(i):
    return varint(3 << 3) + varint((i << 1) ^ (i >> 63))


def v_str(s):
    return ld(5, s.encode())


def v_bytes(b):
    return ld(6, b)


def v_bool(b):
    return bytes([0x10, 1 if b else 0])


def v_list(*items):
    return ld(7, b"".join(ld(1, i) for i in items))


def v_map(*entries):
    return ld(8, b"".join(ld(1, ld(1, k.encode()) + ld(2, v)) for k, v in entries))


def v_handle(index, kind):
    return ld(9, (varint(8) + varint(index) if index else b"") + varint(16) + varint(kind))


def v_channel(i):
    return ld(10, (varint(8) + varint(i)) if i is not None else b"")


def frame(payload, flags=0, count=0, channel=0):
    return b"CHAN" + struct.pack("<BBHII", 1, flags, count, channel, len(payload)) + payload


HELLO = v_map(("op", v_str("hello")),
              ("features", v_map(("epitaph", v_map()), ("channels", v_map()))))
HELLO_REQ = v_map(("op", v_str("hello")),
                  ("features", v_map(("epitaph", v_map()), ("channels", v_map()))),
                  ("require", v_list(v_str("channels"))))
EPITAPH = v_map(("op", v_str("epitaph")), ("code", v_int(3)), ("message", v_str("too large")))
CLOSE = v_map(("op", v_str("close")), ("code", v_int(39)))
UNKNOWN = v_map(("op", v_str("frob")), ("critical", v_bool(True)))

DECODE = {
    "hello": frame(HELLO, 0x01),
    "hello-require": frame(HELLO_REQ, 0x01),
    "epitaph": frame(EPITAPH, 0x01),
    "close": frame(CLOSE, 0x03, 0, 1),
    "close-theirs": frame(CLOSE, 0x03, 0, 0x80000001),
    "unknown-critical": frame(UNKNOWN, 0x01),
    "channel-handle": frame(v_channel(1)),
    "channel-max": frame(v_channel(0x7FFFFFFF)),
    "channel-over": frame(v_channel(0x80000000)),
    "channel-zero": frame(v_channel(0)),
    "channel-absent": frame(v_channel(None)),
    "channel-reply": frame(v_map(("reply", v_channel(1)), ("n", v_int(7)))),
    "channel-list": frame(v_list(v_channel(1), v_channel(2), v_channel(3))),
    "channel-fd": frame(v_list(v_channel(4), v_handle(0, 1)), 0, 1),
    "on-channel": frame(v_int(5), 0, 0, 7),
    "on-channel-end": frame(v_int(5), 0x02, 0, 0x80000007),
    "end-main": frame(v_int(5), 0x02),
    "critical-bit": frame(v_int(5), 0x04, 0, 1),
    "optional-bits": frame(v_int(5), 0xF0, 0, 1),
    "channel-bit31": frame(v_int(5), 0, 0, 0x80000000),
}

# stream_fuzz 1.1 mode: byte 0 config (bit 3), byte 1 setup, then ops
STREAM = {
    "open-data-close-epitaph": [0x08, 0x07, 6, 0, 0, 7, 0, 5, 1, 0, 4, 8, 3, 1, 39, 0, 7, 1,
                                2, 3, 1],
    "rx-open": [0x08, 0x0F, 9, 7, 3, 9, 5, 1, 0, 2, 7, 1, 7, 2, 9],
    "no-hello": [0x08, 0x00, 5, 6, 0, 1, 4, 0, 1, 7, 0],
    "controls": [0x08, 0x07, 4, 0, 0, 4, 0, 1, 4, 0, 2, 4, 0, 3, 4, 6, 4, 4, 6, 5, 4, 0, 6,
                 4, 0, 7, 4, 0, 8, 4, 0, 0x10, 5, 3, 0, 1, 5, 4, 0, 1, 5, 5, 0, 1,
                 5, 0, 0x0C, 1, 5, 0, 0xF0, 1, 5, 0, 2, 1, 7, 0],
    "queue-reset": [0x08, 0x27, 6, 0, 1, 7, 0] + [5, 1, 0, 63] * 6 + [8, 7, 1, 7, 9, 8],
    "channel-limit": [0x08, 0x17, 6, 0, 3, 7, 0, 6, 0, 0, 7, 0, 9],
    "ids": [0x08, 0x07, 6, 0, 0, 6, 0, 4, 6, 0, 8, 6, 0, 12, 7, 0, 8],
    "hello-variants": [0x08, 0x00, 1, 0x20, 1, 0x40, 1, 0x80, 7, 0, 1, 0x0B, 7, 0],
    "rx-epitaph": [0x48, 0x43, 7, 5, 9],
    "queue-main-fatal": [0x08, 0x27, 6, 0, 0, 7, 0, 5, 0, 0, 63, 5, 0, 0, 63, 7, 1, 8],
    "fds-on-channel": [0x0C, 0x07, 6, 0, 1, 7, 0, 5, 1, 0, 0x41, 5, 9, 0, 0x41, 8, 7, 2, 7, 1],
    "raw-hello-then-epitaph": [0x08, 0x00, 0, 0, len(frame(HELLO, 1))] + list(frame(HELLO, 1))
    + [0, 0, len(frame(EPITAPH, 1))] + list(frame(EPITAPH, 1)) + [7, 0],
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    d = os.path.join(here, "corpus", "decode_fuzz")
    for name, f in DECODE.items():
        with open(os.path.join(d, "r11-" + name), "wb") as out:
            out.write(bytes([33, 0, 0, 0, 0]) + f)
        with open(os.path.join(d, "r10-" + name), "wb") as out:
            out.write(bytes([0, 0, 0, 0, 0]) + f)
    # channel-fd needs one descriptor (type 0: a pipe end)
    for rev, b0 in (("r11", 34), ("r10", 1)):
        with open(os.path.join(d, rev + "-channel-fd"), "wb") as out:
            out.write(bytes([b0, 0, 0, 0, 0, 0]) + DECODE["channel-fd"])
    s = os.path.join(here, "corpus", "stream_fuzz")
    for name, b in STREAM.items():
        with open(os.path.join(s, "r11-" + name), "wb") as out:
            out.write(bytes(b))


if __name__ == "__main__":
    main()
