"""Optimistic concurrency as DSQL does it, on top of PostgreSQL's row and table locks.

DSQL never makes a writer wait: the first transaction to COMMIT wins and the others fail at their
COMMIT with ``40001 … (OC000)``; DDL never waits for readers, whose later write or COMMIT fails with
``OC001``. PostgreSQL locks instead. The front bridges the two (see docs/sandbox-dialect.md):

* every explicit transaction is a REPEATABLE READ transaction with a savepoint taken before its
  first statement (:class:`dsqlops.sandbox.relay.Relay` injects it), and the relay keeps a journal
  of the statements that took row locks (text and bound parameters);
* when a session waits on a lock held by a session whose client is idle in its transaction, the
  :class:`Coordinator` *displaces* the holder: ``ROLLBACK TO SAVEPOINT`` in the holder's backend
  releases every lock the transaction took, and the waiter goes on at once;
* before the displaced client's next statement the relay replays its journal in the same snapshot.
  If the other transaction committed a change to one of those rows meanwhile, PostgreSQL refuses
  the replay with a serialization failure and the transaction is doomed: its COMMIT fails with
  OC000 (the other one committed first). If nothing conflicts it simply goes on, and may commit first;
* a holder displaced by DDL is doomed with OC001 at once (its writes and COMMIT fail).

All sessions of the front run in one event loop, so the coordinator needs no threads: it only asks
the cluster's PostgreSQL, over one small connection per cluster, who blocks whom
(``pg_blocking_pids``) for sessions that have been waiting for a few milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import TYPE_CHECKING, Any

from dsqlops.sandbox import protocol as P

if TYPE_CHECKING:
    from dsqlops.sandbox.relay import Relay

log = logging.getLogger("dsqlops.sandbox.occ")

#: How long a statement runs before the coordinator asks whether it waits on an idle transaction.
CHECK_AFTER_S = 0.01
#: Longest pause between two checks while sessions keep waiting.
CHECK_MAX_S = 0.2
#: The lock wait of the front's sessions (the cluster database's default, 50 ms, is for sessions
#: nobody coordinates): past it a waiter gives up (55P03) and the dialect hides that as a conflict.
LOCK_WAIT = "2s"

Address = tuple[str, int]


class Coordinator:
    """Displaces idle lock holders for the sessions of every cluster a front serves."""

    def __init__(self) -> None:
        self._clusters: dict[Address, dict[int, Relay]] = {}
        self._monitors: dict[Address, _Monitor] = {}
        self._scheduled: set[Address] = set()
        #: per cluster, the sessions inside a transaction that has our savepoint (displaceable
        #: when idle): without one, no wait can be resolved and nothing is checked
        self._open: dict[Address, set[Relay]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.displacements = 0

    def register(self, relay: Relay, addr: Address) -> None:
        relay.occ = self
        relay.occ_addr = addr
        self._clusters.setdefault(addr, {})[relay.c.backend_pid] = relay

    def unregister(self, relay: Relay) -> None:
        addr = relay.occ_addr
        cluster = self._clusters.get(addr) if addr is not None else None
        if cluster is not None and cluster.get(relay.c.backend_pid) is relay:
            del cluster[relay.c.backend_pid]
        self.track(relay, False)

    def track(self, relay: Relay, open_txn: bool) -> None:
        """``relay`` opened (True) or ended (False) a transaction that has our savepoint."""
        addr = relay.occ_addr
        if addr is None:
            return
        if open_txn:
            self._open.setdefault(addr, set()).add(relay)
        else:
            self._open.get(addr, set()).discard(relay)

    def poke(self, relay: Relay) -> None:
        """Something changed in ``relay`` (it started work, or went idle in a transaction): look for
        waits soon, if a wait on an idle transaction is possible at all in that cluster. Cheap when
        no session of the cluster is inside such a transaction (autocommit traffic)."""
        addr = relay.occ_addr
        if addr is None or addr in self._scheduled or not self._open.get(addr):
            return
        self._schedule(addr, CHECK_AFTER_S)

    def _schedule(self, addr: Address, delay: float) -> None:
        self._scheduled.add(addr)
        loop = asyncio.get_running_loop()
        loop.call_later(delay, self._start_check, addr, delay)

    def _start_check(self, addr: Address, delay: float) -> None:
        task = asyncio.get_running_loop().create_task(self._check(addr, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, addr: Address, delay: float) -> None:
        again = False
        try:
            cluster = self._clusters.get(addr, {})
            if not any(r.displaceable() for r in self._open.get(addr, ())):
                return
            waiting = [r for r in cluster.values() if r.busy()]
            if not waiting:
                return
            monitor = self._monitors.get(addr)
            if monitor is None:
                monitor = self._monitors[addr] = _Monitor(addr, waiting[0].c.session.user)
            # a statement may start waiting only after a while (a DO block, a long UPDATE): look
            # again, less and less often, for as long as sessions are busy
            again = True
            blocked = await monitor.blocking([r.c.backend_pid for r in waiting])
            cluster = self._clusters.get(addr, {})
            for pid, holders in blocked.items():
                waiter = cluster.get(pid)
                if waiter is None or not holders:
                    continue
                for h in holders:
                    holder = cluster.get(h)
                    if holder is not None and holder is not waiter and holder.displaceable():
                        self.displacements += 1
                        holder.displace(waiter, schema=waiter.waits_as_ddl())
        except (OSError, asyncio.IncompleteReadError, P.ProtocolViolation, RuntimeError) as e:
            log.warning("lock-wait check failed: %s", e)
            again = True
        finally:
            self._scheduled.discard(addr)
        if again and any(r.busy() for r in self._clusters.get(addr, {}).values()):
            self._schedule(addr, min(delay * 2, CHECK_MAX_S))

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for m in self._monitors.values():
            m.close()
        self._monitors.clear()


class _Monitor:
    """One plain connection to a cluster's PostgreSQL that runs ``pg_blocking_pids`` (any role may)."""

    def __init__(self, addr: Address, user: str) -> None:
        self.addr = addr
        self.user = user
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def blocking(self, pids: list[int]) -> dict[int, list[int]]:
        arr = ",".join(str(int(p)) for p in pids)
        rows = await self.query(f"SELECT p, pg_blocking_pids(p) FROM unnest('{{{arr}}}'::int[]) AS p")
        out: dict[int, list[int]] = {}
        for pid, holders in rows:
            inner = (holders or "{}").strip("{}")
            out[int(pid or 0)] = [int(x) for x in inner.split(",") if x]
        return out

    async def query(self, sql: str) -> list[list[str | None]]:
        async with self._lock:
            if self._writer is None:
                await self._connect()
            assert self._reader is not None and self._writer is not None
            try:
                self._writer.write(P.encode_query(sql))
                await self._writer.drain()
                rows: list[list[str | None]] = []
                error: str | None = None
                while True:
                    kind, body = await _read(self._reader)
                    if kind == b"D":
                        rows.append(_data_row(body))
                    elif kind == b"E":
                        error = P.parse_error_response(body).message
                    elif kind == b"Z":
                        break
                if error is not None:
                    raise RuntimeError(error)
                return rows
            except BaseException:
                self.close()
                raise

    async def _connect(self) -> None:
        host, port = self.addr
        if host.startswith("/"):
            reader, writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        else:
            reader, writer = await asyncio.open_connection(host, port)
        writer.write(P.startup_packet({"user": self.user, "database": "postgres",
                                       "application_name": "dsqlops-occ"}))
        await writer.drain()
        while True:
            kind, body = await _read(reader)
            if kind == b"E":
                writer.close()
                raise RuntimeError(P.parse_error_response(body).message)
            if kind == b"R" and body[:4] != b"\0\0\0\0":
                writer.close()
                raise RuntimeError("the cluster's PostgreSQL asked the front for a password")
            if kind == b"Z":
                break
        self._reader, self._writer = reader, writer

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._reader = self._writer = None


async def _read(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readexactly(5)
    n = struct.unpack("!i", head[1:])[0]
    if n < 4 or n > P.MAX_MESSAGE:
        raise P.ProtocolViolation(f"invalid message length {n}")
    return head[:1], await reader.readexactly(n - 4)


def _data_row(body: bytes) -> list[Any]:
    count = struct.unpack_from("!h", body, 0)[0]
    pos = 2
    out: list[str | None] = []
    for _ in range(count):
        n = struct.unpack_from("!i", body, pos)[0]
        pos += 4
        if n < 0:
            out.append(None)
        else:
            out.append(body[pos:pos + n].decode())
            pos += n
    return out
