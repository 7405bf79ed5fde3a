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
   then both directions are framed but forwarded verbatim, except that ``Query``/``Parse`` pass
   through :meth:`Dialect.statement` (a rewrite re-encodes only that message) and
   CommandComplete/ErrorResponse/ReadyForQuery are reported to the dialect (an ErrorResponse is
   re-encoded only if the dialect changed it).

A session that breaks the protocol, or whose backend dies, is closed alone with a FATAL
``08P01``/``57P01``; other sessions go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dsqlops.sandbox import protocol as P
from dsqlops.sandbox.auth import ACCESS_DENIED, AuthFailure, Identity, verify
from dsqlops.sandbox.hooks import Dialect, Fail, Forward, Session, SqlError

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


@dataclass
class Unit:
    """One statement execution the client awaits a result for (a simple Query or an Execute)."""

    fail: SqlError | None = None
    tag: str | None = None   # Forward.tags: the CommandComplete tag the client sees instead (S2)


@dataclass
class Segment:
    """Messages up to a Sync (or one simple Query): the backend answers each with one ReadyForQuery."""

    units: deque[Unit] = field(default_factory=deque)
    suppress: bool = False   # an injected error ended the segment: drop backend output until Z
    conceal: bool = False    # SqlError.conceal_tag answered an error: report 'T' instead of 'E' (S2)


@dataclass
class Conn:
    """Per-connection relay state."""

    session: Session
    backend_pid: int
    backend_key: int
    key: int
    statements: dict[str, SqlError | None] = field(default_factory=dict)
    portals: dict[str, SqlError | None] = field(default_factory=dict)
    stmt_tags: dict[str, str | None] = field(default_factory=dict)    # Forward.tags per prepared statement
    portal_tags: dict[str, str | None] = field(default_factory=dict)
    segments: deque[Segment] = field(default_factory=deque)
    open_segment: Segment | None = None


class SessionClosed(Exception):
    pass


class Front:
    def __init__(self, *, resolve: Resolver, lookup: Callable[[str], Identity | None], dialect: Dialect,
                 cert_file: str, key_file: str, default_region: str = "us-east-1") -> None:
        self.resolve = resolve
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
        self._server_sock: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None

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
        writer: asyncio.StreamWriter | None = None
        bwriter: asyncio.StreamWriter | None = None
        relayed = False
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            first = await asyncio.wait_for(_peek(conn), STARTUP_TIMEOUT)
            if not first:
                conn.close()
                return
            if first[0] == 0x16:  # TLS ClientHello: sslnegotiation=direct
                reader, writer = await _streams(conn, self.direct_ctx)
                sslobj = writer.get_extra_info("ssl_object")
                if sslobj is None or sslobj.selected_alpn_protocol() != "postgresql":
                    return  # libpq requires ALPN for direct TLS; so do we
            else:
                reader, writer = await _streams(conn, None)
            result = await asyncio.wait_for(self._startup(reader, writer), STARTUP_TIMEOUT)
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
            for w in (bwriter, writer):
                if w is not None and relayed:
                    w.transport.close()
                elif w is not None:
                    w.close()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(w.wait_closed(), 2)
            if writer is None:
                conn.close()

    async def _startup(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
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
        try:
            breader, bwriter = await _open_backend(host, port)
        except OSError:
            await _send_close(writer, P.fatal("08006", "unable to accept connection, cluster unavailable"))
            return None
        params = {k: v for k, v in st.params.items() if k not in ("user", "database", "replication")}
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
            out.append(P.message(kind, body))
        key = secrets.randbits(31)
        self.cancel_keys[(bpid, key)] = (host, port, bpid, bkey)
        session.backend_pid = bpid
        self.dialect.ready(session, body.decode())
        writer.write(b"".join(out) + P.backend_key_data(bpid, key) + P.message(b"Z", body))
        await writer.drain()
        return reader, writer, breader, bwriter, Conn(session=session, backend_pid=bpid, backend_key=bkey, key=key)

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
    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     breader: asyncio.StreamReader, bwriter: asyncio.StreamWriter, c: Conn) -> None:
        """Switch both connections from streams to plain protocols (no task or future per chunk)."""
        relay = Relay(self, c, writer.transport, bwriter.transport)
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
            await relay.flush_and_close()

    def _client_message(self, kind: int, buf: bytes, pos: int, end: int, c: Conn) -> bytes | None:
        """Inspect one frontend message; return its replacement, or None to relay it unchanged."""
        body = buf[pos + 5:end]
        if kind == 81:
            sql = P.parse_query(body)
            action = self.dialect.statement(c.session, sql, extended=False)
            seg = Segment()
            c.segments.append(seg)
            if isinstance(action, Forward):
                if action.tags:
                    seg.units.extend(Unit(tag=t) for t in action.tags)
                else:
                    seg.units.append(Unit())
                return None if action.sql == sql else P.encode_query(action.sql)
            assert isinstance(action, Fail)
            seg.units.append(Unit(fail=action.error))
            return P.encode_query(action.backend_sql or raise_sql(action.error))
        if kind == 80:
            msg = P.parse_parse(body)
            action = self.dialect.statement(c.session, msg.sql, extended=True)
            if isinstance(action, Forward):
                c.statements[msg.name] = None
                c.stmt_tags[msg.name] = action.tags[0] if action.tags else None
                if action.sql == msg.sql:
                    return None
                msg.sql = action.sql
                return P.encode_parse(msg)
            assert isinstance(action, Fail)
            c.statements[msg.name] = action.error
            msg.sql = action.backend_sql or raise_sql(action.error)
            return P.encode_parse(msg)
        if kind == 66:
            portal, stmt = P.parse_bind_names(body)
            c.portals[portal] = c.statements.get(stmt)
            c.portal_tags[portal] = c.stmt_tags.get(stmt)
            return None
        if kind == 69:
            portal = P.parse_name(body)
            self._segment(c).units.append(Unit(fail=c.portals.get(portal), tag=c.portal_tags.get(portal)))
            return None
        if kind == 83:
            seg = self._segment(c)
            c.open_segment = None
            c.segments.append(seg)
            return None
        if kind == 67:  # Close: forget what we know about that statement/portal
            what = body[:1]
            name = P.parse_name(body[1:]) if len(body) > 1 else ""
            (c.statements if what == b"S" else c.portals).pop(name, None)
        return None

    @staticmethod
    def _segment(c: Conn) -> Segment:
        if c.open_segment is None:
            c.open_segment = Segment()
        return c.open_segment

    @staticmethod
    def _current(c: Conn) -> Segment | None:
        if c.segments:
            return c.segments[0]
        return c.open_segment

    def _suppressed(self, c: Conn) -> bool:
        seg = self._current(c)
        return seg is not None and seg.suppress

    def _backend_message(self, kind: int, buf: bytes, pos: int, end: int, c: Conn) -> bytes | None:
        """Inspect one backend message; return its replacement (b'' drops it), or None to relay it."""
        body = buf[pos + 5:end]
        seg = self._current(c)
        if kind == 90:
            if c.segments:
                c.segments.popleft()
            status = body[:1].decode()
            c.session.txn_status = status
            self.dialect.ready(c.session, status)
            if seg is not None and seg.conceal and status == "E":
                return P.ready_for_query("T")  # the dialect hid this error (SqlError.conceal_tag)
            return None
        if seg is not None and seg.suppress:
            return b""
        if kind == 67:
            unit = seg.units.popleft() if seg is not None and seg.units else None
            if unit is not None and unit.fail is not None:
                # backend_sql ran (e.g. ROLLBACK for a failing COMMIT): the client sees the error
                # and nothing else until ReadyForQuery, as after any error.
                assert seg is not None
                seg.suppress = True
                seg.units.clear()
                return P.error_response(unit.fail)
            self.dialect.completed(c.session, P.parse_command_tag(body))
            if unit is not None and unit.tag:
                return P.message(b"C", P.cstr(unit.tag))
            return None
        if kind in (73, 115):
            if seg is not None and seg.units:
                seg.units.popleft()
            return None
        # ErrorResponse
        unit = seg.units[0] if seg is not None and seg.units else None
        last_unit = seg is None or len(seg.units) <= 1
        if seg is not None:
            seg.units.clear()  # the backend skips to the next Sync
        if unit is not None and unit.fail is not None:
            return P.error_response(unit.fail)
        err = P.parse_error_response(body)
        if err.severity in ("NOTICE", "WARNING", "INFO", "DEBUG", "LOG"):
            return None
        new = self.dialect.backend_error(c.session, err)
        conceal_tag = getattr(new, "conceal_tag", None)
        if conceal_tag and seg is not None and last_unit:
            # DSQL never blocks a writer: answer as if it ran; the dialect fails the COMMIT.
            seg.conceal = True
            return P.message(b"C", P.cstr(conceal_tag))
        if new is err:
            return None
        return P.error_response(new)


_FRONTEND_TYPES = frozenset(b"QPBEDCHSFXdcfp")
#: Frontend messages the front inspects; everything else is relayed without a look inside.
_CLIENT_INSPECT = frozenset(b"QPBESC")
#: Backend messages the front inspects: CommandComplete, ErrorResponse, ReadyForQuery,
#: EmptyQueryResponse, PortalSuspended.
_BACKEND_INSPECT = frozenset(b"CEZIs")
_TERMINATE = ord("X")
#: Pause reading one side while the other side's transport holds more than this.
_HIGH_WATER = 4 * 1024 * 1024


def _drain_buffer(reader: asyncio.StreamReader) -> bytes:
    """Bytes a StreamReader already received but nobody read (normally none after startup)."""
    buf = getattr(reader, "_buffer", None)
    if not buf:
        return b""
    data = bytes(buf)
    buf.clear()
    return data


class _Side(asyncio.Protocol):
    """The protocol of one transport of a relayed session: hands data to the Relay."""

    def __init__(self, relay: Relay, *, client: bool) -> None:
        self.relay = relay
        self.client = client

    def data_received(self, data: bytes) -> None:
        if self.client:
            self.relay.from_client(data)
        else:
            self.relay.from_backend(data)

    def eof_received(self) -> bool | None:
        self.relay.lost(client=self.client)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.lost(client=self.client)

    def pause_writing(self) -> None:
        self.relay.pause(client=self.client)

    def resume_writing(self) -> None:
        self.relay.resume(client=self.client)


class Relay:
    """Both directions of one logged-in session, driven by transport callbacks.

    Messages are framed so the front can apply the dialect; a message the front does not inspect
    is forwarded as it arrives (even before it is complete), and consecutive unchanged messages
    leave in one write. A protocol violation by the client, or the backend going away, ends only
    this session, with a FATAL to the client.
    """

    def __init__(self, front: Front, c: Conn, client: asyncio.BaseTransport, backend: asyncio.BaseTransport) -> None:
        self.front = front
        self.c = c
        self.client: Any = client
        self.backend: Any = backend
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.final: bytes | None = None      # a last message for the client before closing
        self.terminate_backend = False
        self._cbuf = b""
        self._cskip = 0
        self._bbuf = b""
        self._bskip = 0
        self._bdrop = False

    # -- end of session ---------------------------------------------------------------------------
    def _finish(self, final: bytes | None = None, *, terminate_backend: bool = False) -> None:
        if self.done.done():
            return
        self.final = final
        self.terminate_backend = terminate_backend
        self.client.pause_reading()
        self.backend.pause_reading()
        self.done.set_result(None)

    def lost(self, *, client: bool) -> None:
        if self.done.done():
            return
        if client:
            self._finish(terminate_backend=True)
        else:
            self._finish(P.fatal("57P01", "terminating connection: the session's backend ended unexpectedly"))

    async def flush_and_close(self) -> None:
        if self.terminate_backend and not self.backend.is_closing():
            with contextlib.suppress(Exception):
                self.backend.write(P.message(b"X", b""))
        if self.final and not self.client.is_closing():
            with contextlib.suppress(Exception):
                self.client.write(self.final)
        for t in (self.backend, self.client):
            if not t.is_closing():
                t.close()

    def pause(self, *, client: bool) -> None:
        # the transport that filled up is `client` (or the backend): stop reading the other one
        (self.backend if client else self.client).pause_reading()

    def resume(self, *, client: bool) -> None:
        if not self.done.done():
            (self.backend if client else self.client).resume_reading()

    # -- client → backend -------------------------------------------------------------------------
    def from_client(self, data: bytes) -> None:
        if self.done.done():
            return
        try:
            out = self._parse_client(data)
        except P.ProtocolViolation as e:
            self._finish(P.fatal("08P01", str(e)), terminate_backend=True)
            return
        except Exception:
            log.exception("session failed while reading from the client")
            self._finish(P.fatal("XX000", "internal error in the sandbox front"), terminate_backend=True)
            return
        if out:
            self.backend.write(out[0] if len(out) == 1 else b"".join(out))

    def _parse_client(self, data: bytes) -> list[bytes]:
        if self._cbuf:
            data = self._cbuf + data
            self._cbuf = b""
        out: list[bytes] = []
        pos = 0
        n = len(data)
        run = 0          # start of the current run of bytes relayed unchanged
        while pos < n:
            if self._cskip:
                take = min(self._cskip, n - pos)
                self._cskip -= take
                pos += take
                continue
            if n - pos < 5:
                break
            kind = data[pos]
            if kind not in _FRONTEND_TYPES:
                raise P.ProtocolViolation(f"invalid frontend message type {kind}")
            length = int.from_bytes(data[pos + 1:pos + 5], "big", signed=True)
            if length < 4 or length > P.MAX_MESSAGE:
                raise P.ProtocolViolation(f"invalid message length {length}")
            end = pos + 1 + length
            if kind in _CLIENT_INSPECT:
                if end > n:
                    break
                new = self.front._client_message(kind, data, pos, end, self.c)
                if new is not None:
                    if pos > run:
                        out.append(data[run:pos])
                    out.append(new)
                    run = end
                pos = end
            elif kind == _TERMINATE:
                pos = min(end, n)
                if pos > run:
                    out.append(data[run:pos])
                self.backend.write(b"".join(out))
                self._finish()
                return []
            else:
                self._cskip = 1 + length
        if pos > run:
            out.append(data[run:pos])
        if pos < n:
            self._cbuf = data[pos:]
        return out

    # -- backend → client -------------------------------------------------------------------------
    def from_backend(self, data: bytes) -> None:
        if self.done.done():
            return
        try:
            out = self._parse_backend(data)
        except Exception:
            log.exception("session failed while reading from the backend")
            self._finish(P.fatal("XX000", "internal error in the sandbox front"), terminate_backend=True)
            return
        if out:
            self.client.write(out[0] if len(out) == 1 else b"".join(out))

    def _parse_backend(self, data: bytes) -> list[bytes]:
        if self._bbuf:
            data = self._bbuf + data
            self._bbuf = b""
        out: list[bytes] = []
        pos = 0
        n = len(data)
        run = 0
        c = self.c
        while pos < n:
            if self._bskip:
                take = min(self._bskip, n - pos)
                self._bskip -= take
                if self._bdrop:
                    if pos > run:
                        out.append(data[run:pos])
                    run = pos + take
                pos += take
                continue
            if n - pos < 5:
                break
            kind = data[pos]
            length = int.from_bytes(data[pos + 1:pos + 5], "big", signed=True)
            if length < 4:
                raise RuntimeError(f"backend sent a message of length {length}")
            end = pos + 1 + length
            if kind in _BACKEND_INSPECT:
                if end > n:
                    break
                new = self.front._backend_message(kind, data, pos, end, c)
                if new is not None:
                    if pos > run:
                        out.append(data[run:pos])
                    if new:
                        out.append(new)
                    run = end
                pos = end
            else:
                seg = c.segments[0] if c.segments else c.open_segment
                self._bdrop = seg is not None and seg.suppress
                self._bskip = 1 + length
        if pos > run:
            out.append(data[run:pos])
        if pos < n:
            self._bbuf = data[pos:]
        return out


def raise_sql(err: SqlError) -> str:
    """A statement that raises ``err`` inside the backend (so its transaction state matches)."""
    def lit(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    opts = [f"ERRCODE = {lit(err.sqlstate)}"]
    if err.detail:
        opts.append(f"DETAIL = {lit(err.detail)}")
    if err.hint:
        opts.append(f"HINT = {lit(err.hint)}")
    body = f"BEGIN RAISE EXCEPTION USING MESSAGE = {lit(err.message)}, {', '.join(opts)}; END"
    return "DO $dsqlops$ " + body.replace("$dsqlops$", "") + " $dsqlops$"


async def _peek(conn: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()
    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)
    try:
        return conn.recv(1, socket.MSG_PEEK)
    except OSError:
        return b""


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


async def _read_message(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, bytes]:
    head = await reader.readexactly(5)
    kind = head[:1]
    n = struct.unpack("!i", head[1:])[0]
    if n < 4 or n > limit:
        raise P.ProtocolViolation(f"invalid message length {n}")
    body = await reader.readexactly(n - 4)
    return kind, body


async def _send_close(writer: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(Exception):
        writer.write(data)
        await asyncio.wait_for(writer.drain(), 5)


def run_coro(coro: Awaitable[Any]) -> Any:  # pragma: no cover - convenience for scripts
    return asyncio.run(coro)  # type: ignore[arg-type]
