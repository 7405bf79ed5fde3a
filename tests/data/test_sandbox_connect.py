"""The connection layer through the sandbox's DSQL front: real IAM tokens checked by the front,
verify-full against the sandbox CA through the hostaddr split, DSQL's auth failures explained."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from dsqlops.aws import AwsContext
from dsqlops.config import resolve
from dsqlops.data.connection import connect, create_pool, target_for
from dsqlops.data.retry import RetryStats, run_transaction
from dsqlops.data.tokens import TokenSource
from dsqlops.errors import ServiceError

pytestmark = [pytest.mark.sandbox, pytest.mark.postgres]


@pytest.fixture(scope="module")
def sbx(sandbox):  # type: ignore[no-untyped-def]
    return sandbox, sandbox.create_cluster()


@pytest.fixture()
def sbx_env(sbx, monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    sandbox, cluster_id = sbx
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for k, v in sandbox.env().items():
        monkeypatch.setenv(k, v)
    settings = resolve()
    return settings, cluster_id


def test_token_source_logs_in_through_the_front(sbx_env):
    settings, cluster_id = sbx_env
    target = target_for(settings, cluster_id)
    assert target.hostaddr == "127.0.0.1" and target.host.startswith(cluster_id + ".dsql.")
    tokens = TokenSource(AwsContext.from_settings(settings))
    with connect(target, tokens) as conn:
        assert conn.execute("select current_user").fetchone() == ("admin",)
    assert tokens.calls == 1


def test_pool_and_retry_through_the_front(sbx_env):
    settings, cluster_id = sbx_env
    target = target_for(settings, cluster_id)
    tokens = TokenSource(AwsContext.from_settings(settings))
    stats = RetryStats()
    pool = create_pool(target, tokens, min_size=1, max_size=2)
    try:
        got = run_transaction(pool, lambda c: c.execute("select 41 + 1").fetchone()[0], stats=stats)
    finally:
        pool.close()
    assert got == 42 and stats.attempts == 1 and tokens.calls >= 1


def test_garbage_token_is_refused_and_explained(sbx_env):
    settings, cluster_id = sbx_env
    target = target_for(settings, cluster_id)
    with pytest.raises(ServiceError) as ei:
        connect(target, lambda t: "not-a-token")
    assert "authentication refused" in ei.value.message
    assert "DbConnectAdmin" in (ei.value.hint or "")
    assert "not-a-token" not in ei.value.message + (ei.value.hint or "")


def test_expired_token_is_explained(sbx_env, monkeypatch):
    import botocore.auth

    settings, cluster_id = sbx_env
    target = target_for(settings, cluster_id)
    an_hour_ago = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=1)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: an_hour_ago)
    stale = TokenSource(AwsContext.from_settings(settings)).mint(target.host, expires_in=60).token
    monkeypatch.undo()
    with pytest.raises(ServiceError) as ei:
        connect(target, lambda t: stale)
    assert "expired" in ei.value.message and "clock" in (ei.value.hint or "")
    assert "X-Amz" not in ei.value.message + (ei.value.hint or "")


def test_sql_command_through_the_front(sbx):
    sandbox, cluster_id = sbx
    env = {**os.environ, **sandbox.env()}
    env.pop("DSQLOPS_CONFIG", None)
    p = subprocess.run([sys.executable, "-m", "dsqlops", "-o", "json", "sql", "-c", cluster_id,
                        "create table sbx_b1 (i int); create table sbx_b2 (i int); insert into sbx_b1 values (7); "
                        "select i from sbx_b1; drop table sbx_b1; drop table sbx_b2"],
                       capture_output=True, text=True, env=env, timeout=180)
    assert p.returncode == 0, p.stderr
    import json

    doc = json.loads(p.stdout)
    assert doc[3]["rows"] == [{"i": 7}]
