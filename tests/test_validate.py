"""Validators: anchored patterns, no lookalikes, no silent truncation (hypothesis + tables)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsqlops.errors import UsageError
from dsqlops.validate import (
    CLUSTER_ID_RE,
    REGION_RE,
    RESERVED_ROLE_NAMES,
    parse_cluster,
    parse_tag,
    validate_iam_arn,
    validate_identifier,
    validate_region,
    validate_role_name,
    validate_tag_key,
)

ids = st.from_regex(r"[a-z0-9]{26}", fullmatch=True)
regions = st.sampled_from(["us-east-1", "us-east-2", "us-west-2", "eu-west-1", "ap-northeast-1",
                           "us-gov-west-1", "ca-central-1", "eu-south-2"])
accounts = st.from_regex(r"[0-9]{12}", fullmatch=True)
partitions = st.sampled_from(["aws", "aws-cn", "aws-us-gov"])
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(ids)
def test_cluster_id_round_trips(cid):
    ref = parse_cluster(cid)
    assert (ref.id, ref.region, ref.arn) == (cid, None, None)
    assert ref.host("us-east-1") == f"{cid}.dsql.us-east-1.on.aws"


@SETTINGS
@given(ids, regions)
def test_cluster_host_gives_region(cid, region):
    ref = parse_cluster(f"{cid}.dsql.{region}.on.aws")
    assert (ref.id, ref.region) == (cid, region)
    assert ref.with_region("eu-west-1").region == region  # the host's region wins


@SETTINGS
@given(ids, regions, st.sampled_from([".evil.com", ".", ":5432", "/path", " ", "\n", ".on.aws", "x", "\x00"]))
def test_cluster_host_lookalikes_refused(cid, region, suffix):
    with pytest.raises(UsageError):
        parse_cluster(f"{cid}.dsql.{region}.on.aws{suffix}")
    with pytest.raises(UsageError):
        parse_cluster(f"x.{cid}.dsql.{region}.on.aws")


@SETTINGS
@given(ids.filter(lambda s: any(c.isalpha() for c in s)), regions)
def test_uppercase_refused(cid, region):
    with pytest.raises(UsageError):
        parse_cluster(cid.upper())
    with pytest.raises(UsageError):
        parse_cluster(f"{cid}.dsql.{region}.on.aws".upper())


def test_b5_named_lookalikes():
    for bad in ["x.dsql.us-east-1.on.aws.evil.com", "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws.evil.com",
                "https://abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws",
                "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws.", "abcdefghijklmnopqrstuvwxy",
                "abcdefghijklmnopqrstuvwxyz0", "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.amazonaws.com",
                "", "arn:aws:dsql:us-east-1:12345678901:cluster/abcdefghijklmnopqrstuvwxyz",
                "arn:aws:dsql:us-east-1:123456789012:cluster/abcdefghijklmnopqrstuvwxyz/stream/x",
                "arn:aws:rds:us-east-1:123456789012:cluster/abcdefghijklmnopqrstuvwxyz"]:
        with pytest.raises(UsageError):
            parse_cluster(bad)
    # The FIPS variant of the endpoint is a real cluster host.
    assert parse_cluster("abcdefghijklmnopqrstuvwxyz.dsql-fips.us-east-1.on.aws").region == "us-east-1"


@SETTINGS
@given(ids, regions, accounts, partitions)
def test_cluster_arn(cid, region, acct, part):
    arn = f"arn:{part}:dsql:{region}:{acct}:cluster/{cid}"
    ref = parse_cluster(arn)
    assert (ref.id, ref.region, ref.arn) == (cid, region, arn)
    with pytest.raises(UsageError):
        parse_cluster(arn + "x")
    with pytest.raises(UsageError):
        parse_cluster(arn.replace(acct, acct[:-1]))


@SETTINGS
@given(st.text(max_size=80))
def test_parse_cluster_total(text):
    """Any text either is refused with UsageError or is exactly one of the three forms."""
    try:
        ref = parse_cluster(text)
    except UsageError:
        return
    assert CLUSTER_ID_RE.fullmatch(ref.id)
    forms = {ref.id}
    if ref.region:
        assert REGION_RE.fullmatch(ref.region)
        forms.add(f"{ref.id}.dsql.{ref.region}.on.aws")
    if ref.arn:
        forms.add(ref.arn)
    assert text in forms or (".dsql-" in text and text.startswith(ref.id))


@SETTINGS
@given(st.text(min_size=1, max_size=40))
def test_region_validator_total(text):
    try:
        validate_region(text)
    except UsageError:
        assert not REGION_RE.fullmatch(text)
    else:
        assert REGION_RE.fullmatch(text)


# ------------------------------------------------------------------ role names


def _bad_char(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")


@SETTINGS
@given(st.text(min_size=0, max_size=70))
def test_role_name_total(name):
    """Valid ⇒ safe to quote unchanged (no NUL/control, ≤ 63 bytes, not reserved); else UsageError."""
    try:
        out = validate_role_name(name)
    except UsageError as e:
        assert e.exit_code == 252
        return
    assert out == name and name
    assert "\x00" not in name and not any(_bad_char(c) for c in name)
    assert len(name.encode("utf-8")) <= 63
    assert name.lower() not in RESERVED_ROLE_NAMES and not name.lower().startswith("pg_")
    assert name == name.strip()


@SETTINGS
@given(st.text(alphabet=st.characters(min_codepoint=0x61, max_codepoint=0x7a), min_size=1, max_size=40),
       st.integers(0, 30))
def test_b2_role_name_nul_anywhere_refused(base, pos):
    pos = min(pos, len(base))
    with pytest.raises(UsageError, match="NUL"):
        validate_role_name(base[:pos] + "\x00" + base[pos:])


@pytest.mark.parametrize("name", ["a" * 64, "é" * 32, "x" * 63 + "é", "\U0001f600" * 16])
def test_b2_role_name_over_63_bytes_refused(name):
    with pytest.raises(UsageError, match="63"):
        validate_role_name(name)


@pytest.mark.parametrize("name", ["ok\x01", "tab\tname", "zero\u200bwidth", "line\u2028sep", "\ud800",
                                  " lead", "trail ", "", "PUBLIC", "admin", "Postgres", "pg_monitor", "sys"])
def test_role_name_refused(name):
    with pytest.raises(UsageError):
        validate_role_name(name)


@pytest.mark.parametrize("name", ["app_ro", "Ops", 'x"; DROP TABLE t; --', "a" * 63, "é" * 31, "reporting-2026"])
def test_role_name_accepted(name):
    assert validate_role_name(name) == name


def test_reserved_allowed_when_asked():
    assert validate_role_name("admin", allow_reserved=True) == "admin"


@SETTINGS
@given(st.text(max_size=70))
def test_identifier_total(name):
    try:
        validate_identifier(name, "table")
    except UsageError:
        return
    assert name and "\x00" not in name and len(name.encode()) <= 63


# ------------------------------------------------------------------ IAM ARNs


@SETTINGS
@given(partitions, accounts, st.sampled_from(["role", "user"]),
       st.from_regex(r"[A-Za-z0-9+=,.@_-]{1,64}", fullmatch=True),
       st.sampled_from(["", "team/", "a/b/"]))
def test_iam_arn_valid(part, acct, kind, name, path):
    arn = f"arn:{part}:iam::{acct}:{kind}/{path}{name}"
    assert validate_iam_arn(arn) == arn


@pytest.mark.parametrize("arn", [
    "arn:aws:iam::12345678901:role/x", "arn:aws:iam::123456789012:role/*", "arn:aws:iam::123456789012:group/x",
    "arn:aws:iam::123456789012:role/x ", " arn:aws:iam::123456789012:role/x", "arn:aws-xx:iam::123456789012:role/x",
    "arn:aws:sts::123456789012:assumed-role/x/y", "arn:aws:iam::123456789012:role/", "",
    "arn:aws:iam::123456789012:role/x\n", "arn:aws:iam::123456789012:role/é"])
def test_b4_iam_arn_refused(arn):
    with pytest.raises(UsageError):
        validate_iam_arn(arn)


# ------------------------------------------------------------------ tags


tag_keys = st.from_regex(r"[A-Za-z0-9_.:/=+@ -]{1,128}", fullmatch=True).filter(
    lambda k: not k.lower().startswith("aws:"))
tag_values = st.from_regex(r"[A-Za-z0-9_.:/=+@ -]{0,256}", fullmatch=True)


@SETTINGS
@given(tag_keys.filter(lambda k: "=" not in k), tag_values)
def test_tag_round_trip(k, v):
    assert parse_tag(f"{k}={v}") == (k, v)


@SETTINGS
@given(tag_keys.filter(lambda k: "=" not in k), tag_values)
def test_tag_split_on_first_equals(k, v):
    assert parse_tag(f"{k}={v}=tail") == (k, f"{v}=tail")


@pytest.mark.parametrize("text", ["noequals", "=v", "aws:key=v", "AWS:Key=v", "k" * 129 + "=v",
                                  "k=" + "v" * 257, "k\x00=v", "k=v\n", "k=ta\tb", "k;x=v"])
def test_tag_refused(text):
    with pytest.raises(UsageError):
        parse_tag(text)


@SETTINGS
@given(st.text(max_size=140))
def test_tag_key_total(key):
    try:
        validate_tag_key(key)
    except UsageError:
        return
    assert 1 <= len(key) <= 128 and not key.lower().startswith("aws:")
    assert not any(_bad_char(c) for c in key)
