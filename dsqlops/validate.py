"""Validators for everything a user names: clusters, regions, role names, IAM ARNs, tags.

Every pattern is anchored (``fullmatch``), so a lookalike such as
``x.dsql.us-east-1.on.aws.evil.com`` is refused. Identifiers are validated **before** any SQL is
composed: psycopg's ``sql.Identifier`` silently truncates at a NUL byte and PostgreSQL cuts names
to 63 bytes (docs/dsql-facts.md §R0.7), so an unchecked name can act on the wrong role.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from dsqlops.errors import UsageError

CLUSTER_ID_RE = re.compile(r"[a-z0-9]{26}")
REGION_RE = re.compile(r"[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}")
# {id}.dsql.{region}.on.aws; FIPS/dual-stack variants put a suffix after "dsql" (dsql-fips, dsql-…).
CLUSTER_HOST_RE = re.compile(
    r"(?P<id>[a-z0-9]{26})\.dsql(?:-[a-z0-9]+)?\.(?P<region>[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2})"
    r"\.on\.aws"
)
CLUSTER_ARN_RE = re.compile(
    r"arn:(?P<partition>aws(?:-[a-z]+)*):dsql:(?P<region>[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}):"
    r"(?P<account>[0-9]{12}):cluster/(?P<id>[a-z0-9]{26})"
)
IAM_PRINCIPAL_ARN_RE = re.compile(
    r"arn:(?P<partition>aws|aws-cn|aws-us-gov):iam::(?P<account>[0-9]{12}):"
    r"(?P<kind>role|user)/(?P<path>(?:[\w+=,.@-]+/)*)(?P<name>[\w+=,.@-]{1,128})",
    re.ASCII,
)

#: Role names PostgreSQL or DSQL reserve (the ``pg_`` prefix is reserved too).
RESERVED_ROLE_NAMES = frozenset(
    {"public", "none", "current_user", "session_user", "current_role", "admin", "postgres", "sys"}
)


@dataclass(frozen=True)
class ClusterRef:
    """A cluster named by id, endpoint host or ARN. ``region`` is None when only an id was given."""

    id: str
    region: str | None = None
    arn: str | None = None

    def host(self, region: str | None = None) -> str:
        r = self.region or region
        if not r:
            raise UsageError(
                f"cannot build the endpoint of cluster {self.id}: no region",
                hint="pass --region, set DSQLOPS_REGION/AWS_REGION, or name the cluster by host or ARN",
            )
        return f"{self.id}.dsql.{r}.on.aws"

    def with_region(self, region: str | None) -> ClusterRef:
        if self.region or not region:
            return self
        return ClusterRef(self.id, region, self.arn)


def _printable(value: str, what: str) -> None:
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in value):
        raise UsageError(f"{what} contains a control or invisible character: {value!r}")


def parse_cluster(value: str) -> ClusterRef:
    """Accept a 26-character cluster id, an endpoint host or a cluster ARN."""
    if not isinstance(value, str) or not value:
        raise UsageError("a cluster must be named (id, endpoint host or ARN)")
    _printable(value, "cluster")
    if CLUSTER_ID_RE.fullmatch(value):
        return ClusterRef(value)
    m = CLUSTER_HOST_RE.fullmatch(value)
    if m:
        return ClusterRef(m["id"], m["region"])
    m = CLUSTER_ARN_RE.fullmatch(value)
    if m:
        return ClusterRef(m["id"], m["region"], value)
    raise UsageError(
        f"not a DSQL cluster id, endpoint or ARN: {value!r}",
        hint="expected 26 lowercase letters/digits, '<id>.dsql.<region>.on.aws' or "
        "'arn:aws:dsql:<region>:<account>:cluster/<id>'",
    )


def validate_region(value: str) -> str:
    if not REGION_RE.fullmatch(value or ""):
        raise UsageError(f"not an AWS region name: {value!r}")
    return value


def validate_role_name(name: str, *, allow_reserved: bool = False) -> str:
    """A PostgreSQL role name that will be quoted with ``sql.Identifier``; never truncated."""
    validate_identifier(name, "role name")
    if name != name.strip():
        raise UsageError(f"role name has leading or trailing white space: {name!r}")
    if not allow_reserved and (name.lower() in RESERVED_ROLE_NAMES or name.lower().startswith("pg_")):
        raise UsageError(f"role name {name!r} is reserved")
    return name


def validate_identifier(name: str, what: str = "identifier") -> str:
    """A SQL identifier (table, column, index, schema, role): non-empty, printable, valid UTF-8, and
    at most 63 bytes, which PostgreSQL would otherwise cut silently."""
    if not isinstance(name, str) or name == "":
        raise UsageError(f"{what} is empty")
    if "\x00" in name:
        raise UsageError(f"{what} contains a NUL byte: {name!r}")
    _printable(name, what)
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8: {name!r}") from None
    if size > 63:
        raise UsageError(f"{what} is {size} bytes long; PostgreSQL would silently cut it to 63: {name!r}")
    return name


def validate_iam_arn(arn: str) -> str:
    """An IAM role or user ARN in aws / aws-cn / aws-us-gov with a 12-digit account; no wildcards."""
    if not isinstance(arn, str) or not arn:
        raise UsageError("IAM ARN is empty")
    if "*" in arn or "?" in arn:
        raise UsageError(f"IAM ARN must not contain wildcards: {arn!r}")
    if not IAM_PRINCIPAL_ARN_RE.fullmatch(arn):
        raise UsageError(
            f"not an IAM role or user ARN: {arn!r}",
            hint="expected arn:aws:iam::123456789012:role/NAME (or :user/NAME; partitions aws, "
            "aws-cn, aws-us-gov)",
        )
    return arn


TAG_KEY_RE = re.compile(r"[\w.:/=+\-@ ]{1,128}", re.UNICODE)
TAG_VALUE_RE = re.compile(r"[\w.:/=+\-@ ]{0,256}", re.UNICODE)


def parse_tag(text: str) -> tuple[str, str]:
    """``key=value`` → (key, value) with AWS tag rules; keys starting ``aws:`` are reserved."""
    if "=" not in text:
        raise UsageError(f"tag must be KEY=VALUE: {text!r}")
    key, value = text.split("=", 1)
    validate_tag_key(key)
    if not TAG_VALUE_RE.fullmatch(value):
        raise UsageError(f"invalid tag value for {key!r}: {value!r} (at most 256 letters, digits, "
                         "spaces and _.:/=+-@)")
    return key, value


def validate_tag_key(key: str) -> str:
    if not TAG_KEY_RE.fullmatch(key):
        raise UsageError(f"invalid tag key {key!r} (1-128 letters, digits, spaces and _.:/=+-@)")
    if key.lower().startswith("aws:"):
        raise UsageError(f"tag keys starting with 'aws:' are reserved: {key!r}")
    return key
