"""Run one bench transaction with OCC retries, and classify its outcome for the telemetry.

Retrying is ``dsqlops.data.retry.run_transaction`` with its :class:`RetryPolicy` (the whole
transaction again on SQLSTATE 40001, on a fresh pooled connection, exponential backoff with
jitter, bounded attempts, never after an unknown-outcome COMMIT); this module only turns its
outcome into bench telemetry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg_pool import PoolTimeout

from dsqlops.data.retry import (
    OccRetriesExhausted,
    RetryPolicy,
    RetryStats,
    UnknownOutcomeError,
    is_connection_lost,
    is_occ_error,
    run_transaction,
)
from dsqlops.errors import first_line


@dataclass
class Outcome:
    result: str                 # committed | aborted | occ_escaped | error
    attempts: int
    conflicts: int
    seconds: float
    error: str | None = None
    #: The failure was a lost connection (or a pool that could not connect): the cluster may be gone.
    lost: bool = False


def _error_key(exc: BaseException) -> str:
    code = getattr(exc, "sqlstate", None) or getattr(exc, "code", None)
    if isinstance(exc, UnknownOutcomeError):
        return f"{code} connection lost during COMMIT (outcome unknown, not retried)"
    first = first_line(exc)[:120]
    if isinstance(exc, PoolTimeout):  # its text says it all; the class name is the pool's plumbing
        return first
    return f"{code} {first}" if code else f"{type(exc).__name__}: {first}"


def run_one(pool: Any, fn: Callable[[Any], str], policy: RetryPolicy) -> Outcome:
    """One logical transaction: ``fn(conn)`` then COMMIT, retried whole on 40001.

    ``occ_escaped``: every attempt conflicted (the transaction gave up); ``error``: anything
    else that ended it, an unknown-outcome COMMIT included.
    """
    start = time.perf_counter()
    stats = RetryStats()
    lost = False
    try:
        outcome, err = str(run_transaction(pool, fn, stats=stats, policy=policy)), None
    except Exception as exc:  # noqa: BLE001 - every failure is counted, classified and reported
        outcome = "occ_escaped" if isinstance(exc, OccRetriesExhausted) or is_occ_error(exc) else "error"
        err = _error_key(exc)
        lost = outcome == "error" and (isinstance(exc, UnknownOutcomeError) or is_connection_lost(exc))
    return Outcome(outcome, max(stats.attempts, 1), stats.occ_conflicts, time.perf_counter() - start, err, lost)
