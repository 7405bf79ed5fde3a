"""The relay half of the DSQL wire front: one logged-in session, both directions.

After login (``front.py``) both connections run on plain asyncio protocols driven by
:class:`Relay`. Messages are framed; those the front does not inspect are forwarded as they arrive
(large rows stream through), consecutive unchanged messages leave in one write. ``Query`` and
``Parse`` pass through :meth:`Dialect.statement`; CommandComplete, ErrorResponse and
ReadyForQuery are reported to the dialect. Statements, portals, Executes and Syncs are tracked so
that each response is matched to its statement (``Fail``, tag overrides, concealed errors:
see ``hooks.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from dsqlops.sandbox import protocol as P
from dsqlops.sandbox.hooks import Dialect, Fail, Forward, Session, SqlError

log = logging.getLogger("dsqlops.sandbox.front")


@dataclass
class Unit:
    """One statement execution the client awaits a result for (a simple Query or an Execute)."""

    fail: SqlError | None = None
    tag: str | None = None   # Forward.tags: the CommandComplete tag the client sees instead


@dataclass
class Segment:
    """Messages up to a Sync (or one simple Query): the backend answers each with one ReadyForQuery."""

    units: deque[Unit] = field(default_factory=deque)
    suppress: bool = False   # an injected error ended the segment: drop backend output until Z
    conceal: bool = False    # SqlError.conceal_tag answered an error: report 'T' instead of 'E'


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


_FRONTEND_TYPES = frozenset(b"QPBEDCHSFXdcfp")
#: Frontend messages the front inspects; everything else is relayed without a look inside.
_CLIENT_INSPECT = frozenset(b"QPBESC")
#: Backend messages the front inspects: CommandComplete, ErrorResponse, ReadyForQuery,
#: EmptyQueryResponse, PortalSuspended.
_BACKEND_INSPECT = frozenset(b"CEZIs")
_TERMINATE = ord("X")


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

    def __init__(self, dialect: Dialect, c: Conn, client: asyncio.BaseTransport,
                 backend: asyncio.BaseTransport, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.dialect = dialect
        self.c = c
        self.client: Any = client
        self.backend: Any = backend
        self.done: asyncio.Future[None] = (loop or asyncio.get_running_loop()).create_future()
        self.final: bytes | None = None      # a last message for the client before closing
        self.terminate_backend = False
        self._cbuf = b""
        self._cparts: list[bytes] = []
        self._chave = 0
        self._cneed = 0
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
            # A partial message we must see whole: collect chunks until it is complete, then join
            # once (re-joining on every chunk would be quadratic for a large Bind).
            self._cparts.append(data)
            self._chave += len(data)
            if self._chave < self._cneed:
                return []
            data = self._cbuf + b"".join(self._cparts)
            self._cbuf = b""
            self._cparts = []
        out: list[bytes] = []
        need = 5
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
                    need = end - pos
                    break
                new = self._client_message(kind, data, pos, end, self.c)
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
            self._chave = n - pos
            self._cneed = need
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
                new = self._backend_message(kind, data, pos, end, c)
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

    # -- the messages the front inspects -----------------------------------------------------------
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
