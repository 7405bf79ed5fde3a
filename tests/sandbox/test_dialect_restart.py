"""Async jobs survive a sandbox restart: a build interrupted by `sandbox stop` is re-run on start.

Runs its own sandbox (the session one must not be restarted under other tests).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def _status(conn: Any, job: str) -> str:
    row = conn.execute("SELECT status FROM sys.jobs WHERE job_id = %s", (job,)).fetchone()
    return str(row[0]) if row else "missing"


def test_build_interrupted_by_stop_completes_after_start(tmp_path: Path) -> None:
    from tests.sandbox.handle import SandboxHandle

    os.chmod(tmp_path, 0o755)
    h = SandboxHandle(tmp_path / "sb")
    h.start()
    try:
        cid = h.create_cluster()
        with h.connect(cid, autocommit=True) as conn:
            conn.execute("CREATE TABLE rs_t (id int PRIMARY KEY, v text)")
            conn.execute("CREATE TABLE rs_other (id int)")
            conn.execute("INSERT INTO rs_t SELECT g, 'v' || g FROM generate_series(1, 500) g")
            # An open snapshot straight on the backend (it outlives the front's sessions at stop): the
            # build waits for it, so it is mid-way when the sandbox stops.
            holder = h.superuser_connect(cid)
            holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            holder.execute("SELECT count(*) FROM rs_other")
            job = conn.execute("CREATE INDEX ASYNC rs_t_v ON rs_t (v)").fetchone()[0]
            deadline = time.monotonic() + 120
            while _status(conn, job) != "processing":
                assert time.monotonic() < deadline, "the build never started"
                time.sleep(0.1)
    finally:
        h.stop()
    h.start()
    try:
        import psycopg

        deadline = time.monotonic() + 120
        while True:  # the cluster's PostgreSQL comes back a moment after the front
            try:
                conn = h.connect(cid, autocommit=True)
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "the cluster did not come back"
                time.sleep(0.5)
        with conn:
            assert conn.execute("CALL sys.wait_for_job(%s)", (job,)).fetchone() == (True,)
            row = conn.execute("SELECT status, details FROM sys.jobs WHERE job_id = %s", (job,)).fetchone()
            assert row == ("completed", None)
        with h.superuser_connect(cid, autocommit=True) as su:
            assert su.execute("SELECT attempts FROM sys._jobs WHERE job_id = %s", (job,)).fetchone()[0] >= 2
            assert su.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'rs_t_v'::regclass").fetchone() == (
                True,)
    finally:
        h.stop()
