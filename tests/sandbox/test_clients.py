"""Real clients through the front: psql (simple protocol), psycopg (extended, pipeline, pool), cancel."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import threading
import time

import psycopg
import pytest

from tests.sandbox import rawpg


@pytest.fixture(scope="module")
def cluster(sandbox) -> str:  # type: ignore[no-untyped-def]
    cid = sandbox.create_cluster()
    with sandbox.connect(cid, autocommit=True) as conn:
        conn.execute("CREATE TABLE clients_t (id int PRIMARY KEY, v text)")
    return cid


def _psql(sandbox, cluster: str, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=sandbox.token(cluster), PGSSLROOTCERT=sandbox.ca_file, PGSSLMODE="verify-full",
               PGCONNECT_TIMEOUT="30")
    dsn = f"host={sandbox.endpoint(cluster)} hostaddr=127.0.0.1 port={sandbox.port} user=admin dbname=postgres"
    return subprocess.run(["psql", dsn, "-X", "-At", "-v", "ON_ERROR_STOP=1", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_psql_simple_protocol_verify_full(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    p = _psql(sandbox, cluster, "-c", "INSERT INTO clients_t VALUES (1, 'one') ON CONFLICT DO NOTHING",
              "-c", "SELECT v FROM clients_t WHERE id = 1",
              "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split()
    assert "one" in lines
    # the TLS is the front's (the backend link is loopback plaintext)
    assert lines[-1] == "f"


def test_psql_multi_statement_query_and_error(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    p = _psql(sandbox, cluster, "-c", "SELECT 1; SELECT 2")
    assert p.returncode == 0 and p.stdout.split() == ["1", "2"], p.stderr
    p = _psql(sandbox, cluster, "-c", "SELECT 1/0")
    assert p.returncode != 0 and "division by zero" in p.stderr


def test_psql_wrong_password_is_refused(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD="not-a-token", PGSSLROOTCERT=sandbox.ca_file, PGSSLMODE="verify-full")
    dsn = f"host={sandbox.endpoint(cluster)} hostaddr=127.0.0.1 port={sandbox.port} user=admin dbname=postgres"
    p = subprocess.run(["psql", dsn, "-X", "-c", "SELECT 1"], env=env, capture_output=True, text=True,
                       timeout=60, check=False)
    assert p.returncode != 0 and "unable to accept connection, access denied" in p.stderr


def test_psycopg_extended_protocol_params_and_prepare(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    with sandbox.connect(cluster) as conn:
        for i in range(10, 20):  # past prepare_threshold: named prepared statements are reused
            conn.execute("INSERT INTO clients_t VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
                         (i, f"v{i}"))
        conn.commit()
        rows = conn.execute("SELECT id, v FROM clients_t WHERE id >= %s AND id < %s ORDER BY id", (10, 20)).fetchall()
        assert rows == [(i, f"v{i}") for i in range(10, 20)]
        conn.rollback()
        with conn.cursor(binary=True) as cur:
            assert cur.execute("SELECT %s::bigint * 2, %s::text", (21, "x")).fetchone() == (42, "x")


def test_psycopg_pipeline_mode(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    with sandbox.connect(cluster, autocommit=True) as conn:
        with conn.pipeline():
            curs = [conn.execute("SELECT %s::int * 10", (i,)) for i in range(20)]
        assert [c.fetchone()[0] for c in curs] == [i * 10 for i in range(20)]  # type: ignore[index]
        # an error inside a pipeline aborts the rest of that pipeline only
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                conn.execute("SELECT 1")
                conn.execute("SELECT 1/0")
                conn.execute("SELECT 2")
        assert conn.execute("SELECT 3").fetchone() == (3,)


def test_copy_relays(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    with sandbox.connect(cluster) as conn:
        with conn.cursor().copy("COPY (SELECT g FROM generate_series(1, 500) g) TO STDOUT") as copy:
            got = [int(row[0]) for row in copy.rows()]
        assert got == list(range(1, 501))


def test_pool(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    from psycopg_pool import ConnectionPool

    info = sandbox.conninfo(cluster)
    with ConnectionPool(kwargs=info, min_size=2, max_size=4, open=True, timeout=60) as pool:
        results: list[int] = []

        def work(i: int) -> None:
            with pool.connection() as conn:
                results.append(conn.execute("SELECT %s::int", (i,)).fetchone()[0])  # type: ignore[index]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(results) == list(range(12))


def test_cancel_request_reaches_the_backend(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    with sandbox.connect(cluster) as conn:
        timer = threading.Timer(1.0, conn.cancel_safe)
        timer.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(60)")
        finally:
            timer.cancel()
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_cancel_with_a_wrong_key_does_nothing(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    import socket
    import struct
    import time

    with sandbox.connect(cluster, autocommit=True) as conn:
        pid = conn.info.backend_pid
        errors: list[BaseException] = []

        def sleeper() -> None:
            try:
                conn.execute("SELECT pg_sleep(1.5)")
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=sleeper)
        t.start()
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", sandbox.port), timeout=30) as s:
            s.sendall(struct.pack("!iiii", 16, 80877102, pid, 12345))
            assert s.recv(10) == b""
        t.join(60)
        assert errors == []


def test_large_values_both_ways(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    blob = bytes(range(256)) * 4096  # 1 MiB through one Bind, back through one DataRow
    with sandbox.connect(cluster, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS clients_blob (id int PRIMARY KEY, b bytea)")
        conn.execute("INSERT INTO clients_blob VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET b = excluded.b", (blob,))
        assert conn.execute("SELECT b FROM clients_blob WHERE id = 1").fetchone() == (blob,)
        assert conn.execute("SELECT md5(b) = md5(%s) FROM clients_blob WHERE id = 1", (blob,)).fetchone() == (True,)


def test_a_slow_reader_of_a_large_result_stalls_only_itself(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    """About 24 MB of rows to a TLS client that does not read for a while: the front queues what it
    can, stops reading that backend (backpressure), serves another session meanwhile, and then
    delivers every byte in order."""
    rows = 3000
    s, _pid = rawpg.login(sandbox.port, sandbox.endpoint(cluster), sandbox.ca_file, sandbox.token(cluster))
    with s, sandbox.connect(cluster, autocommit=True) as other:
        s.sendall(rawpg.msg(b"Q", f"SELECT g, repeat(md5(g::text), 250) FROM generate_series(1, {rows}) g\0".encode()))
        time.sleep(1.0)  # not reading: the backend's output piles up in the front and the sockets
        t0 = time.monotonic()
        assert other.execute("SELECT 42").fetchone() == (42,)
        assert time.monotonic() - t0 < 5
        seen = 0
        while True:
            kind, body = rawpg.read_msg(s)
            if kind == b"D":
                seen += 1
                n = struct.unpack("!h", body[:2])[0]
                assert n == 2
                (l1,) = struct.unpack("!i", body[2:6])
                g = int(body[6:6 + l1])
                assert g == seen
                (l2,) = struct.unpack("!i", body[6 + l1:10 + l1])
                assert body[10 + l1:] == hashlib.md5(str(g).encode()).hexdigest().encode() * 250
                assert l2 == 8000
            elif kind == b"Z":
                break
            else:
                assert kind in (b"T", b"C"), kind
        assert seen == rows
