"""The DSQL wire front: TLS, IAM token auth and the dialect hooks over a byte-for-byte relay.

One asyncio task per client connection:

1. startup: ``SSLRequest`` → ``S`` + TLS handshake (SNI recorded); a TLS ClientHello as the
   first byte (``sslnegotiation=direct``, ALPN ``postgresql``) is accepted too; ``GSSENCRequest``
   → ``N``; a plaintext StartupMessage → DSQL-like FATAL; ``CancelRequest`` → forwarded to the
   backend that owns the key we handed out.
2. auth: ``AuthenticationCleartextPassword``; the password must be a DSQL token for the cluster
   named by the SNI host (:mod:`dsqlops.sandbox.auth`); non-admin roles must be mapped in
   ``sys.iam_pg_role_mappings``.
3. relay: the backend's startup answer is passed through (its BackendKeyData replaced by ours);
   then :class:`dsqlops.sandbox.relay.Relay` frames both directions but forwards them verbatim,
   except that ``Query``/``Parse`` pass through :meth:`Dialect.statement` (a rewrite re-encodes only that message) and
   CommandComplete/ErrorResponse/ReadyForQuery are reported to the dialect (an ErrorResponse is
   re-encoded only if the dialect changed it).

A session that breaks the protocol, or whose backend dies, is closed alone with a FATAL
``08P01``/``57P01``; other sessions go on.

DSQL's connection quotas (:mod:`dsqlops.sandbox.limits`) are kept here: new connections per
second per cluster (a token bucket; FATAL ``53400``), connections per cluster (``53300``) and the
connection age (the session is closed once idle, see :meth:`Relay.age_reached`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Any, Protocol

from dsqlops.sandbox import occ
from dsqlops.sandbox import protocol as P
from dsqlops.sandbox.auth import ACCESS_DENIED, AuthFailure, Identity, verify
from dsqlops.sandbox.hooks import Dialect, Session
from dsqlops.sandbox.limits import Limits
from dsqlops.sandbox.relay import Conn, Relay, Writes, _drain_buffer, _Side

log = logging.getLogger("dsqlops.sandbox.front")

STARTUP_TIMEOUT = 30.0
READ_SIZE = 256 * 1024


class ClusterTarget(Protocol):
    """What the front needs to know about one cluster (implemented by the server's registry)."""

    identifier: str
    region: str
    endpoint: str

    async def backend_address(self) -> tuple[str, int]: ...

    async def role_is_mapped(self, role: str, arn: str) -> bool: ...


Resolver = Callable[[str], "ClusterTarget | None"]


class Front:
    def __init__(self, *, resolve: Resolver, lookup: Callable[[str], Identity | None], dialect: Dialect,
                 cert_file: str, key_file: str, default_region: str = "us-east-1",
                 limits: Limits | None = None, max_connections: int | None = None) -> None:
        self.resolve = resolve
        self.limits = limits or Limits()
        #: connections per cluster: DSQL's quota, or fewer when the backend has fewer client slots
        self.max_connections = min(self.limits.connections, max_connections or self.limits.connections)
        #: per cluster: (tokens, monotonic time of the last refill) of the new-connection bucket
        self._buckets: dict[str, tuple[float, float]] = {}
        #: per cluster: logged-in sessions
        self.per_cluster: dict[str, int] = {}
        self.lookup = lookup
        self.dialect = dialect
        self.default_region = default_region
        self._sni: dict[int, str] = {}
        self.ctx = self._context(cert_file, key_file, direct=False)
        self.direct_ctx = self._context(cert_file, key_file, direct=True)
        #: (pid, key we handed out) -> (backend host, port, backend pid, backend key)
        self.cancel_keys: dict[tuple[int, int], tuple[str, int, int, int]] = {}
        self.sessions: set[asyncio.Task[Any]] = set()
        self.active = 0
        #: displaces idle lock holders so that nobody waits on a row or table lock (occ.py)
        self.occ = occ.Coordinator()
        self._server_sock: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._writes: Writes | None = None  # every session's writes, batched per loop iteration

    # -- TLS ----------------------------------------------------------------------------------
    def _context(self, cert: str, key: str, *, direct: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        if direct:
            ctx.set_alpn_protocols(["postgresql"])

        def sni(obj: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
            if name:
                if len(self._sni) > 10_000:
                    self._sni.clear()
                self._sni[id(obj)] = name.lower()

        ctx.sni_callback = sni
        return ctx

    # -- server -------------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.setblocking(False)
        self._server_sock = sock
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop(sock))

    async def close(self) -> None:
        if self._accept_task:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._accept_task
        if self._server_sock:
            self._server_sock.close()
        for t in list(self.sessions):
            t.cancel()
        if self.sessions:
            await asyncio.gather(*self.sessions, return_exceptions=True)
        await self.occ.close()

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = await loop.sock_accept(sock)
            except OSError as e:
                log.warning("accept failed: %s", e)
                await asyncio.sleep(0.05)
                continue
            task = loop.create_task(self._handle(conn))
            self.sessions.add(task)
            task.add_done_callback(self.sessions.discard)

    # -- one connection -----------------------------------------------------------------------
    async def _handle(self, conn: socket.socket) -> None:
        self.active += 1
        reader: Any = None
        writer: Any = None
        bwriter: Any = None
        relayed = False
        slot: list[str] = []  # the cluster whose connection slot this connection holds
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            first = await asyncio.wait_for(_peek(conn), STARTUP_TIMEOUT)
            if not first:
                conn.close()
                return
            direct = first[0] == 0x16  # TLS ClientHello: sslnegotiation=direct
            reader, writer = await _streams(conn, self.direct_ctx if direct else None)
            if direct and _alpn(writer.get_extra_info("ssl_object")) != "postgresql":
                return  # libpq requires ALPN for direct TLS; so do we
            result = await asyncio.wait_for(self._startup(reader, writer, slot), STARTUP_TIMEOUT)
            if result is None:
                return
            reader, writer, breader, bwriter, c = result
            try:
                await self._relay(reader, writer, breader, bwriter, c)
            finally:
                self.cancel_keys.pop((c.backend_pid, c.key), None)
                relayed = True  # the relay closed both transports (their stream protocols are gone)
        except TimeoutError:
            if writer is not None:
                await _send_close(writer, P.fatal("08P01", "timeout waiting for the startup packet"))
        except P.ProtocolViolation as e:
            if writer is not None:
                await _send_close(writer, P.fatal("08P01", str(e)))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError) as e:
            log.debug("session ended: %s", e)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session failed")
            if writer is not None:
                await _send_close(writer, P.fatal("XX000", "internal error in the sandbox front"))
        finally:
            self.active -= 1
            for cid in slot:
                self.per_cluster[cid] -= 1
            for w in (bwriter, writer):
                if w is not None and relayed:
                    w.transport.close()
                elif w is not None:
                    w.close()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(w.wait_closed(), 2)
            if writer is None:
                conn.close()

    async def _startup(self, reader: Any, writer: Any, slot: list[str]) -> Any:
        tls = writer.get_extra_info("ssl_object") is not None
        while True:
            head = await reader.readexactly(4)
            n = struct.unpack("!i", head)[0]
            if n < 8 or n > P.MAX_STARTUP:
                raise P.ProtocolViolation("invalid length of startup packet")
            packet = head + await reader.readexactly(n - 4)
            st = P.parse_startup(packet)
            if st.code == P.SSL_REQUEST:
                if tls:
                    raise P.ProtocolViolation("SSLRequest received inside TLS")
                writer.write(b"S")
                await writer.drain()
                await writer.start_tls(self.ctx, ssl_handshake_timeout=STARTUP_TIMEOUT)
                tls = True
                continue
            if st.code == P.GSSENC_REQUEST:
                writer.write(b"N")
                await writer.drain()
                continue
            if st.code == P.CANCEL_REQUEST:
                await self._cancel(st.cancel_pid, st.cancel_key)
                return None
            break
        if not tls:
            await _send_close(writer, P.fatal("28000", "unable to accept connection, SSL required",
                                              hint="connect with sslmode=require or verify-full"))
            return None
        sslobj = writer.get_extra_info("ssl_object")
        sni = self._sni.pop(id(sslobj), None)
        user = st.params.get("user", "")
        if st.params.get("replication"):
            await _send_close(writer, P.fatal("0A000", "replication connections are not supported"))
            return None
        if not sni:
            await _send_close(writer, P.fatal("08004", "unable to accept connection, SNI required",
                                              hint="use a client with SNI support (libpq >= 14) and "
                                                   "host=<cluster endpoint>"))
            return None
        target = self.resolve(sni)
        if target is None:
            await _send_close(writer, P.fatal("08004", f"unable to accept connection, cluster not found: {sni}"))
            return None
        if not self._admit(target.identifier):
            await _send_close(writer, P.fatal("53400", "unable to accept connection, connection rate exceeded",
                                              hint="retry after a short, jittered back-off"))
            return None
        if self.per_cluster.get(target.identifier, 0) >= self.max_connections:
            await _send_close(writer, P.fatal("53300", "unable to accept connection, too many connections"))
            return None
        # the slot is held from here until the connection ends (released by _handle)
        self.per_cluster[target.identifier] = self.per_cluster.get(target.identifier, 0) + 1
        slot.append(target.identifier)
        dbname = st.params.get("database", user) or user
        if dbname != "postgres":
            await _send_close(writer, P.fatal("3D000", f'database "{dbname}" does not exist'))
            return None
        # password: the DSQL token
        writer.write(P.auth_cleartext())
        await writer.drain()
        kind, body = await _read_message(reader, P.MAX_STARTUP * 100)
        if kind != b"p":
            raise P.ProtocolViolation(f"expected password message, got message type {kind!r}")
        token = P.parse_password(body)
        try:
            verified = verify(token, user=user, host=target.endpoint, region=target.region, lookup=self.lookup)
            if user != "admin" and not await target.role_is_mapped(user, verified.arn):
                raise AuthFailure(f"role {user!r} is not mapped to {verified.arn}")
        except AuthFailure as e:
            log.info("login refused for %r on %s: %s", user, target.identifier, e.reason)
            await _send_close(writer, P.fatal("28000", ACCESS_DENIED, hint=e.hint))
            return None
        # the backend
        host, port = await target.backend_address()
        breader: Any
        bwriter: Any
        try:
            breader, bwriter = await _open_backend(host, port)
        except OSError:
            await _send_close(writer, P.fatal("08006", "unable to accept connection, cluster unavailable"))
            return None
        params = {k: v for k, v in st.params.items() if k not in ("user", "database", "replication")}
        # The relay displaces idle lock holders (occ.py): a wait past this is a backstop.
        params["options"] = f"-c lock_timeout={occ.LOCK_WAIT} {params.get('options', '')}".rstrip()
        bwriter.write(P.startup_packet({"user": user, "database": "postgres", **params}))
        await bwriter.drain()
        session = Session(cluster_id=target.identifier, region=target.region, database="postgres",
                          user=user, iam_arn=verified.arn)
        out: list[bytes] = []
        bpid = bkey = 0
        while True:
            kind, body = await _read_message(breader, P.MAX_MESSAGE)
            if kind == b"K":
                bpid, bkey = P.parse_backend_key_data(body)
                continue
            if kind == b"E":
                writer.write(b"".join(out) + P.message(kind, body))
                await writer.drain()
                bwriter.close()
                return None
            if kind == b"R" and body[:4] != b"\0\0\0\0":
                raise RuntimeError("backend asked for authentication; the sandbox backend must trust the front")
            if kind == b"Z":
                break
            if kind == b"S":
                name, pos = P.read_cstr(body, 0)
                value = P.read_cstr(body, pos)[0]
                shown = self.dialect.parameter_status(name, value)
                if shown != value:
                    body = P.cstr(name) + P.cstr(shown)
            out.append(P.message(kind, body))
        key = secrets.randbits(31)
        self.cancel_keys[(bpid, key)] = (host, port, bpid, bkey)
        session.backend_pid = bpid
        self.dialect.ready(session, body.decode())
        writer.write(b"".join(out) + P.backend_key_data(bpid, key) + P.message(b"Z", body))
        await writer.drain()
        return reader, writer, breader, bwriter, Conn(session=session, backend_pid=bpid, backend_key=bkey, key=key)

    def _admit(self, cluster_id: str) -> bool:
        """DSQL's new-connection quota per cluster: a token bucket of ``connection_burst`` tokens
        refilled at ``new_connections_per_second``."""
        now = asyncio.get_running_loop().time()
        burst = float(self.limits.connection_burst)
        tokens, last = self._buckets.get(cluster_id, (burst, now))
        tokens = min(burst, tokens + (now - last) * self.limits.new_connections_per_second)
        if tokens < 1.0:
            self._buckets[cluster_id] = (tokens, now)
            return False
        self._buckets[cluster_id] = (tokens - 1.0, now)
        return True

    async def _cancel(self, pid: int, key: int) -> None:
        entry = self.cancel_keys.get((pid, key))
        if entry is None:
            return
        host, port, bpid, bkey = entry
        with contextlib.suppress(OSError):
            _r, w = await _open_backend(host, port)
            w.write(struct.pack("!iiii", 16, P.CANCEL_REQUEST, bpid, bkey))
            await w.drain()
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()

    # -- relay ----------------------------------------------------------------------------------
    async def _relay(self, reader: Any, writer: Any, breader: Any, bwriter: Any, c: Conn) -> None:
        """Switch both connections from streams to plain protocols (no task or future per chunk)."""
        if self._writes is None or self._writes.loop is not asyncio.get_running_loop():
            self._writes = Writes(asyncio.get_running_loop())
        relay = Relay(self.dialect, c, writer.transport, bwriter.transport, writes=self._writes)
        aging = asyncio.get_running_loop().call_later(self.limits.connection_age_seconds, relay.age_reached,
                                                      self.limits.txn_age_seconds)
        entry = self.cancel_keys.get((c.backend_pid, c.key))
        if entry is not None:
            self.occ.register(relay, (entry[0], entry[1]))
        leftover_client = _drain_buffer(reader)
        leftover_backend = _drain_buffer(breader)
        writer.transport.set_protocol(_Side(relay, client=True))
        bwriter.transport.set_protocol(_Side(relay, client=False))
        if leftover_client:
            relay.from_client(leftover_client)
        if leftover_backend:
            relay.from_backend(leftover_backend)
        if reader.at_eof():
            relay.lost(client=True)
        if breader.at_eof():
            relay.lost(client=False)
        try:
            await relay.done
        finally:
            aging.cancel()
            self.occ.unregister(relay)
            await relay.flush_and_close()

def _alpn(sslobj: Any) -> str | None:
    if sslobj is None:
        return None
    alpn: str | None = sslobj.selected_alpn_protocol()
    return alpn


async def _peek(conn: socket.socket) -> bytes:
    await _wait_readable(asyncio.get_running_loop(), conn.fileno())
    try:
        return conn.recv(1, socket.MSG_PEEK)
    except OSError:
        return b""


async def _wait_readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Wait until ``fd`` is readable, through the event loop (no read: the first byte is peeked)."""
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def _streams(conn: socket.socket,
                   ctx: ssl.SSLContext | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams over an accepted socket, server side (so ``writer.start_tls`` does a server handshake)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
    holder: list[asyncio.StreamWriter] = []
    # A client_connected_cb marks the protocol as server side; it receives the writer.
    proto = asyncio.StreamReaderProtocol(reader, lambda _r, w: holder.append(w), loop=loop)
    await loop.connect_accepted_socket(lambda: proto, conn, ssl=ctx,
                                       ssl_handshake_timeout=STARTUP_TIMEOUT if ctx else None)
    if not holder:
        raise ConnectionError("connection closed during setup")
    return reader, holder[0]


async def _open_backend(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a backend: ``host`` is an address, or a Unix socket folder (starts with '/')."""
    if host.startswith("/"):
        return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}", limit=READ_SIZE)
    reader, writer = await asyncio.open_connection(host, port, limit=READ_SIZE)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def _read_message(reader: Any, limit: int) -> tuple[bytes, bytes]:
    head = await reader.readexactly(5)
    kind = head[:1]
    n = struct.unpack("!i", head[1:])[0]
    if n < 4 or n > limit:
        raise P.ProtocolViolation(f"invalid message length {n}")
    body = await reader.readexactly(n - 4)
    return kind, body


async def _send_close(writer: Any, data: bytes) -> None:
    with contextlib.suppress(Exception):
        writer.write(data)
        await asyncio.wait_for(writer.drain(), 5)


