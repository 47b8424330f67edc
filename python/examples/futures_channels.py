#!/usr/bin/python3
"""Futures over logical channels (SPEC.md revision 1.1, §16-§18).

A client process sends requests to a server process over ONE connection.  Each
request carries its reply endpoint as a *channel* of that connection
(``conn.open_channel()``) instead of a fresh socket pair: a request in flight
costs no descriptor on either side.  The server answers

  {"op": "square", "n"}  at once, with END on the reply (``send(..., last=True)``):
                         one frame each way, no close frame;
  {"op": "later", "n"}   with a *future*: a channel it opens itself, sent on the
                         reply channel; it resolves every future after it has
                         read all the requests (a value, then END).

The client holds 200 requests in flight, counts its descriptors while they are
outstanding (unchanged: channels are not descriptors) and checks every answer.
A channel cannot leave its connection (CHANNEL_NOT_TRANSFERABLE, §18.7): the
client checks that too, and relays one future to a third party through a
connection pair, as §18.7 rule 2 says.

Exit status 0 when every reply was right; 1 otherwise.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any, List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import chan  # noqa: E402

N = 200


def server(fd: int) -> None:
    conn = chan.Connection.from_fd(fd)
    # The client's HELLO is answered automatically by the first recv.
    futures: List[Any] = []
    while True:
        req = conn.recv()
        if req["op"] == "square":
            req["reply_to"].send(req["n"] * req["n"], last=True)
        elif req["op"] == "later":
            fut = conn.open_channel()
            req["reply_to"].send({"future": fut}, last=True)
            futures.append((fut, req["n"]))
        elif req["op"] == "resolve":
            break
    for fut, n in futures:
        fut.send(n + 1000, last=True)
    conn.recv()  # until the client closes (ConnectionClosed ends the process)


def client(conn: chan.Connection) -> int:
    failures = 0
    conn.hello(require=["channels"])  # the server is ours: it implements 1.1
    before = len(os.listdir("/proc/self/fd"))
    replies = []
    for i in range(N):
        ch = conn.open_channel()
        conn.send({"op": "square" if i % 2 else "later", "n": i, "reply_to": ch})
        replies.append((i, ch))
    futures = []
    for i, ch in replies:
        got = ch.recv()
        if i % 2:
            failures += got != i * i
        else:
            futures.append((i, got["future"]))
    during = len(os.listdir("/proc/self/fd"))
    conn.send({"op": "resolve"})
    # A future is a channel of this connection: it cannot go elsewhere as is ...
    other, third = chan.Pipe()
    try:
        other.send(futures[0][1])
        failures += 1
    except chan.ChannelNotTransferable:
        pass
    # ... so one is relayed through a connection pair (§18.7 rule 2).
    i0, fut0 = futures[0]
    other.send(fut0.recv())
    failures += third.recv() != i0 + 1000
    for i, fut in futures[1:]:
        failures += fut.recv() != i + 1000
    other.close()
    third.close()
    print(f"{N} requests over one connection, {len(futures)} answered through futures; "
          f"descriptors while in flight: {during - before:+d}; {failures} failures")
    return failures


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--server":
        server(int(sys.argv[2]))
        return 0
    a, b = socket.socketpair()
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--server", str(b.fileno())],
                             pass_fds=[b.fileno()], stderr=subprocess.DEVNULL)
    b.close()
    with chan.Connection.from_fd(a.detach()) as conn:
        failures = client(conn)
    child.wait(timeout=60)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
