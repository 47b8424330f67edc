#!/usr/bin/python3
"""Benchmark of the Python binding (issue 8 §3).

1. Round trip of a request that carries a fresh reply_to, client and server in two
   processes (plus, for scale, a raw 16-byte socket ping-pong between two processes):
     chan          chan.Pipe() per request; {"op", "seq", "args", "reply_to": conn} over a
                   chan connection; the server answers through reply_to
     mp            multiprocessing: the request dict goes through a multiprocessing.Queue
                   with reply_to = the write end of a fresh multiprocessing.Pipe
                   (pickled by ForkingPickler, passed through resource_sharer)
   each unpinned, both processes pinned to one CPU, and pinned to two different CPUs
   (os.sched_setaffinity in each process).  Median over repeated runs.
2. Codec cost per message against pickle: a representative ~10-entry map, encode and
   decode (chan) vs dumps and loads (pickle, highest protocol).

Usage: bench.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

import chan  # noqa: E402

MSG = {"method": "get_user", "id": 12345, "args": [1, "two", 3.5], "kwargs": {"verbose": True, "limit": 10},
       "trace": "abc123def456", "deadline": 1.7e9, "flags": None, "payload": b"\x00" * 32, "user": "alice",
       "retry": 0}


def pin(cpu: Optional[int]) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


# ---- chan -------------------------------------------------------------------

def chan_server(conn: chan.Connection, other: chan.Connection, cpu: Optional[int]) -> None:
    other.close()  # the client's end, inherited through fork
    pin(cpu)
    while True:
        try:
            req = conn.recv()
        except chan.ConnectionClosed:
            break
        with req["reply_to"] as reply_to:
            reply_to.send({"seq": req["seq"], "ok": True})
    conn.close()


def chan_client(conn: chan.Connection, n: int) -> float:
    args = [1, 2, 3]
    t0 = time.perf_counter()
    for i in range(n):
        reply, reply_to = chan.Pipe()
        conn.send({"op": "ping", "seq": i, "args": args, "reply_to": reply_to})
        reply_to.close()
        ans = reply.recv()
        reply.close()
        if ans["seq"] != i:
            raise SystemExit(f"bad reply {ans}")
    return (time.perf_counter() - t0) / n


def run_chan(n: int, cpus) -> float:
    ctx = multiprocessing.get_context("fork")
    a, b = chan.Pipe()
    p = ctx.Process(target=chan_server, args=(b, a, cpus[1]))
    p.start()
    b.close()
    pin(cpus[0])
    try:
        chan_client(a, min(n, 200))  # warm up
        return chan_client(a, n)
    finally:
        a.close()
        p.join()
        os.sched_setaffinity(0, ALL_CPUS)


# ---- raw socket ping-pong: what the machine itself costs ----------------------

def raw_server(sock: Any, other: Any, cpu: Optional[int]) -> None:
    other.close()
    pin(cpu)
    while True:
        d = sock.recv(64)
        if not d:
            break
        sock.send(d)
    sock.close()


def run_raw(n: int, cpus) -> float:
    """Two blocking 16-byte ping-pongs per iteration (request, reply), no chan."""
    import socket

    ctx = multiprocessing.get_context("fork")
    a, b = socket.socketpair()
    p = ctx.Process(target=raw_server, args=(b, a, cpus[1]))
    p.start()
    b.close()
    pin(cpus[0])
    try:
        msg = b"x" * 16
        for _ in range(min(n, 200)):
            a.send(msg)
            a.recv(64)
        t0 = time.perf_counter()
        for _ in range(n):
            a.send(msg)
            a.recv(64)
        return (time.perf_counter() - t0) / n
    finally:
        a.close()
        p.join()
        os.sched_setaffinity(0, ALL_CPUS)


# ---- multiprocessing ----------------------------------------------------------

def mp_server(q: Any, cpu: Optional[int]) -> None:
    pin(cpu)
    while True:
        req = q.get()
        if req is None:
            break
        req["reply_to"].send({"seq": req["seq"], "ok": True})
        req["reply_to"].close()


def mp_client(q: Any, n: int) -> float:
    args = [1, 2, 3]
    t0 = time.perf_counter()
    for i in range(n):
        r, w = multiprocessing.Pipe(duplex=False)
        q.put({"op": "ping", "seq": i, "args": args, "reply_to": w})
        ans = r.recv()
        w.close()
        r.close()
        if ans["seq"] != i:
            raise SystemExit(f"bad reply {ans}")
    return (time.perf_counter() - t0) / n


def run_mp(n: int, cpus) -> float:
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=mp_server, args=(q, cpus[1]))
    p.start()
    pin(cpus[0])
    try:
        mp_client(q, min(n, 100))
        return mp_client(q, n)
    finally:
        q.put(None)
        p.join()
        q.close()
        q.join_thread()
        os.sched_setaffinity(0, ALL_CPUS)


# ---- codec ----------------------------------------------------------------------

def per_call(f: Callable[[], Any], n: int) -> float:
    best = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        best.append((time.perf_counter() - t0) / n)
    return statistics.median(best)


ALL_CPUS = os.sched_getaffinity(0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    ap.add_argument("--smoke", action="store_true", help="a few iterations: does it run (tests)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    opts = ap.parse_args()
    n = 20 if opts.smoke else 300 if opts.quick else 3000
    runs = 1 if opts.smoke else 3 if opts.quick else 7
    cpus = sorted(ALL_CPUS)
    layouts = [("unpinned", (None, None)), ("1 CPU", (cpus[0], cpus[0]))]
    if len(cpus) > 1:
        layouts.append(("2 CPUs", (cpus[0], cpus[1])))
    results: Dict[str, Any] = {"round_trip_us": {}, "codec_us": {}}
    print(f"round trip of a request with a fresh reply_to, median of {runs} runs of {n} (us)")
    print(f"{'layout':<10} {'chan':>9} {'mp Queue+Pipe':>14} {'speed-up':>9} {'raw ping-pong':>14}")
    for label, cp in layouts:
        c: List[float] = []
        m: List[float] = []
        r: List[float] = []
        for _ in range(runs):  # interleaved, so all see the same machine state
            c.append(run_chan(n, cp) * 1e6)
            m.append(run_mp(max(n // 3, min(n, 100)), cp) * 1e6)
            r.append(run_raw(n, cp) * 1e6)
        cm, mm, rm = statistics.median(c), statistics.median(m), statistics.median(r)
        results["round_trip_us"][label] = {"chan": round(cm, 1), "mp": round(mm, 1), "ratio": round(mm / cm, 2),
                                           "raw_pingpong": round(rm, 1)}
        print(f"{label:<10} {cm:>9.1f} {mm:>14.1f} {mm / cm:>8.1f}x {rm:>14.1f}")
    print("raw ping-pong: one 16-byte send and blocking receive each way between the same two\n"
          "processes with plain sockets, no chan: the floor the machine sets (its wake-up cost)")

    frame, _ = chan.encode(MSG)
    pk = pickle.dumps(MSG, protocol=pickle.HIGHEST_PROTOCOL)
    k = 50 if opts.smoke else 2000 if opts.quick else 20000
    enc = per_call(lambda: chan.encode(MSG), k) * 1e6
    dec = per_call(lambda: chan.decode(frame), k) * 1e6
    pdump = per_call(lambda: pickle.dumps(MSG, protocol=pickle.HIGHEST_PROTOCOL), k) * 1e6
    pload = per_call(lambda: pickle.loads(pk), k) * 1e6
    results["codec_us"] = {"message_entries": len(MSG), "chan_frame_bytes": len(frame), "pickle_bytes": len(pk),
                           "chan_encode": round(enc, 2), "chan_decode": round(dec, 2),
                           "pickle_dumps": round(pdump, 2), "pickle_loads": round(pload, 2)}
    print(f"\ncodec, {len(MSG)}-entry map: chan frame {len(frame)} B, pickle {len(pk)} B (us per message)")
    print(f"  chan   encode {enc:6.2f}  decode {dec:6.2f}  total {enc + dec:6.2f}")
    print(f"  pickle dumps  {pdump:6.2f}  loads  {pload:6.2f}  total {pdump + pload:6.2f}")
    print(f"  chan/pickle   {(enc + dec) / (pdump + pload):.1f}x the cost (pure Python vs C)")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
