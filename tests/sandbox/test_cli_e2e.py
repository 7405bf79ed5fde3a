"""The dsqlops CLI itself against the sandbox: cluster create → sql → token → psql, with `sandbox env`."""

from __future__ import annotations

import functools
import json
import subprocess

import pytest

from tests.clirun import run_dsqlops, sandbox_cli_env

_env = sandbox_cli_env
_run = functools.partial(run_dsqlops, timeout=180)


def test_cluster_create_sql_token_psql(sandbox, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = _env(sandbox, tmp_path)
    p = _run(env, "-o", "json", "cluster", "create", "--no-deletion-protection", "--wait", "--timeout", "180")
    assert p.returncode == 0, p.stderr
    created = json.loads(p.stdout)
    cid = created["id"]
    assert created["status"] == "ACTIVE"
    p = _run(env, "-o", "json", "sql", "-c", cid, "SELECT current_user AS who, 40 + 2 AS n")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [{"who": "admin", "n": 42}]
    p = _run(env, "token", "-c", cid)
    assert p.returncode == 0, p.stderr
    token = p.stdout.strip()
    assert token.startswith(f"{cid}.dsql.us-east-1.on.aws/?Action=DbConnectAdmin")
    psql_env = {**env, "PGPASSWORD": token}
    q = subprocess.run(["psql", f"host={cid}.dsql.us-east-1.on.aws", "-XAtc", "SELECT 'via psql'"], env=psql_env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert q.returncode == 0 and q.stdout.strip() == "via psql", q.stderr


def test_cli_refused_statement_is_an_error(sandbox, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = _env(sandbox, tmp_path)
    cid = sandbox.create_cluster()
    p = _run(env, "sql", "-c", cid, "SELECT 1/0")
    assert p.returncode == 254 and "22012" in p.stderr


@pytest.mark.parametrize("fmt", ["json"])
def test_sandbox_status_and_env_cli(sandbox, tmp_path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    env = _env(sandbox, tmp_path)
    p = _run(env, "-o", fmt, "sandbox", "status", "--dir", str(sandbox.dir))
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["running"] and st["api_endpoint"] == sandbox.api_endpoint and st["port"] == sandbox.port
    assert st["ca_file"] == sandbox.ca_file
    assert st["components"] == {"control_plane": "running", "front": "running"}
    assert "relay" not in st  # one relay: nothing to choose or report
    p = _run(env, "sandbox", "env", "--dir", str(sandbox.dir))
    assert p.returncode == 0
    assert f"export AWS_ENDPOINT_URL={sandbox.api_endpoint}" in p.stdout
    assert "export PGSSLMODE=verify-full" in p.stdout and "unset AWS_SESSION_TOKEN" in p.stdout
