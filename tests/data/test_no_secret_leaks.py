"""No command, at ``--debug``, prints a SigV4 signature, a session token, a secret or a password.

Every registered command (whatever exists when the suite runs) is invoked once with a plausible
argument list, in its own process (``connect`` execs, some commands spawn), against a moto server
for the control plane and the TLS PostgreSQL (``pg``) for the data plane, with recognisable fake
credentials. ``token``'s stdout is the one legitimate exception; its stderr must be clean.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click
import pytest

from tests.clirun import walk_commands

from .conftest import CLUSTER_HOST, FAKE_AKID, FAKE_SECRET, FAKE_SESSION, cli_environ

pytestmark = pytest.mark.postgres

FORBIDDEN = ("X-Amz-Signature", "X-Amz-Security-Token", FAKE_SESSION, FAKE_SECRET, "SessionLeakCheck",
             "SecretLeakCheck", "Action=DbConnect")
#: Commands that would outlive the test or need a TTY/daemon; exercised in their own test files.
SKIP = {("sandbox", "start"), ("sandbox", "serve"), ("sandbox", "run"), ("demo",), ("demo", "run")}


def _value(name: str, cluster_id: str, tmp: Any) -> list[str]:
    """A plausible value for a required argument, by its name."""
    n = name.lower()
    if n in ("cluster_ref", "cluster", "clusters", "cluster_id", "cluster_ids", "id"):
        return [cluster_id]
    if "arn" in n:
        return ["arn:aws:iam::123456789012:role/leakcheck"]
    if n in ("tags",):
        return ["team=ops"]
    if n in ("keys",):
        return ["team"]
    if "policy" in n:
        p = tmp / "policy.json"
        p.write_text(json.dumps({"Version": "2012-10-17", "Statement": []}))
        return [str(p)]
    if n in ("file", "path", "spec"):
        p = tmp / "roles.yaml"
        p.write_text("roles: {}\n")
        return [str(p)]
    if n in ("name", "role_name", "role"):
        return ["leakcheck"]
    if n in ("privileges", "privilege"):
        return ["SELECT"]
    if n in ("target",):
        return ["public.leakcheck"]
    if n in ("statement", "query", "sql"):
        return ["select 1"]
    if n in ("directory", "dir"):
        return [str(tmp / "sandbox")]
    if "job" in n:
        return ["job-leakcheck"]
    if "stream" in n:
        return ["stream-leakcheck"]
    if "index" in n:
        return ["leakcheck_idx"]
    if "table" in n:
        return ["public.leakcheck"]
    return ["leakcheck"]


def plausible_invocations(cluster_id: str, tmp: Any) -> list[list[str]]:
    from dsqlops.cli.main import cli

    ctx = click.Context(cli)
    out: list[list[str]] = []
    for path, cmd in walk_commands(cli, ctx):
        if isinstance(cmd, click.Group):
            continue
        if path in SKIP or path[:1] in SKIP:
            continue
        args: list[str] = list(path)
        params = {p.name: p for p in cmd.params}
        if path == ("connect",):
            out.append([*args, "-c", CLUSTER_HOST, "--role", "postgres", "--print-command"])
            args += ["-c", CLUSTER_HOST, "--role", "postgres", "--", "-c", "select 1"]
            out.append(args)
            continue
        if "cluster" in params and isinstance(params["cluster"], click.Option):
            args += ["-c", CLUSTER_HOST]
        if "role" in params and isinstance(params["role"], click.Option) and path[0] in ("sql", "token"):
            args += ["--role", "postgres"]
        for flag in ("yes", "dry_run"):
            if flag in params and isinstance(params[flag], click.Option) and params[flag].is_flag:
                args.append(params[flag].opts[-1] if params[flag].opts[-1].startswith("--") else params[flag].opts[0])
        if "timeout" in params:
            args += ["--timeout", "5"]
        # Keep workloads tiny and leave the shared database alone (bench-like commands).
        for opt, val in (("accounts", "10"), ("concurrency", "1")):
            if opt in params and isinstance(params[opt], click.Option) and not params[opt].is_flag:
                args += [params[opt].opts[-1], val]
        if "transactions" in params:
            args += [params["transactions"].opts[-1], "3"]
        elif "duration" in params:
            args += [params["duration"].opts[-1], "1"]
        if "setup" in params and "--no-setup" in getattr(params["setup"], "secondary_opts", []):
            args.append("--no-setup")
        if "cluster_ids" in params and isinstance(params["cluster_ids"], click.Option):
            args += [params["cluster_ids"].opts[-1], cluster_id]
        for p in cmd.params:
            if isinstance(p, click.Option) and p.required and p.name:
                args += [p.opts[-1], *_value(p.name, cluster_id, tmp)]
        for p in cmd.params:
            if isinstance(p, click.Argument) and p.name and (p.required or p.name in ("statement", "clusters")):
                args += _value(p.name, cluster_id, tmp)
        out.append(args)
    return out


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from dsqlops.sandbox.postgres import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_s1_no_command_leaks_secrets_at_debug(pg, pg_tls, moto_server, tmp_path):
    import boto3

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DSQLOPS_", "AWS_", "PG"))}
    env.update(cli_environ(pg, pg_tls, tmp_path))
    # Keep every command away from the real home: sandbox state, caches, configs.
    home = tmp_path / "home"
    home.mkdir()
    env.update({"HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "XDG_STATE_HOME": str(home / "state"),
                "XDG_CACHE_HOME": str(home / "cache"), "XDG_RUNTIME_DIR": str(home / "run")})
    env.update({"DSQLOPS_ENDPOINT_URL": moto_server, "DSQLOPS_USER": "postgres", "DSQLOPS_DEBUG": "1",
                "DSQLOPS_NO_PROGRESS": "1", "AWS_EC2_METADATA_DISABLED": "true"})
    dsql = boto3.client("dsql", region_name="us-east-1", endpoint_url=moto_server,
                        aws_access_key_id=FAKE_AKID, aws_secret_access_key=FAKE_SECRET)
    cluster_id = dsql.create_cluster(deletionProtectionEnabled=False)["identifier"]

    invocations = plausible_invocations(cluster_id, tmp_path)
    assert any(a[0] == "sql" for a in invocations) and any(a[0] == "token" for a in invocations)

    def run(args: list[str]) -> tuple[list[str], subprocess.CompletedProcess[str]]:
        full = [sys.executable, "-m", "dsqlops", "--debug", *args]
        try:
            return args, subprocess.run(full, capture_output=True, text=True, env=env, timeout=180,
                                        stdin=subprocess.DEVNULL, cwd=tmp_path)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
            return args, subprocess.CompletedProcess(full, -9, out, err)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(run, invocations))

    leaks = []
    for args, p in results:
        streams = {"stderr": p.stderr} if args[0] == "token" else {"stdout": p.stdout, "stderr": p.stderr}
        for stream, text in streams.items():
            for bad in FORBIDDEN:
                if bad.lower() in text.lower():
                    leaks.append(f"dsqlops {' '.join(args)}: {bad!r} in {stream}")
    assert not leaks, "\n".join(leaks)

    by_cmd = {tuple(a[:1]): p for a, p in results}
    # The check is live: the data-plane path really ran at --debug and minted tokens, ...
    sql = by_cmd[("sql",)]
    assert sql.returncode == 0, sql.stderr
    assert "minted a DbConnect token" in sql.stderr
    # ... and token's stdout did hold a token (the legitimate exception).
    assert "X-Amz-Signature=" in by_cmd[("token",)].stdout
