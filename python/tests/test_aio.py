"""chan.aio: await send/recv/accept on one asyncio loop, and what cancellation
and timeouts leave behind (never half a frame reported as sent)."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile

from helpers import FdTestCase

import chan
import chan.aio


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


class AioTests(FdTestCase):
    def test_reply_to_round_trips(self) -> None:
        async def main() -> None:
            client, server = chan.aio.pipe()

            async def serve() -> None:
                for _ in range(50):
                    req = await server.recv()
                    back = chan.aio.wrap(req["reply_to"])
                    await back.send({"n": req["n"] * 2})
                    back.close()

            task = asyncio.create_task(serve())
            for i in range(50):
                mine, theirs = chan.Pipe()
                await client.send({"n": i, "reply_to": theirs})
                theirs.close()  # the server has its own copy now
                ans = await chan.aio.wrap(mine).recv()
                self.assertEqual(ans, {"n": 2 * i})
                mine.close()
            await task
            client.close()
            server.close()

        run(main())

    def test_listener_and_many_clients(self) -> None:
        async def main() -> None:
            path = os.path.join(tempfile.mkdtemp(), "s.sock")
            listener = await chan.aio.listen(path)

            async def serve_one(c: chan.aio.AsyncConnection) -> None:
                try:
                    while True:
                        msg = await c.recv()
                        await c.send({"echo": msg})
                except chan.ConnectionClosed:
                    c.close()

            async def acceptor() -> None:
                tasks = []
                for _ in range(20):
                    tasks.append(asyncio.create_task(serve_one(await listener.accept())))
                await asyncio.gather(*tasks)

            server = asyncio.create_task(acceptor())

            async def client(k: int) -> None:
                c = await chan.aio.connect(path)
                for i in range(10):
                    await c.send([k, i])
                    self.assertEqual(await c.recv(), {"echo": [k, i]})
                c.close()

            await asyncio.gather(*(client(k) for k in range(20)))
            await server
            listener.close()
            os.rmdir(os.path.dirname(path))

        run(main())

    def test_cancelled_recv_keeps_the_partial_frame(self) -> None:
        async def main() -> None:
            a, b = chan.Pipe()
            frame, table = chan.encode({"text": "x" * 1000})
            self.assertEqual(table, [])
            rb = chan.aio.wrap(b)
            sa = socket.socket(fileno=os.dup(a.fileno()))
            sa.sendall(frame[:10])  # half a header
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(rb.recv(), 0.05)
            sa.sendall(frame[10:500])  # more, still not whole
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(rb.recv(), 0.05)
            sa.sendall(frame[500:])
            self.assertEqual(await asyncio.wait_for(rb.recv(), 5), {"text": "x" * 1000})
            sa.close()
            a.close()
            b.close()

        run(main())

    def test_cancelled_send_before_commit_sends_nothing(self) -> None:
        async def main() -> None:
            a, b = chan.aio.pipe()
            big = b"z" * (4 << 20)
            a.conn.send(big, timeout=0)  # committed; most of it still in the connection
            self.assertTrue(a.pending)
            # nobody reads: this frame cannot even start, and is cancelled
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(a.send({"tag": "cancelled"}), 0.05)

            async def reader() -> list:
                return [await b.recv(), await b.recv()]

            r = asyncio.create_task(reader())
            await a.send({"tag": "after"})  # finishes the committed frame first
            got = await asyncio.wait_for(r, 10)
            self.assertEqual(got, [big, {"tag": "after"}])  # no trace of the cancelled one
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(b.recv(), 0.1)
            a.close()
            b.close()

        run(main())

    def test_cancelled_send_after_commit_delivers_the_frame(self) -> None:
        async def main() -> None:
            a, b = chan.aio.pipe()
            big = b"q" * (8 << 20)  # far more than a socket buffer holds
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(a.send(big), 0.05)
            self.assertTrue(a.pending)  # committed, partly written

            async def reader() -> None:
                self.assertEqual(await b.recv(), big)  # whole, not half
                self.assertEqual(await b.recv(), "next")

            r = asyncio.create_task(reader())
            await a.send("next")  # writes the rest of the committed frame first
            await asyncio.wait_for(r, 10)
            a.close()
            b.close()

        run(main())

    def test_descriptors_travel(self) -> None:
        async def main() -> None:
            a, b = chan.aio.pipe()
            r, w = os.pipe2(os.O_CLOEXEC)
            await a.send({"w": chan.Fd(w)})
            got = await b.recv()
            os.write(got["w"].fileno(), b"hi")
            self.assertEqual(os.read(r, 2), b"hi")
            got["w"].close()
            os.close(r)
            os.close(w)
            a.close()
            b.close()

        run(main())
