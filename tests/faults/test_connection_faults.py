"""Connections that die under dsqlops, injected with :mod:`tests.faultproxy` between psycopg and
the sandbox's DSQL front (real IAM tokens, verify-full through the host/hostaddr split).

The test matrix (dsql-facts.md §R5.2), rows F7, F8, F9 and F15. F15 is a D-layer row (real DSQL, a token with
``ExpiresIn=1``); the sandbox front checks token expiry the same way, so it runs here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from dsqlops.aws import AwsContext
from dsqlops.config import resolve
from dsqlops.data.connection import ConnectionTarget, connect, create_pool, target_for
from dsqlops.data.retry import RetryStats, UnknownOutcomeError, run_transaction
from dsqlops.data.tokens import TokenSource
from tests.clirun import invoke
from tests.faultproxy import UP
from tests.faults.conftest import wait_for_backend

pytestmark = pytest.mark.sandbox


@pytest.fixture()
def target(via_proxy, cluster) -> ConnectionTarget:  # type: ignore[no-untyped-def]
    return target_for(resolve(), cluster)


@pytest.fixture()
def tokens() -> TokenSource:
    return TokenSource(AwsContext.from_settings(resolve()))


@pytest.fixture()
def table(sandbox, cluster) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = f"fp_{uuid.uuid4().hex[:10]}"
    with sandbox.connect(cluster, autocommit=True) as c:
        c.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v int NOT NULL)")
        c.execute(f"INSERT INTO {name} VALUES (1, 100)")
    yield name


def _rows(sandbox: Any, cluster: str, table: str) -> list[tuple[Any, ...]]:
    with sandbox.connect(cluster, autocommit=True) as c:
        return list(c.execute(f"SELECT id, v FROM {table} ORDER BY id").fetchall())


def test_f7_idle_pool_connection_killed_next_checkout_is_healthy(target, tokens, proxy) -> None:  # type: ignore[no-untyped-def]
    pool = create_pool(target, tokens, min_size=2, max_size=2)
    try:
        with pool.connection() as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        before = proxy.accepted
        proxy.reset()  # every idle pooled connection is RST under the pool's feet
        for _ in range(4):  # more checkouts than the pool holds: every dead one is noticed
            with pool.connection() as c:
                assert c.execute("SELECT 2").fetchone() == (2,)
        assert proxy.accepted > before  # the pool replaced what the reset killed
    finally:
        pool.close()


def test_f8_backend_lost_mid_transaction_rolls_back_and_is_not_retried(target, tokens, proxy, table,  # type: ignore[no-untyped-def]
                                                                      sandbox, cluster) -> None:
    calls: list[int] = []

    def body(conn: psycopg.Connection[Any]) -> None:
        calls.append(1)
        conn.execute(f"INSERT INTO {table} VALUES (2, 1)")  # not idempotent: a re-run would differ
        proxy.reset()
        conn.execute(f"UPDATE {table} SET v = v - 1 WHERE id = 1")

    stats = RetryStats()
    with pytest.raises(psycopg.OperationalError):
        run_transaction(lambda: connect(target, tokens), body, stats=stats)
    assert calls == [1] and stats.retries == 0
    assert _rows(sandbox, cluster, table) == [(1, 100)]  # nothing of it was committed


def test_f8_cli_single_transaction_says_rolled_back_nothing_committed(via_proxy, proxy, table, sandbox,  # type: ignore[no-untyped-def]
                                                                     cluster, tmp_path) -> None:
    import threading

    tag = uuid.uuid4().hex[:8]
    script = tmp_path / "t.sql"
    script.write_text(f"INSERT INTO {table} VALUES (2, 1);\nSELECT pg_sleep(0.5), '{tag}';\n"
                      f"UPDATE {table} SET v = v - 1 WHERE id = 1;\n")
    killer = threading.Thread(target=lambda: (wait_for_backend(sandbox, cluster, f"query LIKE '%{tag}%'"),
                                              proxy.reset()), daemon=True)
    killer.start()
    r = invoke(["sql", "--single-transaction", "-f", str(script)])
    killer.join(60)
    assert r.exit_code == 254, r.stderr
    first = r.stderr.strip().splitlines()[0]
    assert "statement 2" in first and "rolled back, nothing was committed" in first, r.stderr
    assert _rows(sandbox, cluster, table) == [(1, 100)]


def test_f9_connection_cut_during_commit_is_unknown_not_retried(target, tokens, proxy, table, sandbox,  # type: ignore[no-untyped-def]
                                                               cluster) -> None:
    calls: list[int] = []
    cut: dict[str, Any] = {}

    def body(conn: psycopg.Connection[Any]) -> None:
        calls.append(1)
        conn.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1")
        # The COMMIT reaches the server, which commits; its answer never comes back.
        cut["done"] = proxy.arm_cut(UP, forward=True)

    stats = RetryStats()
    with pytest.raises(UnknownOutcomeError) as ei:
        run_transaction(lambda: connect(target, tokens), body, stats=stats)
    assert cut["done"].is_set()
    assert calls == [1] and stats.retries == 0 and stats.unknown_outcomes == 1
    assert "may or may not" in ei.value.message
    # It did commit: a blind retry would have applied the increment twice.
    assert _rows(sandbox, cluster, table) == [(1, 101)]


def test_f15_token_expired_between_connections_pool_mints_a_fresh_one(target, proxy, table, sandbox,  # type: ignore[no-untyped-def]
                                                                      cluster) -> None:
    tokens = TokenSource(AwsContext.from_settings(resolve()), expires_in=1)
    pool = create_pool(target, tokens, min_size=1, max_size=1)
    try:
        run_transaction(pool, lambda c: c.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1"))
        minted = tokens.calls
        time.sleep(2.5)  # every token minted so far has expired (a lifetime of 1 s)
        proxy.reset()  # the pooled connection dies: the next one must log in again
        for _ in range(3):
            run_transaction(pool, lambda c: c.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1"))
    finally:
        pool.close()
    assert tokens.calls > minted  # a fresh token for the new physical connection
    assert _rows(sandbox, cluster, table) == [(1, 104)]  # and all the work went on


def test_f15_reused_expired_token_is_refused_by_the_front(target, proxy, sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    """The other half of F15: the front really refuses an expired token, so the test above
    would fail if the pool reused one."""
    from dsqlops.errors import ServiceError

    tokens = TokenSource(AwsContext.from_settings(resolve()), expires_in=1)
    token = tokens(target)
    time.sleep(2.5)
    with pytest.raises(ServiceError) as ei:
        connect(target, lambda t: token).close()
    assert "expired" in ei.value.message
