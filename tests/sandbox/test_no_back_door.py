"""The front is the only way into a sandbox cluster: no other TCP port answers, and the login
check runs with the least privilege over one reused connection."""

from __future__ import annotations

import os
import socket
import stat
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def cluster(sandbox) -> str:  # type: ignore[no-untyped-def]
    return sandbox.create_cluster()


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _tree(roots: set[int]) -> set[int]:
    """``roots`` and every process descended from one of them."""
    pids = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    parent = {p: _ppid(p) for p in pids}
    out = set(roots)
    grew = True
    while grew:
        grew = False
        for p, pp in parent.items():
            if pp in out and p not in out:
                out.add(p)
                grew = True
    return out


def _socket_inodes(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def _listening_tcp_ports(pids: set[int]) -> set[int]:
    """TCP ports (v4 and v6) in LISTEN state owned by one of ``pids`` (/proc/net/tcp{,6})."""
    inodes: set[int] = set()
    for pid in pids:
        inodes |= _socket_inodes(pid)
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[9]) in inodes:  # 0A = LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def _sandbox_pids(sandbox: Any) -> set[int]:
    """The sandbox process, each cluster's postmaster (pg_ctl detaches it) and all their children."""
    roots = {int(sandbox.runtime()["pid"])}
    for pidfile in Path(sandbox.dir, "clusters").glob("*/pgdata/postmaster.pid"):
        roots.add(int(pidfile.read_text().splitlines()[0]))
    return _tree(roots)


def test_no_tcp_port_but_the_front_and_the_api_answers(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    with sandbox.connect(cluster, autocommit=True) as conn:  # a backend and the login path are up
        conn.execute("SELECT 1")
    pids = _sandbox_pids(sandbox)
    assert len(pids) > 2  # the sandbox and at least one PostgreSQL with its children
    rt = sandbox.runtime()
    ports = _listening_tcp_ports(pids)
    assert sandbox.port in ports and int(rt["api_port"]) in ports  # the scan does see the sandbox's ports
    others = sorted(ports - {sandbox.port, int(rt["api_port"])})
    answered = []
    for port in others:
        for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            try:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(2)
                    s.connect((addr, port))
                    answered.append((addr, port))
            except OSError:
                pass
    assert not answered, f"TCP ports other than the front's and the API's answer: {answered}"
    assert not others, f"the sandbox listens on TCP ports besides the front and the API: {others}"


def test_backend_socket_folder_is_private(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    folder = Path(sandbox.runtime()["clusters"][cluster]["pg_socket_dir"])
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert list(folder.glob(".s.PGSQL.*"))


def test_login_check_is_one_reused_least_privileged_connection(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    name = f"app_pool_{uuid.uuid4().hex[:8]}"
    arn, creds = sandbox.iam_identity(name)
    sandbox.map_role(cluster, name, arn)

    def check_backends() -> list[tuple[int, str, bool]]:
        with sandbox.superuser_connect(cluster, autocommit=True) as su:
            return [tuple(r) for r in su.execute(
                "SELECT a.pid, a.usename, r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename "
                "WHERE a.application_name = 'dsqlops login check'").fetchall()]

    seen = []
    for _ in range(3):
        with sandbox.connect(cluster, name, creds=creds) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (name,)
        seen.append(check_backends())
    assert len(seen[0]) == 1, seen  # one connection answers the mapping checks
    _pid, user, superuser = seen[0][0]
    assert user == "dsqlops_login_check" and not superuser
    assert seen[1] == seen[2] == seen[0]  # the same backend answered every login


@pytest.mark.parametrize("role", ["postgres", "dsqlops_login_check"])
def test_internal_roles_cannot_log_in_even_when_mapped(sandbox, cluster, role: str) -> None:  # type: ignore[no-untyped-def]
    arn, creds = sandbox.iam_identity(f"internal_{role}_{uuid.uuid4().hex[:6]}")
    with sandbox.superuser_connect(cluster, autocommit=True) as su:
        su.execute("INSERT INTO sys._iam_mappings (arn, pg_role_oid, grantor_oid) "
                   "SELECT %s, oid, oid FROM pg_roles WHERE rolname = %s", (arn, role))
    info = sandbox.conninfo(cluster, role, creds=creds)
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(**info).close()
    assert "access denied" in str(e.value)
