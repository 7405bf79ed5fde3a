"""Fixtures for data-plane operations.

``dp_pg``: this area's own throwaway TLS PostgreSQL (not the shared ``pg``): ``role apply --prune``
drops every role the file does not list, which must never reach other areas' test roles. An
``admin`` role stands in for DSQL's. Autovacuum is off so statistics only change when a test says so.

``dp_cli``: environment variables that make ``dsqlops … -c CLUSTER`` reach ``dp_pg`` through the
host/hostaddr split (verify-full against the test CA, as with the sandbox).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.clirun import Run, invoke  # noqa: F401 - re-exported for the area's tests

CLUSTER_ID = "dataplanetestclusterxxxxxx"
CLUSTER_HOST = f"{CLUSTER_ID}.dsql.us-east-1.on.aws"


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
        "DSQLOPS_CLUSTER": CLUSTER_HOST,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


