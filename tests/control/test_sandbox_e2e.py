"""The whole cluster lifecycle as a user runs it: real `dsqlops` processes against the sandbox's
control plane (moto server behind `--endpoint-url`, endpoints fixed, CREATING until the database
is ready). Complements the in-process moto tests with the HTTP path and real exit codes."""

from __future__ import annotations

import functools
import json

import pytest

from tests.clirun import run_dsqlops, sandbox_cli_env

pytestmark = pytest.mark.sandbox


_env = functools.partial(sandbox_cli_env, no_progress=False)
_run = functools.partial(run_dsqlops, timeout=240)


def test_cluster_lifecycle_against_the_sandbox(sandbox, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = _env(sandbox, tmp_path)
    tag = f"run={tmp_path.name[-20:]}"  # unique per run: the sandbox is shared by the session
    p = _run(env, "-o", "json", "cluster", "create", "--tag", tag, "--wait", "--timeout", "180", "--interval", "0.5")
    assert p.returncode == 0, p.stderr
    c = json.loads(p.stdout)
    cid = c["id"]
    assert c["status"] == "ACTIVE" and c["endpoint"] == f"{cid}.dsql.{sandbox.region}.on.aws"

    p = _run(env, "-o", "json", "cluster", "create", "--tag", tag)  # the cron re-run
    assert p.returncode == 0 and json.loads(p.stdout)["id"] == cid

    p = _run(env, "-o", "json", "cluster", "list", "--status", "ACTIVE")
    assert p.returncode == 0, p.stderr
    assert cid in {r["id"] for r in json.loads(p.stdout)}

    p = _run(env, "-o", "json", "cluster", "show", f"{cid}.dsql.{sandbox.region}.on.aws")
    assert p.returncode == 0, p.stderr
    shown = json.loads(p.stdout)
    assert shown["tags"] == dict([tag.split("=", 1)]) and shown["deletion_protection"] is True

    pf = tmp_path / "policy.json"
    pf.write_text(json.dumps({"Version": "2012-10-17", "Statement": []}))
    p = _run(env, "-o", "json", "cluster", "policy", "put", cid, str(pf))
    assert p.returncode == 0, p.stderr
    version = json.loads(p.stdout)["version"]
    p = _run(env, "cluster", "policy", "put", cid, str(pf), "--expected-version", "stale-version")
    assert p.returncode == 254 and "no longer at version" in p.stderr
    p = _run(env, "-o", "json", "cluster", "policy", "get", cid)
    assert json.loads(p.stdout)["version"] == version

    p = _run(env, "cluster", "delete", cid, "--yes")
    assert p.returncode == 252 and "deletion protection" in p.stderr
    p = _run(env, "-o", "json", "cluster", "delete", cid, "--yes", "--disable-deletion-protection",
             "--wait", "--timeout", "180", "--interval", "0.5")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["status"] == "DELETED" and "deletion protection disabled" in p.stderr
    p = _run(env, "cluster", "show", cid)
    assert p.returncode == 254
