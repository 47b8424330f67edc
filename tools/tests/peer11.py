#!/usr/bin/python3
"""A revision 1.1 peer on raw bytes, for the live tests of chancodec listen.

  peer11.py SOCKET OUT STEP...

Steps, in order:
  send:FLAGS:CHANNEL:FRAMEFILE  send the frame in FRAMEFILE (made by
                                chancodec encode) with the header's flags and
                                channel fields set to FLAGS and CHANNEL
  read:N                        read N whole frames from the listener and
                                append their bytes to OUT (5 s timeout)
  wait                          wait until the listener closes the connection

Frames are written byte for byte, so the test controls what a 1.1 sender
puts on the wire (SPEC.md §16.2, §17, §18) and captures what chancodec
answers (for chancodec dump --revision 1.1).
"""
import socket
import sys


def read_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise SystemExit("peer11.py: the listener closed after %d of %d bytes" % (len(b), n))
        b += chunk
    return b


def main():
    path, out = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0" + path[1:] if path.startswith("@") else path)
    s.settimeout(5)
    got = b""
    for step in sys.argv[3:]:
        op, _, rest = step.partition(":")
        if op == "send":
            flags, channel, f = rest.split(":", 2)
            b = bytearray(open(f, "rb").read())
            b[5] = int(flags, 0)
            b[8:12] = int(channel, 0).to_bytes(4, "little")
            s.sendall(bytes(b))
        elif op == "read":
            for _ in range(int(rest)):
                h = read_exact(s, 16)
                got += h + read_exact(s, int.from_bytes(h[12:16], "little"))
        elif op == "wait":
            while s.recv(4096):
                pass
        else:
            raise SystemExit("peer11.py: unknown step %r" % step)
    open(out, "wb").write(got)
    s.close()


if __name__ == "__main__":
    main()
