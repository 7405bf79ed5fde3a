"""Token and TLS checks at the front, with real clients (psycopg/libpq) and DSQL's wording."""

from __future__ import annotations

import datetime as dt
import uuid
from unittest import mock

import psycopg
import pytest


@pytest.fixture(scope="module")
def cluster(sandbox) -> str:  # type: ignore[no-untyped-def]
    return sandbox.create_cluster()


@pytest.fixture(scope="module")
def other_cluster(sandbox) -> str:  # type: ignore[no-untyped-def]
    return sandbox.create_cluster()


def _refused(sandbox, cluster: str, **over) -> psycopg.OperationalError:  # type: ignore[no-untyped-def]
    info = sandbox.conninfo(cluster)
    info.update(over)
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(**info).close()
    return e.value


def test_bad_signature(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    tok = sandbox.token(cluster)
    sig = tok.rsplit("X-Amz-Signature=", 1)[1]
    bad = tok.replace(sig, ("0" if sig[0] != "0" else "1") + sig[1:])
    err = _refused(sandbox, cluster, password=bad)
    assert "unable to accept connection, access denied" in str(err)
    assert "Signature expired" not in str(err)


def test_not_a_token(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    assert "access denied" in str(_refused(sandbox, cluster, password="hunter2"))


def test_expired_token_has_the_hint(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=past):
        tok = sandbox.token(cluster, expires_in=900)
    err = _refused(sandbox, cluster, password=tok)
    assert "access denied" in str(err) and "Signature expired" in str(err)


def test_dbconnect_token_cannot_log_in_as_admin(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    assert "access denied" in str(_refused(sandbox, cluster, password=sandbox.token(cluster, "someone")))


def test_token_for_another_cluster_is_refused(sandbox, cluster, other_cluster) -> None:  # type: ignore[no-untyped-def]
    # SNI names `cluster`, the token names `other_cluster`: they must agree.
    assert "access denied" in str(_refused(sandbox, cluster, password=sandbox.token(other_cluster)))


def test_unknown_key_is_refused(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    stranger = {"aws_access_key_id": "AKIAUNKNOWNUNKNOWN00", "aws_secret_access_key": "x" * 40}
    assert "access denied" in str(_refused(sandbox, cluster, password=sandbox.token(cluster, creds=stranger)))


def test_unknown_cluster(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    err = _refused(sandbox, cluster, host="a" * 26 + ".dsql.us-east-1.on.aws")
    assert "cluster not found" in str(err)


def test_plaintext_refused(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    err = _refused(sandbox, cluster, sslmode="disable")
    assert "SSL required" in str(err)


def test_only_database_postgres(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    assert 'database "template1" does not exist' in str(_refused(sandbox, cluster, dbname="template1"))


def test_wrong_ca_fails_verification(sandbox, cluster, pg_tls) -> None:  # type: ignore[no-untyped-def]
    err = _refused(sandbox, cluster, sslrootcert=str(pg_tls.ca_cert))
    assert "certificate verify failed" in str(err)


def test_direct_tls_negotiation(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    if psycopg.pq.version() < 170000:
        pytest.skip("libpq < 17 has no sslnegotiation=direct")
    with sandbox.connect(cluster, sslnegotiation="direct") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("kind", ["role", "user"])
def test_custom_role_needs_an_iam_mapping(sandbox, cluster, kind: str) -> None:  # type: ignore[no-untyped-def]
    name = f"app_{kind}_{uuid.uuid4().hex[:8]}"
    arn, creds = sandbox.iam_identity(name, kind)
    if kind == "role":
        assert arn == f"arn:aws:iam::123456789012:role/{name}"
    # not mapped yet: refused even though the role exists and the token is genuine
    with sandbox.connect(cluster, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{name}" WITH LOGIN')
    assert "access denied" in str(_refused(sandbox, cluster, user=name,
                                           password=sandbox.token(cluster, name, creds=creds)))
    with sandbox.connect(cluster, autocommit=True) as conn:
        conn.execute(f'DROP ROLE "{name}"')
    sandbox.map_role(cluster, name, arn)
    with sandbox.connect(cluster, name, creds=creds) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (name,)
    # the mapping is the caller's identity: the sandbox admin's own key cannot use it
    assert "access denied" in str(_refused(sandbox, cluster, user=name, password=sandbox.token(cluster, name)))
