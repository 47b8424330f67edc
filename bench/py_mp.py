#!/usr/bin/python3
"""Python multiprocessing baseline of chan's transport benchmark (bench/run.py).

The pattern chan replaces: a request dict goes to the server through a
multiprocessing.Queue and carries reply_to = the write end of a fresh
multiprocessing.Pipe (ForkingPickler reduces it through resource_sharer:
a background thread of the client hands the descriptor over SCM_RIGHTS
when the server unpickles it).  The server answers through it.  Same
request and reply as bench/transport_bench.c's rtt-reply_to:
{"seq": i, "method": "ping", "reply_to": conn} -> {"seq": i, "ok": True}.

Both processes pinned to one CPU (1cpu) and to two CPUs (2cpu), like the C
benchmark.  Prints bench/bench.h result lines:
  R transport rtt-reply_to python-mp rtt <pin> median min max bytes -1 n
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import time


def pin(cpu):
    os.sched_setaffinity(0, {cpu})


def server(q, cpu):
    pin(cpu)
    while True:
        req = q.get()
        if req is None:
            break
        w = req["reply_to"]
        w.send({"seq": req["seq"], "ok": True})
        w.close()


def client(q, n):
    t0 = time.perf_counter()
    for i in range(n):
        r, w = multiprocessing.Pipe(duplex=False)
        q.put({"seq": i, "method": "ping", "reply_to": w})
        ans = r.recv()
        # w may be closed only now: the Queue's feeder thread pickles it
        # after put() returned.
        w.close()
        r.close()
        if ans["seq"] != i:
            sys.exit("py_mp: bad reply %r" % (ans,))
    return (time.perf_counter() - t0) / n


def run(label, cpus, reps, run_s, smoke):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=server, args=(q, cpus[1]))
    p.start()
    pin(cpus[0])
    try:
        if smoke:
            n, runs = 2, [client(q, 2)]
        else:
            client(q, 50)  # warm up
            one = client(q, 50)
            n = max(20, int(run_s / one))
            runs = [client(q, n) for _ in range(reps)]
    finally:
        q.put(None)
        p.join()
        q.close()
        q.join_thread()
        os.sched_setaffinity(0, ALL)
    if p.exitcode != 0:
        sys.exit("py_mp: server exited with %s" % p.exitcode)
    ns = [r * 1e9 for r in runs]
    print("R\ttransport\trtt-reply_to\tpython-mp\trtt\t%s\t%.1f\t%.1f\t%.1f\t-1\t-1\t%d\t%s" % (
        label, statistics.median(ns), min(ns), max(ns), n, ",".join("%.1f" % x for x in ns)))
    sys.stdout.flush()


ALL = os.sched_getaffinity(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--ms", type=float, default=100.0)
    a = ap.parse_args()
    cpus = sorted(ALL)
    print("# python-mp: Python %s, multiprocessing Queue + Pipe reply_to, fork" %
          sys.version.split()[0])
    run("1cpu", (cpus[0], cpus[0]), a.reps, a.ms / 1000.0, a.smoke)
    if len(cpus) > 1:
        run("2cpu", (cpus[0], cpus[1]), a.reps, a.ms / 1000.0, a.smoke)


if __name__ == "__main__":
    main()
