#!/usr/bin/python3
"""pickle baseline of chan's codec benchmark (run by bench/run.py).

Builds the same data as bench/codec_bench.c (cases repr, 4k, 1m, list,
depth) as Python objects and times pickle.dumps / pickle.loads (highest
protocol) with timeit: median, min and max of --reps runs.  The handle of
the representative message has no pickle equivalent; it is the int 0 (its
table index), which is what pickling a multiprocessing Connection amounts
to without ForkingPickler: a number.

Prints the result lines of bench/bench.h:
  R codec <case> pickle <encode|decode> - median min max bytes mallocs n
"""

import argparse
import pickle
import statistics
import sys
import timeit

N_SAMPLES = 20
N_RECORDS = 44
BIG_LEN = 1024 * 1024
N_INTS = 100000
N_NEST = 31
TAGS = ["red", "green", "blue", "cyan", "magenta"]


def case_repr():
    return {
        "name": "sensor-17",
        "kind": "reading",
        "id": 1234567,
        "seq": -42,
        "ratio": 0.8125,
        "ok": True,
        "note": None,
        "samples": [i * 3 - 10 for i in range(N_SAMPLES)],
        "meta": {"host": "node-a", "zone": "eu-west-1", "owner": "ops", "build": "r1234"},
        "blob": bytes((i * 31 + 7) & 0xFF for i in range(256)),
        "fd": 0,
    }


def case_4k():
    return [
        {
            "id": 1000 + i * 37,
            "name": "item-%04d" % i,
            "score": i * 0.5 + 0.25,
            "tags": [TAGS[(i + t) % 5] for t in range(3)],
        }
        for i in range(N_RECORDS)
    ]


def case_1m():
    return bytes((i * 131 + 17) & 0xFF for i in range(BIG_LEN))


def case_list():
    return list(range(N_INTS))


def case_depth():
    v = 42
    for _ in range(N_NEST):
        v = {"k": v}
    return v


CASES = [("repr", case_repr), ("4k", case_4k), ("1m", case_1m), ("list", case_list),
         ("depth", case_depth)]


def measure(stmt, reps, run_s, smoke):
    t = timeit.Timer(stmt)
    if smoke:
        n = 2
        return [t.timeit(n) / n * 1e9], n
    n, took = t.autorange()  # n with took >= 0.2 s
    n = max(1, int(n * run_s / max(took, 1e-9)))
    runs = t.repeat(repeat=reps, number=n)
    return [r / n * 1e9 for r in runs], n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--ms", type=float, default=20.0)
    ap.add_argument("--only")
    a = ap.parse_args()
    proto = pickle.HIGHEST_PROTOCOL
    print("# pickle: Python %s, protocol %d" % (sys.version.split()[0], proto))
    for name, make in CASES:
        if a.only and a.only not in name:
            continue
        obj = make()
        blob = pickle.dumps(obj, protocol=proto)
        if pickle.loads(blob) != obj:
            sys.exit("py_codec: pickle round trip of %s differs" % name)
        for op, stmt in (("encode", lambda: pickle.dumps(obj, protocol=proto)),
                         ("decode", lambda: pickle.loads(blob))):
            ns, n = measure(stmt, 1 if a.smoke else a.reps, a.ms / 1000.0, a.smoke)
            print("R\tcodec\t%s\tpickle\t%s\t-\t%.1f\t%.1f\t%.1f\t%d\t-1\t%d\t%s" % (
                name, op, statistics.median(ns), min(ns), max(ns), len(blob), n,
                ",".join("%.1f" % x for x in ns)))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
