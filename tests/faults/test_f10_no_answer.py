"""F10: a server that never answers. Every command gives up within its documented timeout
(``connect_timeout`` for connecting, ``--timeout`` for waits, the statement deadline for SQL) with
a one-line message and a non-zero exit; no process is left hanging.

In the test matrix (dsql-facts.md §R5.2), F10 is a P-layer row (a proxy with toxiproxy's ``timeout=0``); here the proxy
is :mod:`tests.faultproxy` in front of the sandbox's DSQL front, and every command runs as a real
child process so a hang is a test failure, not a stuck test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.faultproxy import silent_server
from tests.faults.conftest import wait_for_backend

pytestmark = pytest.mark.sandbox

HOST = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"
#: Hang guard for one child process: far above every timeout the commands are given here.
GUARD = 90


def _spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "dsqlops", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _out, err = p.communicate(timeout=GUARD)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError(f"{p.args!r} still running after {GUARD}s: it hangs") from None
    return p.returncode, err


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DSQLOPS_", "AWS_"))}
    env.update(extra)
    return env


def _roles_file(tmp_path: Path) -> str:
    f = tmp_path / "roles.yaml"
    f.write_text(f"roles:\n  - name: f10_{uuid.uuid4().hex[:8]}\n    login: true\n")
    return str(f)


COMMANDS = {
    "sql": lambda tmp: ["sql", "select 1"],
    "role apply": lambda tmp: ["role", "apply", _roles_file(tmp)],
    "index build --wait": lambda tmp: ["index", "build", "t", "a", "--wait", "--timeout", "5"],
    "job wait": lambda tmp: ["job", "wait", "abcdefghijklmnopqrstuvwxyz", "--timeout", "5"],
    "bench": lambda tmp: ["bench", "transfer", "--duration", "3", "--concurrency", "2"],
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_f10_silent_server_each_command_gives_up_at_connect_timeout(name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with silent_server() as port:
        env = _child_env({"DSQLOPS_HOSTADDR": "127.0.0.1", "DSQLOPS_PORT": str(port),
                          "DSQLOPS_CONNECT_TIMEOUT": "2", "DSQLOPS_CLUSTER": HOST,
                          "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "AWS_ACCESS_KEY_ID": "AKIDTEST",
                          "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "us-east-1",
                          "DSQLOPS_NO_PROGRESS": "1"})
        code, err = _finish(_spawn(env, *COMMANDS[name](tmp_path)))
    assert code == 254, err
    first = err.strip().splitlines()[0]
    assert first.startswith("error: cannot connect") and "timeout" in first, err
    assert "connect_timeout is 2s" in err and "Traceback" not in err


def test_f10_sql_gives_up_when_the_server_stops_answering_mid_statement(sandbox, cluster, proxy,  # type: ignore[no-untyped-def]
                                                                       via_proxy) -> None:
    tag = uuid.uuid4().hex[:8]
    p = _spawn(_child_env({**via_proxy, "DSQLOPS_STATEMENT_TIMEOUT": "3"}),
               "sql", f"select pg_sleep(0.5), '{tag}'")
    wait_for_backend(sandbox, cluster, f"query LIKE '%{tag}%'")
    proxy.stall()  # the answer never comes back
    code, err = _finish(p)
    proxy.unstall()
    assert code == 254, err
    first = err.strip().splitlines()[0]
    assert "no answer" in first and "3" in first, err


@pytest.mark.parametrize("method", ["call", "poll"])
def test_f10_job_wait_gives_up_when_the_server_stops_answering(sandbox, cluster, proxy, via_proxy,  # type: ignore[no-untyped-def]
                                                              method) -> None:
    table = f"f10_{uuid.uuid4().hex[:8]}"
    with sandbox.connect(cluster, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v int)")
    # Hold the build back before it is submitted (an index on an empty table builds at once): the
    # build cannot take its lock while this transaction holds the table, so the job stays open.
    with sandbox.superuser_connect(cluster) as blocker:
        blocker.execute(f"LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE")
        with sandbox.connect(cluster, autocommit=True) as admin:
            job_id = admin.execute(f"CREATE INDEX ASYNC ON {table} (v)").fetchone()[0]
        p = _spawn(_child_env(via_proxy), "job", "wait", job_id, "--timeout", "4", "--method", method)
        wait_for_backend(sandbox, cluster, "query ILIKE '%wait_for_job%'" if method == "call"
                         else "query ILIKE '%sys.jobs%' AND application_name LIKE 'dsqlops%'")
        proxy.stall()
        code, err = _finish(p)
        proxy.unstall()
        blocker.rollback()
    # Bounded either way: the wait's timeout (4; the job goes on, and the line says why the wait
    # could not follow it) or the server given up on (254).
    assert code in (4, 254), err
    first = err.strip().splitlines()[0]
    if code == 4:
        assert first.startswith(f"job {job_id}: still ") and "after the 4s timeout" in first, err
        assert "no answer" in first or "connection lost" in first, err
    else:
        assert first.startswith("error: ") and ("no answer" in first or "timeout" in first), err


def test_f10_index_build_wait_gives_up_when_the_server_stops_answering(sandbox, cluster, proxy,  # type: ignore[no-untyped-def]
                                                                      via_proxy) -> None:
    table = f"f10_{uuid.uuid4().hex[:8]}"
    with sandbox.connect(cluster, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v int)")
    with sandbox.superuser_connect(cluster) as blocker:
        blocker.execute(f"LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE")
        p = _spawn(_child_env(via_proxy), "index", "build", table, "v", "--wait", "--timeout", "4")
        wait_for_backend(sandbox, cluster, "query ILIKE '%wait_for_job%'")
        proxy.stall()
        code, err = _finish(p)
        proxy.unstall()
        blocker.rollback()
    assert code in (4, 254), err
    assert "job" in err and ("no answer" in err or "timed out" in err or "timeout" in err), err


def test_f10_bench_gives_up_when_the_server_stops_answering(sandbox, cluster, proxy, via_proxy) -> None:  # type: ignore[no-untyped-def]
    env = _child_env({**via_proxy, "DSQLOPS_STATEMENT_TIMEOUT": "3"})
    p = _spawn(env, "bench", "transfer", "--accounts", "100", "--concurrency", "2", "--duration", "60", "--setup")
    wait_for_backend(sandbox, cluster, "query ILIKE '%UPDATE%' AND application_name LIKE 'dsqlops%'")
    proxy.stall()
    code, err = _finish(p)
    proxy.unstall()
    assert code not in (0, 255), err
    first = err.strip().splitlines()[0]
    # The stalled round trip hits the deadline; reconnecting then meets connect_timeout.
    assert first.startswith("error: ") and ("no answer" in first or "timeout" in first), err


def test_f10_role_apply_gives_up_when_the_server_stops_answering_mid_run(sandbox, cluster, proxy, via_proxy,  # type: ignore[no-untyped-def]
                                                                        tmp_path) -> None:
    from dsqlops.aws import AwsContext
    from dsqlops.config import resolve
    from dsqlops.data.connection import connect, target_for
    from dsqlops.data.tokens import TokenSource

    settings = resolve()
    connect(target_for(settings, cluster), TokenSource(AwsContext.from_settings(settings))).close()
    for _ in range(600):  # the proxy records the connection once it has seen it close
        if proxy.connection_up_chunks:
            break
        time.sleep(0.05)
    login = proxy.connection_up_chunks[-1] - 1  # the login's client chunks (without the Terminate)
    proxy.stall_at_up_chunk = login + 2  # the second round trip after the login never comes back
    roles = _roles_file(tmp_path)
    code, err = _finish(_spawn(_child_env({**via_proxy, "DSQLOPS_STATEMENT_TIMEOUT": "3"}), "role", "apply", roles))
    proxy.stall_at_up_chunk = None
    assert code in (1, 254), err
    assert "no answer from the server within 3 s" in err, err
    again = _finish(_spawn(_child_env(via_proxy), "role", "apply", roles))
    assert again[0] == 0, again[1]
