"""The front's C data path (``_fastrelay``), when it was built, and the streams it needs at login.

The sandbox front is asyncio throughout; only the per-session work that every round trip pays
(TLS on the client socket, socket reads and writes, PostgreSQL framing) can run in C. What the
front decides (SNI, ALPN, the startup packet, the IAM token, the backend login, the DSQL dialect)
stays in Python: the C pump hands each message the front inspects to the same
:class:`~dsqlops.sandbox.relay.Relay` methods the pure-Python relay uses.

``_fastrelay`` is an optional extension (``setup.py``; it needs a C compiler and OpenSSL's
headers at install time). Without it, or with ``DSQLOPS_SANDBOX_RELAY=python``, the front uses the
pure-Python relay; both pass the same tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from dsqlops.sandbox import protocol as P
from dsqlops.sandbox.hooks import Dialect
from dsqlops.sandbox.relay import Conn, Relay

try:
    from dsqlops.sandbox import _fastrelay  # type: ignore[attr-defined]
except ImportError:  # not built: no C compiler or OpenSSL headers at install time
    _fastrelay = None

log = logging.getLogger("dsqlops.sandbox.front")

READ_SIZE = 256 * 1024
#: how long the front keeps trying to deliver a session's last bytes once it has ended
FLUSH_TIMEOUT = 2.0


def relay_kind() -> str:
    """``native`` when the C data path is built and not switched off, else ``python``."""
    if _fastrelay is None or os.environ.get("DSQLOPS_SANDBOX_RELAY", "").lower() == "python":
        return "python"
    return "native"


def context(cert_file: str, key_file: str, *, alpn: bool) -> Any:
    assert _fastrelay is not None
    return _fastrelay.Context(cert_file, key_file, alpn)


def is_native_tls(obj: object) -> bool:
    return _fastrelay is not None and isinstance(obj, _fastrelay.TLS)


async def wait_ready(loop: asyncio.AbstractEventLoop, fd: int, *, writable: bool) -> None:
    """Wait until ``fd`` is readable (or writable), through the event loop."""
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    (loop.add_writer if writable else loop.add_reader)(fd, ready)
    try:
        await fut
    finally:
        (loop.remove_writer if writable else loop.remove_reader)(fd)


class SockStream:
    """A non-blocking socket (optionally under a native TLS session) with the stream methods the
    front's login code uses: ``readexactly``, ``write``, ``drain``, ``close``, ``get_extra_info``.

    Before TLS it reads no more than it is asked for, so the bytes of a ClientHello that follows an
    SSLRequest are left in the socket for OpenSSL. Bytes read but not consumed by the end of login
    are handed to the pump (``leftover``).
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.tls: Any = None
        self.loop = asyncio.get_running_loop()
        self._buf = bytearray()
        self._out = bytearray()
        self.transport = self  # the front closes ``writer.transport`` once a session was relayed

    # -- login-time I/O ------------------------------------------------------------------------
    async def start_tls(self, ctx: Any) -> None:
        """Server-side TLS handshake on this socket, with a native :class:`Context`."""
        assert _fastrelay is not None
        if self._buf:
            raise P.ProtocolViolation("unexpected data before the TLS handshake")
        tls = _fastrelay.TLS(ctx, self.fd)
        while True:
            step = tls.handshake()
            if step == 0:
                break
            await wait_ready(self.loop, self.fd, writable=step == 2)
        self.tls = tls

    async def _recv(self, n: int) -> bytes:
        while True:
            try:
                return bytes(self.tls.recv(READ_SIZE)) if self.tls is not None else self.sock.recv(n)
            except BlockingIOError:
                await wait_ready(self.loop, self.fd, writable=False)
            except ConnectionResetError:
                return b""

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            data = await self._recv(n - len(self._buf))
            if not data:
                raise asyncio.IncompleteReadError(bytes(self._buf), n)
            self._buf += data
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def leftover(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def write(self, data: bytes) -> None:
        self._out += data

    async def drain(self) -> None:
        while self._out:
            try:
                # after BlockingIOError OpenSSL wants the same bytes again: _out is unchanged then
                n = self.tls.send(bytes(self._out)) if self.tls is not None else self.sock.send(self._out)
            except BlockingIOError:
                await wait_ready(self.loop, self.fd, writable=True)
                continue
            del self._out[:n]

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.tls if name == "ssl_object" else default

    def close(self) -> None:
        if self.tls is not None and self.sock.fileno() >= 0:
            with contextlib.suppress(Exception):
                self.tls.shutdown()  # close_notify: libpq reports a bare EOF as an SSL error
        # Closing with unread input sends RST, and a RST can make the peer's kernel drop our last
        # message (the FATAL) before the client reads it: discard what already arrived.
        with contextlib.suppress(OSError):
            for _ in range(64):
                if not self.sock.recv(READ_SIZE):
                    break
        self.sock.close()

    async def wait_closed(self) -> None:
        return None


async def open_backend(host: str, port: int) -> SockStream:
    """Connect to a backend: ``host`` is an address, or a Unix socket folder (starts with '/')."""
    if host.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr: Any = f"{host}/.s.PGSQL.{port}"
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        addr = (host, port)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, addr)
    except BaseException:
        sock.close()
        raise
    return SockStream(sock)


class NativeSession(Relay):
    """One logged-in session whose bytes move in C: the pump's handler.

    The pump calls :meth:`client_message` / :meth:`backend_message` with each whole message the
    front inspects (the inherited Relay logic decides), :meth:`want` when the events to watch
    change, and :meth:`finished` once. Nothing here closes a socket: the pump may still be writing
    when ``finished`` returns; :meth:`run` cleans up afterwards.
    """

    def __init__(self, dialect: Dialect, c: Conn, client: SockStream, backend: SockStream) -> None:
        super().__init__(dialect, c, client, backend)  # type: ignore[arg-type]
        self.cs, self.bs = client, backend
        self.loop = client.loop
        self.pump: Any = _fastrelay.Pump(client.tls, client.fd, backend.fd, self) if _fastrelay else None
        self._watch = [False, False, False, False]  # client read, client write, backend read, backend write

    # -- called by the pump ----------------------------------------------------------------------
    def client_message(self, kind: int, msg: bytes) -> bytes | None:
        new = self._client_message(kind, msg, 0, len(msg), self.c)
        self._sync_drop()
        return new

    def backend_message(self, kind: int, msg: bytes) -> bytes | None:
        new = self._backend_message(kind, msg, 0, len(msg), self.c)
        self._sync_drop()
        return new

    def _sync_drop(self) -> None:
        seg = self._current(self.c)
        self.pump.drop = seg is not None and seg.suppress

    def want(self, client_read: int, client_write: int, backend_read: int, backend_write: int) -> None:
        p, loop = self.pump, self.loop
        wanted = (bool(client_read), bool(client_write), bool(backend_read), bool(backend_write))
        for i, (on, fd, writer, cb) in enumerate((
                (wanted[0], self.cs.fd, False, p.on_client_readable),
                (wanted[1], self.cs.fd, True, p.on_client_writable),
                (wanted[2], self.bs.fd, False, p.on_backend_readable),
                (wanted[3], self.bs.fd, True, p.on_backend_writable))):
            if on == self._watch[i]:
                continue
            self._watch[i] = on
            if on:
                (loop.add_writer if writer else loop.add_reader)(fd, cb)
            else:
                (loop.remove_writer if writer else loop.remove_reader)(fd)

    def finished(self, code: int, detail: object) -> None:
        assert _fastrelay is not None
        f = _fastrelay
        if code == f.FIN_TERMINATE:
            self._finish()
        elif code in (f.FIN_CLIENT_GONE, f.FIN_BACKEND_GONE):
            self.lost(client=code == f.FIN_CLIENT_GONE)  # Relay's: terminate the backend, or 57P01
        elif code == f.FIN_VIOLATION:
            self._finish(P.fatal("08P01", str(detail)), terminate_backend=True)
        elif isinstance(detail, P.ProtocolViolation):
            self._finish(P.fatal("08P01", str(detail)), terminate_backend=True)
        else:
            exc = detail if isinstance(detail, BaseException) else None
            log.error("session failed in the relay: %s", detail, exc_info=exc)
            self._finish(P.fatal("XX000", "internal error in the sandbox front"), terminate_backend=True)

    def _finish(self, final: bytes | None = None, *, terminate_backend: bool = False) -> None:
        if self.done.done():
            return
        self.final = final
        self.terminate_backend = terminate_backend
        self.done.set_result(None)

    # -- the session ------------------------------------------------------------------------------
    async def run(self) -> None:
        p = self.pump
        try:
            p.start()
            early = self.cs.leftover()
            if early:
                p.feed_client(early)
            early = self.bs.leftover()
            if early:
                p.feed_backend(early)
            await self.done
        finally:
            self.want(0, 0, 0, 0)
            await self._last_words()
            self.pump = None  # the pump and this handler refer to each other

    async def _last_words(self) -> None:
        """Deliver what is still queued, the Terminate and the FATAL, within FLUSH_TIMEOUT."""
        p = self.pump
        deadline = self.loop.time() + FLUSH_TIMEOUT
        with contextlib.suppress(Exception):
            while not p.flush() and self.loop.time() < deadline:
                await asyncio.sleep(0.01)
        if self.terminate_backend:
            with contextlib.suppress(OSError):
                os.write(self.bs.fd, P.message(b"X", b""))
        if self.final:
            self.cs.write(self.final)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.cs.drain(), FLUSH_TIMEOUT)
