"""L3: a connect storm over the cluster's connection-rate limit (SQLSTATE 53400). Clients back off
with jitter and every piece of work completes; the limit was really hit.

In the test matrix (dsql-facts.md §R5.2), L3 is a D-layer row (150 connects/s against DSQL's 100/s). Here the limit is
:class:`tests.ratelimited.RateLimitedServer`, a tiny TLS PostgreSQL endpoint that refuses startups
over its rate with DSQL's FATAL 53400, lowered so a small storm exceeds it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from dsqlops.data.connection import ConnectionTarget, connect, create_pool
from dsqlops.data.retry import run_transaction
from tests.ratelimited import RateLimitedServer

HOST = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"


@pytest.fixture()
def limited(pg_tls) -> Iterator[tuple[RateLimitedServer, ConnectionTarget]]:  # type: ignore[no-untyped-def]
    with RateLimitedServer(str(pg_tls.server_cert), str(pg_tls.server_key), rate=20, burst=4) as srv:
        yield srv, ConnectionTarget(host=HOST, region="us-east-1", hostaddr="127.0.0.1", port=srv.port,
                                    sslrootcert=str(pg_tls.ca_cert), connect_timeout=5)


def _tokens(target: ConnectionTarget) -> str:
    return "fake-token"


def _run_all(n: int, fn) -> list[BaseException]:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def worker() -> None:
        start.wait()
        try:
            fn()
        except BaseException as e:  # collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a worker hangs"
    return errors


def test_l3_connect_storm_backs_off_and_every_connect_succeeds(limited) -> None:  # type: ignore[no-untyped-def]
    srv, target = limited
    done: list[int] = []

    def one() -> None:
        with connect(target, _tokens, autocommit=True) as conn:
            done.append(conn.execute("SELECT 1").fetchone()[0])

    errors = _run_all(40, one)
    assert errors == [] and done == [1] * 40
    assert srv.refused > 0  # the storm did exceed the rate: the backoff was exercised


def test_l3_pool_under_the_rate_limit_completes_all_work(limited) -> None:  # type: ignore[no-untyped-def]
    srv, target = limited
    pool = create_pool(target, _tokens, min_size=8, max_size=8)
    done: list[int] = []
    try:
        def work() -> None:
            for _ in range(10):
                done.append(run_transaction(pool, lambda c: c.execute("SELECT 1").fetchone()[0]))

        errors = _run_all(16, work)
    finally:
        pool.close()
    assert errors == [] and len(done) == 160
    assert srv.refused > 0
