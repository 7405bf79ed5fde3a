"""End to end through the front: boto3 creates a cluster, psycopg connects with a real token and verify-full."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def cluster(sandbox) -> str:  # type: ignore[no-untyped-def]
    return sandbox.create_cluster()


def test_connect_as_admin_verify_full(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    with sandbox.connect(cluster) as conn:
        row = conn.execute("SELECT current_user, current_database(), 1 + 1").fetchone()
        assert row == ("admin", "postgres", 2)
        assert conn.info.pgconn.ssl_in_use


def test_admin_is_not_superuser_but_owns_public(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    with sandbox.connect(cluster, autocommit=True) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        conn.execute("CREATE TABLE IF NOT EXISTS basic_t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO basic_t VALUES (1, 'a') ON CONFLICT DO NOTHING")
        assert conn.execute("SELECT v FROM basic_t WHERE id = 1").fetchone() == ("a",)


def test_endpoint_format_is_dsqls(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    got = sandbox.client("dsql").get_cluster(identifier=cluster)
    assert got["status"] == "ACTIVE"
    assert got["endpoint"] == f"{cluster}.dsql.{sandbox.region}.on.aws" if "endpoint" in got else True


def test_second_region(sandbox) -> None:  # type: ignore[no-untyped-def]
    cid = sandbox.create_cluster(region="us-east-2")
    got = sandbox.client("dsql", region="us-east-2").get_cluster(identifier=cid)
    assert got["arn"].startswith("arn:aws:dsql:us-east-2:")
    with sandbox.connect(cid, region="us-east-2") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("admin",)
    # a token signed for us-east-1 does not open a us-east-2 cluster
    info = sandbox.conninfo(cid, region="us-east-2")
    info["password"] = sandbox.token(cid, region="us-east-2").replace("%2Fus-east-2%2F", "%2Fus-east-1%2F")
    import psycopg
    import pytest

    with pytest.raises(psycopg.OperationalError, match="access denied"):
        psycopg.connect(**info).close()
