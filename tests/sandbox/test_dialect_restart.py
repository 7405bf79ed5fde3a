"""Async jobs survive a sandbox restart: a build a crash left ``processing`` is re-run on start.

Runs its own sandbox (the session one must not be restarted under other tests). The crashed
build is staged deterministically while the sandbox is down: its job row is written
``processing`` straight into the stopped cluster's PostgreSQL (what a runner that died mid-build
leaves behind), so no live worker can race the restart for it (a worker that reconnects may
legitimately recover orphans too, which made an earlier "live runner leaves it alone" check flaky
on a loaded machine).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def _connect_when_back(h: Any, cid: str) -> Any:
    import psycopg

    deadline = time.monotonic() + 120
    while True:  # the cluster's PostgreSQL comes back a moment after the front
        try:
            return h.connect(cid, autocommit=True)
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "the cluster did not come back"
            time.sleep(0.5)


def test_build_left_processing_by_a_crash_completes_after_restart(tmp_path: Path) -> None:
    from tests.sandbox.handle import SandboxHandle

    os.chmod(tmp_path, 0o755)
    h = SandboxHandle(tmp_path / "sb")
    h.start()
    try:
        cid = h.create_cluster()
        with h.connect(cid, autocommit=True) as conn:
            conn.execute("CREATE TABLE rs_t (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO rs_t SELECT g, 'v' || g FROM generate_series(1, 500) g")
            # A first job proves this cluster's worker is up (it recovers only when it starts).
            first = conn.execute("CREATE INDEX ASYNC rs_t_id_v ON rs_t (id, v)").fetchone()[0]
            assert conn.execute("CALL sys.wait_for_job(%s)", (first,)).fetchone() == (True,)
    finally:
        h.stop()
    # The crash: a build left 'processing', written while nothing of the sandbox runs.
    from dsqlops.sandbox.postgres import PostgresServer

    pg = PostgresServer(tmp_path / "sb" / "clusters" / cid / "pgdata", hba="local all all trust\n"
                        "host all all 127.0.0.1/32 trust\n", log_file=tmp_path / "staging.log")
    pg.init()
    pg.start()
    try:
        import psycopg

        with psycopg.connect(**pg.conninfo(), autocommit=True) as su:
            job = su.execute(
                "INSERT INTO sys._jobs (job_type, status, class_id, object_id, object_name, schema_name, statement, "
                "submitted_by, attempts) VALUES ('INDEX_BUILD', 'processing', 'pg_class'::regclass, "
                "'rs_t'::regclass, 'public.rs_t_v', 'public', 'CREATE INDEX CONCURRENTLY rs_t_v ON public.rs_t (v)', "
                "'admin', 1) RETURNING job_id").fetchone()[0]
            assert su.execute("SELECT status FROM sys.jobs WHERE job_id = %s", (job,)).fetchone() == ("processing",)
    finally:
        pg.stop()
    h.start()
    try:
        with _connect_when_back(h, cid) as conn:
            assert conn.execute("CALL sys.wait_for_job(%s)", (job,)).fetchone() == (True,)
            assert conn.execute("SELECT status, details FROM sys.jobs WHERE job_id = %s", (job,)).fetchone() == (
                "completed", None)
        with h.superuser_connect(cid, autocommit=True) as su:
            assert su.execute("SELECT attempts FROM sys._jobs WHERE job_id = %s", (job,)).fetchone() == (2,)
            assert su.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'rs_t_v'::regclass").fetchone() == (
                True,)
    finally:
        h.stop()
