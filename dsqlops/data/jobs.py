"""Asynchronous jobs (``sys.jobs``): list, show, and bounded waits.

DSQL runs ``CREATE INDEX ASYNC``, ``ALTER TABLE ASYNC … VALIDATE CONSTRAINT``, drops and ANALYZE
as jobs (docs/dsql-facts.md §3.2). ``sys.jobs`` has ``job_id, status, details, job_type, class_id, object_id,
object_name, start_time, update_time``; statuses ``submitted → processing → completed | failed``
(and a cancelled state). Finished rows are pruned after about 30 minutes, so an unknown id is
usually a job that finished a while ago.

Waiting: ``CALL sys.wait_for_job('<id>')`` is a *procedure* (``SELECT`` fails with 42809), must run
outside a transaction block, and blocks until the job ends, bounded only by the 60-minute
connection cap. :func:`wait_for_job` therefore uses it on a dedicated autocommit connection with
``statement_timeout`` set to the remaining time, and polls ``sys.jobs`` instead when the wait could
outlive a connection (timeout above :data:`CALL_CAP_SECONDS`) or when asked to.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dsqlops.data.retry import is_connection_lost
from dsqlops.errors import NotFoundError, UsageError, first_line

log = logging.getLogger(__name__)

JOB_ID_RE = re.compile(r"[a-z2-7]{26}")
TERMINAL = ("completed", "failed", "cancelled", "canceled")
JOB_TYPES = ("INDEX_BUILD", "VALIDATE_CONSTRAINT", "DROP", "ANALYZE")
STATUSES = ("submitted", "processing", "completed", "failed", "cancelled")
#: A CALL must end well inside DSQL's 60-minute connection cap.
CALL_CAP_SECONDS = 3300.0
RETENTION_NOTE = ("finished jobs vanish from sys.jobs about 30 minutes after they end, so this job may "
                  "simply have completed (or failed) a while ago")

_COLUMNS = "job_id, status, details, job_type, object_name, start_time, update_time"


def validate_job_id(job_id: str) -> str:
    v = (job_id or "").strip().lower()
    if not JOB_ID_RE.fullmatch(v):
        raise UsageError(f"not a DSQL job id: {job_id!r}",
                         hint="job ids are 26 characters of a-z and 2-7, as printed by 'dsqlops index build'")
    return v


@dataclass
class Job:
    job_id: str
    status: str
    details: str | None = None
    job_type: str | None = None
    object_name: str | None = None
    start_time: dt.datetime | None = None
    update_time: dt.datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status.lower() in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status.lower() == "completed"

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "status": self.status, "job_type": self.job_type,
                "object_name": self.object_name, "details": self.details, "start_time": self.start_time,
                "update_time": self.update_time}


def _row(r: Sequence[Any]) -> Job:
    return Job(job_id=r[0], status=str(r[1]), details=r[2], job_type=r[3], object_name=r[4], start_time=r[5],
               update_time=r[6])


def _read(conn: Any, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """A short read; never leaves a transaction open on a non-autocommit connection."""
    try:
        return list(conn.execute(query, params).fetchall())
    finally:
        if not conn.autocommit:
            conn.rollback()


def list_jobs(conn: Any, *, status: str | None = None, job_type: str | None = None,
              since: dt.datetime | None = None) -> list[Job]:
    where: list[str] = []
    params: list[Any] = []
    if status:
        where.append("lower(status) = %s")
        params.append(status.lower())
    if job_type:
        if job_type.upper() not in JOB_TYPES:
            raise UsageError(f"unknown job type {job_type!r}", hint=f"one of {', '.join(JOB_TYPES)}")
        where.append("job_type = %s")
        params.append(job_type.upper())
    if since:
        where.append("start_time >= %s")
        params.append(since)
    q = f"SELECT {_COLUMNS} FROM sys.jobs"
    if where:
        q += " WHERE " + " AND ".join(where)
    q += " ORDER BY start_time DESC, job_id"
    return [_row(r) for r in _read(conn, q, params)]


def get_job(conn: Any, job_id: str) -> Job | None:
    rows = _read(conn, f"SELECT {_COLUMNS} FROM sys.jobs WHERE job_id = %s", [validate_job_id(job_id)])
    return _row(rows[0]) if rows else None


def show_job(conn: Any, job_id: str) -> Job:
    job = get_job(conn, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} is not in sys.jobs", code="42704", hint=RETENTION_NOTE)
    return job


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``30m``, ``2h``, ``1d``, ``90s`` ago, or an ISO-8601 time (UTC if no offset)."""
    now = now or dt.datetime.now(dt.UTC)
    m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text or "")
    if m:
        n = int(m.group(1))
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return now - dt.timedelta(**{unit: n})
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"cannot read --since {text!r}", hint="use 30m, 2h, 1d or an ISO time") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


# --------------------------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------------------------

@dataclass
class WaitResult:
    job_id: str
    status: str                 # the job's last status, or "timeout" / "unknown"
    succeeded: bool
    details: str | None = None
    object_name: str | None = None
    job_type: str | None = None
    elapsed: float = 0.0
    method: str = "call"        # call | poll
    timed_out: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "status": self.status, "succeeded": self.succeeded,
                "job_type": self.job_type, "object_name": self.object_name, "details": self.details,
                "elapsed_seconds": round(self.elapsed, 1), "method": self.method, "timed_out": self.timed_out}


ConnFactory = Callable[[], Any]


def _result(job: Job | None, job_id: str, start: float, method: str, *, timed_out: bool = False) -> WaitResult:
    if job is None:
        return WaitResult(job_id, "unknown", False, RETENTION_NOTE, elapsed=time.monotonic() - start,
                          method=method, timed_out=timed_out)
    return WaitResult(job_id, job.status, job.succeeded, job.details, job.object_name, job.job_type,
                      time.monotonic() - start, method, timed_out)


def resume_command(job_id: str) -> str:
    """The command that resumes a wait (the CLI names the cluster in it)."""
    return f"dsqlops job wait {job_id}"


def wait_for_job(connect: ConnFactory, job_id: str, *, timeout: float, method: str = "auto",
                 poll_interval: float = 1.0, on_status: Callable[[str], None] | None = None,
                 status_conn: Any = None, resume: Callable[[str], str] = resume_command) -> WaitResult:
    """Wait until the job ends or ``timeout`` seconds pass (then ``timed_out``; the job goes on).

    ``connect()`` returns a **new** autocommit connection (used for the CALL, and again whenever a
    connection must be replaced). ``on_status`` gets the job's status while waiting (a live status
    line); ``status_conn`` is where those status reads run (a second connection; required with
    ``on_status`` in call mode because the CALL blocks its own). ``resume(job_id)`` is the command
    an error's hint offers to resume the wait.
    """
    job_id = validate_job_id(job_id)
    if timeout <= 0:
        raise UsageError("the timeout must be positive")
    if method not in ("auto", "call", "poll"):
        raise UsageError(f"unknown wait method {method!r}")
    if method == "auto":
        method = "call" if timeout <= CALL_CAP_SECONDS else "poll"
    start = time.monotonic()
    if method == "poll":
        return _poll(connect, job_id, timeout=timeout, poll_interval=poll_interval, on_status=on_status,
                     start=start, conn=status_conn)
    return _call(connect, job_id, timeout=timeout, poll_interval=poll_interval, on_status=on_status, start=start,
                 status_conn=status_conn, resume=resume)


def _close(conn: Any) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()


def _reconnect(connect: ConnFactory, job_id: str, start: float, timeout: float,
               first_error: BaseException) -> tuple[Any, str | None]:
    """A new connection (``connect()`` mints a fresh token), tried with backoff until the wait's
    deadline. Returns (connection, None), or (None, why) when the deadline passed first. Errors
    that are not about reaching the server (bad configuration) are raised as they are."""
    from dsqlops.errors import ConfigError

    why = first_line(first_error)
    log.info("job %s: the connection was lost (%s); reconnecting", job_id, why)
    delay = 0.1
    while True:
        try:
            return connect(), None
        except (ConfigError, UsageError):
            raise
        except Exception as e:  # noqa: BLE001 - psycopg or our mapped connect errors: try again
            why = f"{why}; reconnecting failed: {first_line(e)}"
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                return None, why
            time.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)


def _lost_result(job_id: str, status: str | None, start: float, method: str, why: str) -> WaitResult:
    """The deadline passed while the server could not be reached: a timeout (the job goes on)."""
    return WaitResult(job_id, status or "unknown", False, f"connection lost, not re-established before the "
                      f"timeout: {why}", elapsed=time.monotonic() - start, method=method, timed_out=True)


def _poll(connect: ConnFactory, job_id: str, *, timeout: float, poll_interval: float,
          on_status: Callable[[str], None] | None, start: float, conn: Any = None) -> WaitResult:
    own = conn is None
    opened_at = time.monotonic()
    last: str | None = None
    interval = max(0.05, poll_interval)
    try:
        if conn is None:
            conn = connect()
        while True:
            if getattr(conn, "answer_timeout", None) is not None:  # a stalled poll must not outlive --timeout
                left = timeout - (time.monotonic() - start)
                conn.answer_timeout = max(1.0, min(float(conn.answer_timeout), left + 10.0))
            try:
                job = get_job(conn, job_id)
            except Exception as e:
                if not is_connection_lost(e, conn):
                    raise
                if own:
                    _close(conn)
                conn, why = _reconnect(connect, job_id, start, timeout, e)
                own, opened_at = True, time.monotonic()
                if conn is None:
                    return _lost_result(job_id, last, start, "poll", why or "")
                continue
            if job is None or job.terminal:
                return _result(job, job_id, start, "poll")
            last = job.status
            if on_status is not None:
                on_status(job.status)
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                return _result(job, job_id, start, "poll", timed_out=True)
            time.sleep(min(interval, left))
            interval = min(interval * 1.5, 5.0)
            if own and time.monotonic() - opened_at > CALL_CAP_SECONDS:  # replace before DSQL's 60-min cap
                conn.close()
                conn, opened_at = connect(), time.monotonic()
    finally:
        if own:
            _close(conn)


def _call_once(conn: Any, job_id: str, *, left: float, poll_interval: float, start: float, timeout: float,
               on_status: Callable[[str], None] | None, status_conn: list[Any]) -> dict[str, Any]:
    """One ``CALL sys.wait_for_job`` on ``conn`` (a thread, so Ctrl-C and status lines work),
    bounded by ``statement_timeout`` = ``left``. Returns the outcome: ``succeeded``, ``timeout``
    or ``error``. ``status_conn`` is a one-item list: the status reader, dropped if it breaks."""
    import psycopg
    from psycopg import sql

    outcome: dict[str, Any] = {}
    if getattr(conn, "answer_timeout", None) is not None:
        conn.answer_timeout = timeout + 15.0  # the CALL itself may take all of --timeout

    def worker() -> None:
        try:
            ms = max(1, int(left * 1000))
            conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(ms)))
            row = conn.execute("CALL sys.wait_for_job(%s)", [job_id]).fetchone()
            outcome["succeeded"] = bool(row[0]) if row else None
        except psycopg.errors.QueryCanceled:
            outcome["timeout"] = True
        except psycopg.Error as e:
            outcome["error"] = e

    t = threading.Thread(target=worker, name=f"wait-{job_id}", daemon=True)
    t.start()
    try:
        while t.is_alive():
            t.join(timeout=max(0.05, poll_interval))
            if not t.is_alive():
                break
            if on_status is not None and status_conn[0] is not None:
                try:
                    job = get_job(status_conn[0], job_id)
                except Exception as e:
                    if not is_connection_lost(e, status_conn[0]):
                        raise
                    status_conn[0] = None  # the live status line stops; the wait goes on
                    job = None
                if job is not None:
                    on_status(job.status)
            if time.monotonic() - start > timeout + 10.0:  # statement_timeout should have fired
                conn.cancel()
                t.join(5.0)
                outcome["timeout"] = True
                break
    except BaseException:
        # Ctrl-C: stop the server-side wait, then let the caller report the job id
        conn.cancel()
        t.join(5.0)
        raise
    finally:
        if not t.is_alive():
            _close(conn)
    return outcome


def _call(connect: ConnFactory, job_id: str, *, timeout: float, poll_interval: float,
          on_status: Callable[[str], None] | None, start: float, status_conn: Any,
          resume: Callable[[str], str] = resume_command) -> WaitResult:
    readers = [status_conn]
    conn = connect()
    while True:
        if not conn.autocommit:
            conn.autocommit = True  # CALL sys.wait_for_job refuses to run inside a transaction block
        left = max(0.001, timeout - (time.monotonic() - start))
        outcome = _call_once(conn, job_id, left=left, poll_interval=poll_interval, start=start, timeout=timeout,
                             on_status=on_status, status_conn=readers)
        err = outcome.get("error")
        if err is None or not is_connection_lost(err, conn):
            break
        # the waiting session was killed or reset: a new one, a fresh token, the same job id
        conn, why = _reconnect(connect, job_id, start, timeout, err)
        if conn is None:
            return _lost_result(job_id, None, start, "call", why or "")
    if err is not None:
        code = getattr(err, "sqlstate", None)
        if code in ("42704", "22P02"):
            return _result(None, job_id, start, "call")
        from dsqlops.errors import ServiceError

        raise ServiceError(f"waiting for job {job_id} failed: {first_line(err)}", code=code,
                           hint=f"the job goes on; resume with: {resume(job_id)}")
    # the final row carries the details (the CALL only says succeeded true/false)
    job = _final_read(connect, job_id, readers[0])
    timed_out = bool(outcome.get("timeout")) and not (job is not None and job.terminal)
    if job is None and outcome.get("succeeded") is not None:
        ok = bool(outcome["succeeded"])
        return WaitResult(job_id, "completed" if ok else "failed", ok, None, elapsed=time.monotonic() - start,
                          method="call")
    return _result(job, job_id, start, "call", timed_out=timed_out)


def _final_read(connect: ConnFactory, job_id: str, reader: Any) -> Job | None:
    """The job's row, on the status connection or a new one (replaced once if it turns out to be
    gone)."""
    own = reader is None
    if own:
        reader = connect()
    try:
        try:
            return get_job(reader, job_id)
        except Exception as e:
            if not is_connection_lost(e, reader):
                raise
            if own:
                _close(reader)
            own = True
            reader = connect()
            return get_job(reader, job_id)
    finally:
        if own:
            _close(reader)


def wait_all(connect: ConnFactory, job_ids: Sequence[str], *, timeout: float, method: str = "auto",
             poll_interval: float = 1.0, on_status: Callable[[str, str], None] | None = None,
             status_conn: Any = None, resume: Callable[[str], str] = resume_command) -> list[WaitResult]:
    """Wait for several jobs within one overall ``timeout``; after it runs out, the remaining jobs
    are only looked at once (``timed_out`` when still running)."""
    ids = [validate_job_id(j) for j in job_ids]
    if len(set(ids)) != len(ids):
        raise UsageError("a job id is given twice")
    start = time.monotonic()
    out: list[WaitResult] = []
    for jid in ids:
        left = timeout - (time.monotonic() - start)
        cb = (lambda s, _j=jid: on_status(_j, s)) if on_status is not None else None
        if left <= 0.05:
            job = _final_read(connect, jid, status_conn)
            out.append(_result(job, jid, time.monotonic(), "poll",
                               timed_out=job is not None and not job.terminal))
            continue
        out.append(wait_for_job(connect, jid, timeout=left, method=method, poll_interval=poll_interval,
                                on_status=cb, status_conn=status_conn, resume=resume))
    return out
