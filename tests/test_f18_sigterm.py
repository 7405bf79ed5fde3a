"""F18: SIGTERM (systemd stop, docker stop, a cron timeout) during a long command: one line on
stderr, exit 143, no temp file left behind, the lock released. The commands are made to hang on
a server that accepts connections and never answers (the HTTP control plane, the PostgreSQL
wire); the bench case runs on the sandbox (tests/bench/test_bench_faults.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CLUSTER = "abcdefghijklmnopqrstuvwxyz"


@pytest.fixture()
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        done.set()
        t.join(timeout=5)
        for c in held:
            c.close()
        srv.close()


def _env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSQLOPS_", "PG"))}
    env.update({"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_RUNTIME_DIR": str(tmp_path / "run"),
                "DSQLOPS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "DSQLOPS_REGION": "us-east-1",
                "DSQLOPS_HOSTADDR": "127.0.0.1", "DSQLOPS_PORT": str(port), "DSQLOPS_NO_PROGRESS": "1",
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_MAX_ATTEMPTS": "1"})
    (tmp_path / "run").mkdir(exist_ok=True)
    return env


def _terminate(args: list[str], env: dict[str, str], after: float = 2.5) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "dsqlops", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(after)
    if proc.poll() is not None:
        out, err = proc.communicate()
        pytest.fail(f"the command ended before the signal (exit {proc.returncode}): {err or out}")
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    return proc.returncode, err


def _one_line(err: str) -> None:
    assert err.strip().splitlines() == ["terminated (SIGTERM)"], err


def test_f18_sigterm_during_cluster_wait(tmp_path: Path, silent_server: int) -> None:
    code, err = _terminate(["cluster", "wait", CLUSTER, "--timeout", "120"], _env(tmp_path, silent_server))
    assert code == 143
    _one_line(err)


def test_f18_sigterm_during_job_wait(tmp_path: Path, silent_server: int) -> None:
    code, err = _terminate(["job", "wait", "abcdefghijklmnopqrstuvwx23", "-c", CLUSTER, "--timeout", "120"],
                           _env(tmp_path, silent_server))
    assert code == 143
    _one_line(err)


def test_f18_sigterm_during_report_releases_the_lock_and_leaves_no_file(tmp_path: Path,
                                                                         silent_server: int) -> None:
    from dsqlops.fsutil import single_instance

    out_dir = tmp_path / "www"
    out_dir.mkdir()
    lock = tmp_path / "report.lock"
    code, err = _terminate(["report", "--format", "html", "--out", str(out_dir / "cost.html"),
                            "--lock-file", str(lock)], _env(tmp_path, silent_server))
    assert code == 143
    _one_line(err)
    assert list(out_dir.iterdir()) == []          # neither the report nor a temp file
    with single_instance(lock):                   # the lock was released: a next run can take it
        pass
