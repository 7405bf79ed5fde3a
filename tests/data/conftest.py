"""Fixtures for the data plane.

The connection layer's tests use targets that reach the session's TLS PostgreSQL (``pg``) through
the host/hostaddr split, with the cluster endpoint as ``host``.

The operations' tests (roles, indexes, statistics) use ``dp_pg``, a throwaway TLS PostgreSQL of
their own (not the shared ``pg``): ``role apply --prune`` drops every role the file does not list,
which must never reach other areas' test roles. An ``admin`` role stands in for DSQL's. Autovacuum
is off so statistics only change when a test says so. ``dp_cli`` sets the environment variables
that make ``dsqlops … -c CLUSTER`` reach ``dp_pg`` through the host/hostaddr split (verify-full
against the test CA, as with the sandbox).
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dsqlops.data.connection import ConnectionTarget
from tests.clirun import Run, invoke  # noqa: F401 - re-exported for the area's tests

CLUSTER_ID = "abcdefghijklmnopqrstuvwxyz"
CLUSTER_HOST = f"{CLUSTER_ID}.dsql.us-east-1.on.aws"


class CountingTokens:
    """A token provider that counts calls (trust auth ignores the password, the count is observable)."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        self._n = itertools.count(1)

    def __call__(self, target: ConnectionTarget) -> str:
        with self._lock:
            self.calls += 1
        return f"fake-token-{next(self._n)}"


@pytest.fixture()
def tokens() -> CountingTokens:
    return CountingTokens()


@pytest.fixture()
def target(pg, pg_tls) -> ConnectionTarget:  # type: ignore[no-untyped-def]
    return ConnectionTarget(host=CLUSTER_HOST, region="us-east-1", user="postgres", hostaddr="127.0.0.1",
                            port=pg.port, sslrootcert=str(pg_tls.ca_cert), connect_timeout=20)


@pytest.fixture()
def table(pg) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh one-row table ``(id int primary key, v int)`` with a unique name."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(**pg.conninfo(), sslmode="require", autocommit=True) as c:
        c.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v int NOT NULL)")
        c.execute(f"INSERT INTO {name} VALUES (1, 100)")
    yield name
    with psycopg.connect(**pg.conninfo(), sslmode="require", autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {name}")


# -- CLI helpers ---------------------------------------------------------------------------------

FAKE_AKID = "AKIDLEAKCHECK0000000"
FAKE_SECRET = "SecretLeakCheck/abcdefghijklmnopqrstuvwxyz01"
FAKE_SESSION = "SessionLeakCheck+token/xyz=="




def cli_environ(pg: Any, pg_tls: Any, tmp: Path) -> dict[str, str]:
    """Environment variables that point dsqlops at the ``pg`` fixture through the hostaddr split."""
    return {
        "XDG_CONFIG_HOME": str(tmp / "xdg"),
        "AWS_ACCESS_KEY_ID": FAKE_AKID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_SESSION_TOKEN": FAKE_SESSION,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "DSQLOPS_HOSTADDR": "127.0.0.1",
        "DSQLOPS_PORT": str(pg.port),
        "DSQLOPS_SSLROOTCERT": str(pg_tls.ca_cert),
        "DSQLOPS_CONNECT_TIMEOUT": "20",
    }


@pytest.fixture()
def cli_env(pg, pg_tls, tmp_path, monkeypatch) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = cli_environ(pg, pg_tls, tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


# -- data-plane operations on their own server ---------------------------------------------------

DP_CLUSTER_ID = "dataplanetestclusterxxxxxx"
DP_CLUSTER_HOST = f"{DP_CLUSTER_ID}.dsql.us-east-1.on.aws"


@pytest.fixture(scope="session")
def dp_pg(tmp_root: Path, pg_tls) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    from dsqlops.sandbox.postgres import PostgresServer

    server = PostgresServer(tmp_root / "dataplane-pgdata", ssl_cert=pg_tls.server_cert, ssl_key=pg_tls.server_key,
                            settings={"autovacuum": "off"},
                            hba="local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
                                "hostnossl all all 127.0.0.1/32 reject\n")
    server.start()
    with psycopg.connect(**server.conninfo(), sslmode="require", autocommit=True) as c:
        c.execute("CREATE ROLE admin WITH LOGIN SUPERUSER")
    yield server
    server.stop(mode="immediate")


def superconn(server: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(**server.conninfo(), sslmode="require", autocommit=True)


@pytest.fixture()
def dp_sql(dp_pg):  # type: ignore[no-untyped-def]
    """Run SQL as the server's superuser (setup and independent checks)."""
    conns: list[psycopg.Connection[Any]] = []

    def run(statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        if not conns:
            conns.append(superconn(dp_pg))
        cur = conns[0].execute(statement, params)
        return cur.fetchall() if cur.description else []

    yield run
    for c in conns:
        c.close()


@pytest.fixture()
def dp_cli(dp_pg, pg_tls, tmp_path, monkeypatch) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "DSQLOPS_HOSTADDR": "127.0.0.1", "DSQLOPS_PORT": str(dp_pg.port),
        "DSQLOPS_SSLROOTCERT": str(pg_tls.ca_cert), "DSQLOPS_CONNECT_TIMEOUT": "20",
        "DSQLOPS_CLUSTER": DP_CLUSTER_HOST,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


# -- the sandbox ------------------------------------------------------------------------------------

def uniq(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def cluster(sandbox) -> str:  # type: ignore[no-untyped-def]
    """A sandbox cluster of the test module's own."""
    return sandbox.create_cluster()


@pytest.fixture()
def sb(sandbox, cluster, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """dsqlops pointed at the sandbox cluster (as `eval "$(dsqlops sandbox env)"` would)."""
    for k, v in sandbox.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("DSQLOPS_CLUSTER", sandbox.endpoint(cluster))
    return sandbox


@pytest.fixture()
def admin(sandbox, cluster):  # type: ignore[no-untyped-def]
    """An autocommit connection to the cluster as ``admin``."""
    conn = sandbox.connect(cluster, autocommit=True)
    yield conn
    conn.close()
