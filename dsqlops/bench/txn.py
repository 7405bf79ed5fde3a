"""Run one bench transaction with OCC retries, and classify its outcome for the telemetry.

Retrying is B's ``dsqlops.data.retry.run_transaction`` (the whole transaction again on SQLSTATE
40001, on a fresh pooled connection, exponential backoff with jitter, bounded attempts, never
after an unknown-outcome COMMIT). Until that module is importable, a local equivalent with the
same contract is used so the bench can be developed against plain PostgreSQL.
"""

from __future__ import annotations

import random
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
    # psycopg errors carry ``sqlstate``; dsqlops ServiceErrors (B's OccRetriesExhausted) carry ``code``.
    return getattr(exc, "sqlstate", None) or getattr(exc, "code", None)


def _is_occ(exc: BaseException) -> bool:
    if _sqlstate(exc) == OCC_SQLSTATE:
        return True
    return type(exc).__name__ == "OccRetriesExhausted"


def _error_key(exc: BaseException) -> str:
    code = _sqlstate(exc)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
    return f"{code} {first}" if code else f"{type(exc).__name__}: {first}"


def _local_run_transaction(pool: Any, fn: Callable[[Any], Any], *, policy: Policy, stats: dict[str, int]) -> Any:
    """The contract of B's run_transaction, for when it is not importable (see module doc)."""
    attempt = 0
    while True:
        attempt += 1
        stats["attempts"] = attempt
        committing = False
        try:
            with pool.connection() as conn:
                result = fn(conn)
                committing = True
                conn.commit()
                return result
        except Exception as exc:
            if not _is_occ(exc) or attempt >= policy.max_attempts:
                raise
            if committing and _sqlstate(exc) is None:
                raise  # unknown outcome: never resend
            stats["occ_conflicts"] = stats.get("occ_conflicts", 0) + 1
            delay = min(policy.max_delay, policy.base_delay * (2 ** (attempt - 1)))
            time.sleep(random.uniform(0, delay) if policy.jitter else delay)


def _b_retry() -> Any:
    try:
        from dsqlops.data import retry
    except ImportError:
        return None
    if not all(hasattr(retry, n) for n in ("run_transaction", "RetryPolicy", "RetryStats")):
        return None
    return retry


def run_one(pool: Any, fn: Callable[[Any], str], policy: Policy) -> Outcome:
    """One logical transaction: ``fn(conn)`` then COMMIT, retried whole on 40001."""
    start = time.perf_counter()
    retry = _b_retry()
    counts: dict[str, int] = {"attempts": 0, "occ_conflicts": 0}
    b_stats = None
    try:
        if retry is not None:
            b_stats = retry.RetryStats()
            result = retry.run_transaction(
                pool, fn, policy=retry.RetryPolicy(max_attempts=policy.max_attempts, base_delay=policy.base_delay,
                                                   max_delay=policy.max_delay, jitter=policy.jitter),
                stats=b_stats)
        else:
            result = _local_run_transaction(pool, fn, policy=policy, stats=counts)
        outcome, err = str(result), None
    except Exception as exc:
        outcome = "occ_escaped" if _is_occ(exc) else "error"
        err = _error_key(exc)
    if b_stats is not None:
        counts = {"attempts": int(b_stats.attempts), "occ_conflicts": int(b_stats.occ_conflicts)}
    attempts = max(counts["attempts"], 1)
    conflicts = counts["occ_conflicts"]
    if outcome == "occ_escaped":
        conflicts = max(conflicts, attempts)  # the last attempt's conflict is not retried, count it too
    return Outcome(outcome, attempts, conflicts, time.perf_counter() - start, err)
