#!/usr/bin/python3
"""Float rendering of the text form against an independent reference.

Python's repr() gives the shortest round-trip digits (David Gay's algorithm,
nearest on ties); this script lays those digits out as ECMAScript
Number::toString does, adds ".0" when the result has neither '.' nor 'e',
and compares with what `chancodec encode | chancodec decode` prints for the
same doubles.  It also checks that every printed number parses back to the
same 64 bits.  The doubles: every power of two (where the round-trip
interval is asymmetric), the boundaries of the layout (1e21, 1e-7, 2^53),
subnormals, and random bit patterns from a fixed seed.

Usage: floats.py CHANCODEC [COUNT]
"""
import decimal
import math
import random
import struct
import subprocess
import sys


def js_layout(x):
    if x == 0:
        return "-0.0" if math.copysign(1, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    t = decimal.Decimal(repr(abs(x))).normalize().as_tuple()
    s = "".join(map(str, t.digits))
    k = len(s)
    n = t.exponent + k
    if k <= n <= 21:
        r = s + "0" * (n - k)
    elif 0 < n <= 21:
        r = s[:n] + "." + s[n:]
    elif -6 < n <= 0:
        r = "0." + "0" * (-n) + s
    else:
        e = n - 1
        r = s[0] + ("." + s[1:] if k > 1 else "") + \
            "e" + ("+" if e >= 0 else "-") + str(abs(e))
    if "." not in r and "e" not in r:
        r += ".0"
    return sign + r


def bits(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def main():
    cc = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    rnd = random.Random(20240601)
    xs = []
    for e in range(-1074, 1024):
        xs.append(math.ldexp(1.0, e))
        xs.append(-math.ldexp(1.0, e))
    xs += [0.0, -0.0, 0.1, 0.2, 0.3, 1 / 3, 1e21, 1e21 * (1 - 2**-52),
           1e-7, 1e-7 * (1 + 2**-52), 9.999999999999999e-7, 1e-6,
           2.0**53, 2.0**53 - 1, 2.0**53 + 2, 5e-324, 2.2250738585072014e-308,
           2.225073858507201e-308, 1.7976931348623157e308, 123456789012345680000.0,
           100.0, 1e22, 1e23, 9007199254740993.0, 0.000001, 1.5e-323]
    while len(xs) < count:
        b = rnd.getrandbits(64)
        x = struct.unpack("<d", struct.pack("<Q", b))[0]
        if math.isfinite(x):
            xs.append(x)
    # input: the shortest repr (valid JSON for finite doubles)
    text = "".join("%r\n" % x for x in xs).replace("inf", "")
    enc = subprocess.run([cc, "encode"], input=text.encode(),
                         stdout=subprocess.PIPE, check=True).stdout
    dec = subprocess.run([cc, "decode"], input=enc, stdout=subprocess.PIPE,
                         check=True).stdout.decode().split("\n")
    bad = 0
    for x, got in zip(xs, dec):
        want = js_layout(x)
        if got != want or bits(float(got)) != bits(x):
            bad += 1
            if bad <= 10:
                print("FAIL %r: got %s, want %s" % (x, got, want))
    if len(dec) != len(xs) + 1:
        print("FAIL: %d lines for %d values" % (len(dec) - 1, len(xs)))
        bad += 1
    print("floats: %d doubles, %d mismatches" % (len(xs), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
