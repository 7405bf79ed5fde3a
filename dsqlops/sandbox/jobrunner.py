"""The sandbox's asynchronous job runner: DSQL's ``sys.jobs`` made real.

``CREATE INDEX ASYNC`` (and ``ALTER TABLE ASYNC … VALIDATE CONSTRAINT``) only *record* a job in
the cluster database (``sys._jobs``, see ``sql/sys.sql``). :class:`JobRunner` runs them: one
worker thread per cluster, on its own superuser connection, takes the oldest ``submitted`` job,
marks it ``processing``, runs it as the role that submitted it (a plain ``CREATE INDEX`` when the
table's writers let it start within 50 ms, so idle readers never stall it; else ``CREATE INDEX
CONCURRENTLY``, so writers are never blocked for long), and marks it ``completed`` or ``failed``
with the engine's error in ``details`` (a failed UNIQUE build leaves its invalid index behind,
still rejecting duplicate keys on writes, like DSQL; a build cancelled by ``DROP INDEX`` is
``cancelled``). DROP jobs (recorded by an event trigger) are completed; tables whose rows changed
a lot get an ``ANALYZE`` job (DSQL's auto-analyze); terminal rows are pruned after 30 minutes. All
state lives in the cluster database, so jobs survive a sandbox restart: a job found ``processing``
at start-up was interrupted, and is re-run (its half-built index dropped first) up to 3 attempts,
then failed.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("dsqlops.sandbox.jobrunner")

TERMINAL = ("completed", "failed", "cancelled")
MAX_ATTEMPTS = 3
RETENTION = "30 minutes"
#: Auto-analyze threshold, like autovacuum's: 50 rows + 10% of the table.
ANALYZE_BASE_ROWS = 50
ANALYZE_SCALE = 0.1

ConnInfo = str | Mapping[str, Any]


@dataclass
class Job:
    job_uuid: str
    job_id: str
    job_type: str
    statement: str | None
    submitted_by: str
    object_name: str | None
    attempts: int


def _connect(info: ConnInfo) -> Any:
    import psycopg

    if isinstance(info, str):
        conn = psycopg.connect(info, autocommit=True)
    else:
        conn = psycopg.connect(**dict(info), autocommit=True)
    # The runner must wait for locks (DSQL's builds are never refused), and read each poll afresh.
    conn.execute("SET lock_timeout = 0")
    conn.execute("SET statement_timeout = 0")
    conn.execute("SET default_transaction_isolation = 'read committed'")
    conn.execute("SET application_name = 'dsqlops-sandbox-jobs'")
    return conn


def recover(conn: Any) -> int:
    """Put jobs left ``processing`` by a crash back in the queue (or fail them after
    MAX_ATTEMPTS), dropping the invalid index an interrupted build left. Returns how many."""
    rows = conn.execute(
        "SELECT job_uuid::text, job_type, object_name, attempts FROM sys._jobs WHERE status = 'processing'"
    ).fetchall()
    for job_uuid, job_type, object_name, attempts in rows:
        if job_type == "INDEX_BUILD" and object_name:
            invalid = conn.execute(
                "SELECT 1 FROM pg_index i WHERE i.indexrelid = to_regclass(%s) AND NOT i.indisvalid",
                (object_name,)).fetchone()
            if invalid:
                from psycopg import sql

                schema, _, name = object_name.partition(".")
                with contextlib.suppress(Exception):
                    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(name)))
        if attempts >= MAX_ATTEMPTS:
            conn.execute("UPDATE sys._jobs SET status = 'failed', update_time = now(), details = %s "
                         "WHERE job_uuid = %s",
                         (f"interrupted {attempts} times by a sandbox restart", job_uuid))
        else:
            conn.execute("UPDATE sys._jobs SET status = 'submitted', update_time = now() WHERE job_uuid = %s",
                         (job_uuid,))
    return len(rows)


def claim(conn: Any) -> Job | None:
    """Mark the oldest submitted job ``processing`` and return it (None when the queue is empty)."""
    row = conn.execute(
        "UPDATE sys._jobs SET status = 'processing', update_time = now(), attempts = attempts + 1, "
        "runner_pid = pg_backend_pid() "
        "WHERE job_uuid = (SELECT job_uuid FROM sys._jobs WHERE status = 'submitted' "
        "                  ORDER BY start_time, job_uuid LIMIT 1 FOR UPDATE SKIP LOCKED) "
        "RETURNING job_uuid::text, job_id, job_type, statement, submitted_by, object_name, attempts"
    ).fetchone()
    return Job(*row) if row else None


def _error_text(exc: Exception) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc).strip().splitlines()[0]
    detail = getattr(diag, "message_detail", None)
    return f"{primary}: {detail}" if detail else primary


#: How long a build may wait for the table's writers before it falls back to a concurrent build.
PLAIN_BUILD_LOCK_WAIT = "50ms"


def _try_plain_build(conn: Any, statement: str) -> bool:
    """Build the index in one go (``CREATE INDEX`` without ``CONCURRENTLY``), which readers never
    delay: a concurrent build waits for every transaction holding an older snapshot, so one idle
    reader would stall it, and DSQL's builds do not wait for readers. The plain build must not
    queue behind writers (the writers after it would queue behind it), so it waits at most
    PLAIN_BUILD_LOCK_WAIT for them. False when it did not run: the caller then builds
    concurrently, as before (which also leaves a failed UNIQUE build's invalid index behind)."""
    import psycopg

    head = "INDEX CONCURRENTLY "
    at = statement.find(head)
    if at < 0 or not statement.startswith("CREATE "):
        return False
    plain = statement[:at] + "INDEX " + statement[at + len(head):]
    conn.execute(f"SET lock_timeout = '{PLAIN_BUILD_LOCK_WAIT}'")
    try:
        conn.execute(plain)
        return True
    except (psycopg.errors.LockNotAvailable, psycopg.errors.UniqueViolation):
        return False
    finally:
        conn.execute("SET lock_timeout = 0")


def execute(conn: Any, job: Job, *, stopping: Callable[[], bool] | None = None) -> tuple[str, str | None]:
    """Run one claimed job; returns (status, details) and records them. When ``stopping()`` is
    true after an error (the runner cancelled the build to shut down), the job stays
    ``processing`` and the error propagates: the next start re-runs it."""
    import psycopg
    from psycopg import sql

    status, details = "completed", None
    if job.job_type in ("INDEX_BUILD", "VALIDATE_CONSTRAINT", "ANALYZE") and job.statement:
        try:
            role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (job.submitted_by,)).fetchone()
            if role:
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(job.submitted_by)))
            try:
                if not (job.job_type == "INDEX_BUILD" and _try_plain_build(conn, job.statement)):
                    conn.execute(job.statement)  # recorded by sys._create_index_async
            finally:
                conn.execute("RESET ROLE")
        except psycopg.Error as exc:
            if conn.closed or (stopping is not None and stopping()):
                raise
            status, details = "failed", _error_text(exc)
            if exc.sqlstate == "57014":
                # Only DROP INDEX cancels a build (sys._cancel_index_builds) when we are not stopping.
                # Its own update to 'cancelled' is lost if the DROP then fails (a transaction holds
                # the table), so record the cancellation here too.
                status, details = "cancelled", "cancelled by DROP INDEX"
            elif exc.sqlstate == "23505" and job.job_type == "INDEX_BUILD" and job.object_name:
                _leave_enforcing_index(conn, job)
    object_id_sql = ("object_id = coalesce(to_regclass(object_name)::oid, object_id), "
                     if job.job_type == "INDEX_BUILD" else "")
    # Only while still ours: DROP INDEX may have cancelled it meanwhile (status 'cancelled').
    conn.execute(f"UPDATE sys._jobs SET status = %s, details = %s, {object_id_sql}update_time = now() "
                 "WHERE job_uuid = %s AND status = 'processing'", (status, details, job.job_uuid))
    return status, details


_UNIQUE_PREFIX = re.compile(r"\A\s*CREATE\s+UNIQUE\s+INDEX\b", re.IGNORECASE)


def _leave_enforcing_index(conn: Any, job: Job) -> None:
    """After a UNIQUE build failed on duplicates, leave what DSQL leaves: the index, INVALID (no
    query uses it), still rejecting writes that would duplicate a key until it is dropped (FACTS
    §3.1). PostgreSQL's failed CONCURRENTLY build is neither maintained nor enforced, so the runner
    replaces it: the same index built without UNIQUE (duplicates and all), then marked unique and
    invalid in the catalog, which makes every later insert or key update check it."""
    from psycopg import sql

    assert job.object_name is not None and job.statement is not None
    schema, _, name = job.object_name.partition(".")
    ident = sql.Identifier(schema, name)
    plain = _UNIQUE_PREFIX.sub("CREATE INDEX", job.statement, count=1)
    try:
        # An internal swap, not the user's DROP: no DROP job (the event trigger fires only for origin).
        conn.execute("SET session_replication_role = replica")
        try:
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(ident))
        finally:
            conn.execute("RESET session_replication_role")
        conn.execute(plain)
        conn.execute("UPDATE pg_catalog.pg_index SET indisunique = true, indisvalid = false "
                     "WHERE indexrelid = %s::regclass", (ident.as_string(conn),))
    except Exception as exc:  # noqa: BLE001 - the job has failed either way; say so in the log
        log.warning("job %s: could not leave %s enforcing uniqueness: %s", job.job_id, job.object_name, exc)


def submit_auto_analyze(conn: Any) -> int:
    """Record an ANALYZE job for every user table changed beyond the threshold (and not queued)."""
    rows = conn.execute(
        "INSERT INTO sys._jobs (job_type, class_id, object_id, object_name, schema_name, statement) "
        "SELECT 'ANALYZE', 'pg_class'::regclass, s.relid, s.schemaname || '.' || s.relname, s.schemaname, "
        "       format('ANALYZE %%I.%%I', s.schemaname, s.relname) "
        "FROM pg_stat_user_tables s "
        "WHERE s.schemaname NOT IN ('sys') "
        "  AND s.n_mod_since_analyze > %s + %s * greatest(s.n_live_tup, 0) "
        "  AND NOT EXISTS (SELECT 1 FROM sys._jobs j WHERE j.job_type = 'ANALYZE' AND j.object_id = s.relid "
        "                  AND j.status IN ('submitted', 'processing')) "
        "RETURNING job_id", (ANALYZE_BASE_ROWS, ANALYZE_SCALE)).fetchall()
    return len(rows)


def prune(conn: Any) -> int:
    cur = conn.execute("DELETE FROM sys._jobs WHERE status IN ('completed', 'failed', 'cancelled') "
                       f"AND update_time < now() - interval '{RETENTION}'")
    return int(cur.rowcount or 0)


def run_pending(conn: Any, *, limit: int = 100) -> list[tuple[str, str]]:
    """Run queued jobs on ``conn`` until the queue is empty (or ``limit``): [(job_id, status)]."""
    done = []
    for _ in range(limit):
        job = claim(conn)
        if job is None:
            break
        status, _details = execute(conn, job)
        done.append((job.job_id, status))
    return done


class _Worker(threading.Thread):
    def __init__(self, runner: JobRunner, cluster_id: str) -> None:
        super().__init__(name=f"sandbox-jobs-{cluster_id}", daemon=True)
        self.runner = runner
        self.cluster_id = cluster_id
        self.conn: Any = None
        self.recovered = False
        self.ticks = 0

    def run(self) -> None:
        stop = self.runner._stop
        while not stop.is_set():
            try:
                if not self.step():
                    break  # the cluster is gone (or not ready): the supervisor restarts us if it comes back
            except Exception as exc:  # noqa: BLE001 - a cluster going away must not kill the runner
                log.debug("job worker %s: %s", self.cluster_id, exc)
                self._close()
                stop.wait(min(5.0, self.runner.poll_interval * 10))
                continue
            stop.wait(self.runner.poll_interval)
        self._close()

    def step(self) -> bool:
        info = self.runner._conninfo(self.cluster_id)
        if info is None:
            self._close()
            return False
        if self.conn is None or self.conn.closed:
            self.conn = _connect(info)
            if not self.conn.execute("SELECT to_regclass('sys._jobs')").fetchone()[0]:
                self._close()
                return True  # sys schema not installed yet
            self.recovered = False
        if not self.recovered:
            n = recover(self.conn)
            if n:
                log.info("cluster %s: %d interrupted job(s) re-queued", self.cluster_id, n)
            self.recovered = True
        self.ticks += 1
        if self.ticks % self.runner.analyze_every == 0:
            submit_auto_analyze(self.conn)
            prune(self.conn)
        while not self.runner._stop.is_set():
            job = claim(self.conn)
            if job is None:
                break
            execute(self.conn, job, stopping=self.runner._stop.is_set)
        return True

    def cancel(self) -> None:
        conn = self.conn
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):
                conn.cancel()

    def _close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


class JobRunner:
    """Runs every cluster's jobs in the background (see the module docstring).

    ``conninfo_for(cluster_id)`` returns superuser connection parameters (a dict for
    ``psycopg.connect`` or a conninfo string) or None when the cluster is not ready.
    ``clusters()`` lists the cluster ids to serve; when omitted and ``conninfo_for`` is a bound
    method of an object with ``ready_clusters()`` (the sandbox's registry), that is used.
    """

    def __init__(self, conninfo_for: Callable[[str], ConnInfo | None], *,
                 clusters: Callable[[], Iterable[str]] | None = None, poll_interval: float = 0.25,
                 analyze_every: int = 120) -> None:
        self._conninfo_for = conninfo_for
        self._clusters = clusters
        self.poll_interval = poll_interval
        self.analyze_every = max(1, analyze_every)
        self._stop = threading.Event()
        self._workers: dict[str, _Worker] = {}
        self._thread: threading.Thread | None = None

    def _conninfo(self, cluster_id: str) -> ConnInfo | None:
        try:
            return self._conninfo_for(cluster_id)
        except Exception:  # noqa: BLE001 - treat a lookup failure as "not ready"
            return None

    def cluster_ids(self) -> list[str]:
        if self._clusters is not None:
            return list(self._clusters())
        owner = getattr(self._conninfo_for, "__self__", None)
        ready = getattr(owner, "ready_clusters", None)
        if callable(ready):
            return [str(getattr(db, "identifier", db)) for db in ready()]
        return []

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._supervise, name="sandbox-jobs", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                ids = set(self.cluster_ids())
            except Exception:  # noqa: BLE001
                ids = set()
            for cid in ids:
                w = self._workers.get(cid)
                if w is None or not w.is_alive():
                    w = _Worker(self, cid)
                    self._workers[cid] = w
                    w.start()
            self._stop.wait(1.0)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for w in list(self._workers.values()):
            w.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
        for w in list(self._workers.values()):
            w.join(timeout)
        self._workers.clear()
        self._thread = None
