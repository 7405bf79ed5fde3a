"""Sandbox metering: measure each cluster's work, turn it into DPUs, publish to CloudWatch.

Every ``interval`` seconds (60 by default, ``DSQLOPS_METERING_INTERVAL``) and whenever
``dsqlops sandbox flush-metrics`` asks, the sandbox publishes one datapoint per metric and
cluster to its CloudWatch (moto, in the same process) under ``AWS/AuroraDSQL`` / ``ClusterId``:
ReadDPU, WriteDPU, ComputeDPU, TotalDPU, ClusterStorageSize, TotalTransactions,
ReadOnlyTransactions, OccConflicts, CommitLatency, BytesRead, BytesWritten, ComputeTime.

The model (see docs/bench.md, "Metering model and its limits"):

* **Bytes written** = Δ(rows inserted + updated) × the table's average row width (≥128 B per row,
  pg_stats/pg_class) + Δ rows deleted × 128 B + one 128-B entry per secondary index per row
  inserted or updated — from ``pg_stat_user_tables`` deltas.
* **Bytes read** = Δ(rows returned by sequential scans + index entries read) × row width
  (≥128 B) + a 128-B primary-key uniqueness read per inserted row.
* **Compute seconds** = Δ ``pg_stat_database.active_time`` (time spent executing statements).
* **Transactions**, read-only transactions, OCC conflicts (40001 sent to clients) and commit
  latency come from the wire: :class:`MeteredDialect` wraps the sandbox's dialect and counts them.
* **Transaction minimums** are applied in aggregate: WriteDPU = max(bytes × rate, write
  transactions × 0.05), ReadDPU = max(bytes × rate, transactions × 0.00375) — exact when every
  transaction is on the same side of the minimum, a lower bound otherwise.

The last PostgreSQL counters per cluster persist in ``DIR/metering.json`` (atomic writes) so a
restart does not bill old work twice; counters that went backwards (a statistics reset after a
crash) count from zero.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsqlops.sandbox import dpu
from dsqlops.sandbox.hooks import Action, Dialect, Session, SqlError

log = logging.getLogger("dsqlops.sandbox.metering")

NAMESPACE = "AWS/AuroraDSQL"
DEFAULT_INTERVAL = 60.0
STATE_FILE = "metering.json"
#: One file per flush request (``NONCE.req``), answered by ``NONCE.done``: concurrent callers each
#: get their own answer instead of overwriting one shared request.
REQUESTS_DIR = "metering-requests"
#: Answers nobody collected (the caller gave up) are removed after this many seconds.
STALE_ANSWER_SECONDS = 600.0

#: Metric → CloudWatch unit, in the order they are published.
UNITS: dict[str, str] = {
    "ReadDPU": "None", "WriteDPU": "None", "ComputeDPU": "None", "TotalDPU": "None",
    "ClusterStorageSize": "Bytes", "TotalTransactions": "Count", "ReadOnlyTransactions": "Count",
    "OccConflicts": "Count", "CommitLatency": "Milliseconds", "BytesRead": "Bytes",
    "BytesWritten": "Bytes", "ComputeTime": "Milliseconds",
}

_WRITE_TAGS = ("INSERT", "UPDATE", "DELETE", "MERGE", "COPY")


# --------------------------------------------------------------------------------------------
# What the wire shows: transactions, read-only ones, 40001s, commit latency


@dataclass
class WireCounts:
    transactions: int = 0
    read_only: int = 0
    write_transactions: int = 0
    occ_conflicts: int = 0
    commit_ms: list[float] = field(default_factory=list)


class Tap:
    """Per-cluster wire counters, drained by each flush. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, WireCounts] = {}

    def _c(self, cluster_id: str) -> WireCounts:
        c = self._counts.get(cluster_id)
        if c is None:
            c = self._counts[cluster_id] = WireCounts()
        return c

    def transaction(self, cluster_id: str, *, wrote: bool, commit_ms: float | None) -> None:
        with self._lock:
            c = self._c(cluster_id)
            c.transactions += 1
            if wrote:
                c.write_transactions += 1
            else:
                c.read_only += 1
            if commit_ms is not None and len(c.commit_ms) < 100_000:
                c.commit_ms.append(commit_ms)

    def occ_conflict(self, cluster_id: str) -> None:
        with self._lock:
            self._c(cluster_id).occ_conflicts += 1

    def drain(self, cluster_id: str) -> WireCounts:
        with self._lock:
            return self._counts.pop(cluster_id, None) or WireCounts()


TAP = Tap()


class MeteredDialect:
    """Wraps the sandbox's dialect; counts transactions, writes, 40001s and COMMIT latency.

    A transaction ends when the backend reports ReadyForQuery ``I`` after at least one statement
    completed (an explicit COMMIT/ROLLBACK, or one autocommit statement).
    """

    def __init__(self, inner: Dialect, tap: Tap = TAP) -> None:
        self.inner = inner
        self.tap = tap

    def __getattr__(self, name: str) -> Any:  # anything else the front may use
        return getattr(self.inner, name)

    def statement(self, session: Session, sql: str, *, extended: bool) -> Action:
        head = sql.lstrip()[:6].upper()
        if head.startswith(("COMMIT", "END")):
            session.state["_meter_commit_t"] = time.perf_counter()
        return self.inner.statement(session, sql, extended=extended)

    def completed(self, session: Session, tag: str) -> None:
        st = session.state
        st["_meter_stmts"] = st.get("_meter_stmts", 0) + 1
        word = tag.split(" ", 1)[0].upper()
        if word in _WRITE_TAGS:
            parts = tag.split()
            if not parts[-1].isdigit() or int(parts[-1]) > 0:
                st["_meter_wrote"] = True
        elif word in ("CREATE", "ALTER", "DROP", "GRANT", "REVOKE"):
            st["_meter_wrote"] = True
        self.inner.completed(session, tag)

    def backend_error(self, session: Session, error: SqlError) -> SqlError:
        out = self.inner.backend_error(session, error)
        if out.sqlstate == "40001":
            # One per transaction: a conflict the dialect hides until COMMIT, and the 25P02s it then
            # rewrites to 40001, are all the same aborted transaction (counted when it ends).
            session.state["_meter_occ"] = True
        return out

    def doom(self, session: Session, *, schema: bool) -> None:
        """The front found the transaction lost a conflict (sandbox/occ.py): one 40001, counted
        when it ends."""
        session.state["_meter_occ"] = True
        doom = getattr(self.inner, "doom", None)
        if doom is not None:
            doom(session, schema=schema)

    def ready(self, session: Session, status: str) -> None:
        st = session.state
        if status == "I" and st.pop("_meter_occ", False):
            self.tap.occ_conflict(session.cluster_id)
        if status == "I" and st.get("_meter_stmts"):
            t = st.pop("_meter_commit_t", None)
            ms = (time.perf_counter() - t) * 1000 if t is not None else None
            self.tap.transaction(session.cluster_id, wrote=bool(st.pop("_meter_wrote", False)), commit_ms=ms)
            st["_meter_stmts"] = 0
        elif status == "E":
            st.pop("_meter_wrote", None)
        self.inner.ready(session, status)


def wrap_dialect(inner: Dialect) -> Dialect:
    return MeteredDialect(inner)


# --------------------------------------------------------------------------------------------
# What PostgreSQL shows: statistics deltas

STATS_SQL_DB = ("SELECT xact_commit + xact_rollback, coalesce(active_time, 0) FROM pg_stat_database "
                "WHERE datname = current_database()")
STATS_SQL_TABLES = """
SELECT s.relid::bigint, s.n_tup_ins, s.n_tup_upd, s.n_tup_del, coalesce(s.seq_tup_read, 0),
       coalesce((SELECT sum(ui.idx_tup_read) FROM pg_stat_user_indexes ui WHERE ui.relid = s.relid), 0),
       (SELECT count(*) FROM pg_index i WHERE i.indrelid = s.relid AND NOT i.indisprimary),
       coalesce((SELECT sum(st.avg_width) FROM pg_stats st
                  WHERE st.schemaname = s.schemaname AND st.tablename = s.relname),
                CASE WHEN c.reltuples > 0 THEN pg_relation_size(s.relid) / c.reltuples END, 0),
       pg_total_relation_size(s.relid)
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.schemaname NOT IN ('sys', 'pg_catalog', 'information_schema')
"""


@dataclass
class TableStats:
    ins: int
    upd: int
    dele: int
    seq_read: int
    idx_read: int
    secondary_indexes: int
    width: float
    size: int


@dataclass
class DbStats:
    xacts: int
    active_ms: float
    tables: dict[str, TableStats]

    def to_state(self) -> dict[str, Any]:
        return {"xacts": self.xacts, "active_ms": self.active_ms,
                "tables": {k: [t.ins, t.upd, t.dele, t.seq_read, t.idx_read] for k, t in self.tables.items()}}


def read_stats(conn: Any) -> DbStats:
    """The cumulative statistics of one cluster database (a superuser connection, autocommit)."""
    with contextlib.suppress(Exception):
        conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(STATS_SQL_DB).fetchone()
    tables: dict[str, TableStats] = {}
    for r in conn.execute(STATS_SQL_TABLES).fetchall():
        tables[str(r[0])] = TableStats(int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6]),
                                       float(r[7] or 0), int(r[8]))
    return DbStats(int(row[0]) if row else 0, float(row[1]) if row else 0.0, tables)


def _delta(now: float, before: float) -> float:
    """A counter delta; a counter that went backwards was reset, so all of ``now`` is new."""
    return now - before if now >= before else now


def compute_metrics(prev: Mapping[str, Any] | None, cur: DbStats, wire: WireCounts) -> dict[str, float]:
    """The metric values for one interval: pure, from the previous state and the current counters."""
    prev = prev or {}
    ptables: Mapping[str, list[int]] = prev.get("tables", {})
    written = 0.0
    read = 0.0
    for relid, t in cur.tables.items():
        p = ptables.get(relid, [0, 0, 0, 0, 0])
        ins, upd, dele, seq, idx = (_delta(v, pv) for v, pv in zip((t.ins, t.upd, t.dele, t.seq_read, t.idx_read),
                                                                     p, strict=False))
        width = t.width or dpu.ROW_MIN_BYTES
        written += dpu.rows_bytes(ins + upd, width) + dpu.rows_bytes(dele, dpu.ROW_MIN_BYTES)
        written += t.secondary_indexes * dpu.rows_bytes(ins + upd, dpu.ROW_MIN_BYTES)
        read += dpu.rows_bytes(seq + idx, width) + dpu.rows_bytes(ins, dpu.ROW_MIN_BYTES)
    compute_ms = _delta(cur.active_ms, float(prev.get("active_ms", 0.0)))
    pg_xacts = _delta(cur.xacts, int(prev.get("xacts", 0)))
    transactions = wire.transactions
    write_txns = wire.write_transactions
    read_txns = transactions
    if transactions == 0 and (written or read):
        # Work that did not come through the front (async jobs, background ANALYZE): bill it as one
        # transaction's worth of minimums at most, like DSQL's background DPUs.
        write_txns = 1 if written else 0
        read_txns = 1 if read else 0
    write_dpu = max(dpu.write_dpu(written, minimum=False), write_txns * dpu.WRITE_MIN_DPU) if written or write_txns \
        else 0.0
    read_dpu = max(dpu.read_dpu(read, minimum=False), read_txns * dpu.READ_MIN_DPU) if read or read_txns else 0.0
    compute_dpu = compute_ms / 1000.0
    out = {
        "ReadDPU": read_dpu, "WriteDPU": write_dpu, "ComputeDPU": compute_dpu,
        "TotalDPU": read_dpu + write_dpu + compute_dpu,
        "ClusterStorageSize": float(sum(t.size for t in cur.tables.values())),
        "TotalTransactions": float(transactions), "ReadOnlyTransactions": float(wire.read_only),
        "OccConflicts": float(wire.occ_conflicts),
        "BytesRead": float(read), "BytesWritten": float(written), "ComputeTime": compute_ms,
    }
    if wire.commit_ms:
        out["CommitLatency"] = float(statistics.median(wire.commit_ms))
    out["_pg_transactions"] = float(pg_xacts)
    return out


def metric_data(cluster_id: str, values: Mapping[str, float], when: dt.datetime) -> list[dict[str, Any]]:
    ts = when.astimezone(dt.UTC).replace(tzinfo=None)
    return [{"MetricName": name, "Value": float(values[name]), "Unit": unit, "Timestamp": ts,
             "Dimensions": [{"Name": "ClusterId", "Value": cluster_id}]}
            for name, unit in UNITS.items() if name in values]


def publish_moto(region: str, data: list[dict[str, Any]]) -> None:
    """Put datapoints into the in-process moto CloudWatch (the sandbox's control plane)."""
    from moto.cloudwatch.models import cloudwatch_backends

    from dsqlops.sandbox.state import ACCOUNT_ID

    backend = cloudwatch_backends[ACCOUNT_ID][region]
    for i in range(0, len(data), 1000):
        backend.put_metric_data(NAMESPACE, data[i:i + 1000])


# --------------------------------------------------------------------------------------------
# The meter thread


class Meter:
    """Collects and publishes for every ready cluster of a registry; serves flush requests.

    ``clusters()`` returns ``[(cluster_id, region, conninfo)]``; ``publish(region, data)`` puts
    datapoints. Both are injectable for tests.
    """

    def __init__(self, state_dir: Path, clusters: Callable[[], list[tuple[str, str, dict[str, Any]]]],
                 publish: Callable[[str, list[dict[str, Any]]], None] = publish_moto, *,
                 interval: float | None = None, tap: Tap = TAP, install_explain: bool = False) -> None:
        self.state_path = Path(state_dir) / STATE_FILE
        self.requests_dir = Path(state_dir) / REQUESTS_DIR
        self.clusters = clusters
        self.publish = publish
        self.interval = interval if interval is not None else float(
            os.environ.get("DSQLOPS_METERING_INTERVAL", DEFAULT_INTERVAL))
        self.tap = tap
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._explain_ready: set[str] = set()
        self.install_explain = install_explain
        self.state = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        from dsqlops.fsutil import atomic_write

        atomic_write(self.state_path, (json.dumps(self.state, indent=1, sort_keys=True) + "\n").encode())

    def flush(self, *, nonces: tuple[str, ...] = ()) -> dict[str, dict[str, float]]:
        """Collect and publish now; answer the flush requests ``nonces`` (all made before this
        flush started). Returns {cluster_id: metrics}."""
        import psycopg

        with self._lock:
            # Whole seconds: CloudWatch requests carry times to the second, so a reader can then
            # select exactly the datapoints of a flush (bench: from the flush before a run + 1 s).
            now = dt.datetime.now(dt.UTC).replace(microsecond=0)
            published: dict[str, dict[str, float]] = {}
            snaps = self.state.setdefault("clusters", {})
            for cid, region, conninfo in self.clusters():
                try:
                    with psycopg.connect(**conninfo, autocommit=True, connect_timeout=10) as conn:
                        cur = read_stats(conn)
                except Exception as exc:  # noqa: BLE001 - one cluster's failure must not stop the others
                    log.warning("metering: cannot read statistics of %s: %s", cid, exc)
                    continue
                values = compute_metrics(snaps.get(cid), cur, self.tap.drain(cid))
                self.publish(region, metric_data(cid, values, now))
                snaps[cid] = cur.to_state()
                published[cid] = {k: v for k, v in values.items() if not k.startswith("_")}
            self.state["last_flush"] = now.isoformat().replace("+00:00", "Z")
            self.state["last_published"] = published
            self.state["flushes"] = int(self.state.get("flushes", 0)) + 1
            self._save()
            self._answer(nonces)
            return published

    def _answer(self, nonces: tuple[str, ...]) -> None:
        from dsqlops.fsutil import atomic_write

        if not nonces:
            return
        body = (json.dumps(self.state, sort_keys=True) + "\n").encode()
        for nonce in nonces:
            try:
                atomic_write(self.requests_dir / f"{nonce}.done", body)
            except OSError as exc:
                log.warning("metering: cannot answer flush request %s: %s", nonce, exc)
            with contextlib.suppress(OSError):
                (self.requests_dir / f"{nonce}.req").unlink()

    def _pending_requests(self) -> tuple[str, ...]:
        """The nonces of the flush requests waiting now, oldest first; drops stale answers."""
        try:
            entries = list(self.requests_dir.iterdir())
        except OSError:
            return ()
        pending: list[tuple[float, str]] = []
        now = time.time()
        for p in entries:
            try:
                mtime = p.stat().st_mtime
            except OSError:
                continue
            if p.suffix == ".req" and _is_nonce(p.stem):
                pending.append((mtime, p.stem))
            elif p.suffix == ".done" and now - mtime > STALE_ANSWER_SECONDS:
                with contextlib.suppress(OSError):
                    p.unlink()
        return tuple(n for _, n in sorted(pending))

    def _install_explain(self) -> None:
        """Install the EXPLAIN DPU function (explain_dpu.py) in every cluster database, once."""
        import psycopg

        from dsqlops.sandbox import explain_dpu

        for cid, _region, conninfo in self.clusters():
            if cid in self._explain_ready:
                continue
            try:
                with psycopg.connect(**conninfo, autocommit=True, connect_timeout=10) as conn:
                    if explain_dpu.install(conn):
                        self._explain_ready.add(cid)
            except Exception as exc:  # noqa: BLE001 - retried on the next tick
                log.warning("metering: cannot install the EXPLAIN DPU function in %s: %s", cid, exc)

    def _install_loop(self) -> None:
        # Its own thread: a flush over many clusters must not delay EXPLAIN on a new cluster.
        while not self._stop.wait(0.2):
            self._install_explain()

    def _loop(self) -> None:
        next_at = time.monotonic() + self.interval
        while not self._stop.wait(0.25):
            nonces = self._pending_requests()
            if not nonces and time.monotonic() < next_at:
                continue
            try:
                self.flush(nonces=nonces)
            except Exception:
                log.exception("metering flush failed")
            next_at = time.monotonic() + self.interval

    def start(self) -> Meter:
        self._threads = [threading.Thread(target=self._loop, name="metering", daemon=True)]
        if self.install_explain:
            self._threads.append(threading.Thread(target=self._install_loop, name="explain-dpu-install",
                                                  daemon=True))
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def start(registry: Any) -> Meter:
    """Called by the sandbox process (server.py) with its cluster registry."""

    def clusters() -> list[tuple[str, str, dict[str, Any]]]:
        out = []
        for db in registry.ready_clusters():
            info = registry.conninfo_for(db.identifier)
            if info is not None:
                out.append((db.identifier, db.region, dict(info)))
        return out

    return Meter(registry.sdir.path, clusters, install_explain=True).start()


# --------------------------------------------------------------------------------------------
# The client side: `dsqlops sandbox flush-metrics`


def _is_nonce(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def request_flush(state_dir: Path, *, timeout: float = 30.0) -> dict[str, Any]:
    """Ask the running sandbox to publish now; wait for it. Returns the state it wrote.

    Each call drops its own request file and waits for its own answer, so any number of callers
    can ask at once; the flush that answers a request always started after it was made.
    """
    from dsqlops.errors import ServiceError, WaitTimeout
    from dsqlops.fsutil import atomic_write

    state_dir = Path(state_dir)
    if not (state_dir / "sandbox.pid").exists():
        raise ServiceError(f"no sandbox is running in {state_dir}", hint="start it with: dsqlops sandbox start")
    requests = state_dir / REQUESTS_DIR
    nonce = uuid.uuid4().hex
    request, answer = requests / f"{nonce}.req", requests / f"{nonce}.done"
    try:
        requests.mkdir(exist_ok=True)
        atomic_write(request, json.dumps({"nonce": nonce, "pid": os.getpid()}).encode())
    except OSError as exc:
        raise ServiceError(f"cannot ask the sandbox in {state_dir} to publish: {exc.strerror or exc}") from None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                state = json.loads(answer.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                time.sleep(0.05)
                continue
            if isinstance(state, dict):
                return state
    finally:
        for p in (request, answer):
            with contextlib.suppress(OSError):
                p.unlink()
    if not (state_dir / "sandbox.pid").exists():
        raise ServiceError(f"the sandbox in {state_dir} stopped before publishing",
                           hint="start it with: dsqlops sandbox start")
    raise WaitTimeout(f"the sandbox did not publish metrics within {timeout:.0f}s",
                      hint="is it running this version of dsqlops? see its log (dsqlops sandbox status)")
