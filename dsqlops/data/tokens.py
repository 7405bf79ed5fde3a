"""IAM authentication tokens for DSQL (the password of a connection).

A token is a SigV4 *presigned URL* for ``https://<host>/?Action=DbConnect[Admin]`` made offline by
botocore's ``generate_db_connect_auth_token`` / ``generate_db_connect_admin_auth_token`` (docs/dsql-facts.md §2.1);
dsqlops never signs by hand. It is a bearer credential that embeds the access key id and the STS
session token, so it is never logged, never put in an error message and never written to disk.

botocore signs anything: a token with no credentials, an expiry beyond the one-week maximum, or a
host that is not a DSQL endpoint (the AWS CLI happily prints such useless tokens, aws/aws-cli#9840
and #9966). :class:`TokenSource` refuses all three before signing.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from dsqlops.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from dsqlops.aws import AwsContext
    from dsqlops.data.connection import ConnectionTarget

log = logging.getLogger(__name__)

MIN_EXPIRES_IN = 1
#: The documented maximum lifetime of a DSQL token (one week); botocore does not enforce it.
MAX_EXPIRES_IN = 604_800
DEFAULT_EXPIRES_IN = 900
ADMIN_USER = "admin"


def validate_expires_in(value: Any) -> int:
    """An expiry in whole seconds within 1 … 604800."""
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"token expiry must be a whole number of seconds: {value!r}") from None
    if isinstance(value, float) and value != seconds:
        raise UsageError(f"token expiry must be a whole number of seconds: {value!r}")
    if not MIN_EXPIRES_IN <= seconds <= MAX_EXPIRES_IN:
        raise UsageError(f"token expiry must be between {MIN_EXPIRES_IN} and {MAX_EXPIRES_IN} seconds "
                         f"(one week): {seconds}")
    return seconds


def validate_host(host: str) -> tuple[str, str]:
    """A DSQL cluster endpoint ``<id>.dsql.<region>.on.aws`` → (host, region). Anything else is refused:
    a token for a lookalike or a bare id would be useless (and would hand a credential to that host)."""
    from dsqlops.validate import CLUSTER_HOST_RE

    if not isinstance(host, str) or not host:
        raise UsageError("no cluster endpoint host to mint a token for")
    m = CLUSTER_HOST_RE.fullmatch(host)
    if not m:
        raise UsageError(f"refusing to mint a token for {host!r}: not a DSQL cluster endpoint",
                         hint="expected '<26-character id>.dsql.<region>.on.aws'")
    return host, m["region"]


def action_for(user: str) -> str:
    """``DbConnectAdmin`` for the built-in ``admin`` role, ``DbConnect`` for every other role."""
    return "DbConnectAdmin" if user == ADMIN_USER else "DbConnect"


@dataclass(frozen=True)
class TokenInfo:
    """A minted token and what it is for. ``repr`` hides the token."""

    token: str
    host: str
    region: str
    user: str
    action: str
    expires_in: int
    issued_at: dt.datetime

    @property
    def expires_at(self) -> dt.datetime:
        return self.issued_at + dt.timedelta(seconds=self.expires_in)

    def __repr__(self) -> str:
        return (f"TokenInfo(token=<redacted>, host={self.host!r}, user={self.user!r}, action={self.action!r}, "
                f"expires_in={self.expires_in})")

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "host": self.host, "region": self.region, "user": self.user,
                "expires_in": self.expires_in, "expires_at": self.expires_at}


class _TokenSigner(Protocol):
    """The token methods botocore adds to every ``dsql`` client at creation time (an event handler,
    so the generated client stubs do not list them)."""

    def generate_db_connect_auth_token(self, Hostname: str, Region: str | None = None,
                                       ExpiresIn: int = 900) -> str: ...

    def generate_db_connect_admin_auth_token(self, Hostname: str, Region: str | None = None,
                                             ExpiresIn: int = 900) -> str: ...


class TokenSource:
    """Mints tokens from an :class:`~dsqlops.aws.AwsContext`; ``tokens(target) -> str``.

    Thread-safe; one ``dsql`` client per region is created lazily and reused (token generation is
    offline). ``calls`` counts the tokens minted (telemetry, tests). ``expires_in`` overrides the
    target's ``token_expires_in``.
    """

    def __init__(self, aws_ctx: AwsContext, *, expires_in: int | None = None):
        self.aws = aws_ctx
        self.expires_in = validate_expires_in(expires_in) if expires_in is not None else None
        self.calls = 0
        self._clients: dict[str, _TokenSigner] = {}
        self._lock = threading.Lock()
        self._checked_credentials = False

    def _client(self, region: str) -> _TokenSigner:
        with self._lock:
            if not self._checked_credentials:
                from dsqlops.aws import aws_errors

                with aws_errors("AWS credentials"):
                    self.aws.credentials()  # ConfigError (253) when there are none or they are partial
                self._checked_credentials = True
            if region not in self._clients:
                self._clients[region] = cast("_TokenSigner", self.aws.dsql(region))
            return self._clients[region]

    def mint(self, host: str, *, user: str = ADMIN_USER, region: str | None = None,
             expires_in: int = DEFAULT_EXPIRES_IN) -> TokenInfo:
        """Validate, then sign. The region defaults to the one in the host name."""
        host, host_region = validate_host(host)
        region = region or host_region
        if region != host_region:
            raise UsageError(f"region {region!r} does not match the endpoint's region {host_region!r}")
        seconds = validate_expires_in(expires_in)
        if not user:
            raise UsageError("no database role (user) to mint a token for")
        action = action_for(user)
        client = self._client(region)
        import botocore.exceptions as bex

        issued = dt.datetime.now(dt.UTC).replace(microsecond=0)
        try:
            if action == "DbConnectAdmin":
                token = client.generate_db_connect_admin_auth_token(host, region, seconds)
            else:
                token = client.generate_db_connect_auth_token(host, region, seconds)
        except (bex.NoCredentialsError, bex.PartialCredentialsError):
            raise ConfigError("no usable AWS credentials to sign a token with",
                              hint="configure credentials or pass --profile") from None
        with self._lock:
            self.calls += 1
        log.debug("minted a %s token for %s@%s (expires in %ss)", action, user, host, seconds)
        return TokenInfo(token=token, host=host, region=region, user=user, action=action,
                         expires_in=seconds, issued_at=issued)

    def __call__(self, target: ConnectionTarget) -> str:
        expires = self.expires_in if self.expires_in is not None else target.token_expires_in
        return self.mint(target.host, user=target.user, region=target.region, expires_in=expires).token

    def __repr__(self) -> str:
        return f"TokenSource(region={self.aws.region!r}, calls={self.calls})"
