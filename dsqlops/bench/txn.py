"""Run one bench transaction with OCC retries, and classify its outcome for the telemetry.

Retrying is ``dsqlops.data.retry.run_transaction`` (the whole transaction again on SQLSTATE
40001, on a fresh pooled connection, exponential backoff with jitter, bounded attempts, never
after an unknown-outcome COMMIT); this module only turns its outcome into bench telemetry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OCC_SQLSTATE = "40001"


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 5
    base_delay: float = 0.05
    max_delay: float = 5.0
    jitter: bool = True


@dataclass
class Outcome:
    result: str                 # committed | aborted | occ_escaped | error
    attempts: int
    conflicts: int
    seconds: float
    error: str | None = None


def _sqlstate(exc: BaseException) -> str | None:
    # psycopg errors carry ``sqlstate``; dsqlops ServiceErrors (OccRetriesExhausted) carry ``code``.
    return getattr(exc, "sqlstate", None) or getattr(exc, "code", None)


def _is_occ(exc: BaseException) -> bool:
    if _sqlstate(exc) == OCC_SQLSTATE:
        return True
    return type(exc).__name__ == "OccRetriesExhausted"


def _error_key(exc: BaseException) -> str:
    code = _sqlstate(exc)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
    return f"{code} {first}" if code else f"{type(exc).__name__}: {first}"


def run_one(pool: Any, fn: Callable[[Any], str], policy: Policy) -> Outcome:
    """One logical transaction: ``fn(conn)`` then COMMIT, retried whole on 40001."""
    from dsqlops.data.retry import RetryPolicy, RetryStats, run_transaction

    start = time.perf_counter()
    stats = RetryStats()
    try:
        result = run_transaction(pool, fn, stats=stats, policy=RetryPolicy(
            max_attempts=policy.max_attempts, base_delay=policy.base_delay, max_delay=policy.max_delay,
            jitter=policy.jitter))
        outcome, err = str(result), None
    except Exception as exc:  # noqa: BLE001 - every failure is counted, classified and reported
        outcome = "occ_escaped" if _is_occ(exc) else "error"
        err = _error_key(exc)
    attempts = max(stats.attempts, 1)
    conflicts = stats.occ_conflicts
    if outcome == "occ_escaped":
        conflicts = max(conflicts, attempts)  # the last attempt's conflict is not retried, count it too
    return Outcome(outcome, attempts, conflicts, time.perf_counter() - start, err)
