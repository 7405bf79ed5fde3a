"""`dsqlops cluster wait` and create/delete --wait: every status, through moto's state manager and
a wrapped GetCluster for the statuses moto never emits."""

from __future__ import annotations

import pytest

from dsqlops.control.waits import wait_for
from dsqlops.errors import ExitCode, OperationFailed, WaitTimeout
from tests.control.conftest import create, fake_statuses, manual_transitions

FAST = ["--interval", "0.01"]


def test_create_wait_follows_creating_to_active(run, dsql):
    manual_transitions(3)
    r = run(["-o", "json", "cluster", "create", "--wait", *FAST, "--timeout", "60"])
    assert r.exit_code == 0, r.stderr
    c = r.json()
    assert c["status"] == "ACTIVE"
    assert f"resume with `dsqlops cluster wait {c['endpoint']} --accept-idle`" in r.stderr
    assert "CREATING" in r.stderr and "ACTIVE" in r.stderr  # progress lines with elapsed time
    assert "s)" in r.stderr


def test_wait_resumes_after_timeout(run):
    manual_transitions(10_000)
    c = create(run)
    r = run(["cluster", "wait", c["id"], "--timeout", "0.3", *FAST])
    assert r.exit_code == ExitCode.TIMEOUT == 4
    assert "still CREATING" in r.stderr
    assert f"dsqlops cluster wait {c['id']}.dsql.us-east-1.on.aws --for active" in r.stderr


def test_create_wait_timeout_exit_4_then_resume(run):
    manual_transitions(10_000)
    r = run(["cluster", "create", "--wait", "--timeout", "0.2", *FAST])
    assert r.exit_code == ExitCode.TIMEOUT
    assert "still CREATING" in r.stderr
    manual_transitions(1)
    r2 = run(["-o", "json", "cluster", "create"])  # the cron re-run: same cluster, no second one
    cid = r2.json()["id"]
    assert cid in r.stderr
    r3 = run(["-o", "json", "cluster", "wait", cid, "--timeout", "60", *FAST])
    assert r3.exit_code == 0 and r3.json()["status"] == "ACTIVE"


def test_wait_failed_exits_1_at_once(run, monkeypatch):
    c = create(run)
    seen = fake_statuses(monkeypatch, ["CREATING", "FAILED"])
    r = run(["cluster", "wait", c["id"], "--timeout", "600", *FAST])
    assert r.exit_code == ExitCode.FAILED == 1
    assert "is FAILED" in r.stderr
    assert seen == ["CREATING", "FAILED"]  # stopped at the first FAILED, did not poll on


@pytest.mark.parametrize("status", ["IDLE", "INACTIVE"])
def test_wait_idle_inactive_with_accept_idle(run, monkeypatch, status):
    c = create(run)
    fake_statuses(monkeypatch, [status])
    r = run(["-o", "json", "cluster", "wait", c["id"], "--accept-idle", *FAST])
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["status"] == status and "scaled down" in out["note"] and "connecting wakes it" in out["note"]


@pytest.mark.parametrize("status", ["IDLE", "INACTIVE"])
def test_wait_idle_inactive_without_accept_idle_times_out_explaining(run, monkeypatch, status):
    c = create(run)
    fake_statuses(monkeypatch, [status])
    r = run(["cluster", "wait", c["id"], "--timeout", "0.2", *FAST])
    assert r.exit_code == ExitCode.TIMEOUT
    assert f"still {status}" in r.stderr
    assert "connecting wakes it" in r.stderr and "--accept-idle" in r.stderr


def test_wait_idle_then_active(run, monkeypatch):
    c = create(run)
    fake_statuses(monkeypatch, ["IDLE", "IDLE", "ACTIVE"])
    r = run(["-o", "json", "cluster", "wait", c["id"], "--timeout", "60", *FAST])
    assert r.exit_code == 0 and r.json()["status"] == "ACTIVE" and r.json()["polls"] == 3


def test_wait_pending_setup_explained(run, monkeypatch):
    c = create(run)
    fake_statuses(monkeypatch, ["PENDING_SETUP"])
    r = run(["cluster", "wait", c["id"], "--timeout", "0.2", *FAST])
    assert r.exit_code == ExitCode.TIMEOUT
    assert "still PENDING_SETUP" in r.stderr and "peer" in r.stderr


@pytest.mark.parametrize("status", ["DELETING", "PENDING_DELETE"])
def test_wait_active_on_deleting_cluster_fails_at_once(run, monkeypatch, status):
    c = create(run)
    fake_statuses(monkeypatch, [status])
    r = run(["cluster", "wait", c["id"], "--timeout", "600", *FAST])
    assert r.exit_code == ExitCode.FAILED and "never become ACTIVE" in r.stderr


def test_wait_for_deleted(run, dsql):
    c = create(run, "--no-deletion-protection")
    manual_transitions(3)
    dsql.delete_cluster(identifier=c["id"])
    r = run(["-o", "json", "cluster", "wait", c["id"], "--for", "deleted", "--timeout", "60", *FAST])
    assert r.exit_code == 0, r.stderr
    assert r.json()["status"] == "DELETED" and r.json()["polls"] >= 3
    # Waiting for ACTIVE on a cluster that does not exist is a service error (254), not a hang.
    r = run(["cluster", "wait", c["id"], *FAST])
    assert r.exit_code == ExitCode.SERVICE


def test_wait_for_deleted_failed(run, monkeypatch):
    c = create(run)
    fake_statuses(monkeypatch, ["DELETING", "FAILED"])
    r = run(["cluster", "wait", c["id"], "--for", "deleted", *FAST])
    assert r.exit_code == ExitCode.FAILED


def test_delete_wait_timeout_exit_4(run):
    c = create(run, "--no-deletion-protection")
    manual_transitions(10_000)
    r = run(["cluster", "delete", c["id"], "--yes", "--wait", "--timeout", "0.2", *FAST])
    assert r.exit_code == ExitCode.TIMEOUT
    assert "still DELETING" in r.stderr and "--for deleted" in r.stderr


def test_wait_for_core_with_fake_clock(dsql):
    """The core poller with an injected clock: no real sleeping, exact poll accounting."""
    c = dsql.create_cluster(deletionProtectionEnabled=False)
    manual_transitions(1000)
    now = [0.0]
    sleeps: list[float] = []
    statuses: list[str] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    with pytest.raises(WaitTimeout) as ei:
        wait_for(dsql, c["identifier"], region="us-east-1", timeout=12, interval=5, sleep=sleep,
                 clock=lambda: now[0], on_status=lambda s, _e: statuses.append(s))
    assert sleeps == [5, 5, 2]  # never sleeps past the deadline
    assert statuses == ["CREATING"] * 4
    assert ei.value.exit_code == ExitCode.TIMEOUT


def test_wait_tolerates_transient_errors(dsql):
    """Throttling that outlasts botocore's retries does not end the wait while time remains."""
    import botocore.exceptions as bex

    c = dsql.create_cluster(deletionProtectionEnabled=False)
    calls = {"n": 0}
    real = dsql.get_cluster

    def flaky(**kw):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise bex.ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "GetCluster")
        return real(**kw)

    dsql.get_cluster = flaky
    seen: list[str] = []
    res = wait_for(dsql, c["identifier"], region="us-east-1", timeout=60, interval=0.01,
                   on_status=lambda s, _e: seen.append(s))
    assert res.status == "ACTIVE" and res.polls == 3
    assert "retrying after ThrottlingException" in seen[0]


def test_wait_non_transient_error_raises(dsql):
    import botocore.exceptions as bex

    def denied(**kw):
        raise bex.ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GetCluster")

    dsql.get_cluster = denied
    from dsqlops.errors import ServiceError

    with pytest.raises(ServiceError) as ei:
        wait_for(dsql, "abcdefghijklmnopqrstuvwxyz", region="us-east-1", timeout=60, interval=0.01)
    assert ei.value.code == "AccessDeniedException"
    assert not isinstance(ei.value, OperationFailed)


def test_wait_for_deleted_on_a_cluster_nobody_deletes(run):
    c = create(run)
    r = run(["cluster", "wait", c["id"], "--for", "deleted", "--timeout", "0.2", *FAST])
    assert r.exit_code == ExitCode.TIMEOUT
    assert "still ACTIVE" in r.stderr and f"dsqlops cluster delete {c['id']}.dsql.us-east-1.on.aws" in r.stderr


def test_create_wait_rerun_on_a_scaled_down_cluster_returns(run, monkeypatch):
    """The cron re-run of `create --wait` finds its cluster IDLE: done (it exists), not a timeout."""
    c = create(run, "--tag", "k=v")
    fake_statuses(monkeypatch, ["IDLE"])
    r = run(["-o", "json", "cluster", "create", "--tag", "k=v", "--wait", "--timeout", "600", *FAST])
    assert r.exit_code == 0, r.stderr
    assert r.json()["id"] == c["id"] and r.json()["status"] == "IDLE"
    assert "available, scaled down" in r.stderr


def test_wait_for_deleted_does_not_call_a_cluster_in_another_region_deleted(run):
    """Named by bare id and looked up in the default Region, a live cluster elsewhere is "not found
    in region us-east-1", exit 254; never "DELETED", exit 0."""
    c = create(run, region="us-east-2")
    r = run(["-o", "json", "cluster", "wait", c["id"], "--for", "deleted", *FAST])
    assert r.exit_code == ExitCode.SERVICE, r.stdout
    assert "not found in region us-east-1" in r.stderr and "another region" in r.stderr
    assert "DELETED" not in r.stdout
    r = run(["cluster", "wait", c["id"], *FAST])  # --for active says the same, with the same hint
    assert r.exit_code == ExitCode.SERVICE and "does not exist in region us-east-1" in r.stderr
    assert "name it by endpoint host" in r.stderr


def test_wait_for_deleted_by_host_tells_not_found_from_deleted(run, dsql):
    host = "zzzzzzzzzzzzzzzzzzzzzzzzzz.dsql.us-east-2.on.aws"  # never existed
    r = run(["-o", "json", "cluster", "wait", host, "--for", "deleted", *FAST])
    assert r.exit_code == 0, r.stderr
    assert r.json()["status"] == "NOT_FOUND" and "not found in region us-east-2" in r.json()["note"]
    c = create(run, "--no-deletion-protection")
    manual_transitions(2)
    dsql.delete_cluster(identifier=c["id"])
    r = run(["-o", "json", "cluster", "wait", c["endpoint"], "--for", "deleted", *FAST])
    assert r.exit_code == 0 and r.json()["status"] == "DELETED"  # seen DELETING, then gone


def test_policy_version_conflict_hint_names_the_host(run, tmp_path):
    c = create(run, region="us-east-2")
    pf = tmp_path / "p.json"
    pf.write_text('{"Version": "2012-10-17", "Statement": []}')
    assert run(["cluster", "policy", "put", c["endpoint"], str(pf)]).exit_code == 0
    r = run(["cluster", "policy", "put", c["endpoint"], str(pf), "--expected-version", "stale"])
    assert r.exit_code == ExitCode.SERVICE and "no longer at version" in r.stderr
    assert f"dsqlops cluster policy get {c['id']}.dsql.us-east-2.on.aws" in r.stderr


def test_wait_gives_up_at_its_timeout_when_get_cluster_never_answers(dsql):
    """One GetCluster that hangs (a black-hole endpoint) must not outlive --timeout."""
    import threading

    c = dsql.create_cluster(deletionProtectionEnabled=False)
    release = threading.Event()
    real = dsql.get_cluster

    def hangs(**kw):
        release.wait(30)  # without a bound on the call, the wait returns ACTIVE after this
        return real(**kw)

    dsql.get_cluster = hangs
    try:
        with pytest.raises(WaitTimeout) as ei:
            wait_for(dsql, c["identifier"], region="us-east-1", timeout=0.5, interval=0.01)
        assert "did not answer" in ei.value.message and ei.value.exit_code == ExitCode.TIMEOUT
    finally:
        release.set()


def test_cluster_wait_against_a_silent_endpoint_exits_4_at_its_timeout(tmp_path):
    """A real process against an endpoint that accepts and never answers: botocore alone would hold
    the poll for its read timeout times its attempts (five minutes)."""
    import os
    import subprocess
    import sys

    from tests.faultproxy import silent_server

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSQLOPS_", "AWS_"))}
    env.update({"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "us-east-1",
                "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "DSQLOPS_NO_PROGRESS": "1"})
    with silent_server() as port:
        p = subprocess.run([sys.executable, "-m", "dsqlops", "--endpoint-url", f"http://127.0.0.1:{port}",
                            "cluster", "wait", "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws", "--timeout", "2"],
                           env=env, capture_output=True, text=True, timeout=90)
    assert p.returncode == ExitCode.TIMEOUT, p.stderr
    assert "did not answer within the 2s timeout" in p.stderr and "Traceback" not in p.stderr
