"""``role check --arn``: could this IAM principal log in, without its credentials?

Two sides, each reported on its own so one unavailable side never hides the other:

- **Database** (as admin): which roles is the principal mapped to in ``sys.iam_pg_role_mappings``
  (``AWS IAM GRANT``; an assumed-role session ARN counts as its role, dsql-facts.md §3.3), does each role
  exist and have LOGIN.
- **IAM**: ``iam:SimulatePrincipalPolicy`` for ``dsql:DbConnect`` and ``dsql:DbConnectAdmin`` on
  the cluster's ARN: the principal's identity-based policies, permissions boundary and, where
  they apply, Organizations SCPs (EvalDecision ``allowed`` | ``explicitDeny`` | ``implicitDeny``,
  https://docs.aws.amazon.com/IAM/latest/APIReference/API_SimulatePrincipalPolicy.html). ``admin``
  needs DbConnectAdmin, any other role DbConnect (dsql-facts.md §2.1). When the caller may not simulate
  (AccessDenied) or the endpoint does not offer it (e.g. moto), the IAM side is ``unknown`` and
  says why.

The principal can log in as a role when that role exists with LOGIN, the principal is mapped to it
(``admin`` needs no mapping) and IAM allows the role's action.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dsqlops.aws import error_code
from dsqlops.data.rolecheck import Checks, principal_of
from dsqlops.errors import first_line

if TYPE_CHECKING:
    from mypy_boto3_dsql import AuroraDSQLClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_sts import STSClient

ACTIONS = ("dsql:DbConnect", "dsql:DbConnectAdmin")


@dataclass
class PrincipalReport(Checks):
    arn: str
    principal_arn: str
    cluster_arn: str | None = None
    roles: list[dict[str, Any]] = field(default_factory=list)
    iam: dict[str, str] = field(default_factory=dict)
    iam_note: str | None = None
    checks: list[dict[str, str]] = field(default_factory=list)
    ok: bool = False
    summary: str = ""

    @property
    def iam_verified(self) -> bool:
        return bool(self.iam)

    def to_dict(self) -> dict[str, Any]:
        return {"arn": self.arn, "principal_arn": self.principal_arn, "cluster_arn": self.cluster_arn,
                "ok": self.ok, "iam_verified": self.iam_verified, "summary": self.summary, "roles": self.roles,
                "iam": self.iam, "iam_note": self.iam_note, "checks": self.checks}


def simulate(iam: IAMClient, principal_arn: str, cluster_arn: str) -> tuple[dict[str, str], str | None]:
    """({action: decision}, None), or ({}, why) when the simulation could not run."""
    try:
        decisions: dict[str, str] = {}
        kwargs: dict[str, Any] = {"PolicySourceArn": principal_arn, "ActionNames": list(ACTIONS),
                                  "ResourceArns": [cluster_arn]}
        while True:
            resp = iam.simulate_principal_policy(**kwargs)
            for r in resp.get("EvaluationResults", []):
                decisions[str(r.get("EvalActionName"))] = str(r.get("EvalDecision"))
            if not resp.get("IsTruncated"):
                break
            kwargs["Marker"] = resp["Marker"]
    except Exception as e:  # noqa: BLE001 - an unavailable simulation is a finding, not a crash
        code = error_code(e)
        if code in ("AccessDenied", "AccessDeniedException"):
            why = "you may not call iam:SimulatePrincipalPolicy (AccessDenied)"
        elif code == "NoSuchEntity":
            why = f"IAM does not know {principal_arn} (NoSuchEntity)"
        else:
            first = first_line(e)[:100]
            why = f"iam:SimulatePrincipalPolicy is unavailable ({code or type(e).__name__}: {first})"
        return {}, why
    return decisions, None


def check_principal(arn: str, *, admin_conn: Any | None, iam: IAMClient | None, cluster_arn: str | None,
                    role: str | None = None, admin_error: str | None = None,
                    cluster_arn_note: str | None = None) -> PrincipalReport:
    """Both sides for ``arn`` (an IAM user/role ARN, or an assumed-role session ARN)."""
    from dsqlops.data.tokens import action_for

    principal = principal_of(arn)
    rep = PrincipalReport(arn=arn, principal_arn=principal, cluster_arn=cluster_arn)
    if principal != arn:
        rep.add("principal", "ok", f"{arn} is matched by DSQL as {principal}")

    # the database side
    db_known = admin_conn is not None
    candidates: list[str] = []
    if admin_conn is None:
        rep.add("mapping", "skip", f"could not log in as admin to read the mappings ({admin_error or 'no connection'})")
    else:
        from dsqlops.data.roles import read_catalog

        cat = read_catalog(admin_conn)
        mapped = sorted({r for (r, a) in cat.iam if a == principal})
        if not cat.iam_supported:
            rep.add("mapping", "skip", "no sys.iam_pg_role_mappings on this server")
        elif mapped:
            rep.add("mapping", "ok", f"{principal} is mapped to {', '.join(mapped)}")
        else:
            rep.add("mapping", "fail", f"{principal} is not mapped to any role")
        candidates = [role] if role else list(mapped)
        for name in candidates:
            info = cat.roles.get(name)
            is_mapped = name in mapped or name == "admin"
            entry: dict[str, Any] = {"role": name, "mapped": is_mapped, "exists": info is not None,
                                     "login": bool(info and info.login), "action": f"dsql:{action_for(name)}"}
            rep.roles.append(entry)
            if info is None:
                rep.add(f"role {name}", "fail", f"role {name!r} does not exist")
            elif not info.login:
                rep.add(f"role {name}", "fail", f"role {name!r} exists but has NOLOGIN")
            elif not is_mapped:
                rep.add(f"role {name}", "fail", f"role {name!r} exists with LOGIN, but {principal} is not mapped "
                        "to it")
            else:
                rep.add(f"role {name}", "ok", f"role {name!r} exists with LOGIN"
                        + ("" if name in mapped else " (admin needs no mapping)"))

    # the IAM side
    if cluster_arn is None:
        rep.iam_note = "the cluster's ARN is not known" + (f" ({cluster_arn_note})" if cluster_arn_note else "")
    elif iam is None:
        rep.iam_note = "no IAM client"
    else:
        rep.iam, rep.iam_note = simulate(iam, principal, cluster_arn)
    if rep.iam:
        for action in ACTIONS:
            decision = rep.iam.get(action, "unknown")
            rep.add(f"iam {action}", "ok" if decision == "allowed" else "fail",
                    f"{decision} on {cluster_arn}")
    else:
        rep.add("iam", "skip", f"IAM policy not checked: {rep.iam_note}")

    # the verdict, per role
    can: list[str] = []
    for entry in rep.roles:
        said = rep.iam.get(entry["action"]) if rep.iam else None
        entry["iam"] = said or "unknown"
        db_ok = entry["exists"] and entry["login"] and entry["mapped"]
        entry["can_log_in"] = bool(db_ok and said == "allowed") if said else (None if db_ok else False)
        if db_ok and said in (None, "allowed"):
            can.append(entry["role"])
    if not db_known:
        rep.summary = "database side unknown (see 'mapping')" + (
            "" if not rep.iam else "; IAM: " + ", ".join(f"{a} {d}" for a, d in sorted(rep.iam.items())))
        rep.ok = False
    elif not rep.roles:
        rep.summary = (f"{principal} cannot log in: it is not mapped to any role "
                       f"(AWS IAM GRANT <role> TO '{principal}')")
    elif not can:
        why = []
        for e in rep.roles:
            if not (e["exists"] and e["login"] and e["mapped"]):
                why.append(f"{e['role']}: " + ("does not exist" if not e["exists"] else
                                               "NOLOGIN" if not e["login"] else "not mapped"))
            else:
                why.append(f"{e['role']}: IAM {e['iam']} for {e['action']}")
        rep.summary = f"{principal} cannot log in: " + "; ".join(why)
    else:
        rep.ok = True
        if rep.iam:
            rep.summary = f"{principal} can log in as {', '.join(can)}"
        else:
            rep.summary = f"database side ok for {', '.join(can)}; IAM policy not checked: {rep.iam_note}"
    return rep


def cluster_arn_for(dsql: AuroraDSQLClient, cluster_id: str, *, region: str, sts: STSClient | None = None,
                    partition_of: str | None = None) -> tuple[str | None, str | None]:
    """The cluster's ARN from GetCluster; failing that, built from the caller's account (STS).
    Returns (arn, None) or (None, why)."""
    try:
        return str(dsql.get_cluster(identifier=cluster_id)["arn"]), None
    except Exception as e:  # noqa: BLE001
        why = f"GetCluster failed ({error_code(e) or type(e).__name__})"
    if sts is not None:
        try:
            account = sts.get_caller_identity()["Account"]
            part = (partition_of or "arn:aws:").split(":")[1] or "aws"
            return f"arn:{part}:dsql:{region}:{account}:cluster/{cluster_id}", None
        except Exception as e:  # noqa: BLE001
            why += f"; sts:GetCallerIdentity failed ({error_code(e) or type(e).__name__})"
    return None, why

