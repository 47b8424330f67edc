#!/usr/bin/python3
"""vec2corpus.py - seed corpora for the fuzz targets from the conformance
vectors (conformance/vectors/*.vec, grammar in spec/vectors.md).

usage: vec2corpus.py OUTDIR VECFILE... [--json JSONFILE...]

Files after --json are text-form documents (tools/tests): each line is a
textform seed, and so is the whole file.

Writes OUTDIR/decode/<case>, OUTDIR/stream/<case> and OUTDIR/textform/<case>
in the input layouts of fuzz/decode_fuzz.c, fuzz/stream_fuzz.c and
fuzz/textform_fuzz.c (see fuzz/README.md).  Only the lines the seeds need
are read: case, bytes...end, handle(s), limits, value.
"""
import hashlib
import os
import re
import sys

# vector descriptor names -> enum hu_fd_type (hardening/util.h)
FD_TYPES = {
    "pipe_read": 0, "pipe_write": 1, "conn": 2, "dgram": 3, "seqpacket": 4,
    "eventfd": 5, "memfd": 6, "file": 7, "tcp": 3,
}
MAX_FDS = 32


def parse(path):
    cases, cur, in_bytes = [], None, False
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if in_bytes:
                if line.strip() == "end":
                    in_bytes = False
                    continue
                if not line.startswith(" "):  # e.g. "canonical": not input
                    in_bytes = "skip"
                if in_bytes == "skip":
                    continue
                hexpart = line.split("#", 1)[0]
                cur["bytes"] += bytes.fromhex(hexpart.replace(" ", ""))
                continue
            if line.startswith("case "):
                cur = {"name": line[5:].strip(), "bytes": b"", "fds": {},
                       "limits": {}, "value": None, "has_bytes": False}
                cases.append(cur)
            elif cur is None:
                continue
            elif line.strip() == "bytes":
                in_bytes, cur["has_bytes"] = True, True
            elif line.startswith("handle "):
                m = re.match(r"handle #(\d+) = (\S+)", line)
                if m:
                    cur["fds"][int(m.group(1))] = m.group(2)
            elif line.startswith("handles "):
                m = re.match(r"handles #(\d+)\.\.#(\d+) = (\S+)", line)
                if m:
                    for i in range(int(m.group(1)), int(m.group(2)) + 1):
                        cur["fds"][i] = m.group(3)
            elif line.startswith("limits "):
                for kv in line[7:].split():
                    k, v = kv.split("=")
                    cur["limits"][k] = int(v)
            elif line.startswith("value "):
                cur["value"] = line[6:]
    return cases


def payload_byte(n):
    """decode_fuzz byte 4 for max_payload n (None if it has no byte)."""
    if n <= 64:
        return n
    for b in range(65, 256):
        if 1 << (b % 31) == n:
            return b
    return None


def decode_seed(c):
    fds = [FD_TYPES.get(c["fds"][i], 5) for i in sorted(c["fds"])][:MAX_FDS]
    flags, lim = 0, [0, 0, 0]
    L = c["limits"]
    if L:
        flags |= 2
        lim[0] = (L.get("max_depth", 32) - 1) % 32
        lim[1] = (L.get("max_handles", 64) - 1) % 253
        pb = payload_byte(L["max_payload"]) if "max_payload" in L else 0
        if pb is None:
            return None
        lim[2] = pb
    return bytes([len(fds), flags] + lim + fds) + c["bytes"]


def stream_seed(c):
    """The frame as one chunk (fds on its first byte), then the same frame
    again split into 3-byte chunks, with a receive after each."""
    n = min(len(c["fds"]), 7)
    types = [FD_TYPES.get(t, 5) for _, t in sorted(c["fds"].items())]
    first = (types[0] if types else 0) & 7
    cfg = 0
    L = c["limits"]
    if L.get("max_payload") == 64 or L.get("max_depth") == 2:
        cfg = 1
    elif L.get("max_handles") == 1:
        cfg = 2
    out = bytearray([cfg])
    data = c["bytes"]
    pos = 0
    while pos < len(data) or pos == 0:
        part = data[pos:pos + 255]
        ctl = (n if pos == 0 else 0) | first << 3 | 0x40
        out += bytes([ctl, len(part)]) + part
        pos += max(len(part), 1)
        if not part:
            break
    for k in range(0, len(data), 3):
        part = data[k:k + 3]
        ctl = (n if k == 0 else 0) | first << 3 | 0x40
        out += bytes([ctl, len(part)]) + part
    return bytes(out)


def write(d, name, blob):
    os.makedirs(d, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80]
    h = hashlib.sha1(blob).hexdigest()[:8]
    with open(os.path.join(d, f"vec-{safe}-{h}"), "wb") as f:
        f.write(blob)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    counts = {"decode": 0, "stream": 0, "textform": 0}
    args = sys.argv[2:]
    jsons = []
    if "--json" in args:
        k = args.index("--json")
        args, jsons = args[:k], args[k + 1:]
    for path in jsons:
        with open(path, "rb") as f:
            whole = f.read()
        write(os.path.join(out, "textform"), os.path.basename(path), whole)
        counts["textform"] += 1
        for i, line in enumerate(whole.splitlines()):
            if line.strip():
                write(os.path.join(out, "textform"), "%s-%d" % (os.path.basename(path), i), line)
                counts["textform"] += 1
    for path in args:
        for c in parse(path):
            if c["has_bytes"] and c["bytes"]:
                s = decode_seed(c)
                if s is not None:
                    write(os.path.join(out, "decode"), c["name"], s)
                    counts["decode"] += 1
                write(os.path.join(out, "stream"), c["name"], stream_seed(c))
                counts["stream"] += 1
            if c["value"] is not None:
                write(os.path.join(out, "textform"), c["name"],
                      c["value"].encode("utf-8"))
                counts["textform"] += 1
    print("vec2corpus: %d decode, %d stream, %d textform seeds" %
          (counts["decode"], counts["stream"], counts["textform"]))


if __name__ == "__main__":
    main()
