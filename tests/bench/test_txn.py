"""bench/txn.py: one OCC policy (data/retry.py's), outcomes classified by SQLSTATE and type."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from psycopg.pq import TransactionStatus

from dsqlops.bench.runner import BenchConfig
from dsqlops.bench.txn import run_one
from dsqlops.data.retry import RetryPolicy

FAST = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0)


class _Conn:
    """Just enough of a psycopg connection for run_transaction."""

    def __init__(self) -> None:
        self.closed = False
        self.broken = False
        self.autocommit = False
        self.info = SimpleNamespace(transaction_status=TransactionStatus.IDLE)

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None:
        self.closed = True


class _Conflict(Exception):
    sqlstate = "40001"


class OccRetriesExhausted(Exception):  # same name as ours, not ours: must not count as OCC
    pass


def test_bench_uses_the_data_layer_retry_policy() -> None:
    assert BenchConfig().policy == RetryPolicy()
    assert BenchConfig(policy=FAST).policy.max_attempts == 3


def test_conflict_on_every_attempt_is_a_give_up() -> None:
    calls = []

    def body(conn: Any) -> str:
        calls.append(1)
        raise _Conflict("could not serialize access (OC000)")

    out = run_one(_Conn, body, FAST)
    assert (out.result, out.attempts, out.conflicts, len(calls)) == ("occ_escaped", 3, 3, 3)
    assert out.error is not None and out.error.startswith("40001")


def test_absorbed_conflict_commits() -> None:
    calls = []

    def body(conn: Any) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise _Conflict("could not serialize access (OC001)")
        return "committed"

    out = run_one(_Conn, body, FAST)
    assert (out.result, out.attempts, out.conflicts, out.error) == ("committed", 2, 1, None)


def test_a_foreign_error_is_not_mistaken_for_occ_by_its_class_name() -> None:
    def body(conn: Any) -> str:
        raise OccRetriesExhausted("something else entirely")

    out = run_one(_Conn, body, FAST)
    assert (out.result, out.attempts, out.conflicts) == ("error", 1, 0)


def test_a_pool_that_cannot_connect_is_reported_in_plain_words() -> None:
    """The pool's class name is not the user's business: the reason reads as the run's own words
    (and a cluster that went away is told from pool reconnect warnings by the word "pool")."""
    from psycopg_pool import PoolTimeout

    def no_connection() -> Any:
        raise PoolTimeout("couldn't get a connection after 7.39 sec")

    out = run_one(no_connection, lambda conn: "committed", FAST)
    assert (out.result, out.lost) == ("error", True)
    assert out.error == "couldn't get a connection after 7.39 sec"
    assert "pool" not in out.error.lower()
