"""`dsqlops sandbox start/stop/status/env` on a sandbox of its own: clusters and data survive a restart."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsqlops.sandbox.postgres import free_port
from tests.sandbox.handle import SandboxHandle


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dsqlops", *args], capture_output=True, text=True, timeout=240,
                          check=False, env=env)


def _processes_under(path: Path) -> list[int]:
    """Pids whose command line mentions ``path`` (the sandbox and its PostgreSQL servers)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{entry}/stat").read_text().split()
        except OSError:
            continue
        if str(path) in cmd and stat[2] != "Z":
            out.append(int(entry))
    return out


@contextlib.contextmanager
def _busy_port() -> Iterator[int]:
    """A port something listens on for as long as the block runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


@pytest.fixture()
def sbdir(tmp_root: Path):  # type: ignore[no-untyped-def]
    d = tmp_root / f"lifecycle-{os.getpid()}-{time.monotonic_ns()}"
    yield d
    if (d / "sandbox.pid").exists():
        _cli("sandbox", "stop", "--dir", str(d))


@pytest.mark.sandbox
def test_stop_start_keeps_clusters_and_data(sbdir: Path) -> None:
    api, port = free_port(), free_port()
    p = _cli("-o", "json", "sandbox", "start", "--dir", str(sbdir), "--api-port", str(api), "--port", str(port))
    assert p.returncode == 0, p.stderr
    started = json.loads(p.stdout)
    assert started["api_endpoint"] == f"http://127.0.0.1:{api}" and started["port"] == port
    assert (sbdir / "credentials.json").stat().st_mode & 0o777 == 0o600

    # a second start is a no-op that says so
    again = _cli("-o", "json", "sandbox", "start", "--dir", str(sbdir))
    assert again.returncode == 0 and json.loads(again.stdout)["already_running"] is True

    h = SandboxHandle(sbdir).attach()
    creds_before = h.credentials()
    cid = h.create_cluster(tags={"team": "ops"})
    gone = h.create_cluster()
    with h.connect(cid, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO kept VALUES (1, 'survives')")
    arn = h.client("dsql").get_cluster(identifier=cid)["arn"]

    # delete one cluster: its PostgreSQL goes away with it
    h.client("dsql").delete_cluster(identifier=gone)
    deadline = time.monotonic() + 120
    while h.sdir.cluster_dir(gone).exists():
        assert time.monotonic() < deadline, "deleted cluster's database folder is still there"
        time.sleep(0.2)

    st = json.loads(_cli("-o", "json", "sandbox", "status", "--dir", str(sbdir)).stdout)
    assert [c["identifier"] for c in st["clusters"]] == [cid]
    assert st["clusters"][0]["database"] == "ready"

    p = _cli("sandbox", "stop", "--dir", str(sbdir))
    assert p.returncode == 0, p.stderr
    assert _processes_under(sbdir) == []
    st = _cli("-o", "json", "sandbox", "status", "--dir", str(sbdir))
    assert st.returncode != 0 and json.loads(st.stdout)["running"] is False
    assert _cli("sandbox", "stop", "--dir", str(sbdir)).returncode != 0  # nothing to stop

    # start again: same ports, same key, same cluster, same data
    p = _cli("-o", "json", "sandbox", "start", "--dir", str(sbdir))
    assert p.returncode == 0, p.stderr
    h.attach()
    assert h.port == port and h.api_endpoint == f"http://127.0.0.1:{api}"
    assert h.credentials() == creds_before
    dsql = h.client("dsql")
    got = dsql.get_cluster(identifier=cid)
    assert got["arn"] == arn
    assert dsql.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "ops"}
    assert [c["identifier"] for c in dsql.list_clusters()["clusters"]] == [cid]
    h.wait_active(cid)
    with h.connect(cid) as conn:
        assert conn.execute("SELECT v FROM kept WHERE id = 1").fetchone() == ("survives",)

    assert _cli("sandbox", "stop", "--dir", str(sbdir)).returncode == 0
    assert _processes_under(sbdir) == []


@pytest.mark.sandbox
def test_start_refuses_a_busy_port(sbdir: Path) -> None:
    with _busy_port() as busy:
        p = _cli("sandbox", "start", "--dir", str(sbdir), "--api-port", str(busy), "--port", str(free_port()))
    assert p.returncode != 0 and f"port {busy}" in p.stderr
    assert not (sbdir / "sandbox.pid").exists()


def test_env_needs_a_sandbox(tmp_path: Path) -> None:
    p = _cli("sandbox", "env", "--dir", str(tmp_path / "none"))
    assert p.returncode != 0 and "sandbox start" in p.stderr


def test_write_profile(sandbox, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DSQLOPS_"))}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "xdg"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws" / "creds"),
               AWS_CONFIG_FILE=str(tmp_path / "aws" / "config"))
    p = _cli("sandbox", "env", "--dir", str(sandbox.dir), "--write-profile", env=env)
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load((tmp_path / "xdg" / "dsqlops" / "config.yaml").read_text())
    prof = cfg["profiles"]["sandbox"]
    assert prof["endpoint_url"] == sandbox.api_endpoint and prof["port"] == sandbox.port
    assert (tmp_path / "aws" / "creds").stat().st_mode & 0o777 == 0o600
    # the profile alone is enough for the CLI: list clusters and run SQL
    cid = sandbox.create_cluster()
    p = _cli("--profile", "sandbox", "-o", "json", "sql", "-c", cid, "SELECT 1 AS one", env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [{"one": 1}]


@pytest.mark.sandbox
def test_killed_sandbox_is_cleaned_up_and_restarts(sbdir: Path) -> None:
    import signal

    p = _cli("-o", "json", "sandbox", "start", "--dir", str(sbdir), "--api-port", str(free_port()),
             "--port", str(free_port()))
    assert p.returncode == 0, p.stderr
    h = SandboxHandle(sbdir).attach()
    cid = h.create_cluster()
    with h.connect(cid, autocommit=True) as conn:
        conn.execute("CREATE TABLE after_kill (v text)")
        conn.execute("INSERT INTO after_kill VALUES ('still here')")
    os.kill(h._rt.pid, signal.SIGKILL)  # no clean shutdown: the cluster's PostgreSQL is orphaned
    deadline = time.monotonic() + 30
    while h.sdir.pid() is not None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert _processes_under(sbdir), "expected the orphaned PostgreSQL to still run"
    # start again over the orphan: it is restarted under the new sandbox, data intact
    p = _cli("-o", "json", "sandbox", "start", "--dir", str(sbdir))
    assert p.returncode == 0, p.stderr
    h.attach()
    h.wait_active(cid)
    with h.connect(cid) as conn:
        assert conn.execute("SELECT v FROM after_kill").fetchone() == ("still here",)
    os.kill(h._rt.pid, signal.SIGKILL)
    time.sleep(0.5)
    # `stop` after a crash stops what the dead sandbox left behind
    p = _cli("-o", "json", "sandbox", "stop", "--dir", str(sbdir))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["orphan_databases_stopped"] >= 1
    assert _processes_under(sbdir) == []


@pytest.mark.sandbox
def test_foreground_start_on_a_busy_port_fails_fast(sbdir: Path) -> None:
    with _busy_port() as busy:
        p = _cli("sandbox", "start", "--foreground", "--dir", str(sbdir), "--api-port", str(busy),
                 "--port", str(free_port()))
    assert p.returncode != 0 and "cannot listen" in p.stderr


@pytest.mark.sandbox
def test_sandbox_stops_when_its_owner_dies(sbdir: Path) -> None:
    from dsqlops.sandbox import lifecycle
    from dsqlops.sandbox.state import SandboxDir

    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        res = lifecycle.start_background(SandboxDir(sbdir), api_port=free_port(), port=free_port(), timeout=120,
                                         owner_pid=owner.pid)
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 60
    while _processes_under(sbdir):
        assert time.monotonic() < deadline, f"sandbox {res.pid} outlived its owner"
        time.sleep(0.2)
