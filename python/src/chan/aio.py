"""chan on asyncio: ``await conn.send(obj)``, ``await conn.recv()``, an asyncio
listener, with no threads (SPEC.md §11.5).

Every coroutine here drives the binding's non-blocking calls (timeout 0) from
the running loop's ``add_reader``/``add_writer``, so one loop serves any number
of connections, and a peer that stalls mid-frame or stops reading delays no
other task.

Cancellation and timeouts (``asyncio.wait_for``, ``asyncio.timeout``) never
leave half a frame behind with success reported:

* ``recv`` cancelled: whatever part of a frame had arrived stays buffered in
  the connection; the next ``recv`` continues it.  Nothing is lost.
* ``send`` cancelled before its frame was committed (no byte written): nothing
  was sent and the connection is as before.
* ``send`` cancelled after its frame was committed (its first bytes, with every
  descriptor, are in the socket): the frame is not taken back, and it is not
  reported as sent either (the caller sees ``CancelledError``).  Its remaining
  bytes are written before any later frame: by the next ``send``, or by
  ``await conn.flush()``.  The stream stays whole.

Example::

    a, b = chan.aio.pipe()
    await a.send({"op": "get", "reply_to": reply_end})
    msg = await b.recv()
"""

from __future__ import annotations

import asyncio
from typing import Any, Tuple

from ._conn import Client, Connection, Listener, Pipe
from ._errors import WouldBlock

__all__ = ["AsyncConnection", "AsyncListener", "connect", "listen", "pipe", "wrap"]


async def _ready(fd: int, writable: bool) -> None:
    """Wait until fd is readable (or writable) on the running loop."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    if writable:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await fut
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


class AsyncConnection:
    """A :class:`chan.Connection` for asyncio.  ``conn`` is the connection it
    drives: pass it in messages (``{"reply_to": aconn.conn}``) as usual."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._send_lock = asyncio.Lock()  # frames of concurrent senders never interleave
        self._recv_lock = asyncio.Lock()  # nor do receivers split a frame

    def fileno(self) -> int:
        return self.conn.fileno()

    @property
    def pending(self) -> bool:
        """True while a committed frame still has bytes to write."""
        return self.conn.pending

    async def send(self, obj: Any) -> None:
        """Send obj as one frame; return when all of it is written."""
        async with self._send_lock:
            while True:
                try:
                    self.conn.send(obj, timeout=0)
                    break
                except WouldBlock:  # nothing written: wait, then offer it again
                    await _ready(self.conn.fileno(), True)
            await self._flush_locked()

    async def flush(self) -> None:
        """Write the rest of a committed frame (after a cancelled send)."""
        async with self._send_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        while self.conn.pending:
            try:
                self.conn.flush(timeout=0)
            except WouldBlock:
                await _ready(self.conn.fileno(), True)

    async def recv(self) -> Any:
        """Receive one frame and return its value (descriptors as Fd and
        Connection objects, as :meth:`chan.Connection.recv`)."""
        async with self._recv_lock:
            while True:
                try:
                    return self.conn.recv(timeout=0)
                except WouldBlock:
                    await _ready(self.conn.fileno(), False)

    def close(self) -> None:
        self.conn.close()

    async def __aenter__(self) -> "AsyncConnection":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<chan.aio.AsyncConnection {self.conn!r}>"


class AsyncListener:
    """A :class:`chan.Listener` for asyncio."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    async def accept(self) -> AsyncConnection:
        while True:
            try:
                return AsyncConnection(self.listener.accept(timeout=0))
            except WouldBlock:
                await _ready(self.listener.fileno(), False)

    def close(self) -> None:
        self.listener.close()

    async def __aenter__(self) -> "AsyncListener":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def wrap(conn: Connection) -> AsyncConnection:
    """An AsyncConnection driving conn (for example a received reply_to)."""
    return AsyncConnection(conn)


def pipe() -> Tuple[AsyncConnection, AsyncConnection]:
    """Two connected endpoints (a socketpair)."""
    a, b = Pipe()
    return AsyncConnection(a), AsyncConnection(b)


async def listen(path: str, backlog: int = 128) -> AsyncListener:
    """Listen on a socket path or a Linux abstract name ("@name")."""
    return AsyncListener(Listener(path, backlog))


async def connect(path: str) -> AsyncConnection:
    """Connect to a listener (a Unix connect does not wait for the server's
    accept, so this does not block the loop)."""
    return AsyncConnection(Client(path))
