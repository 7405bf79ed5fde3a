"""sys schema, job runner and dialect against a real PostgreSQL (the session ``pg`` fixture).

The dialect runs in-process through ``conformance.ShimConn`` (which plays the wire front's part),
so these tests need no sandbox; tests/sandbox/test_conformance.py covers the real front.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dsqlops.sandbox import jobrunner, sysschema
from dsqlops.sandbox.conformance import ShimConn
from dsqlops.sandbox.dialect import OC000, DsqlDialect

pytestmark = pytest.mark.postgres

Connect = Callable[[], Any]


@pytest.fixture(scope="module")
def db(pg: Any) -> Iterator[dict[str, Any]]:
    import psycopg

    name = f"s2_{uuid.uuid4().hex[:10]}"
    base = {**pg.conninfo("postgres"), "sslmode": "require"}
    with psycopg.connect(**base, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    info = {**base, "dbname": name}
    with psycopg.connect(**info, autocommit=True) as conn:
        sysschema.install(conn)
        sysschema.install(conn)  # idempotent
    yield info
    with psycopg.connect(**base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture()
def su(db: dict[str, Any]) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(**db, autocommit=True) as conn:
        yield conn


@pytest.fixture()
def shim(db: dict[str, Any]) -> Iterator[Connect]:
    import psycopg

    dialect = DsqlDialect()
    opened: list[ShimConn] = []

    def connect() -> ShimConn:
        c = ShimConn(psycopg.connect(**db, autocommit=True), dialect)
        opened.append(c)
        return c

    yield connect
    for c in opened:
        c.close()


def _job_id(obs: dict[str, Any]) -> str:
    assert obs["outcome"] == "ok", obs
    assert obs["command_tag"] == "CREATE INDEX" and obs["columns"] == ["job_id"]
    return str(obs["rows"][0][0])


# -- sys schema ------------------------------------------------------------------------------------
def test_base32_job_ids_match_rfc4648(su: Any) -> None:
    for _ in range(20):
        u = uuid.uuid4()
        expected = base64.b32encode(u.bytes).decode().lower().rstrip("=")
        got = su.execute("SELECT sys.uuid_to_base32_str(%s), sys.base32_str_to_uuid(%s)", (u, expected)).fetchone()
        assert got == (expected, u)


def test_defaults_are_dsqls(db: dict[str, Any]) -> None:
    import psycopg

    with psycopg.connect(**db) as conn:
        assert conn.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
        assert conn.execute("SHOW timezone").fetchone() == ("UTC",)
        assert conn.execute("SELECT sys.current_setting('server_version')").fetchone() == ("16.15",)
        sid = conn.execute("SELECT sys.current_session_id()").fetchone()
        assert sid is not None and len(sid[0]) == 26


def test_wait_for_job_errors_are_dsqls(shim: Connect) -> None:
    c = shim()
    assert c.extended("SELECT sys.wait_for_job((SELECT job_id FROM sys.jobs LIMIT 1))") == {
        "outcome": "error", "sqlstate": "42809", "message": "sys.wait_for_job(text) is a procedure"}
    assert c.extended("CALL sys.wait_for_job((SELECT job_id FROM sys.jobs LIMIT 1))")["sqlstate"] == "0A000"
    assert c.extended("CALL sys.wait_for_job('no-such-job')") == {
        "outcome": "error", "sqlstate": "22P02", "message": "Unable to convert text to UUID"}
    c.extended("BEGIN")
    assert c.extended("CALL sys.wait_for_job('aaaaaaaaaaaaaaaaaaaaaaaaaa')")["sqlstate"] == "0A000"
    c.extended("ROLLBACK")


# -- jobs ------------------------------------------------------------------------------------------
def test_async_index_build_completes_and_wait_returns_succeeded(shim: Connect, su: Any) -> None:
    c = shim()
    c.extended("CREATE TABLE jt_ok (id int PRIMARY KEY, v text)")
    c.extended("INSERT INTO jt_ok SELECT g, 'v' || g FROM generate_series(1, 100) g")
    job = _job_id(c.extended("CREATE INDEX ASYNC jt_ok_v ON jt_ok (v)"))
    assert len(job) == 26 and job.islower()
    row = su.execute("SELECT status, job_type, object_name FROM sys.jobs WHERE job_id = %s", (job,)).fetchone()
    assert row == ("submitted", "INDEX_BUILD", "public.jt_ok_v")
    assert jobrunner.run_pending(su) == [(job, "completed")]
    # CALL returns one row `succeeded` over both protocols.
    assert c.extended(f"CALL sys.wait_for_job('{job}')") == {
        "outcome": "ok", "command_tag": "CALL", "columns": ["succeeded"], "rows": [["true"]]}
    simple = c.simple(f"CALL sys.wait_for_job('{job}')")
    assert simple["results"] == [{"command_tag": "CALL", "columns": ["succeeded"], "rows": [["t"]]}]
    valid = su.execute("SELECT i.indisvalid, j.object_id = i.indexrelid FROM pg_index i, sys.jobs j "
                       "WHERE i.indexrelid = 'jt_ok_v'::regclass AND j.job_id = %s", (job,)).fetchone()
    assert valid == (True, True)


def test_failed_unique_build_records_the_error_and_leaves_an_invalid_index(shim: Connect, su: Any) -> None:
    c = shim()
    c.extended("CREATE TABLE jt_dup (id int PRIMARY KEY, v text)")
    c.extended("INSERT INTO jt_dup VALUES (1, 'same'), (2, 'same')")
    job = _job_id(c.extended("CREATE UNIQUE INDEX ASYNC jt_dup_v ON jt_dup (v)"))
    assert jobrunner.run_pending(su) == [(job, "failed")]
    status, details = su.execute("SELECT status, details FROM sys.jobs WHERE job_id = %s", (job,)).fetchone()
    assert status == "failed" and "could not create unique index" in details and "duplicated" in details
    assert su.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'jt_dup_v'::regclass").fetchone() == (
        False,)
    assert c.extended(f"CALL sys.wait_for_job('{job}')")["rows"] == [["false"]]


def test_build_does_not_block_writers(db: dict[str, Any], shim: Connect, su: Any) -> None:
    c, holder, writer = shim(), shim(), shim()
    c.extended("CREATE TABLE jt_busy (id int PRIMARY KEY, v text)")
    holder.extended("BEGIN")
    holder.extended("INSERT INTO jt_busy VALUES (1, 'open')")  # an open writer the build must wait for
    job = _job_id(c.extended("CREATE INDEX ASYNC jt_busy_v ON jt_busy (v)"))
    runner = jobrunner.JobRunner(lambda _cid: db, clusters=lambda: ["c"], poll_interval=0.05)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while su.execute("SELECT status FROM sys.jobs WHERE job_id = %s", (job,)).fetchone()[0] != "processing":
            assert time.monotonic() < deadline, "the runner never started the build"
            time.sleep(0.05)
        # While the build waits for the open transaction, other writers go through.
        for i in range(2, 12):
            assert writer.extended(f"INSERT INTO jt_busy VALUES ({i}, 'w')")["command_tag"] == "INSERT 0 1"
        assert su.execute("SELECT status FROM sys.jobs WHERE job_id = %s", (job,)).fetchone() == ("processing",)
        assert holder.extended("COMMIT")["command_tag"] == "COMMIT"
        waiter = shim()
        assert waiter.extended(f"CALL sys.wait_for_job('{job}')")["rows"] == [["true"]]
    finally:
        runner.stop()
    assert su.execute("SELECT count(*) FROM jt_busy").fetchone() == (11,)


def test_interrupted_job_is_requeued_then_failed_after_max_attempts(shim: Connect, su: Any) -> None:
    c = shim()
    c.extended("CREATE TABLE jt_crash (id int PRIMARY KEY, v text)")
    job = _job_id(c.extended("CREATE INDEX ASYNC jt_crash_v ON jt_crash (v)"))
    claimed = jobrunner.claim(su)
    assert claimed is not None and claimed.job_id == job  # then "the sandbox dies"
    assert jobrunner.recover(su) == 1
    assert su.execute("SELECT status FROM sys.jobs WHERE job_id = %s", (job,)).fetchone() == ("submitted",)
    assert jobrunner.run_pending(su) == [(job, "completed")]
    job2 = _job_id(c.extended("CREATE INDEX ASYNC jt_crash_v2 ON jt_crash (v)"))
    su.execute("UPDATE sys._jobs SET status = 'processing', attempts = %s WHERE job_id = %s",
               (jobrunner.MAX_ATTEMPTS, job2))
    jobrunner.recover(su)
    status, details = su.execute("SELECT status, details FROM sys.jobs WHERE job_id = %s", (job2,)).fetchone()
    assert status == "failed" and "interrupted" in details


def test_drop_and_analyze_jobs_and_pruning(shim: Connect, su: Any) -> None:
    c = shim()
    c.extended("CREATE TABLE jt_stats (id int PRIMARY KEY)")
    c.extended("INSERT INTO jt_stats SELECT generate_series(1, 500)")
    c.extended("SELECT pg_stat_force_next_flush()")
    c.simple("SELECT 1")  # the flush happens when the session goes idle
    deadline = time.monotonic() + 30
    while not jobrunner.submit_auto_analyze(su):
        assert time.monotonic() < deadline, "no ANALYZE job was submitted"
        time.sleep(0.2)
    jobrunner.run_pending(su)
    row = su.execute("SELECT status, object_name FROM sys.jobs WHERE job_type = 'ANALYZE' "
                     "AND object_name = 'public.jt_stats'").fetchone()
    assert row == ("completed", "public.jt_stats")
    oid = su.execute("SELECT 'jt_stats'::regclass::oid").fetchone()[0]
    c.extended("DROP TABLE jt_stats")
    assert su.execute("SELECT job_type, status, class_id FROM sys.jobs WHERE object_id = %s AND job_type = 'DROP'",
                      (oid,)).fetchone() == ("DROP", "submitted", 1259)
    jobrunner.run_pending(su)
    su.execute("UPDATE sys._jobs SET update_time = now() - interval '31 minutes' WHERE object_id = %s", (oid,))
    assert jobrunner.prune(su) >= 2
    assert su.execute("SELECT count(*) FROM sys.jobs WHERE object_id = %s", (oid,)).fetchone() == (0,)


# -- dialect behaviour in the backend --------------------------------------------------------------
def test_row_limit_is_enforced_in_the_backend(shim: Connect) -> None:
    c = shim()
    c.extended("CREATE TABLE jt_rows (id int)")
    assert c.extended("INSERT INTO jt_rows SELECT generate_series(1, 3001)") == {
        "outcome": "error", "sqlstate": "54000", "message": "transaction row limit exceeded"}
    c.extended("BEGIN")
    assert c.extended("INSERT INTO jt_rows SELECT generate_series(1, 2000)")["command_tag"] == "INSERT 0 2000"
    assert c.extended("UPDATE jt_rows SET id = id + 1 WHERE id <= 1001")["sqlstate"] == "54000"
    assert c.extended("ROLLBACK")["command_tag"] == "ROLLBACK"
    assert c.extended("INSERT INTO jt_rows SELECT generate_series(1, 3000)")["command_tag"] == "INSERT 0 3000"


def test_iam_grant_and_revoke_maintain_the_mappings(shim: Connect, su: Any) -> None:
    c = shim()
    arn = "arn:aws:iam::123456789012:role/s2-app"
    su.execute("DROP ROLE IF EXISTS s2_app")
    su.execute("CREATE ROLE s2_app WITH LOGIN")
    assert c.extended(f"AWS IAM GRANT s2_app TO '{arn}'") == {"outcome": "ok", "command_tag": "AWS IAM GRANT"}
    assert c.extended(f"AWS IAM GRANT s2_app TO '{arn}'")["outcome"] == "ok"  # idempotent
    rows = su.execute("SELECT arn, pg_role_name, grantor_pg_role_name, iam_oid IS NOT NULL, pg_role_oid = "
                      "'s2_app'::regrole FROM sys.iam_pg_role_mappings WHERE pg_role_name = 's2_app'").fetchall()
    assert rows == [(arn, "s2_app", "postgres", True, True)]
    # the front's login check runs this query
    assert su.execute("SELECT 1 FROM sys.iam_pg_role_mappings WHERE pg_role_name=%s AND arn=%s",
                      ("s2_app", arn)).fetchone() == (1,)
    assert c.extended(f"AWS IAM GRANT nobody_s2 TO '{arn}'")["sqlstate"] == "42704"
    assert c.extended("AWS IAM GRANT s2_app TO 'not-an-arn'")["sqlstate"] == "22023"
    assert c.extended(f"AWS IAM REVOKE s2_app FROM '{arn}'") == {"outcome": "ok", "command_tag": "AWS IAM REVOKE"}
    assert c.extended(f"AWS IAM REVOKE s2_app FROM '{arn}'")["sqlstate"] == "42704"
    assert su.execute("SELECT count(*) FROM sys.iam_pg_role_mappings WHERE pg_role_name = 's2_app'").fetchone() == (
        0,)


def _race(a: Any, b: Any, sql_a: str, sql_b: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    out: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    barrier = threading.Barrier(2)

    def run(conn: Any, sql: str, sink: list[dict[str, Any]]) -> None:
        barrier.wait()
        for i, step in enumerate(("BEGIN", sql, "COMMIT")):
            if i:
                time.sleep(0.15)
            sink.append(conn.extended(step))

    threads = [threading.Thread(target=run, args=(a, sql_a, out[0])),
               threading.Thread(target=run, args=(b, sql_b, out[1]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_occ_write_write_loser_fails_at_commit_not_at_the_update(shim: Connect, su: Any) -> None:
    su.execute("CREATE TABLE jt_occ (id int PRIMARY KEY, v text)")
    su.execute("INSERT INTO jt_occ VALUES (1, 'x'), (2, 'y')")
    a, b = shim(), shim()
    ra, rb = _race(a, b, "UPDATE jt_occ SET v = 'a' WHERE id = 1", "UPDATE jt_occ SET v = 'b' WHERE id = 1")
    assert [o["command_tag"] for o in ra[:2]] == ["BEGIN", "UPDATE 1"]
    assert [o["command_tag"] for o in rb[:2]] == ["BEGIN", "UPDATE 1"]
    lasts = [ra[2], rb[2]]
    assert sorted(o["outcome"] for o in lasts) == ["error", "ok"]
    loser = next(o for o in lasts if o["outcome"] == "error")
    assert (loser["sqlstate"], loser["message"]) == ("40001", OC000)
    winner_value = "a" if ra[2]["outcome"] == "ok" else "b"
    assert su.execute("SELECT v FROM jt_occ WHERE id = 1").fetchone() == (winner_value,)
    # disjoint rows never conflict
    ra, rb = _race(a, b, "UPDATE jt_occ SET v = 'p' WHERE id = 1", "UPDATE jt_occ SET v = 'q' WHERE id = 2")
    assert ra[2]["command_tag"] == rb[2]["command_tag"] == "COMMIT"
    # the loser's session is usable again
    assert a.extended("SELECT v FROM jt_occ ORDER BY id")["rows"] == [["p"], ["q"]]


def test_drop_index_cancels_a_queued_or_running_build(db: dict[str, Any], shim: Connect, su: Any) -> None:
    c, holder = shim(), shim()
    c.extended("CREATE TABLE jt_cancel (id int PRIMARY KEY, v text)")
    c.extended("CREATE TABLE jt_other (id int)")
    # Queued, never started: DROP INDEX just cancels the job.
    queued = _job_id(c.extended("CREATE INDEX ASYNC jt_cancel_q ON jt_cancel (v)"))
    assert c.extended("DROP INDEX jt_cancel_q") == {"outcome": "ok", "command_tag": "DROP INDEX"}
    assert su.execute("SELECT status, details FROM sys.jobs WHERE job_id = %s", (queued,)).fetchone() == (
        "cancelled", "cancelled by DROP INDEX")
    assert c.extended("DROP INDEX jt_cancel_q")["sqlstate"] == "42704"  # nothing left to drop
    # Running: an open write to the table makes the build concurrent (its index is in the catalog,
    # invalid), and an open snapshot then keeps it waiting; DROP INDEX cancels it and drops its
    # invalid index.
    writer = shim()
    writer.extended("BEGIN")
    writer.extended("INSERT INTO jt_cancel VALUES (1, 'h')")
    holder.extended("BEGIN")
    holder.extended("SELECT count(*) FROM jt_other")
    running = _job_id(c.extended("CREATE INDEX ASYNC jt_cancel_r ON jt_cancel (v)"))
    runner = jobrunner.JobRunner(lambda _cid: db, clusters=lambda: ["c"], poll_interval=0.05)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while su.execute("SELECT to_regclass('jt_cancel_r')").fetchone() == (None,):
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.05)
        writer.extended("COMMIT")
        assert c.extended("DROP INDEX jt_cancel_r") == {"outcome": "ok", "command_tag": "DROP INDEX"}
        assert su.execute("SELECT to_regclass('jt_cancel_r')").fetchone() == (None,)
        holder.extended("COMMIT")
        time.sleep(0.5)
        assert su.execute("SELECT status FROM sys.jobs WHERE job_id = %s", (running,)).fetchone() == ("cancelled",)
        assert c.extended(f"CALL sys.wait_for_job('{running}')")["rows"] == [["false"]]
    finally:
        runner.stop()


def test_runner_discovers_clusters_from_the_sandbox_registry(db: dict[str, Any], shim: Connect, su: Any) -> None:
    class Registry:  # the shape of dsqlops.sandbox.server.Registry the sandbox passes in
        def __init__(self) -> None:
            self.ready = True

        def conninfo_for(self, cluster_id: str) -> dict[str, Any] | None:
            return db if (cluster_id == "c1" and self.ready) else None

        def ready_clusters(self) -> list[Any]:
            return [type("DB", (), {"identifier": "c1"})()] if self.ready else []

    reg = Registry()
    c = shim()
    c.extended("CREATE TABLE jt_reg (id int PRIMARY KEY, v text)")
    job = _job_id(c.extended("CREATE INDEX ASYNC ON jt_reg (v)"))
    runner = jobrunner.JobRunner(reg.conninfo_for, poll_interval=0.05)
    assert runner.cluster_ids() == ["c1"]
    runner.start()
    try:
        assert shim().extended(f"CALL sys.wait_for_job('{job}')")["rows"] == [["true"]]
        assert su.execute("SELECT object_name FROM sys.jobs WHERE job_id = %s", (job,)).fetchone() == (
            "public.jt_reg_v_idx",)
    finally:
        runner.stop()


def test_json_index_keys_are_refused_at_once(shim: Connect, su: Any) -> None:
    c = shim()
    c.extended("CREATE TABLE jt_json (id int PRIMARY KEY, doc jsonb, v text)")
    assert c.extended("CREATE INDEX ASYNC jt_json_doc ON jt_json (doc)") == {
        "outcome": "error", "sqlstate": "0A000", "message": "datatype jsonb is not supported in a key"}
    job = _job_id(c.extended("CREATE INDEX ASYNC jt_json_v ON jt_json (v) INCLUDE (doc)"))
    assert jobrunner.run_pending(su) == [(job, "completed")]
    assert c.extended("CREATE INDEX ASYNC jt_json_v ON jt_json (v)")["sqlstate"] == "42P07"
    assert c.extended("CREATE INDEX ASYNC ON no_such_table (v)")["sqlstate"] == "42P01"
