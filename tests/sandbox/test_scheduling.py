"""A cluster's PostgreSQL runs under SCHED_BATCH: a backend the front wakes does not preempt the
front in the middle of its work (see PostgresServer._batch_scheduling)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="no SCHED_BATCH on this platform")]


@pytest.fixture(scope="module")
def cluster(sandbox) -> str:  # type: ignore[no-untyped-def]
    return sandbox.create_cluster()


def _policy_can_be_set() -> bool:
    """Whether this machine lets a process put a child of its own under SCHED_BATCH (a seccomp
    profile may forbid the call; the sandbox then runs its servers as they start)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        os.sched_setscheduler(child.pid, os.SCHED_BATCH, os.sched_param(0))
        return True
    except OSError:
        return False
    finally:
        child.kill()
        child.wait()


@pytest.mark.sandbox
def test_postmaster_and_session_backends_run_as_batch(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    if not _policy_can_be_set():
        pytest.skip("this machine does not let a process change a child's scheduling policy")
    from dsqlops.sandbox.postgres import postmaster_pid

    postmaster = postmaster_pid(Path(sandbox.dir, "clusters", cluster, "pgdata"))
    assert postmaster is not None
    with sandbox.connect(cluster, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        backend = int(row[0])
        assert os.sched_getscheduler(postmaster) == os.SCHED_BATCH
        assert os.sched_getscheduler(backend) == os.SCHED_BATCH  # forked after start: inherited


def test_scheduling_is_best_effort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused policy change (another user's process, a platform without it) leaves the server
    as it started instead of failing the start."""
    from dsqlops.sandbox import postgres

    server = postgres.PostgresServer(tmp_path / "pgdata", port=5999)
    (tmp_path / "pgdata").mkdir()
    (tmp_path / "pgdata" / "postmaster.pid").write_text(f"{os.getpid()}\n")
    calls: list[int] = []

    def refuse(pid: int, policy: int, param: object) -> None:
        calls.append(pid)
        raise PermissionError("not allowed")

    monkeypatch.setattr(postgres.os, "sched_setscheduler", refuse)
    server._batch_scheduling()
    assert calls == [os.getpid()]
    (tmp_path / "pgdata" / "postmaster.pid").write_text("garbage\n")
    server._batch_scheduling()  # an unreadable pid file: nothing to do, no error
