"""DSQL IAM token verification for the sandbox front.

A DSQL token is a SigV4 *presigned* GET URL without its scheme
(``<host>/?Action=DbConnect[Admin]&X-Amz-Algorithm=…&X-Amz-Signature=…``, docs/dsql-facts.md §2.1). The
sandbox checks it like DSQL would: it re-signs the same request with botocore's own
``SigV4QueryAuth`` (the code path of ``generate_db_connect_auth_token``) using the secret that
the sandbox's IAM/STS issued for the token's access key, at the token's own ``X-Amz-Date``, and
compares signatures in constant time. Then it checks expiry, action, host and region.

Failures raise :class:`AuthFailure`; the front answers all of them with DSQL's wording
``unable to accept connection, access denied`` (and the hint ``Signature expired`` only for an
expired token), never saying which check failed. ``AuthFailure.reason`` is for the sandbox log.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

ACCESS_DENIED = "unable to accept connection, access denied"
EXPIRED_HINT = "Signature expired"
MAX_EXPIRES = 604_800
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
#: Accepted clock skew for a token dated in the future (AWS allows 15 minutes).
MAX_SKEW = dt.timedelta(minutes=15)


class AuthFailure(Exception):
    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired

    @property
    def hint(self) -> str | None:
        return EXPIRED_HINT if self.expired else None


@dataclass(frozen=True)
class Identity:
    """What the sandbox's IAM/STS knows about an access key."""

    access_key_id: str
    secret_access_key: str
    arn: str                       # user ARN, or the role ARN for an assumed-role session
    session_token: str | None = None   # required in the token for STS temporary credentials


@dataclass(frozen=True)
class Token:
    host: str
    action: str
    access_key_id: str
    date: str
    scope_date: str
    region: str
    service: str
    expires: int
    signed_headers: str
    signature: str
    session_token: str | None
    params: dict[str, str]


def parse_token(token: str) -> Token:
    """Split a DSQL token into its parts (no cryptography yet)."""
    text = token.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    parts = urlsplit("https://" + text)
    if not parts.hostname or parts.path not in ("", "/"):
        raise AuthFailure("token is not a presigned URL")
    pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False)
    params: dict[str, str] = {}
    for k, v in pairs:
        if k in params:
            raise AuthFailure(f"repeated parameter {k}")
        params[k] = v
    try:
        cred = params["X-Amz-Credential"].split("/")
        if len(cred) != 5 or cred[4] != "aws4_request":
            raise AuthFailure("malformed X-Amz-Credential")
        expires = int(params["X-Amz-Expires"])
        tok = Token(host=parts.hostname.lower(), action=params["Action"], access_key_id=cred[0],
                    date=params["X-Amz-Date"], scope_date=cred[1], region=cred[2], service=cred[3],
                    expires=expires, signed_headers=params["X-Amz-SignedHeaders"],
                    signature=params["X-Amz-Signature"], session_token=params.get("X-Amz-Security-Token"),
                    params=params)
    except KeyError as e:
        raise AuthFailure(f"token lacks {e.args[0]}") from None
    except ValueError:
        raise AuthFailure("X-Amz-Expires is not a number") from None
    if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        raise AuthFailure("unsupported signing algorithm")
    if parts.port not in (None, 443):
        raise AuthFailure("token host carries a port")
    return tok


def expected_signature(tok: Token, secret: str) -> str:
    """Re-sign the token's request with botocore's SigV4QueryAuth at the token's timestamp."""
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    creds = Credentials(tok.access_key_id, secret, tok.session_token)
    signer = SigV4QueryAuth(creds, tok.service, tok.region, expires=tok.expires)
    req = AWSRequest(method="GET", url=f"https://{tok.host}/", data={"Action": tok.action})
    req.context["timestamp"] = tok.date
    # The steps of SigV4Auth.add_auth, minus reading the clock (we verify at the token's date).
    signer._modify_request_before_signing(req)  # type: ignore[attr-defined]
    canonical = signer.canonical_request(req)
    string_to_sign = signer.string_to_sign(req, canonical)
    return str(signer.signature(string_to_sign, req))


@dataclass(frozen=True)
class Verified:
    arn: str
    access_key_id: str
    action: str


def verify(token: str, *, user: str, host: str, region: str,
           lookup: Callable[[str], Identity | None], now: dt.datetime | None = None) -> Verified:
    """Check a DSQL token for logging in as ``user`` to the cluster endpoint ``host``."""
    tok = parse_token(token)
    want_action = "DbConnectAdmin" if user == "admin" else "DbConnect"
    if tok.action not in ("DbConnect", "DbConnectAdmin"):
        raise AuthFailure(f"unknown action {tok.action!r}")
    if tok.service != "dsql":
        raise AuthFailure(f"token signed for service {tok.service!r}")
    if tok.signed_headers != "host":
        raise AuthFailure("token must sign exactly the host header")
    try:
        signed_at = dt.datetime.strptime(tok.date, SIGV4_TIMESTAMP).replace(tzinfo=dt.UTC)
    except ValueError:
        raise AuthFailure("malformed X-Amz-Date") from None
    if tok.scope_date != tok.date[:8]:
        raise AuthFailure("credential scope date does not match X-Amz-Date")
    if not 1 <= tok.expires <= MAX_EXPIRES:
        raise AuthFailure(f"X-Amz-Expires {tok.expires} outside 1..{MAX_EXPIRES}")
    ident = lookup(tok.access_key_id)
    if ident is None:
        raise AuthFailure(f"unknown access key {tok.access_key_id[:4]}…")
    if ident.session_token is not None and not hmac.compare_digest(tok.session_token or "", ident.session_token):
        raise AuthFailure("security token does not match the temporary credentials")
    sig = expected_signature(tok, ident.secret_access_key)
    if not hmac.compare_digest(sig, tok.signature):
        raise AuthFailure("signature mismatch")
    # Only a genuine token can be "expired" (DSQL's hint says the signature was good but stale).
    now = now or dt.datetime.now(dt.UTC)
    if now > signed_at + dt.timedelta(seconds=tok.expires):
        raise AuthFailure("token expired", expired=True)
    if signed_at - now > MAX_SKEW:
        raise AuthFailure("token dated in the future")
    if tok.action != want_action:
        raise AuthFailure(f"action {tok.action} does not allow logging in as {user!r} (needs {want_action})")
    if tok.host != host.lower():
        raise AuthFailure(f"token is for host {tok.host}, not {host}")
    if tok.region != region:
        raise AuthFailure(f"token is for region {tok.region}, not {region}")
    if arn_partition(ident.arn) != partition_of(region):
        raise AuthFailure(f"identity {ident.arn} is in another partition than the cluster's ({partition_of(region)})")
    return Verified(arn=ident.arn, access_key_id=tok.access_key_id, action=tok.action)


def partition_of(region: str) -> str:
    """The AWS partition of a region name: ``aws-cn`` for cn-*, ``aws-us-gov`` for us-gov-*, else ``aws``."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    if region.startswith("us-iso-"):
        return "aws-iso"
    if region.startswith("us-isob-"):
        return "aws-iso-b"
    return "aws"


def arn_partition(arn: str) -> str:
    """``arn:<partition>:…`` → the partition ('' when ``arn`` is not an ARN)."""
    parts = arn.split(":", 2)
    return parts[1] if len(parts) > 2 and parts[0] == "arn" else ""
