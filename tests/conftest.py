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
from collections.abc import Iterator
from pathlib import Path

import pytest

# Never let a test reach a real AWS account: fake credentials, a pinned moto region.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("DSQLOPS_CONFIG", None)
os.environ.pop("DSQLOPS_CLUSTER", None)
os.environ.pop("DSQLOPS_PROFILE", None)
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
    from dsqlops.sandbox.tls import ensure_certificates

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


@pytest.fixture(scope="session")
def sandbox_python(tmp_root: Path) -> Iterator[object]:
    """A second sandbox whose front runs the pure-Python relay (``DSQLOPS_SANDBOX_RELAY=python``),
    for the tests that run against both relays (tests/sandbox/relays.py)."""
    from tests.sandbox.handle import SandboxHandle

    handle = SandboxHandle(tmp_root / "sandbox-python")
    before = os.environ.get("DSQLOPS_SANDBOX_RELAY")
    os.environ["DSQLOPS_SANDBOX_RELAY"] = "python"  # the sandbox process inherits it at start
    try:
        handle.start()
    finally:
        if before is None:
            os.environ.pop("DSQLOPS_SANDBOX_RELAY", None)
        else:
            os.environ["DSQLOPS_SANDBOX_RELAY"] = before
    try:
        yield handle
    finally:
        handle.stop()
