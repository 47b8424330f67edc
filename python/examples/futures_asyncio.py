#!/usr/bin/python3
"""The futures example (futures.py) on asyncio: one event loop, no threads.

Three actors run as tasks on one loop, each behind its own connection, as if
they were separate programs:

  calculator  answers {"op": "mul", "a", "b", "reply_to"} at once through reply_to;
  scheduler   answers {"op": "later", "n", "reply_to"} at once with a *future*: the
              receiving end of a fresh connection.  It hands the sending end of that
              future, nested inside a request, to the worker, and forgets it;
  worker      resolves each future later ({"value": fib(n)} sent into it).

The client awaits its requests concurrently, each with a fresh reply_to, waits
on the futures it is given, and checks every answer and the descriptors it
holds at the end.  Exit status 0 when all is right.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, Dict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import chan  # noqa: E402
import chan.aio  # noqa: E402


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


async def calculator(conn: chan.aio.AsyncConnection) -> None:
    try:
        while True:
            req = await conn.recv()
            back = chan.aio.wrap(req["reply_to"])
            await back.send({"value": req["a"] * req["b"]})
            back.close()
    except chan.ConnectionClosed:
        conn.close()


async def scheduler(conn: chan.aio.AsyncConnection, worker: chan.aio.AsyncConnection) -> None:
    try:
        while True:
            req = await conn.recv()
            resolve, future = chan.Pipe()  # the future: a connection of its own
            await worker.send({"n": req["n"], "resolve": resolve})  # nested handle
            resolve.close()  # the worker has it now
            back = chan.aio.wrap(req["reply_to"])
            await back.send({"future": future})
            back.close()
            future.close()
    except chan.ConnectionClosed:
        conn.close()
        worker.close()


async def worker(conn: chan.aio.AsyncConnection) -> None:
    try:
        while True:
            job = await conn.recv()
            await asyncio.sleep(0.01)  # the slow part
            out = chan.aio.wrap(job["resolve"])
            await out.send({"value": fib(job["n"])})
            out.close()
    except chan.ConnectionClosed:
        conn.close()


async def ask(to: chan.aio.AsyncConnection, request: Dict[str, Any]) -> Any:
    mine, theirs = chan.Pipe()
    await to.send(dict(request, reply_to=theirs))
    theirs.close()
    reply = await chan.aio.wrap(mine).recv()
    mine.close()
    if "future" in reply:  # a connection inside a message inside a connection
        fut = chan.aio.wrap(reply["future"])
        reply = await fut.recv()
        fut.close()
    return reply["value"]


async def main() -> int:
    fds_before = len(os.listdir("/proc/self/fd"))
    calc_c, calc_s = chan.aio.pipe()
    sched_c, sched_s = chan.aio.pipe()
    work_c, work_s = chan.aio.pipe()
    actors = [asyncio.create_task(calculator(calc_s)),
              asyncio.create_task(scheduler(sched_s, work_c)),
              asyncio.create_task(worker(work_s))]
    jobs = [ask(calc_c, {"op": "mul", "a": i, "b": i + 1}) for i in range(10)]
    jobs += [ask(sched_c, {"op": "later", "n": 20 + i}) for i in range(10)]
    got = await asyncio.gather(*jobs)
    want = [i * (i + 1) for i in range(10)] + [fib(20 + i) for i in range(10)]
    failures = sum(1 for g, w in zip(got, want) if g != w)
    calc_c.close()
    sched_c.close()
    await asyncio.gather(*actors)
    fds_after = len(os.listdir("/proc/self/fd"))
    print(f"{len(jobs)} requests ({len(jobs) // 2} answered through futures) on one event loop, "
          f"{failures} failures; open fds: {fds_before} before, {fds_after} after")
    return 0 if failures == 0 and fds_before == fds_after else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
