"""DSQL's quotas in the sandbox, with DSQL's SQLSTATEs, lowered by DSQLOPS_SANDBOX_LIMIT_* so they
are reached in seconds (dsqlops/sandbox/limits.py)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dsqlops.errors import ConfigError
from dsqlops.sandbox.limits import ENV_PREFIX, Limits
from tests.sandbox import rawpg

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

LOWERED = {
    "CONNECTION_AGE_SECONDS": "5",
    "TXN_AGE_SECONDS": "1",
    "TXN_ROWS": "10",
    "TXN_BYTES": "4096",
    "INDEXES_PER_TABLE": "3",
    "NEW_CONNECTIONS_PER_SECOND": "2",
    "CONNECTION_BURST": "20",
    "CONNECTIONS": "6",
}


@pytest.fixture(scope="module")
def limited(tmp_root: Path) -> Iterator[Any]:
    """A sandbox of its own, started with every limit lowered (the session sandbox keeps DSQL's)."""
    from tests.sandbox.handle import SandboxHandle

    handle = SandboxHandle(tmp_root / "sandbox-limits")
    # the sandbox process inherits them; PGHOSTADDR as `eval "$(dsqlops sandbox env)"` leaves it: the
    # sandbox's own connections to the clusters' Unix sockets must not follow it to TCP
    env = {**{ENV_PREFIX + k: v for k, v in LOWERED.items()}, "PGHOSTADDR": "127.0.0.1"}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        handle.start()
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture()
def cluster(limited: Any) -> str:
    """A fresh cluster per test: the connection quotas are per cluster."""
    return str(limited.create_cluster())


def _refusal(limited: Any, cluster: str) -> str | None:
    try:
        limited.connect(cluster, autocommit=True).close()
    except psycopg.OperationalError as e:
        return str(e)
    return None


def test_limits_from_env_validate() -> None:
    assert Limits.from_env({}) == Limits()
    assert Limits.from_env({ENV_PREFIX + "TXN_ROWS": "5"}).txn_rows == 5
    with pytest.raises(ConfigError):
        Limits.from_env({ENV_PREFIX + "TXN_ROWS": "many"})
    with pytest.raises(ConfigError):
        Limits.from_env({ENV_PREFIX + "CONNECTION_AGE_SECONDS": "0"})


def test_bad_limit_is_a_configuration_error_before_anything_starts(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, ENV_PREFIX + "TXN_ROWS": "abc"}
    p = subprocess.run([sys.executable, "-m", "dsqlops", "sandbox", "start", "--dir", str(tmp_path / "sb")],
                       env=env, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 253, p.stderr
    assert p.stderr.strip().splitlines()[0] == f"error: {ENV_PREFIX}TXN_ROWS='abc' is not a number"
    assert not (tmp_path / "sb" / "sandbox.pid").exists()


def test_f16_connection_age_limit_closes_an_idle_session(limited, cluster) -> None:  # type: ignore[no-untyped-def]
    conn = limited.connect(cluster, autocommit=True)
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        time.sleep(6)  # past the (lowered) 60-minute cap
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()


def test_f16_connection_age_limit_lets_an_open_transaction_finish(limited, cluster) -> None:  # type: ignore[no-untyped-def]
    conn = limited.connect(cluster, autocommit=True)
    try:
        conn.execute("CREATE TABLE age_t (id int PRIMARY KEY)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO age_t VALUES (1)")
        time.sleep(5.5)  # the cap passes inside the transaction: DSQL lets it finish first
        conn.execute("INSERT INTO age_t VALUES (2)")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):  # ...within its own age limit (1 s here)
            conn.execute("COMMIT")
        time.sleep(0.5)
        with pytest.raises(psycopg.OperationalError):  # then the session is closed
            conn.execute("SELECT 1")
    finally:
        conn.close()


def test_new_connection_rate_53400_and_no_postgres_slot_errors_in_a_storm(limited, cluster) -> None:  # type: ignore[no-untyped-def]
    results: list[str | None] = []
    lock = threading.Lock()
    start = threading.Event()

    def one() -> None:
        start.wait()
        r = _refusal(limited, cluster)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one) for _ in range(40)]  # twice the (lowered) burst, at once
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join(120)
    errors = [r for r in results if r is not None]
    assert len(results) == 40 and len(errors) < 40
    rate = [e for e in errors if "connection rate exceeded" in e]
    too_many = [e for e in errors if "too many connections" in e]  # 53300: more than 6 open at once
    assert rate and len(rate) + len(too_many) == len(errors), errors  # DSQL's answers only
    assert not any("connection slots" in e for e in errors)


def test_max_connections_leaves_room_for_a_burst_of_1000(limited, cluster) -> None:  # type: ignore[no-untyped-def]
    with limited.superuser_connect(cluster, autocommit=True) as su:
        assert int(su.execute("SHOW max_connections").fetchone()[0]) > 1000


def test_connections_per_cluster_53300(limited, cluster) -> None:  # type: ignore[no-untyped-def]
    held = []
    try:
        for _ in range(6):  # the (lowered) cap; well within the burst of 20
            held.append(limited.connect(cluster, autocommit=True))
        err = _refusal(limited, cluster)
        assert err is not None and "too many connections" in err
        with rawpg.tls_socket(limited.port, limited.endpoint(cluster), limited.ca_file) as raw:
            raw.sendall(rawpg.startup())
            fields = [rawpg.error_fields(b) for k, b in rawpg.read_until_closed(raw) if k == b"E"]
        assert fields and (fields[0]["S"], fields[0]["C"]) == ("FATAL", "53300")
        held.pop().close()
        time.sleep(0.5)
        assert _refusal(limited, cluster) is None
    finally:
        for c in held:
            c.close()


def test_transaction_row_limit_is_lowerable(limited, cluster) -> None:  # type: ignore[no-untyped-def]
    with limited.connect(cluster, autocommit=True) as conn:
        conn.execute("CREATE TABLE rows_t (id int PRIMARY KEY)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO rows_t SELECT g FROM generate_series(1, 10) g")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as e:
            conn.execute("INSERT INTO rows_t VALUES (11)")
        assert e.value.diag.message_primary == "transaction row limit exceeded"
        conn.execute("ROLLBACK")


def test_transaction_size_limit_fails_the_commit(limited, cluster) -> None:  # type: ignore[no-untyped-def]
    with limited.connect(cluster, autocommit=True) as conn:
        conn.execute("CREATE TABLE size_t (id int PRIMARY KEY, v text)")
        conn.execute("BEGIN")
        for i in range(3):  # 3 x ~2 KB written: past 4096 bytes, yet each statement succeeds
            conn.execute("INSERT INTO size_t VALUES (%s, repeat(md5(%s::text), 64))", (i, i))
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as e:
            conn.execute("COMMIT")
        assert e.value.diag.message_primary == "transaction size limit 4096 bytes exceeded"
        assert e.value.diag.context is None  # nothing of the sandbox's machinery shows
        assert conn.execute("SELECT count(*) FROM size_t").fetchone() == (0,)
        # a single autocommit statement too
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute("INSERT INTO size_t SELECT g, repeat(md5(g::text), 64) FROM generate_series(1, 3) g")
        conn.execute("INSERT INTO size_t VALUES (1, 'small')")
        assert conn.execute("SELECT count(*) FROM size_t").fetchone() == (1,)


def test_transaction_age_limit_is_lowerable(limited, cluster) -> None:  # type: ignore[no-untyped-def]
    with limited.connect(cluster, autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute("SELECT 1")
        time.sleep(1.5)
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as e:
            conn.execute("COMMIT")
        assert e.value.diag.message_primary == "transaction age limit of 1s exceeded"


def test_index_limit_per_table(limited, cluster) -> None:  # type: ignore[no-untyped-def]
    with limited.connect(cluster, autocommit=True) as conn:
        conn.execute("CREATE TABLE ix_t (id int PRIMARY KEY, a int, b int, c int)")  # the key is index 1
        job = conn.execute("CREATE INDEX ASYNC ix_t_a ON ix_t (a)").fetchone()[0]
        assert conn.execute("CALL sys.wait_for_job(%s)", (job,)).fetchone() == (True,)  # the job runner works
        conn.execute("CREATE INDEX ASYNC ix_t_b ON ix_t (b)")  # 3, counted whether or not its build started
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as e:
            conn.execute("CREATE INDEX ASYNC ix_t_c ON ix_t (c)")
        assert e.value.diag.message_primary == "index limit of 3 per table exceeded"
