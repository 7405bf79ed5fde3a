"""Fixtures for fault-injection tests: the session sandbox with a :class:`FaultProxy` in front of
its DSQL wire front, and dsqlops's environment pointed at the proxy."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.faultproxy import FaultProxy


@pytest.fixture(scope="module")
def cluster(sandbox) -> str:  # type: ignore[no-untyped-def]
    return sandbox.create_cluster()


@pytest.fixture()
def proxy(sandbox) -> Iterator[FaultProxy]:  # type: ignore[no-untyped-def]
    p = FaultProxy("127.0.0.1", sandbox.port).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture()
def via_proxy(sandbox, cluster, proxy, tmp_path, monkeypatch) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """dsqlops (in-process and child processes) pointed at the sandbox cluster through the proxy."""
    for var in ("DSQLOPS_CONFIG", "DSQLOPS_PROFILE", "DSQLOPS_OUTPUT", "DSQLOPS_USER", "AWS_PROFILE",
                "DSQLOPS_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    env = dict(sandbox.env())
    env.update({"DSQLOPS_PORT": str(proxy.port), "PGPORT": str(proxy.port), "DSQLOPS_CONNECT_TIMEOUT": "3",
                "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "DSQLOPS_CLUSTER": sandbox.endpoint(cluster),
                "DSQLOPS_NO_PROGRESS": "1"})
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def wait_for_backend(sandbox: Any, cluster: str, predicate: str, *, timeout: float = 60.0) -> int:
    """Poll the cluster's PostgreSQL until a client backend matches ``predicate`` (SQL over
    pg_stat_activity); return its pid. A synchronisation point, not a timing assertion."""
    deadline = time.monotonic() + timeout
    with sandbox.superuser_connect(cluster, autocommit=True) as su:
        while True:
            row = su.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
                             f"AND pid <> pg_backend_pid() AND ({predicate}) LIMIT 1").fetchone()
            if row:
                return int(row[0])
            if time.monotonic() > deadline:
                raise AssertionError(f"no backend matched {predicate!r} within {timeout}s")
            time.sleep(0.05)


def in_thread(fn: Callable[[], Any]) -> Callable[[float], Any]:
    """Run ``fn`` in a daemon thread; the returned ``join(timeout)`` gives its result or raises
    AssertionError if it is still running (a hang)."""
    import threading

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the test thread
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join(timeout: float) -> Any:
        t.join(timeout)
        if t.is_alive():
            raise AssertionError(f"still running after {timeout}s: it hangs")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    return join
