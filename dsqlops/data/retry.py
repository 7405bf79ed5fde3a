"""Optimistic-concurrency retry: re-run the **whole** transaction on SQLSTATE 40001, nothing else.

DSQL reports an OCC conflict as SQLSTATE 40001 with ``(OC000)`` (data conflict) or ``(OC001)``
(catalog changed: DDL, GRANT/REVOKE, or a stale catalog) in the message (docs/dsql-facts.md §3.5,
docs/dsql-facts.md §R2.3). Classification is by ``e.sqlstate``, never by exception class: psycopg's
``SerializationFailure`` (40001) and ``AdminShutdown`` (57P01) are both ``OperationalError``.

Never retried: every other SQLSTATE (23503 FK violation, 54000 transaction limits, 0A000
unsupported, 42501 privilege, 57P01 session killed…), and above all a COMMIT that failed with a
*connection* error: the transaction may or may not have been applied, so :class:`UnknownOutcomeError`
is raised and the caller must re-read state and reconcile before doing anything again.

Backoff: ``min(max_delay, base_delay * 2**(retry-1))``, with full jitter (uniform in 0…that) by
default; attempts are bounded by ``max_attempts`` (5 by default, the AWS-labs guidance:
50 ms base, 5 s cap).
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from dsqlops.errors import ServiceError, UsageError, first_line

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)
T = TypeVar("T")

OCC_SQLSTATE = "40001"
_OC_RE = re.compile(r"\((OC\d{3})\)")
#: SQLSTATE classes/codes that mean the session is gone (the server did not answer the COMMIT).
_CONNECTION_LOST_PREFIXES = ("08", "57P")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.05
    max_delay: float = 5.0
    #: True / "full": uniform(0, cap); "equal": cap/2 + uniform(0, cap/2); False: exactly cap.
    jitter: bool | str = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise UsageError(f"max_attempts must be at least 1: {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise UsageError("retry delays must not be negative")
        if self.jitter not in (True, False, "full", "equal"):
            raise UsageError(f"jitter must be true, false, 'full' or 'equal': {self.jitter!r}")

    def cap(self, retry: int) -> float:
        """The un-jittered delay before retry number ``retry`` (1-based)."""
        return min(self.max_delay, self.base_delay * (2.0 ** min(max(retry - 1, 0), 62)))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        c = self.cap(retry)
        r = rng or random
        if self.jitter is True or self.jitter == "full":
            return r.uniform(0.0, c)
        if self.jitter == "equal":
            return c / 2.0 + r.uniform(0.0, c / 2.0)
        return c


@dataclass
class RetryStats:
    """Counters for telemetry; safe to share between threads (``record_*`` take a lock)."""

    attempts: int = 0
    retries: int = 0
    occ_conflicts: int = 0
    #: ``OC000`` / ``OC001`` (from the message) or the bare SQLSTATE ``40001`` → count.
    by_code: dict[str, int] = field(default_factory=dict)
    transactions: int = 0
    gave_up: int = 0
    unknown_outcomes: int = 0
    sleep_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_attempt(self) -> None:
        with self._lock:
            self.attempts += 1

    def record_conflict(self, code: str) -> None:
        with self._lock:
            self.occ_conflicts += 1
            self.by_code[code] = self.by_code.get(code, 0) + 1

    def record_retry(self, slept: float) -> None:
        with self._lock:
            self.retries += 1
            self.sleep_seconds += slept

    def record_end(self, *, gave_up: bool = False, unknown: bool = False) -> None:
        with self._lock:
            self.transactions += 1
            self.gave_up += int(gave_up)
            self.unknown_outcomes += int(unknown)

    def merge(self, other: RetryStats) -> None:
        with self._lock:
            self.attempts += other.attempts
            self.retries += other.retries
            self.occ_conflicts += other.occ_conflicts
            for k, v in other.by_code.items():
                self.by_code[k] = self.by_code.get(k, 0) + v
            self.transactions += other.transactions
            self.gave_up += other.gave_up
            self.unknown_outcomes += other.unknown_outcomes
            self.sleep_seconds += other.sleep_seconds

    def __getstate__(self) -> dict[str, Any]:
        # Picklable (bench workers send stats between processes): the lock is not state.
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"transactions": self.transactions, "attempts": self.attempts, "retries": self.retries,
                    "occ_conflicts": self.occ_conflicts, "by_code": dict(sorted(self.by_code.items())),
                    "gave_up": self.gave_up, "unknown_outcomes": self.unknown_outcomes,
                    "sleep_seconds": round(self.sleep_seconds, 6)}


class OccRetriesExhausted(ServiceError):
    """Every attempt hit an OCC conflict (40001)."""

    def __init__(self, message: str, *, stats: RetryStats, hint: str | None = None):
        super().__init__(message, code=OCC_SQLSTATE, hint=hint)
        self.stats = stats


class UnknownOutcomeError(ServiceError):
    """COMMIT failed because the connection was lost: the transaction may or may not be applied."""


def is_occ_error(exc: BaseException) -> bool:
    """True for an OCC conflict: SQLSTATE 40001 (checked on ``sqlstate``, never the class)."""
    return getattr(exc, "sqlstate", None) == OCC_SQLSTATE


def occ_code(exc: BaseException) -> str | None:
    """``OC000`` / ``OC001`` when the 40001 message carries one, ``40001`` otherwise; None if not OCC."""
    if not is_occ_error(exc):
        return None
    m = _OC_RE.search(str(exc))
    return m.group(1) if m else OCC_SQLSTATE


def is_connection_lost(exc: BaseException, conn: Any = None) -> bool:
    """The session is gone (no server answer we can trust): no SQLSTATE, class 08, 57P01…, or a
    closed/broken connection."""
    import psycopg

    if conn is not None and (getattr(conn, "closed", False) or getattr(conn, "broken", False)):
        return True
    code = getattr(exc, "sqlstate", None)
    if code is None:
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return code.startswith(_CONNECTION_LOST_PREFIXES)


@contextlib.contextmanager
def _borrow(source: Any) -> Iterator[psycopg.Connection[Any]]:
    import psycopg

    if isinstance(source, psycopg.Connection):
        yield source
    elif hasattr(source, "connection") and hasattr(source, "getconn"):
        with source.connection() as conn:
            yield conn
    elif callable(source):
        conn = source()
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.close()
    else:
        raise TypeError(f"run_transaction needs a pool, a connection or a connection factory, not {source!r}")


def _rollback(conn: Any) -> None:
    with contextlib.suppress(Exception):
        if not conn.closed:
            conn.rollback()


def _attempt(conn: psycopg.Connection[Any], fn: Callable[[psycopg.Connection[Any]], T],
             stats: RetryStats) -> T:
    import psycopg
    from psycopg.pq import TransactionStatus

    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    was_autocommit = conn.autocommit
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise UsageError("run_transaction needs an idle connection: a transaction is already open on it "
                         "(commit or roll back first)")
    if was_autocommit:
        conn.autocommit = False
    try:
        try:
            result = fn(conn)
        except BaseException:
            _rollback(conn)
            raise
        try:
            conn.commit()
        except psycopg.Error as e:
            if is_occ_error(e) or not is_connection_lost(e, conn):
                # The server answered the COMMIT with an error: the transaction was rolled back.
                _rollback(conn)
                raise
            stats.record_end(unknown=True)
            code = getattr(e, "sqlstate", None)
            first = first_line(e)
            raise UnknownOutcomeError(
                f"the connection was lost during COMMIT ({code or 'no SQLSTATE'}: {first}); the transaction "
                "may or may not have been applied, so it was not retried",
                code=code or "UnknownOutcome",
                hint="re-read the affected rows (or sys.jobs / role mappings) and reconcile before re-running",
            ) from e
        return result
    finally:
        if was_autocommit and not conn.closed:
            with contextlib.suppress(Exception):
                if conn.info.transaction_status == TransactionStatus.IDLE:
                    conn.autocommit = True


def run_transaction(pool_or_conn_factory: Any, fn: Callable[[psycopg.Connection[Any]], T], *,
                    policy: RetryPolicy | None = None, stats: RetryStats | None = None,
                    sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None) -> T:
    """Run ``fn(conn)`` in one transaction and COMMIT it, re-running the whole of it on 40001.

    ``pool_or_conn_factory``: a psycopg_pool ``ConnectionPool`` (each attempt borrows a connection),
    a ``psycopg.Connection`` (reused; rolled back between attempts) or a zero-argument callable
    returning a new connection (closed after each attempt). ``fn`` must not commit itself and
    should be idempotent in effect (it may run up to ``policy.max_attempts`` times). Returns what
    ``fn`` returns. Raises :class:`OccRetriesExhausted` when every attempt conflicted,
    :class:`UnknownOutcomeError` when COMMIT lost the connection, and any other error unchanged.
    """
    policy = policy or RetryPolicy()
    stats = stats if stats is not None else RetryStats()
    attempt = 0
    while True:
        attempt += 1
        stats.record_attempt()
        try:
            with _borrow(pool_or_conn_factory) as conn:
                result = _attempt(conn, fn, stats)
        except Exception as e:
            code = occ_code(e)
            if code is None:
                if not isinstance(e, UnknownOutcomeError):
                    stats.record_end()
                raise
            stats.record_conflict(code)
            if attempt >= policy.max_attempts:
                stats.record_end(gave_up=True)
                first = (str(e).strip().splitlines() or ["40001"])[0]
                raise OccRetriesExhausted(
                    f"transaction conflicted on all {attempt} attempts ({code}: {first})", stats=stats,
                    hint="contention on the same rows: make transactions smaller, spread hot keys, or raise "
                    "the retry limit",
                ) from e
            delay = policy.delay(attempt, rng)
            log.debug("OCC conflict %s on attempt %d; retrying in %.3fs", code, attempt, delay)
            sleep(delay)
            stats.record_retry(delay)
            continue
        stats.record_end()
        return result
