#!/usr/bin/python3
"""Actors in separate processes that answer with futures, over chan.

Three actor processes (started with multiprocessing's "spawn" method, so they
share nothing with the parent but what chan carries):

  calculator  answers {"op": "mul", "a", "b", "reply_to"} at once through reply_to;
  scheduler   answers {"op": "later", "n", "reply_to"} at once with a *future*: the
              receiving end of a fresh connection.  It hands the sending end of that
              future, nested inside a request, to the worker, and forgets it;
  worker      resolves each future later ({"value": ...} sent into it).

The parent sends every request as a dict with a fresh reply_to connection, waits
on the futures it is given, and checks every reply.  Nothing is pickled:
connections travel as descriptors inside chan messages (nested handles), which
is what multiprocessing's own Pipe cannot do with a plain pickle.

Exit status 0 when every reply was right; 1 otherwise.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Any, Dict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import chan  # noqa: E402


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def actor(name: str, address: str) -> None:
    """An actor process: connect to the parent, then serve its mailbox."""
    mailbox = chan.Client(address)
    mailbox.send({"hello": name, "pid": os.getpid()})
    worker = None  # the scheduler's connection to the worker
    inbox = mailbox  # the worker's queue of jobs (handed over by the parent)
    pending = []
    while True:
        try:
            msg: Dict[str, Any] = inbox.recv()
        except chan.ConnectionClosed:
            if inbox is mailbox:
                break
            inbox.close()  # the scheduler is gone: back to the mailbox
            inbox = mailbox
            continue
        op = msg["op"]
        if op == "stop":
            break
        if op == "mul":  # calculator
            with msg["reply_to"] as reply_to:
                reply_to.send({"product": msg["a"] * msg["b"], "by": name})
        elif op == "introduce":  # scheduler: learn the worker's inbox
            worker = msg["worker"]
        elif op == "serve":  # worker: from now on, read jobs from this inbox
            inbox = msg["inbox"]
            mailbox.send({"serving": True})
        elif op == "later":  # scheduler: answer with a future, let the worker resolve it
            future_r, future_w = chan.Pipe()
            with msg["reply_to"] as reply_to:
                reply_to.send({"future": future_r, "by": name})
            future_r.close()
            assert worker is not None
            worker.send({"op": "resolve", "n": msg["n"], "job": {"future": future_w}})
            future_w.close()
        elif op == "flush" and worker is not None:  # scheduler: pass it on
            worker.send({"op": "flush"})
        elif op == "resolve":  # worker: keep a few futures, resolve them later
            pending.append((msg["n"], msg["job"]["future"]))
            if len(pending) >= 3:
                for n, fut in pending:
                    with fut:
                        fut.send({"value": fib(n), "by": name, "n": n})
                pending.clear()
        elif op == "flush":  # worker: resolve everything held
            for n, fut in pending:
                with fut:
                    fut.send({"value": fib(n), "by": name, "n": n})
            pending.clear()
    for _n, fut in pending:
        fut.close()
    if worker is not None:
        worker.close()
    if inbox is not mailbox:
        inbox.close()
    mailbox.close()


def main() -> int:
    ctx = multiprocessing.get_context("spawn")
    address = f"@chan-futures-{os.getpid()}"
    failures = []
    with chan.Listener(address) as listener:
        procs = {name: ctx.Process(target=actor, args=(name, address), name=name)
                 for name in ("calculator", "scheduler", "worker")}
        for p in procs.values():
            p.start()
        mailboxes: Dict[str, chan.Connection] = {}
        for _ in procs:
            conn = listener.accept(timeout=30)
            hello = conn.recv(timeout=30)
            mailboxes[hello["hello"]] = conn
            if conn.peer_cred().pid != hello["pid"]:
                failures.append(f"peer credentials of {hello['hello']} do not match")

    # Wire the scheduler to the worker with a connection made here.
    to_worker, worker_inbox = chan.Pipe()
    mailboxes["worker"].send({"op": "serve", "inbox": worker_inbox})
    worker_inbox.close()
    if mailboxes["worker"].recv(timeout=30) != {"serving": True}:
        failures.append("worker did not start serving")
    mailboxes["scheduler"].send({"op": "introduce", "worker": to_worker})
    to_worker.close()

    # Direct replies.
    for a, b in [(6, 7), (-3, 11), (2**31, 2**31), (0, 5)]:
        reply, reply_to = chan.Pipe()
        mailboxes["calculator"].send({"op": "mul", "a": a, "b": b, "reply_to": reply_to})
        reply_to.close()
        got = reply.recv(timeout=30)
        if got != {"product": a * b, "by": "calculator"}:
            failures.append(f"mul({a}, {b}) -> {got}")
        reply.close()

    # Futures: the scheduler answers at once; the worker resolves later.
    futures = []
    for n in range(10, 20):
        reply, reply_to = chan.Pipe()
        mailboxes["scheduler"].send({"op": "later", "n": n, "reply_to": reply_to})
        reply_to.close()
        answer = reply.recv(timeout=30)
        reply.close()
        if answer.get("by") != "scheduler" or not isinstance(answer.get("future"), chan.Connection):
            failures.append(f"later({n}) -> {answer}")
            continue
        futures.append((n, answer["future"]))
    # The worker resolves futures in batches of three; ask (through the scheduler,
    # the only writer of the worker's inbox) for the rest, then wait on them all.
    mailboxes["scheduler"].send({"op": "flush"})
    for n, fut in futures:
        got = fut.recv(timeout=30)
        if got != {"value": fib(n), "by": "worker", "n": n}:
            failures.append(f"future for fib({n}) resolved to {got}")
        fut.close()

    for conn in mailboxes.values():
        conn.send({"op": "stop"})
        conn.close()
    for name, p in procs.items():
        p.join(30)
        if p.exitcode != 0:
            failures.append(f"actor {name} exited with {p.exitcode}")

    for f in failures:
        print("FAIL:", f)
    print(f"futures: {4} direct replies, {len(futures)} futures resolved across 3 processes, "
          f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
