"""The relay half of the DSQL wire front: one logged-in session, both directions.

After login (``front.py``) both connections run on plain asyncio protocols driven by
:class:`Relay`. Messages are framed; those the front does not inspect are forwarded as they arrive
(large rows stream through), consecutive unchanged messages leave in one write (in the front,
once the event loop has read all its input: :class:`Writes`). ``Query`` and
``Parse`` pass through :meth:`Dialect.statement`; CommandComplete, ErrorResponse and
ReadyForQuery are reported to the dialect. Statements, portals, Executes and Syncs are tracked so
that each response is matched to its statement (``Fail``, tag overrides, concealed errors:
see ``hooks.py``).

The relay also carries the session's side of optimistic concurrency (``occ.py``): the savepoint
each transaction starts with, the journal of its writes, displacement (rollback to the savepoint)
and replay. For those it sends exchanges of its own to the backend (``Segment.injected``: nothing
of them reaches the client) and holds the client's bytes while they run, or while the outcome of a
write inside a transaction is pending (so a hidden conflict is undone before the next statement).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import logging
import re
import struct
from collections import deque
from collections.abc import Callable
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
    sql: str | None = None   # the text the backend runs (tells the dialect which statement failed)
    #: Messages that run this statement again (the OCC journal keeps them once it succeeded), or
    #: None for a statement that takes no row locks.
    replay: bytes | None = None
    pins: bool = False       # DDL or a multi-statement Query: its transaction cannot be replayed


@dataclass
class Segment:
    """Messages up to a Sync (or one simple Query): the backend answers each with one ReadyForQuery."""

    units: deque[Unit] = field(default_factory=deque)
    suppress: bool = False   # an injected error ended the segment: drop backend output until Z
    conceal: bool = False    # SqlError.conceal_tag answered an error: report 'T' instead of 'E'
    #: The front's own exchange (savepoint, replay, displacement): nothing of it reaches the client;
    #: called with the segment when its ReadyForQuery arrives.
    injected: Callable[[Segment], None] | None = None
    own_sync: bool = False   # ended by a Sync the front added: its ReadyForQuery is not relayed
    errors: list[SqlError] = field(default_factory=list)
    writes: bool = False     # holds a statement that may meet a write conflict
    ntags: int = 0           # CommandCompletes seen
    last_tag: str = ""
    failed: bool = False     # an error ended it


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
    stmt_info: dict[str, StmtInfo] = field(default_factory=dict)
    #: per portal: its statement, the Bind's parameter part (for a write) and the statement's name
    portal_info: dict[str, tuple[StmtInfo, bytes, str] | None] = field(default_factory=dict)
    segments: deque[Segment] = field(default_factory=deque)
    open_segment: Segment | None = None


@dataclass
class StmtInfo:
    """What the front keeps about a prepared statement for OCC (see ``occ.py``)."""

    client_sql: str          # the client's text (the dialect sees it again at each Execute of a named one)
    sql: str                 # the text the backend prepared
    parse_rest: bytes        # the Parse message's parameter type part

    @functools.cached_property
    def write(self) -> bool:
        """May take row locks (INSERT/UPDATE/DELETE, SELECT … FOR UPDATE/SHARE)."""
        return bool(_WRITE.search(self.sql))

    @functools.cached_property
    def pins(self) -> bool:
        """DDL and other statements a transaction cannot be replayed past."""
        return bool(_PINS.match(self.sql))


_FRONTEND_TYPES = frozenset(b"QPBEDCHSFXdcfp")
#: Frontend messages the front inspects; everything else is relayed without a look inside.
_CLIENT_INSPECT = frozenset(b"QPBESCF")
#: Backend messages the front inspects: CommandComplete, ErrorResponse, ReadyForQuery,
#: EmptyQueryResponse, PortalSuspended, NoticeResponse.
_BACKEND_INSPECT = frozenset(b"CEZIsN")
_TERMINATE = ord("X")
_I32 = struct.Struct("!i")
#: ReadyForQuery bodies, decoded once
_STATUS = {b"I": "I", b"T": "T", b"E": "E"}
_SYNC = P.message(b"S", b"")

#: The savepoint each explicit transaction starts with (see occ.py).
SAVEPOINT = "dsqlops_occ"
_REPLAY_STMT = b"dsqlops_occ_replay\0"
#: Statements that may take row locks: the OCC journal replays them after a displacement.
_WRITE = re.compile(r"^\s*(?:insert|update|delete|merge)\b|\bfor\s+(?:no\s+key\s+update|update|key\s+share|share)\b"
                    r"|^\s*with\b[\s\S]*\b(?:insert|update|delete)\b", re.IGNORECASE)
#: Statements a transaction cannot be replayed past (DDL, and the rewrites the dialect makes of it).
#: (EXECUTE and COPY write without the journal seeing their text.)
_PINS = re.compile(r"^\s*(?:create|alter|drop|comment|grant|revoke|call|do|security|reassign|refresh|cluster"
                   r"|execute|copy|select\s+sys\._)\b", re.IGNORECASE)
#: Statements that may come before the savepoint (SET TRANSACTION must precede any subtransaction).
_BEFORE_SAVEPOINT = re.compile(r"^\s*(?:set|show|begin|start|commit|end|rollback|abort|reset|discard|deallocate"
                               r"|savepoint|release|prepare\s+transaction)\b", re.IGNORECASE)


def _drain_buffer(reader: asyncio.StreamReader) -> bytes:
    """Bytes a StreamReader already received but nobody read (normally none after startup)."""
    buf = getattr(reader, "_buffer", None)
    if not buf:
        return b""
    data = bytes(buf)
    buf.clear()
    return data


class Writes:
    """Sends what the relays of one event loop have to write once the loop has handled all the
    input it was woken for, instead of a write per chunk as it arrives. Each write wakes the
    process at the other end, which on a busy machine often takes the core from the front at
    once, while the rest of the input it was woken for waits; batched, the front reads
    everything first. Per transport, bytes leave in the order they were produced."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._relays: list[Relay] = []
        self._scheduled = False

    def add(self, relay: Relay) -> None:
        self._relays.append(relay)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        relays, self._relays = self._relays, []
        for r in relays:
            try:
                r.flush_writes()
            except Exception:  # one session's transport must not keep the others' bytes back
                log.exception("session failed while writing")
                r._finish(terminate_backend=True)


class _Side(asyncio.Protocol):
    """The protocol of one transport of a relayed session: hands data to the Relay."""

    def __init__(self, relay: Relay, *, client: bool) -> None:
        self.relay = relay
        self.client = client
        # the transport calls the relay directly: one Python call less per chunk
        self.data_received = relay.from_client if client else relay.from_backend  # type: ignore[method-assign]

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
                 backend: asyncio.BaseTransport, *, loop: asyncio.AbstractEventLoop | None = None,
                 writes: Writes | None = None) -> None:
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
        self._cdrop = False
        self._bbuf = b""
        self._bskip = 0
        self._bdrop = False
        self._close_when_idle = False
        self._backend_full = False
        # batched writes (Writes); without one, each write goes out at once
        self._writes = writes
        self._to_client: list[bytes] = []
        self._to_backend: list[bytes] = []
        self._queued = False
        # -- OCC (occ.py): set by Coordinator.register
        self.occ: Any = None
        self.occ_addr: tuple[str, int] | None = None
        self.savepoint = False      # this transaction started with our savepoint
        self._fresh = False         # a transaction just began and ran nothing yet
        self.pinned = False         # ran DDL (or something else it cannot be replayed past)
        self.journal: list[bytes] = []
        self.displaced = False      # rolled back to the savepoint: replay the journal before going on
        self._held: list[bytes] | None = None   # client bytes that wait for the front's own exchange
        self._gate: Segment | None = None       # the segment whose outcome the held bytes wait for
        self._injecting = 0
        self._split = False         # a write Execute just went out inside a pipeline (see _client_message)
        self._skip_to_sync = False  # drop client messages up to its Sync (the backend would have skipped them)
        self.txn_no = 0             # counts this session's transactions
        #: sessions displaced for this one's sake, with their transaction numbers: if this
        #: transaction commits, those lose (it wrote, or locked FOR UPDATE, a row they had written)
        self.displaced_others: list[tuple[Relay, int]] = []
        #: the sessions that displaced this one, with their transaction numbers
        self.displaced_by: list[tuple[Relay, int]] = []
        #: sessions whose next statement waits for this one's current exchange (see _displacer_busy)
        self.watchers: list[Relay] = []

    # -- connection age ---------------------------------------------------------------------------
    def age_reached(self, grace: float) -> None:
        """The connection reached its maximum age: close it now when idle; otherwise once its
        transaction ends, or after ``grace`` seconds (the transaction age limit) at the latest.
        Like DSQL, no error: the session is just closed."""
        if self.done.done():
            return
        if self._idle():
            self._finish(terminate_backend=True)
            return
        self._close_when_idle = True
        self.done.get_loop().call_later(grace, lambda: self._finish(terminate_backend=True))

    def _idle(self) -> bool:
        c = self.c
        return c.session.txn_status == "I" and not c.segments and c.open_segment is None

    # -- end of session ---------------------------------------------------------------------------
    def _finish(self, final: bytes | None = None, *, terminate_backend: bool = False) -> None:
        if self.done.done():
            return
        if self.occ is not None:
            self.occ.unregister(self)
            watchers, self.watchers = self.watchers, []
            for w in watchers:  # nothing to wait for any more
                w._resume()
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

    def _send(self, data: bytes, *, client: bool) -> None:
        if self._writes is None:
            (self.client if client else self.backend).write(data)
            return
        (self._to_client if client else self._to_backend).append(data)
        if not self._queued:
            self._queued = True
            self._writes.add(self)

    def flush_writes(self) -> None:
        """Send what this session's relay has produced so far."""
        self._queued = False
        for pending, t in ((self._to_backend, self.backend), (self._to_client, self.client)):
            if pending:
                data = pending[0] if len(pending) == 1 else b"".join(pending)
                pending.clear()
                if not t.is_closing():
                    t.write(data)

    async def flush_and_close(self) -> None:
        with contextlib.suppress(Exception):
            self.flush_writes()
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
        if not client:
            self._backend_full = True
        (self.backend if client else self.client).pause_reading()

    def resume(self, *, client: bool) -> None:
        if not client:
            self._backend_full = False
        if not self.done.done() and (client or self._held is None):
            (self.backend if client else self.client).resume_reading()

    # -- client → backend -------------------------------------------------------------------------
    def from_client(self, data: bytes) -> None:
        if self.done.done():
            return
        if self._held is not None or self._injecting or (self.displaced_by and self._displacer_busy()):
            self._hold(data)
            return
        if self.displaced:
            self._hold(data)
            self._restore(rollback=False)
            return
        try:
            out = self._parse_client(data)
        except P.ProtocolViolation as e:
            # one line, no traceback: a client can send any bytes it likes
            log.warning("session of %r on %s closed: protocol violation: %s", self.c.session.user,
                        self.c.session.cluster_id, e)
            self._finish(P.fatal("08P01", str(e)), terminate_backend=True)
            return
        except Exception:
            log.exception("session failed while reading from the client")
            self._finish(P.fatal("XX000", "internal error in the sandbox front"), terminate_backend=True)
            return
        if out:
            self._send(out[0] if len(out) == 1 else b"".join(out), client=False)
        if self.occ is not None and (self.c.segments or self.c.open_segment is not None):
            self.occ.poke(self)

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
                if self._cdrop:
                    if pos > run:
                        out.append(data[run:pos])
                    run = pos + take
                pos += take
                continue
            if n - pos < 5:
                break
            kind = data[pos]
            if kind not in _FRONTEND_TYPES:
                raise P.ProtocolViolation(f"invalid frontend message type {kind}")
            length = _I32.unpack_from(data, pos + 1)[0]
            if length < 4 or length > P.MAX_MESSAGE:
                raise P.ProtocolViolation(f"invalid message length {length}")
            end = pos + 1 + length
            if self._split and kind != 83 and kind != _TERMINATE:
                # A write ran inside a pipeline: end its segment here with a Sync of our own, so a
                # conflict can be hidden and the transaction restored before the rest runs.
                self._split = False
                if pos > run:
                    out.append(data[run:pos])
                run = pos
                out.append(self._own_sync())
                self._hold(data[pos:])
                return out
            if self._skip_to_sync and kind != 83 and kind != _TERMINATE:
                if pos > run:
                    out.append(data[run:pos])
                self._cdrop = True
                self._cskip = 1 + length
                run = pos
                continue
            self._cdrop = False
            if kind in _CLIENT_INSPECT:
                if end > n:
                    need = end - pos
                    break
                self._split = False
                self._skip_to_sync = False
                try:
                    new = self._client_message(kind, data, pos, end, self.c)
                except (ValueError, IndexError, UnicodeError) as e:  # a body that does not parse
                    raise P.ProtocolViolation(f"invalid message format ({chr(kind)} message)") from e
                if new is not None:
                    if pos > run:
                        out.append(data[run:pos])
                    out.append(new)
                    run = end
                pos = end
                if self._held is not None:  # a gate closed behind this message: the rest waits
                    if pos > run:
                        out.append(data[run:pos])
                    if pos < n:
                        self._held.append(data[pos:])
                    return out
            elif kind == _TERMINATE:
                pos = min(end, n)
                if pos > run:
                    out.append(data[run:pos])
                self._send(b"".join(out), client=False)
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
            self._send(out[0] if len(out) == 1 else b"".join(out), client=True)
        if self._close_when_idle and self._idle():
            self._finish(terminate_backend=True)

    def _parse_backend(self, data: bytes) -> list[bytes]:
        if self._bbuf:
            data = self._bbuf + data
            self._bbuf = b""
        out: list[bytes] = []
        pos = 0
        n = len(data)
        run = 0          # start of the current run of bytes relayed unchanged
        c = self.c
        if self._bskip:  # the rest of a message that began in an earlier chunk
            pos = min(self._bskip, n)
            self._bskip -= pos
            if self._bdrop:
                run = pos
        unpack = _I32.unpack_from
        while n - pos >= 5:
            kind = data[pos]
            length = unpack(data, pos + 1)[0]
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
                continue
            # relayed without a look inside (rows stream through even before they are complete),
            # or dropped while an injected error suppresses the segment's output
            seg = c.segments[0] if c.segments else c.open_segment
            drop = seg is not None and seg.suppress
            if drop:
                if pos > run:
                    out.append(data[run:pos])
                run = min(end, n)
            if end > n:
                self._bskip = end - n
                self._bdrop = drop
                pos = n
                break
            pos = end
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
            pre = self._savepoint_before(sql)
            action = self.dialect.statement(c.session, sql, extended=False)
            seg = Segment()
            c.segments.append(seg)
            if isinstance(action, Forward):
                replay: bytes | None = None
                pins = False
                if self.savepoint:  # (outside such a transaction nothing is journaled)
                    multi = ";" in action.sql.strip().rstrip(";")
                    if not multi and _WRITE.search(action.sql):
                        replay = P.encode_query(action.sql)
                    pins = multi or bool(_PINS.match(action.sql))
                if action.tags:
                    seg.units.extend(Unit(tag=t, sql=action.sql, pins=pins) for t in action.tags)
                    seg.units[-1].replay = replay
                else:
                    seg.units.append(Unit(sql=action.sql, replay=replay, pins=pins))
                if replay is not None and self.savepoint:
                    seg.writes = True
                    self._gate_on(seg)
                if action.sql == sql:
                    return None if not pre else pre + buf[pos:end]
                return pre + P.encode_query(action.sql)
            assert isinstance(action, Fail)
            seg.units.append(Unit(fail=action.error))
            return pre + P.encode_query(action.backend_sql or raise_sql(action.error))
        if kind == 80:
            msg = P.parse_parse(body)
            pre = self._savepoint_before(msg.sql) if c.open_segment is None else b""
            named = msg.name != ""
            # A named statement is checked again at each Execute (its transaction's state then is
            # what counts); here only its text is worked out, without touching that state.
            saved = copy.deepcopy(c.session.state) if named else None
            action = self.dialect.statement(c.session, msg.sql, extended=True)
            if saved is not None:
                c.session.state = saved
            if isinstance(action, Forward):
                c.statements[msg.name] = None
                c.stmt_tags[msg.name] = action.tags[0] if action.tags else None
                c.stmt_info[msg.name] = StmtInfo(msg.sql, action.sql, msg.rest)
                if action.sql == msg.sql:
                    return None if not pre else pre + buf[pos:end]
                msg.sql = action.sql
                return pre + P.encode_parse(msg)
            assert isinstance(action, Fail)
            c.statements[msg.name] = action.error
            c.stmt_info.pop(msg.name, None)
            msg.sql = action.backend_sql or raise_sql(action.error)
            return pre + P.encode_parse(msg)
        if kind == 66:
            portal, stmt = P.parse_bind_names(body)
            c.portals[portal] = c.statements.get(stmt)
            c.portal_tags[portal] = c.stmt_tags.get(stmt)
            info = c.stmt_info.get(stmt)
            pre = b""
            if c.open_segment is None and info is not None:
                pre = self._savepoint_before(info.sql)
            if info is not None:
                # the parameter part of the Bind, kept to run the statement again (occ.py)
                rest_at = body.index(b"\0", body.index(b"\0") + 1) + 1
                keep = (self.savepoint or self._fresh) and info.write
                c.portal_info[portal] = (info, body[rest_at:] if keep else b"", stmt)
            else:
                c.portal_info[portal] = None
            return (pre + buf[pos:end]) if pre else None
        if kind == 69:
            portal = P.parse_name(body)
            seg = self._segment(c)
            entry = c.portal_info.get(portal)
            info = entry[0] if entry else None
            unit = Unit(fail=c.portals.get(portal), tag=c.portal_tags.get(portal),
                        sql=info.sql if info else None, pins=bool(self.savepoint and info and info.pins))
            seg.units.append(unit)
            replaced: bytes | None = None
            if entry is not None and entry[2] != "":
                replaced = self._recheck(c, entry[0], unit)
            if self.savepoint and entry is not None and info is not None and info.write and not entry[1]:
                unit.pins = True  # bound before the transaction began: its parameters were not kept
            elif self.savepoint and entry is not None and info is not None and info.write and unit.fail is None:
                unit.replay = (P.message(b"C", b"S" + _REPLAY_STMT)
                               + P.message(b"P", _REPLAY_STMT + P.cstr_se(info.sql) + info.parse_rest)
                               + P.message(b"B", b"\0" + _REPLAY_STMT + entry[1])
                               + P.message(b"E", b"\0" + b"\0\0\0\0") + _SYNC)
                if self.savepoint:
                    seg.writes = True
                    self._split = True
            return replaced
        if kind == 83:
            seg = self._segment(c)
            c.open_segment = None
            c.segments.append(seg)
            self._split = False
            if seg.writes:
                self._gate_on(seg)
            return None
        if kind == 70:  # FunctionCall: the dialect decides, like a statement
            refusal = self.dialect.function_call(c.session)
            if refusal is None:
                return None
            seg = Segment()
            seg.units.append(Unit(fail=refusal.error))
            c.segments.append(seg)
            return P.encode_query(raise_sql(refusal.error))  # the backend's transaction state follows
        if kind == 67:  # Close: forget what we know about that statement/portal
            what = body[:1]
            name = P.parse_name(body[1:]) if len(body) > 1 else ""
            (c.statements if what == b"S" else c.portals).pop(name, None)
            (c.stmt_info if what == b"S" else c.portal_info).pop(name, None)
        return None

    def _recheck(self, c: Conn, info: StmtInfo, unit: Unit) -> bytes | None:
        """Ask the dialect again at each Execute of a named statement: its transaction's state then
        decides (one DDL per transaction, no DDL and DML mixed, a doomed COMMIT…), and the dialect
        tracks the transaction as it would for a statement sent in full. A refusal replaces the
        Execute by one of a statement that raises it (which an aborted transaction answers with
        25P02 first, as for any other statement)."""
        action = self.dialect.statement(c.session, info.client_sql, extended=True)
        if isinstance(action, Forward):
            return None
        assert isinstance(action, Fail)
        unit.fail = action.error
        unit.tag = None
        sql = action.backend_sql or raise_sql(action.error)
        return (P.message(b"P", b"\0" + P.cstr_se(sql) + b"\0\0")
                + P.message(b"B", b"\0\0" + b"\0\0" + b"\0\0" + b"\0\0")
                + P.message(b"E", b"\0" + b"\0\0\0\0"))

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
        seg = c.segments[0] if c.segments else c.open_segment
        if seg is not None and seg.injected is not None:
            # the front's own exchange: nothing reaches the client
            if kind == 90:
                c.segments.popleft()
                c.session.txn_status = body[:1].decode()
                seg.injected(seg)
            elif kind == 69:
                err = P.parse_error_response(body)
                if err.severity not in ("NOTICE", "WARNING", "INFO", "DEBUG", "LOG"):
                    seg.errors.append(err)
            return b""
        if kind == 90:
            if c.segments:
                c.segments.popleft()
            status = _STATUS.get(body, "") or body[:1].decode()
            prev = c.session.txn_status
            c.session.txn_status = status
            self.dialect.ready(c.session, status)
            if self.occ is not None:
                self._txn_status(seg, prev, status)
                if self.watchers:
                    watchers, self.watchers = self.watchers, []
                    for w in watchers:
                        w._resume()
            if seg is not None and seg is self._gate:
                self._gate = None
                if seg.conceal and self.savepoint:
                    # a hidden conflict aborted the backend's transaction: undo it, and keep going
                    self._restore(rollback=True)
                elif seg.own_sync and status == "E":
                    self._skip_to_sync = True  # the client's pipeline skips to its Sync, as after any error
                    self._resume()
                else:
                    self._resume()
            if seg is not None and seg.own_sync:
                return b""
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
                seg.failed = True
                seg.suppress = True
                seg.units.clear()
                return P.error_response(unit.fail)
            tag = P.parse_command_tag(body)
            self.dialect.completed(c.session, tag)
            if seg is not None:
                seg.ntags += 1
                seg.last_tag = tag
            if unit is not None and self.savepoint:
                if unit.pins:
                    self.pinned = True
                if unit.replay is not None:
                    self.journal.append(unit.replay)
            if unit is not None and unit.tag:
                return P.message(b"C", P.cstr(unit.tag))
            return None
        if kind in (73, 115):
            if seg is not None and seg.units:
                seg.units.popleft()
            return None
        if kind == 78:  # NoticeResponse: e.g. "does not exist, skipping" from inside a DO block
            notice = P.parse_error_response(body)
            shown = hide_machinery(notice)
            return None if shown is notice else b"N" + P.error_response(shown)[1:]
        # ErrorResponse
        unit = seg.units[0] if seg is not None and seg.units else None
        last_unit = seg is None or len(seg.units) <= 1
        err = P.parse_error_response(body)
        if seg is not None:
            seg.units.clear()  # the backend skips to the next Sync
            if err.severity not in ("NOTICE", "WARNING", "INFO", "DEBUG", "LOG"):
                seg.failed = True
        if unit is not None and unit.fail is not None and err.sqlstate != "25P02":
            return P.error_response(unit.fail)  # (an aborted transaction answers 25P02 first)
        if err.severity in ("NOTICE", "WARNING", "INFO", "DEBUG", "LOG"):
            return None
        c.session.current_sql = unit.sql if unit is not None else None
        new = hide_machinery(self.dialect.backend_error(c.session, err))
        conceal_tag = getattr(new, "conceal_tag", None)
        if conceal_tag and seg is not None and last_unit:
            # DSQL never blocks a writer: answer as if it ran; the dialect fails the COMMIT.
            seg.conceal = True
            return P.message(b"C", P.cstr(conceal_tag))
        if new is err:
            return None
        return P.error_response(new)

    # -- OCC (see occ.py) ---------------------------------------------------------------------------
    def _txn_status(self, seg: Segment | None, prev: str, status: str) -> None:
        c = self.c
        if status == "I":
            if self.displaced_others and seg is not None and not seg.failed and seg.last_tag != "ROLLBACK":
                for other, txn_no in self.displaced_others:  # this transaction committed first
                    if other.txn_no == txn_no and not other.done.done():
                        other._doom(schema=False)
            self.displaced_others.clear()
            self.displaced_by.clear()
            if self.savepoint:
                self.occ.track(self, False)
            self.savepoint = self._fresh = self.pinned = self.displaced = False
            self.journal.clear()
            self._skip_to_sync = False
            self.txn_no += 1
        elif (status == "T" and prev == "I" and seg is not None and seg.ntags == 1 and not self.savepoint
              and seg.last_tag in ("BEGIN", "START TRANSACTION") and not c.segments and c.open_segment is None):
            self._fresh = True
        elif status in ("T", "E") and self.savepoint:
            self.occ.poke(self)  # idle in a transaction that may hold locks others wait for

    def _savepoint_before(self, sql: str) -> bytes:
        """The SAVEPOINT to run before the first statement of a transaction (see occ.py)."""
        if not self._fresh or _BEFORE_SAVEPOINT.match(sql):
            return b""
        self._fresh = False
        self.savepoint = True
        self.occ.track(self, True)
        seg = Segment(suppress=True)

        def done(s: Segment) -> None:
            if s.errors:
                self.savepoint = False
                self.occ.track(self, False)
                log.warning("could not take the OCC savepoint: %s", s.errors[0].message)

        seg.injected = done
        self.c.segments.append(seg)
        return P.encode_query(f"SAVEPOINT {SAVEPOINT}")

    def _gate_on(self, seg: Segment) -> None:
        """Hold what the client sends after ``seg`` until its outcome is known: a hidden conflict
        is undone (rollback to the savepoint) before the next statement runs."""
        self._gate = seg
        if self._held is None:
            self._held = []

    def _own_sync(self) -> bytes:
        c = self.c
        seg = self._segment(c)
        c.open_segment = None
        seg.own_sync = True
        c.segments.append(seg)
        self._gate_on(seg)
        return _SYNC

    def _hold(self, data: bytes) -> None:
        if self._held is None:
            self._held = []
        if data:
            self._held.append(data)
        with contextlib.suppress(Exception):
            self.client.pause_reading()

    def _resume(self) -> None:
        if self._held is not None and not self._injecting and self._gate is None:
            asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        if self.done.done() or self._held is None or self._injecting or self._gate is not None:
            return
        held, self._held = self._held, None
        if not self._backend_full:
            with contextlib.suppress(Exception):
                self.client.resume_reading()
        for chunk in held:
            self.from_client(chunk)

    def _inject(self, parts: list[bytes], done: Callable[[list[SqlError]], None]) -> None:
        """Send the front's own messages; each part ends with exactly one ReadyForQuery."""
        errors: list[SqlError] = []
        self._injecting += 1

        def last(_s: Segment) -> None:
            self._injecting -= 1
            done(errors)

        for i in range(len(parts)):
            seg = Segment(suppress=True, errors=errors)
            seg.injected = last if i == len(parts) - 1 else (lambda _s: None)
            self.c.segments.append(seg)
        self._send(b"".join(parts), client=False)
        if self.occ is not None:
            self.occ.poke(self)  # a replay may wait on another idle transaction

    def _doom(self, *, schema: bool) -> None:
        doom = getattr(self.dialect, "doom", None)
        if doom is not None:
            doom(self.c.session, schema=schema)

    def _restore(self, *, rollback: bool) -> None:
        """Bring the backend back to this transaction's writes: after an error, roll back to the
        savepoint first; then replay the journal. A replay that fails (another transaction changed
        one of those rows and committed, or a deadlock) dooms the transaction."""
        parts = [P.encode_query(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")] if rollback else []
        parts.extend(self.journal)
        self.displaced = False
        if not parts:
            self._resume()
            return

        def done(errors: list[SqlError]) -> None:
            if errors:
                self._doom(schema=False)
                self.journal.clear()
                self._inject([P.encode_query(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")], lambda _e: self._resume())
            else:
                self._resume()

        self._inject(parts, done)

    def _displacer_busy(self) -> bool:
        """A session that displaced this one is in the middle of an exchange (maybe its COMMIT):
        this one's next statement waits for its outcome, which may doom this transaction. (The
        backend releases the winner's locks before the front sees its COMMIT answer, so this one's
        replay could otherwise finish first.)"""
        for other, txn_no in self.displaced_by:
            if other.txn_no == txn_no and not other.done.done() and other.client_busy():
                if self not in other.watchers:
                    other.watchers.append(self)
                return True
        return False

    def client_busy(self) -> bool:
        """The backend has work of this session's client in hand (not only the front's own)."""
        c = self.c
        return (any(seg.injected is None for seg in c.segments)
                or (c.open_segment is not None and bool(c.open_segment.units)))

    def busy(self) -> bool:
        """The backend has work of this session in hand (it may be waiting on a lock)."""
        c = self.c
        return bool(c.segments) or (c.open_segment is not None and bool(c.open_segment.units))

    def displaceable(self) -> bool:
        """Idle in a transaction that only ran replayable statements since its savepoint."""
        c = self.c
        return (self.savepoint and not self.pinned and not self.displaced and not self.done.done()
                and not c.segments and c.open_segment is None and self._held is None and not self._injecting
                and not self._cbuf and not self._split and c.session.txn_status in ("T", "E"))

    def waits_as_ddl(self) -> bool:
        seg = self._current(self.c)
        unit = seg.units[0] if seg is not None and seg.units else None
        return bool(unit is not None and unit.sql and _PINS.match(unit.sql))

    def displace(self, waiter: Relay, *, schema: bool) -> None:
        """Release every lock this idle transaction took (rollback to its savepoint) for ``waiter``.
        Displaced by DDL it is doomed (OC001); otherwise its journal is replayed before its next
        statement, and it loses if ``waiter`` commits first."""
        if not self.displaceable():
            return
        waiter.displaced_others.append((self, self.txn_no))
        self.displaced_by.append((waiter, waiter.txn_no))
        parts = [P.encode_query(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")]
        aborted = self.c.session.txn_status == "E"
        if aborted:  # it stays aborted for its client
            parts.append(P.encode_query(raise_sql(SqlError(
                "25P02", "current transaction is aborted, commands ignored until end of transaction block"))))
        if schema:
            self._doom(schema=True)
            self.journal.clear()
        elif not aborted and self.journal:
            self.displaced = True
        self._inject(parts, lambda _e: self._resume())


#: Error context lines that name the sandbox's own machinery (DO blocks the front or the dialect
#: sends, functions and triggers of the ``sys`` schema) rather than anything of the client's.
_MACHINERY = re.compile(r"inline_code_block|PL/pgSQL function sys\.|\bsys\._|dsqlops|\$dsql\$"
                        r"|\bdsql_(?:row_limit_\w+|txn_too_big|sql_drop|ddl_end)\b")


def hide_machinery(err: SqlError) -> SqlError:
    """``err`` without the context (CONTEXT, internal query, source location) that would show the
    sandbox's machinery; ``err`` itself when there is none (so the relay forwards it unchanged)."""
    where = err.fields.get("W")
    internal = err.fields.get("q")
    if not (where and _MACHINERY.search(where)) and not (internal and _MACHINERY.search(internal)):
        return err
    fields = {k: v for k, v in err.fields.items() if k not in ("W", "q", "p", "F", "L", "R")}
    kept = [line for line in (where or "").split("\n") if line and not _MACHINERY.search(line)]
    if kept:
        fields["W"] = "\n".join(kept)
    return dataclasses.replace(err, fields=fields)


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
