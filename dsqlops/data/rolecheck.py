"""``role check``: log in as a role with the caller's IAM identity, and explain a failure.

What an auth troubleshooter would look at, in order (docs/dsql-facts.md §2.1, §3.3; docs/dsql-facts.md §R2.1):

1. **Who am I?** ``sts:GetCallerIdentity``. An assumed-role session
   (``arn:aws:sts::ACCT:assumed-role/NAME/SESSION``) is matched by DSQL as its role ARN
   (``arn:aws:iam::ACCT:role/NAME``). Expired session credentials are refused at login even when
   the token itself is fresh.
2. **Is my clock right?** The ``Date`` header of the STS answer against the local clock: under skew
   every token looks expired (``HINT: Signature expired``).
3. **Which action?** ``admin`` needs ``dsql:DbConnectAdmin``; any other role ``dsql:DbConnect``.
4. **The login itself**, then, if it failed, a look at the catalog *as admin* (when the caller may):
   does the role exist, may it LOGIN, and is the caller's ARN in ``sys.iam_pg_role_mappings``?
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_sts import STSClient

#: Skew beyond this makes SigV4 signatures fail (AWS allows 5 minutes).
MAX_SKEW_SECONDS = 300.0


class Checks:
    """The check list of a diagnosis (one row per check: name, ok/fail/warn/…, detail)."""

    checks: list[dict[str, str]]

    def add(self, check: str, status: str, detail: str) -> None:
        self.checks.append({"check": check, "status": status, "detail": detail})

    def rows(self) -> list[dict[str, str]]:
        return list(self.checks)


@dataclass
class CheckReport(Checks):
    role: str
    caller_arn: str | None = None
    principal_arn: str | None = None
    action: str = "DbConnect"
    checks: list[dict[str, str]] = field(default_factory=list)
    ok: bool = False
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "ok": self.ok, "summary": self.summary, "caller_arn": self.caller_arn,
                "principal_arn": self.principal_arn, "action": self.action, "checks": self.checks}


def principal_of(caller_arn: str) -> str:
    """The IAM principal DSQL matches: an assumed-role session counts as its role."""
    parts = caller_arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "sts" and parts[5].startswith("assumed-role/"):
        role_name = parts[5].split("/")[1]
        return f"arn:{parts[1]}:iam::{parts[4]}:role/{role_name}"
    return caller_arn


def clock_skew(date_header: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds the local clock is ahead (+) or behind (-) of AWS, from an HTTP Date header."""
    if not date_header:
        return None
    from email.utils import parsedate_to_datetime

    try:
        remote = parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return None
    if remote.tzinfo is None:
        remote = remote.replace(tzinfo=dt.UTC)
    local = now or dt.datetime.now(dt.UTC)
    return (local - remote).total_seconds()


def check_login(target: Any, tokens: Callable[[Any], str], *, sts_client: STSClient | None = None,
                admin_connect: Callable[[], Any] | None = None,
                connect: Callable[..., Any] | None = None) -> CheckReport:
    """Run the checks. ``target`` is the ConnectionTarget for the role (user = the role)."""
    from dsqlops.aws import error_code
    from dsqlops.data.tokens import action_for
    from dsqlops.errors import DsqlopsError

    if connect is None:
        from dsqlops.data.connection import connect as _connect

        connect = _connect
    role = target.user
    rep = CheckReport(role=role, action=action_for(role))

    # 1-2. identity and clock
    skew: float | None = None
    if sts_client is not None:
        try:
            resp = sts_client.get_caller_identity()
            rep.caller_arn = resp.get("Arn")
            rep.principal_arn = principal_of(rep.caller_arn) if rep.caller_arn else None
            detail = rep.caller_arn or "?"
            if rep.principal_arn and rep.principal_arn != rep.caller_arn:
                detail += f" (DSQL matches it as {rep.principal_arn})"
            rep.add("identity", "ok", detail)
            skew = clock_skew(resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date"))
        except Exception as e:  # noqa: BLE001 - any failure here is a finding, not a crash
            code = error_code(e)
            expired = code in ("ExpiredToken", "ExpiredTokenException", "RequestExpired")
            rep.add("identity", "fail",
                    "your AWS session credentials have expired: refresh them (aws sso login, re-assume the role)"
                    if expired else f"sts:GetCallerIdentity failed ({code or type(e).__name__}): the "
                    "credentials are invalid or missing")
        if skew is not None:
            if abs(skew) > MAX_SKEW_SECONDS:
                rep.add("clock", "fail", f"this machine's clock is {skew:+.0f}s off AWS time: every token will "
                        "look expired; fix time sync (chrony/ntp)")
            else:
                rep.add("clock", "ok", f"{skew:+.1f}s from AWS time")
        else:
            rep.add("clock", "skip", "no Date header from STS to compare with")
    else:
        rep.add("identity", "skip", "no STS client")

    # 3. the token (offline signing)
    try:
        tokens(target)
        rep.add("token", "ok", f"minted a dsql:{rep.action} token for {target.host} ({target.region})")
    except DsqlopsError as e:
        rep.add("token", "fail", e.message)
        rep.summary = "no token could be signed: " + e.message
        return rep

    # 4. the login
    err: DsqlopsError | None = None
    try:
        conn = connect(target, tokens)
        try:
            row = conn.execute("SELECT current_user").fetchone()
            who = row[0] if row else "?"
        finally:
            conn.close()
        rep.add("login", "ok", f"logged in as {who}")
        rep.ok = True
        rep.summary = "ok"
        return rep
    except DsqlopsError as e:
        err = e
        rep.add("login", "fail", e.message)
    except Exception as e:  # noqa: BLE001 - explain, do not crash
        rep.add("login", "fail", f"{type(e).__name__}: {e}")
        rep.summary = str(e)
        return rep

    low = (err.message + " " + (err.hint or "")).lower()
    reasons: list[str] = []
    if "expired" in low:
        if skew is not None and abs(skew) > MAX_SKEW_SECONDS:
            reasons.append(f"clock skew of {skew:+.0f}s makes the token look expired")
        else:
            reasons.append("the token (or the AWS session that signed it) expired before it reached the server")
    if "tls" in low or "certificate" in low:
        reasons.append("TLS verification failed (see the hint)")
    # 5. look at the catalog as admin
    if admin_connect is not None and role != "admin" and "tls" not in low:
        try:
            aconn = admin_connect()
        except DsqlopsError as e:
            rep.add("catalog", "skip", f"could not log in as admin to look up the role ({e.message})")
        else:
            try:
                reasons += _diagnose_catalog(aconn, rep)
            finally:
                aconn.close()
    if not reasons:
        reasons.append(
            f"the role and mapping look right: check that your IAM policy allows dsql:{rep.action} on this "
            "cluster's ARN (wrong action: admin needs DbConnectAdmin, other roles DbConnect)")
    rep.summary = "; ".join(reasons)
    return rep


def _diagnose_catalog(conn: Any, rep: CheckReport) -> list[str]:
    from dsqlops.data.roles import read_catalog

    cat = read_catalog(conn)
    role = cat.roles.get(rep.role)
    reasons: list[str] = []
    if role is None:
        rep.add("role", "fail", f"role {rep.role!r} does not exist")
        return [f"role {rep.role!r} does not exist: dsqlops role create {rep.role} --login"]
    if not role.login:
        rep.add("role", "fail", f"role {rep.role!r} exists but has NOLOGIN")
        reasons.append(f"role {rep.role!r} may not log in: ALTER ROLE {rep.role} WITH LOGIN")
    else:
        rep.add("role", "ok", f"role {rep.role!r} exists with LOGIN")
    mapped = sorted(a for (r, a) in cat.iam if r == rep.role)
    if not cat.iam_supported:
        rep.add("mapping", "skip", "no sys.iam_pg_role_mappings on this server")
    elif rep.principal_arn and rep.principal_arn in mapped:
        rep.add("mapping", "ok", f"{rep.principal_arn} is mapped to {rep.role}")
    else:
        others = f" (mapped: {', '.join(mapped)})" if mapped else " (no IAM principal is mapped to it)"
        rep.add("mapping", "fail", f"{rep.principal_arn or 'your identity'} is not mapped to {rep.role}{others}")
        arn = rep.principal_arn or "<your role ARN>"
        reasons.append(f"no mapping: run AWS IAM GRANT {rep.role} TO '{arn}' "
                       f"(dsqlops role grant-iam {rep.role} {arn})")
    return reasons
