"""Token checks without a sandbox: botocore signs, dsqlops.sandbox.auth verifies."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import boto3
import pytest

from dsqlops.sandbox import auth

HOST = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"
SECRET = "s3cr3t/with+chars"


def _token(action: str = "DbConnectAdmin", *, host: str = HOST, region: str = "us-east-1", expires: int = 900,
           key: str = "AKIATESTKEY", secret: str = SECRET, session: str | None = None,
           when: dt.datetime | None = None) -> str:
    client = boto3.client("dsql", region_name=region, aws_access_key_id=key, aws_secret_access_key=secret,
                          aws_session_token=session)
    gen = (client.generate_db_connect_admin_auth_token if action == "DbConnectAdmin"
           else client.generate_db_connect_auth_token)
    if when is None:
        return str(gen(host, region, expires))
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        return str(gen(host, region, expires))


def _lookup(key: str) -> auth.Identity | None:
    return {"AKIATESTKEY": auth.Identity("AKIATESTKEY", SECRET, "arn:aws:iam::123456789012:user/u"),
            "ASIATEMP": auth.Identity("ASIATEMP", SECRET, "arn:aws:iam::123456789012:role/r",
                                      session_token="sess")}.get(key)


def _verify(token: str, user: str = "admin", host: str = HOST, region: str = "us-east-1") -> auth.Verified:
    return auth.verify(token, user=user, host=host, region=region, lookup=_lookup)


def test_admin_token_verifies() -> None:
    v = _verify(_token())
    assert v.arn.endswith(":user/u") and v.action == "DbConnectAdmin"


def test_dbconnect_token_for_custom_role() -> None:
    assert _verify(_token("DbConnect"), user="app").action == "DbConnect"


def test_assumed_role_needs_its_session_token() -> None:
    assert _verify(_token(key="ASIATEMP", session="sess")).arn.endswith(":role/r")
    with pytest.raises(auth.AuthFailure):
        _verify(_token(key="ASIATEMP", session="other"))


@pytest.mark.parametrize("case", ["bad_secret", "unknown_key", "wrong_action_admin", "wrong_action_role",
                                  "wrong_host", "wrong_region", "tampered", "future", "too_long"])
def test_refusals(case: str) -> None:
    tok = {
        "bad_secret": lambda: _token(secret="nope"),
        "unknown_key": lambda: _token(key="AKIAOTHER"),
        "wrong_action_admin": lambda: _token("DbConnect"),
        "wrong_action_role": lambda: _token("DbConnectAdmin"),
        "wrong_host": lambda: _token(host="zzzzzzzzzzzzzzzzzzzzzzzzzz.dsql.us-east-1.on.aws"),
        "wrong_region": lambda: _token(region="us-east-2"),
        "tampered": lambda: _token().replace("Action=DbConnectAdmin", "Action=DbConnect"),
        "future": lambda: _token(when=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)),
        "too_long": lambda: _token(expires=604_801),
    }[case]()
    user = "app" if case == "wrong_action_role" else "admin"
    with pytest.raises(auth.AuthFailure) as e:
        _verify(tok, user=user)
    assert not e.value.expired
    assert e.value.hint is None


def test_expired_token_says_signature_expired() -> None:
    tok = _token(expires=900, when=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    with pytest.raises(auth.AuthFailure) as e:
        _verify(tok)
    assert e.value.expired and e.value.hint == "Signature expired"


def test_week_long_token_is_allowed() -> None:
    assert _verify(_token(expires=604_800))


@pytest.mark.parametrize("garbage", ["", "password", "https://", HOST, f"{HOST}/?Action=DbConnectAdmin",
                                     f"{HOST}/x?Action=DbConnectAdmin&X-Amz-Algorithm=AWS4-HMAC-SHA256"])
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(auth.AuthFailure):
        _verify(garbage)


def test_identity_of_another_partition_is_refused() -> None:
    """An aws-cn identity cannot log in to a cluster in an ``aws`` region, however well it signs."""
    def lookup(key: str) -> auth.Identity | None:
        return auth.Identity(key, SECRET, "arn:aws-cn:iam::123456789012:user/u")

    with pytest.raises(auth.AuthFailure) as e:
        auth.verify(_token(), user="admin", host=HOST, region="us-east-1", lookup=lookup)
    assert "partition" in e.value.reason
    assert auth.partition_of("cn-north-1") == "aws-cn" and auth.partition_of("us-east-1") == "aws"
