#!/usr/bin/python3
"""Every conformance vector through chancodec.

  success          encode(value) == bytes, decode(bytes) == value, and
                   dump(bytes) reproduces the vector's annotated bytes block
                   line for line
  decode_success   decode(bytes) == value, encode(value) == canonical,
                   dump(canonical) == the canonical block
  decode_failure   check(bytes) exits 1 naming the vector's error
  encode_failure   encode(value) exits 1 naming the vector's error

Cases a file-level tool cannot reproduce are counted as "not applicable",
each with its reason: errors that depend on the descriptors delivered or on
the socket (TOO_FEW_HANDLES, WRONG_HANDLE_KIND, SELF_SEND, ...), frames whose
delivered handle count differs from the header's, and transport failure cases.
Each case is one frame: chancodec reads it with --count 1, so bytes after the
frame (framing.trailing.*) are left unread, as the vectors require.

The .vec grammar is spec/vectors.md; this is a deliberately small reader of
it (key lines, indented hex blocks, '#' comments), independent of the
conformance tools.  Usage: vectors.py CHANCODEC VECTOR_DIR
"""
import glob
import json
import os
import subprocess
import sys

DELIVERY_ERRORS = {
    "TOO_FEW_HANDLES", "TOO_MANY_HANDLES", "WRONG_HANDLE_KIND", "SELF_SEND",
    "HANDLES_TRUNCATED", "MISATTACHED_HANDLES", "CONNECTION_CLOSED",
    "TIMEOUT", "WOULD_BLOCK",
}


def parse(path):
    cases, cur, block = [], None, None
    with open(path, encoding="utf-8") as f:
        for raw in f.read().split("\n"):
            if block is not None:
                if raw[:1].isspace() and raw.strip():
                    block.append(raw)
                    continue
                block = None
            if not raw.strip() or raw.startswith("#"):
                continue
            key, _, rest = raw.partition(" ")
            if key == "case":
                cur = {"name": rest, "handles": 0, "limits": {},
                       "blocks": {}, "file": os.path.basename(path)}
            elif key == "end":
                cases.append(cur)
                cur = None
            elif key in ("bytes", "canonical"):
                block = cur["blocks"].setdefault(key, [])
            elif key == "handle":
                cur["handles"] += 1
            elif key == "handles":
                a, b = rest.split(" = ")[0].split("..")
                cur["handles"] += int(b[1:]) - int(a[1:]) + 1
            elif key == "limits":
                for kv in rest.split():
                    k, v = kv.split("=")
                    cur["limits"][k] = v
            elif key in ("kind", "value", "error", "transport", "revision"):
                cur[key] = rest
    return cases


def hexbytes(lines):
    out = bytearray()
    for ln in lines:
        out += bytes.fromhex(ln.split("#", 1)[0].replace(" ", ""))
    return bytes(out)


def run(cc, args, data):
    p = subprocess.run([cc] + args, input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def errname(stderr):
    # "chancodec: FILE: NAME: message"
    parts = stderr.split(": ")
    return parts[2] if len(parts) > 2 else "?"


def limit_args(c):
    # the frame limits (max_channels is a connection's, not a decoder's);
    # a revision 1.1 case is read with --revision 1.1 (SPEC.md §16-§18)
    rev = ["--revision", "1.1"] if c.get("revision") == "1.1" else []
    return rev + ["--%s=%s" % (k.replace("_", "-"), v)
                  for k, v in sorted(c["limits"].items()) if k != "max_channels"]


def main():
    cc, vdir = sys.argv[1], sys.argv[2]
    files = sorted(glob.glob(os.path.join(vdir, "*.vec")))
    if not files:
        print("vectors.py: no .vec files in %s" % vdir)
        return 1
    counts = {"pass": 0, "fail": 0, "n/a": 0}
    reasons = {}

    def fail(c, msg):
        counts["fail"] += 1
        print("FAIL %s (%s): %s" % (c["name"], c["file"], msg))

    def na(c, why):
        counts["n/a"] += 1
        reasons[why] = reasons.get(why, 0) + 1

    for path in files:
        for c in parse(path):
            kind = c.get("kind")
            if c.get("transport") and c.get("revision") == "1.1":
                # an exchange with the runner as the peer: its frames are
                # the runner's script (HELLOs, controls), not one value
                na(c, "revision 1.1 exchange with the runner")
                continue
            if c.get("transport") and kind not in ("success",
                                                   "decode_success"):
                # a success case's frame is valid however it travels
                na(c, "transport failure case")
                continue
            if kind in ("success", "decode_success"):
                frame = hexbytes(c["blocks"]["bytes"])
                value = c["value"].encode("utf-8")
                rc, out, err = run(cc, ["decode", "-n1"] + limit_args(c), frame)
                if rc != 0 or out != value + b"\n":
                    fail(c, "decode gave rc=%d %r %s, want %r" %
                         (rc, out, err.strip(), value))
                    continue
                want = frame if kind == "success" else \
                    hexbytes(c["blocks"]["canonical"])
                rc, out, err = run(cc, ["encode"], value + b"\n")
                if rc != 0 or out != want:
                    fail(c, "encode gave rc=%d %s %s, want %s" %
                         (rc, out.hex(), err.strip(), want.hex()))
                    continue
                if c["file"] == "large.vec":
                    # its blocks are summarised (megabytes of hex), not
                    # chancodec's annotation: decode and encode are checked
                    counts["pass"] += 1
                    continue
                blk = c["blocks"]["bytes" if kind == "success"
                                  else "canonical"]
                rc, out, err = run(cc, ["dump", "-n1"] + limit_args(c), want)
                got = [ln for ln in out.decode().split("\n")
                       if ln and not ln.startswith("#")]
                if rc != 0 or got != blk:
                    diff = [(a, b) for a, b in zip(got, blk) if a != b][:2]
                    fail(c, "dump differs (rc=%d, %d vs %d lines): %r" %
                         (rc, len(got), len(blk), diff))
                    continue
                counts["pass"] += 1
            elif kind == "decode_failure":
                frame = hexbytes(c["blocks"]["bytes"])
                e = c["error"]
                if e in DELIVERY_ERRORS:
                    na(c, "error %s depends on delivered descriptors" % e)
                    continue
                if len(frame) >= 8 and frame[:4] == b"CHAN" and \
                        int.from_bytes(frame[6:8], "little") != c["handles"]:
                    na(c, "delivered handle count differs from the header")
                    continue
                rc, out, err = run(cc, ["check", "-n1"] + limit_args(c), frame)
                if rc != 1 or errname(err) != e:
                    fail(c, "check gave rc=%d %r, want %s" %
                         (rc, err.strip(), e))
                    continue
                counts["pass"] += 1
            elif kind == "encode_failure":
                e = c["error"]
                try:
                    json.loads(c["value"])
                except json.JSONDecodeError as exc:
                    if exc.msg == "Extra data":
                        # chancodec encode reads a stream of documents, one
                        # frame each: two documents are two frames to it
                        na(c, "several JSON documents: a stream to chancodec encode")
                        continue
                except (ValueError, RecursionError):
                    pass  # not JSON (or too deep for Python's reader): chancodec's to judge
                if e in DELIVERY_ERRORS:
                    na(c, "error %s depends on real descriptors" % e)
                    continue
                rc, out, err = run(cc, ["encode"],
                                   c["value"].encode("utf-8") + b"\n")
                if rc != 1 or errname(err) != e or out:
                    fail(c, "encode gave rc=%d %r, want %s" %
                         (rc, err.strip(), e))
                    continue
                counts["pass"] += 1
            else:
                fail(c, "unknown kind %r" % kind)
    for why, n in sorted(reasons.items()):
        print("  not applicable: %3d  %s" % (n, why))
    print("vectors: %d passed, %d failed, %d not applicable (%d files)" %
          (counts["pass"], counts["fail"], counts["n/a"], len(files)))
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
