"""A tiny fake DSQL endpoint that enforces a connection *rate*, for connect-storm tests (L3).

It speaks just enough of the PostgreSQL protocol over TLS for psycopg: SSLRequest, StartupMessage,
a cleartext password request (any token is accepted), then simple and extended queries, each
answered with one row ``(1)`` (or an empty result for the empty query psycopg_pool's check
sends). A new connection over ``rate`` per second (a token bucket of ``burst``) is refused at
startup with DSQL's ``FATAL 53400``, as DSQL refuses more than 100 new connections per second per
cluster (dsql-facts.md §R0).
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import threading
import time
from typing import Any


def _msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def _error(code: str, text: str, severity: str = "FATAL") -> bytes:
    fields = b"".join(k + v.encode() + b"\0" for k, v in
                      ((b"S", severity), (b"V", severity), (b"C", code), (b"M", text)))
    return _msg(b"E", fields + b"\0")


READY = _msg(b"Z", b"I")
ONE_ROW = (_msg(b"T", struct.pack("!H", 1) + b"?column?\0" + struct.pack("!IHIhiH", 0, 0, 23, 4, -1, 0))
           + _msg(b"D", struct.pack("!HI", 1, 1) + b"1") + _msg(b"C", b"SELECT 1\0"))


class RateLimitedServer:
    def __init__(self, cert: str, key: str, *, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.refused = 0
        self.accepted = 0
        self.queries = 0
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ctx.load_cert_chain(cert, key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="ratelimited")
        self._server: Any = None
        self.port = 0

    def __enter__(self) -> RateLimitedServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def _admit(self) -> bool:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            n = struct.unpack("!I", await reader.readexactly(4))[0]
            body = await reader.readexactly(n - 4)
            if struct.unpack("!I", body[:4])[0] != 80877103:  # not an SSLRequest: DSQL needs TLS
                writer.write(_error("08P01", "TLS is required"))
                return
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(self._ctx)
            n = struct.unpack("!I", await reader.readexactly(4))[0]
            await reader.readexactly(n - 4)  # StartupMessage: user, database, options
            if not self._admit():
                self.refused += 1
                writer.write(_error("53400", "Unable to accept connection, rate exceeded."))
                await writer.drain()
                return
            writer.write(_msg(b"R", struct.pack("!I", 3)))  # cleartext password: the IAM token
            await writer.drain()
            kind = await reader.readexactly(1)
            n = struct.unpack("!I", await reader.readexactly(4))[0]
            await reader.readexactly(n - 4)
            if kind != b"p":
                return
            self.accepted += 1
            writer.write(_msg(b"R", struct.pack("!I", 0))
                         + b"".join(_msg(b"S", k + b"\0" + v + b"\0") for k, v in (
                             (b"server_version", b"16.15"), (b"client_encoding", b"UTF8"),
                             (b"DateStyle", b"ISO, MDY"), (b"standard_conforming_strings", b"on"),
                             (b"integer_datetimes", b"on"), (b"TimeZone", b"UTC")))
                         + _msg(b"K", struct.pack("!II", 1, 1)) + READY)
            await writer.drain()
            await self._queries(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()

    async def _queries(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = b""
        while True:
            kind = await reader.readexactly(1)
            n = struct.unpack("!I", await reader.readexactly(4))[0]
            body = await reader.readexactly(n - 4)
            if kind == b"X":
                return
            if kind == b"Q":
                self.queries += 1
                text = body.rstrip(b"\0").strip()
                if not text:
                    writer.write(_msg(b"I", b"") + READY)
                elif text.upper().startswith((b"BEGIN", b"COMMIT", b"ROLLBACK")):
                    writer.write(_msg(b"C", text.split()[0].upper() + b"\0") + READY)
                else:
                    writer.write(ONE_ROW + READY)
            elif kind == b"P":
                self.queries += 1
                pending += _msg(b"1", b"")
            elif kind == b"B":
                pending += _msg(b"2", b"")
            elif kind == b"D":
                pending += _msg(b"T", ONE_ROW[5:5 + struct.unpack("!I", ONE_ROW[1:5])[0] - 4])
            elif kind == b"E":
                pending += ONE_ROW[ONE_ROW.index(b"D"):]
            elif kind == b"S":
                writer.write(pending + READY)
                pending = b""
            await writer.drain()
