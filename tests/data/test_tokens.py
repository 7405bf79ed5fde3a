"""Tokens: golden signatures under a frozen clock, admin vs non-admin action, expiry bounds,
refusal without credentials or for a malformed host."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from dsqlops.aws import AwsContext
from dsqlops.data.connection import ConnectionTarget
from dsqlops.data.tokens import MAX_EXPIRES_IN, TokenSource, action_for, validate_expires_in, validate_host
from dsqlops.errors import ConfigError, UsageError

HOST = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"
CLOCK = dt.datetime(2024, 11, 7, 17, 39, 33, tzinfo=dt.UTC)


def reference_presign(host: str, region: str, action: str, expires: int, akid: str, secret: str,
                      token: str | None, when: dt.datetime) -> str:
    """An independent SigV4 query-string presign (the AWS spec), to check botocore's output against."""
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    day = when.strftime("%Y%m%d")
    scope = f"{day}/{region}/dsql/aws4_request"
    q = {"Action": action, "X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Credential": f"{akid}/{scope}",
         "X-Amz-Date": amz_date, "X-Amz-Expires": str(expires), "X-Amz-SignedHeaders": "host"}
    if token:
        q["X-Amz-Security-Token"] = token
    canonical_qs = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(q.items()))
    creq = "\n".join(["GET", "/", canonical_qs, f"host:{host}\n", "host", hashlib.sha256(b"").hexdigest()])
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (day, region, "dsql", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    return f"{host}/?{canonical_qs}&X-Amz-Signature={sig}"


def _q(token: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit("https://" + token)
    return parts.netloc + parts.path, parse_qs(parts.query)


def test_reference_matches_the_aws_cli_golden_vectors():
    """Anchor the reference implementation to aws-cli's published vectors
    (tests/functional/dsql/test_generate_db_auth_token.py)."""
    for action, sig in (("DbConnect", "e319d85380261f643d78a558f76257f05aacea758a6ccd42a2510e2ae0854a47"),
                        ("DbConnectAdmin", "a08adc4c84a490014ce374b90c98ba9ed015b77b451c0d9f9fb3f8ca8c6f9c36")):
        tok = reference_presign("test.dsql.us-east-1.on.aws", "us-east-1", action, 900, "access_key", "secret_key",
                                None, CLOCK)
        assert _q(tok)[1]["X-Amz-Signature"] == [sig]


@pytest.fixture()
def frozen(monkeypatch):
    import botocore.auth

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: CLOCK.replace(tzinfo=None))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLE/session+token==")
    return TokenSource(AwsContext(region="us-east-1"))


@pytest.mark.parametrize(("user", "action"), [("admin", "DbConnectAdmin"), ("reader", "DbConnect")])
@pytest.mark.parametrize("expires", [1, 900, MAX_EXPIRES_IN])
def test_f14_golden_token(frozen, user, action, expires):
    info = frozen.mint(HOST, user=user, expires_in=expires)
    expected = reference_presign(HOST, "us-east-1", action, expires, "AKIDEXAMPLE",
                                 "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "FwoGZXIvYXdzEXAMPLE/session+token==",
                                 CLOCK)
    got_base, got_q = _q(info.token)
    exp_base, exp_q = _q(expected)
    assert got_base == exp_base == f"{HOST}/"
    assert got_q == exp_q  # order-independent
    assert got_q["Action"] == [action] and got_q["X-Amz-Expires"] == [str(expires)]
    assert not info.token.startswith("https://")
    assert info.action == action and info.expires_in == expires
    assert "<redacted>" in repr(info) and "X-Amz" not in repr(info)


def test_token_source_callable_uses_target_user_and_expiry(frozen):
    t = ConnectionTarget(host=HOST, region="us-east-1", user="reader", token_expires_in=120)
    q = _q(frozen(t))[1]
    assert q["Action"] == ["DbConnect"] and q["X-Amz-Expires"] == ["120"]
    assert _q(frozen(ConnectionTarget(host=HOST, region="us-east-1")))[1]["Action"] == ["DbConnectAdmin"]
    assert frozen.calls == 2


def test_region_comes_from_the_host_not_the_client(frozen):
    host2 = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-2.on.aws"
    q = _q(frozen.mint(host2).token)[1]
    assert "/us-east-2/dsql/aws4_request" in q["X-Amz-Credential"][0]


@pytest.mark.parametrize("bad", [0, -1, MAX_EXPIRES_IN + 1, "ten", 1.5, None])
def test_expiry_bounds(bad):
    with pytest.raises(UsageError):
        validate_expires_in(bad)


def test_expiry_edges_accepted():
    assert validate_expires_in(1) == 1 and validate_expires_in("604800") == MAX_EXPIRES_IN


@pytest.mark.parametrize("host", [
    "test.dsql.us-east-1.on.aws",                                   # aws-cli #9840: not a cluster id
    "abcdefghijklmnopqrstuvwxyz",                                   # a bare id is not a host
    "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws.evil.com",    # lookalike
    "https://abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws",     # aws-cli #9966: a URL
    "abcdefghijklmnopqrstuvwxyz.us-east-1.on.aws",                  # moto's malformed endpoint
    "",
])
def test_malformed_host_is_refused(frozen, host):
    with pytest.raises(UsageError):
        frozen.mint(host)
    assert frozen.calls == 0


def test_refuses_without_credentials(monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError) as ei:
        TokenSource(AwsContext(region="us-east-1")).mint(HOST)
    assert ei.value.exit_code == 253


def test_refuses_partial_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError):
        TokenSource(AwsContext(region="us-east-1")).mint(HOST)


def test_host_validation_and_actions():
    assert validate_host(HOST) == (HOST, "us-east-1")
    assert validate_host("abcdefghijklmnopqrstuvwxyz.dsql-fips.us-east-1.on.aws")[1] == "us-east-1"
    assert action_for("admin") == "DbConnectAdmin" and action_for("Admin") == "DbConnect"
