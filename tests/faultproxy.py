"""A TCP fault proxy for tests: it sits between a client (psycopg, botocore, a dsqlops process) and
a server (the sandbox front, the session PostgreSQL, a moto server) and injects, on command, the
faults a cron job meets in production.

It forwards bytes and never parses them, so it works through TLS: point the client at
``hostaddr=127.0.0.1 port=proxy.port`` and keep ``host=<cluster endpoint>`` for verify-full
(libpq's host/hostaddr split, dsql-facts.md §R4.2).

Faults (toxiproxy's vocabulary where it has a word for it):

- ``drop_after(n)``: close a connection once ``n`` bytes went through (limit_data);
- ``reset()``: RST every open connection now (reset_peer); ``refuse = True`` resets new ones;
- ``stall()``: accept, but never forward a byte again, in either direction, until
  ``unstall()`` (timeout=0: "a server that never answers");
- ``delay = s``: sleep ``s`` seconds before forwarding each chunk (latency);
- ``arm_cut(direction, forward=...)``: cut the connection at the next chunk that goes in
  ``direction``, either before forwarding it (the server never sees it) or right after (the
  server acts on it, the client never hears back: a COMMIT whose outcome is unknown);
- ``hold()`` / ``release()``: a gate; held chunks wait, in order, until released.
- ``cut_at_up_chunk = k`` / ``stall_at_up_chunk = k``: cut, or stall, every connection at its
  k-th client chunk (``connection_up_chunks`` records how many each closed connection sent, to
  calibrate k, e.g. past the login).

The proxy runs its own asyncio loop in a daemon thread, so synchronous tests drive it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

UP = "up"  # client -> server
DOWN = "down"  # server -> client


@dataclass
class _Cut:
    direction: str
    forward: bool
    rst: bool


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, chunk: int = 65536) -> None:
        self.target = (target_host, target_port)
        self.chunk = chunk
        self.port = 0
        self.delay = 0.0
        self.refuse = False
        self.accepted = 0  # client connections accepted
        self.bytes = {UP: 0, DOWN: 0}
        self._drop_after: int | None = None
        #: Cut each new connection at its N-th client->server chunk (before forwarding it).
        self.cut_at_up_chunk: int | None = None
        #: Stall each connection from its N-th client->server chunk on (that chunk is held).
        self.stall_at_up_chunk: int | None = None
        self.connection_up_chunks: list[int] = []  # client chunks of each connection, once it closed
        self._cut: _Cut | None = None
        self._cut_done = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Conn] = set()
        self._flowing: asyncio.Event | None = None  # cleared = stalled
        self._gate: asyncio.Event | None = None  # cleared = held

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._gate = asyncio.Event()
        self._gate.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._stop(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            c.close(rst=True)
        if self._flowing is not None:
            self._flowing.set()
        if self._gate is not None:
            self._gate.set()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _soon(self, fn: Any, *args: Any) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args)
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    # ------------------------------------------------------------------ faults

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def drop_after(self, n: int | None) -> None:
        """Close every connection (open or new) once ``n`` bytes (both directions) went through it."""
        self._drop_after = n

    def reset(self) -> None:
        """Send RST on every open connection, both sides."""
        self._soon(lambda: [c.close(rst=True) for c in list(self._conns)])

    def stall(self) -> None:
        """Stop forwarding (open and new connections) until ``unstall``; nothing is closed."""
        self._soon(lambda: self._flowing.clear() if self._flowing else None)

    def unstall(self) -> None:
        self._soon(lambda: self._flowing.set() if self._flowing else None)

    def hold(self) -> None:
        self._soon(lambda: self._gate.clear() if self._gate else None)

    def release(self) -> None:
        self._soon(lambda: self._gate.set() if self._gate else None)

    def arm_cut(self, direction: str = UP, *, forward: bool = False, rst: bool = True) -> threading.Event:
        """Cut the connection carrying the next chunk in ``direction``; the returned event is set
        once it happened. ``forward=True`` lets that chunk reach its peer first."""
        self._cut_done.clear()
        self._cut = _Cut(direction, forward, rst)
        return self._cut_done

    # ------------------------------------------------------------------ plumbing

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refuse:
            _abort(writer, rst=True)
            return
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer, rst=True)
            return
        conn = _Conn(writer, up_w)
        self._conns.add(conn)
        try:
            await asyncio.gather(self._pump(conn, reader, up_w, UP), self._pump(conn, up_r, writer, DOWN))
        finally:
            conn.close(rst=False)
            self._conns.discard(conn)
            self.connection_up_chunks.append(conn.up_chunks)

    async def _pump(self, conn: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: str) -> None:
        assert self._flowing is not None and self._gate is not None
        try:
            while not conn.closed:
                data = await src.read(self.chunk)
                if not data:
                    break
                await self._flowing.wait()
                await self._gate.wait()
                if self.delay:
                    await asyncio.sleep(self.delay)
                if conn.closed:
                    break
                if direction == UP:
                    conn.up_chunks += 1
                    if self.cut_at_up_chunk is not None and conn.up_chunks >= self.cut_at_up_chunk:
                        conn.close(rst=True)
                        self._cut_done.set()
                        break
                    if self.stall_at_up_chunk is not None and conn.up_chunks >= self.stall_at_up_chunk:
                        conn.stalled = True
                if conn.stalled:
                    await conn.forever.wait()  # set only when the connection is closed
                    break
                cut = self._cut
                if cut is not None and cut.direction == direction:
                    self._cut = None
                    if cut.forward:
                        dst.write(data)
                        with contextlib.suppress(OSError):
                            await dst.drain()
                    conn.close(rst=cut.rst)
                    self._cut_done.set()
                    break
                conn.sent += len(data)
                self.bytes[direction] += len(data)
                if self._drop_after is not None and conn.sent >= self._drop_after:
                    keep = len(data) - (conn.sent - self._drop_after)
                    dst.write(data[:max(keep, 0)])
                    with contextlib.suppress(OSError):
                        await dst.drain()
                    conn.close(rst=False)
                    break
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            conn.close(rst=False)


class _Conn:
    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = False
        self.sent = 0
        self.up_chunks = 0
        self.stalled = False
        self.forever = asyncio.Event()

    def close(self, *, rst: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.forever.set()
        _abort(self.client, rst=rst)
        _abort(self.upstream, rst=rst)


def _abort(writer: asyncio.StreamWriter, *, rst: bool) -> None:
    sock = writer.get_extra_info("socket")
    if rst and sock is not None:
        with contextlib.suppress(OSError):
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()


@contextlib.contextmanager
def fault_proxy(target_host: str, target_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target_host, target_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never sends a byte (a hung server, or a black hole
    behind a load balancer). Yields the port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def loop() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
                accepted.append(c)
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        for c in accepted:
            with contextlib.suppress(OSError):
                c.close()
        srv.close()
