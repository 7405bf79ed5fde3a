"""Shared fixtures. Area-specific fixtures live in tests/<area>/conftest.py files.

``pg``: one throwaway PostgreSQL for the whole test session (initdb + pg_ctl in a temp folder),
TLS on with a test CA (``pg_tls`` gives the CA/cert paths). Tests must create their own
databases/objects with unique names so that they do not depend on each other.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsqlops.config import ENV_KEYS

# Server markers come from the fixtures a test uses and are checked when a server starts;
# botocore parses its models once per test process.
pytest_plugins = ["tests.markers", "tests.awsmodels"]

# Never let a test reach a real AWS account: fake credentials, a pinned moto region.
# (set, not defaulted: a developer's real keys in the shell must not be the ones tests sign with)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_SESSION_TOKEN"] = "testing"
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
# Nor let the developer's shell settings (a profile, `eval "$(dsqlops sandbox env)"`) steer dsqlops:
# every setting dsqlops reads from the environment starts unset; tests set what they need.
for _var in [*ENV_KEYS, "DSQLOPS_CONFIG", "DSQLOPS_PROFILE", "DSQLOPS_OUTPUT", "DSQLOPS_DEBUG", "DSQLOPS_NO_PROGRESS",
             "DSQLOPS_SANDBOX_DIR", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DSQL", "PGPASSWORD"]:
    os.environ.pop(_var, None)
os.environ.pop("DSQLOPS_CLUSTER", None)
# The cost history is written under the XDG data dir: never the real one from a test.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="dsqlops-test-data-")
atexit.register(shutil.rmtree, os.environ["XDG_DATA_HOME"], True)


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dsqlops-test-"))
    os.chmod(d, 0o755)  # the postgres user must traverse it when we run as root
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_tls(tmp_root: Path):  # type: ignore[no-untyped-def]
    from dsqlops.sandbox.certs import ensure_certificates

    return ensure_certificates(tmp_root / "tls")


@pytest.fixture(scope="session")
def pg(tmp_root: Path, pg_tls) -> Iterator[object]:  # type: ignore[no-untyped-def]
    from dsqlops.sandbox.postgres import PostgresServer

    server = PostgresServer(tmp_root / "pgdata", ssl_cert=pg_tls.server_cert, ssl_key=pg_tls.server_key,
                            hba="local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
                                "hostnossl all all 127.0.0.1/32 reject\n")
    server.start()
    yield server
    server.stop(mode="immediate")


@pytest.fixture()
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty XDG config home so no user config leaks into a test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return tmp_path / "xdg"


@pytest.fixture(scope="session")
def sandbox(tmp_root: Path) -> Iterator[object]:
    """A running sandbox (control plane + DSQL front) in a temp folder, for the whole session.

    Handle API: tests/sandbox/handle.py (api_endpoint, port, ca_file, region, dir, env(),
    create_cluster(), connect(cluster_id, user="admin", *, creds=None, **kw), iam_identity(name, kind)).
    """
    from tests.sandbox.handle import SandboxHandle

    handle = SandboxHandle(tmp_root / "sandbox")
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture()
def bench_db(pg) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A conninfo string for a new, empty database on ``pg`` whose transactions are REPEATABLE READ, like
    DSQL's (bench workloads and metering)."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = f"host={pg.host} port={pg.port} dbname=postgres user={pg.superuser} sslmode=require"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'")
    yield f"host={pg.host} port={pg.port} dbname={name} user={pg.superuser} sslmode=require"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
