"""OCC retry against a real PostgreSQL: real 40001s retried with stats, other codes never retried,
a COMMIT that lost its connection never retried."""

from __future__ import annotations

import random
import threading
import time

import psycopg
import pytest

from dsqlops.data.connection import connect, create_pool
from dsqlops.data.retry import (
    OccRetriesExhausted,
    RetryPolicy,
    RetryStats,
    UnknownOutcomeError,
    is_occ_error,
    occ_code,
    run_transaction,
)
from dsqlops.errors import UsageError

pytestmark = pytest.mark.postgres

FAST = RetryPolicy(max_attempts=5, base_delay=0.001, max_delay=0.01)


def _value(target, tokens, table):
    with connect(target, tokens) as c:
        return c.execute(f"SELECT v FROM {table} WHERE id = 1").fetchone()[0]


def test_f17_real_serialization_failure_is_retried_with_stats(target, tokens, table):
    """T1 reads at REPEATABLE READ, T2 updates the row and commits, T1 updates: 40001; the retry wins."""
    interferer = connect(target, tokens, autocommit=True)
    calls = []

    def factory():
        c = connect(target, tokens)
        c.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        return c

    def transfer(conn):
        calls.append(1)
        v = conn.execute(f"SELECT v FROM {table} WHERE id = 1").fetchone()[0]  # snapshot taken
        if len(calls) == 1:
            interferer.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1")
        conn.execute(f"UPDATE {table} SET v = %s WHERE id = 1", (v + 10,))
        return v

    stats = RetryStats()
    try:
        seen = run_transaction(factory, transfer, policy=FAST, stats=stats)
    finally:
        interferer.close()
    assert len(calls) == 2
    assert seen == 101
    assert _value(target, tokens, table) == 111  # the interferer's +1 is kept, then +10
    assert (stats.attempts, stats.retries, stats.occ_conflicts, stats.transactions) == (2, 1, 1, 1)
    assert stats.by_code == {"40001": 1}
    assert stats.to_dict()["by_code"] == {"40001": 1}


def _raise_sql(code: str, message: str) -> str:
    return f"DO $$ BEGIN RAISE EXCEPTION '{message}' USING ERRCODE = '{code}'; END $$"


def test_oc_codes_are_counted_and_attempts_are_bounded(target, tokens):
    calls = []

    def conflict(conn):
        calls.append(1)
        oc = "OC001" if len(calls) % 2 else "OC000"
        conn.execute(_raise_sql("40001", f"change conflicts with another transaction, retry as needed ({oc})"))

    stats = RetryStats()
    slept = []
    with connect(target, tokens) as conn, pytest.raises(OccRetriesExhausted) as ei:
        run_transaction(conn, conflict, policy=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=1.0),
                        stats=stats, sleep=slept.append)
    assert len(calls) == 3
    assert stats.by_code == {"OC001": 2, "OC000": 1}
    assert (stats.attempts, stats.retries, stats.gave_up) == (3, 2, 1)
    assert ei.value.code == "40001" and ei.value.exit_code == 254
    assert len(slept) == 2 and all(0 <= s <= 0.02 for s in slept)


@pytest.mark.parametrize("code", ["23503", "54000", "0A000", "42501", "57014", "53400"])
def test_other_sqlstates_are_never_retried(target, tokens, code):
    calls = []

    def boom(conn):
        calls.append(1)
        conn.execute(_raise_sql(code, f"boom {code}"))

    stats = RetryStats()
    with connect(target, tokens) as conn:
        with pytest.raises(psycopg.Error) as ei:
            run_transaction(conn, boom, policy=FAST, stats=stats)
        assert ei.value.sqlstate == code
        assert len(calls) == 1 and stats.retries == 0
        # The connection was rolled back and is reusable.
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_real_fk_violation_is_not_retried(target, tokens, table):
    calls = []
    with connect(target, tokens, autocommit=True) as c:
        c.execute(f"CREATE TABLE {table}_child (id int PRIMARY KEY, parent int REFERENCES {table}(id))")

    def insert(conn):
        calls.append(1)
        conn.execute(f"INSERT INTO {table}_child VALUES (1, 999)")

    try:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            run_transaction(lambda: connect(target, tokens), insert, policy=FAST)
        assert len(calls) == 1
    finally:
        with connect(target, tokens, autocommit=True) as c:
            c.execute(f"DROP TABLE {table}_child")


def test_commit_time_conflict_is_retried_but_commit_time_error_is_not(target, tokens, table):
    """A deferred constraint trigger raises at COMMIT (as DSQL's OCC check does): 40001 is retried,
    another code is not, and neither is an unknown outcome (the server answered)."""
    with connect(target, tokens, autocommit=True) as c:
        c.execute(f"CREATE SEQUENCE {table}_seq")
        c.execute(f"""CREATE FUNCTION {table}_f() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF nextval('{table}_seq') = 1 THEN
                RAISE EXCEPTION 'change conflicts with another transaction (OC000)' USING ERRCODE = '40001';
              END IF;
              IF NEW.v < 0 THEN RAISE EXCEPTION 'negative' USING ERRCODE = '23514'; END IF;
              RETURN NULL;
            END $$""")
        c.execute(f"CREATE CONSTRAINT TRIGGER {table}_t AFTER UPDATE ON {table} DEFERRABLE INITIALLY DEFERRED "
                  f"FOR EACH ROW EXECUTE FUNCTION {table}_f()")
    stats = RetryStats()
    run_transaction(lambda: connect(target, tokens),
                    lambda conn: conn.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1"),
                    policy=FAST, stats=stats)
    assert stats.by_code == {"OC000": 1} and stats.attempts == 2
    assert _value(target, tokens, table) == 101
    calls = []

    def negative(conn):
        calls.append(1)
        conn.execute(f"UPDATE {table} SET v = -1 WHERE id = 1")

    with pytest.raises(psycopg.errors.CheckViolation):
        run_transaction(lambda: connect(target, tokens), negative, policy=FAST)
    assert len(calls) == 1
    assert _value(target, tokens, table) == 101


def test_f9_commit_after_connection_loss_is_unknown_and_not_retried(target, tokens, table):
    killer = connect(target, tokens, autocommit=True)
    calls = []

    def doomed(conn):
        calls.append(1)
        conn.execute(f"UPDATE {table} SET v = 555 WHERE id = 1")
        pid = conn.info.backend_pid
        killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 30
        while killer.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline
            time.sleep(0.05)

    stats = RetryStats()
    try:
        with pytest.raises(UnknownOutcomeError) as ei:
            run_transaction(lambda: connect(target, tokens), doomed, policy=FAST, stats=stats)
    finally:
        killer.close()
    assert len(calls) == 1
    assert "may or may not" in ei.value.message
    assert stats.unknown_outcomes == 1 and stats.retries == 0
    assert _value(target, tokens, table) == 100  # PostgreSQL rolled it back; DSQL might not have


def test_pool_source_and_autocommit_restored(target, tokens, table):
    pool = create_pool(target, tokens, min_size=1, max_size=2, autocommit=True)
    try:
        r = run_transaction(pool, lambda c: c.execute(f"UPDATE {table} SET v = v * 2 RETURNING v").fetchone()[0])
        assert r == 200
        with pool.connection() as c:
            assert c.autocommit is True
    finally:
        pool.close()


def test_open_transaction_is_refused(target, tokens):
    with connect(target, tokens) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(UsageError):
            run_transaction(conn, lambda c: None)


def test_concurrent_transfers_keep_the_total(target, tokens, table):
    """Four threads add 1 fifty times in total under contention; every increment lands once."""
    pool = create_pool(target, tokens, min_size=1, max_size=4)
    stats = RetryStats()

    def work():
        for _ in range(12):
            def inc(conn):
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1")
            run_transaction(pool, inc, policy=RetryPolicy(max_attempts=50, base_delay=0.001, max_delay=0.05),
                            stats=stats)

    threads = [threading.Thread(target=work) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        pool.close()
    assert _value(target, tokens, table) == 148
    assert stats.transactions == 48 and stats.attempts == 48 + stats.retries


def test_policy_backoff_shapes():
    p = RetryPolicy(base_delay=0.05, max_delay=5.0, jitter=False)
    assert [p.delay(n) for n in (1, 2, 3, 10)] == [0.05, 0.1, 0.2, 5.0]
    rng = random.Random(7)
    full = RetryPolicy(base_delay=1.0, max_delay=4.0, jitter="full")
    assert all(0 <= full.delay(3, rng) <= 4.0 for _ in range(200))
    equal = RetryPolicy(base_delay=1.0, max_delay=4.0, jitter="equal")
    assert all(2.0 <= equal.delay(5, rng) <= 4.0 for _ in range(200))
    with pytest.raises(UsageError):
        RetryPolicy(max_attempts=0)


def test_classification_is_by_sqlstate_not_class():
    class Fake(Exception):
        def __init__(self, msg, sqlstate):
            super().__init__(msg)
            self.sqlstate = sqlstate

    assert is_occ_error(Fake("x (OC000)", "40001")) and occ_code(Fake("x (OC000)", "40001")) == "OC000"
    assert not is_occ_error(psycopg.errors.AdminShutdown("terminating connection"))
    assert not is_occ_error(Fake("x (OC000)", "57P01"))
    assert occ_code(Fake("could not serialize", "40001")) == "40001"


def test_stats_pickle_merge_and_dict():
    import pickle

    a = RetryStats()
    a.record_attempt()
    a.record_conflict("OC000")
    a.record_retry(0.25)
    a.record_attempt()
    a.record_end()
    b = pickle.loads(pickle.dumps(a))
    b.merge(a)
    assert b.to_dict() == {"transactions": 2, "attempts": 4, "retries": 2, "occ_conflicts": 2,
                           "by_code": {"OC000": 2}, "gave_up": 0, "unknown_outcomes": 0, "sleep_seconds": 0.5}
    from dsqlops.output import to_jsonable

    assert to_jsonable(b)["attempts"] == 4
