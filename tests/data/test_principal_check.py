"""``role check --arn``: who can log in, for a principal whose credentials we do not have.

Unit tests drive the IAM side with botocore's Stubber (SimulatePrincipalPolicy in its real shape)
over a catalog snapshot; the sandbox test runs the command end to end (its moto has no
SimulatePrincipalPolicy, so the IAM side is reported as unavailable while the database side is
still answered)."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from dsqlops.data.principalcheck import ACTIONS, check_principal, simulate
from dsqlops.data.roles import Catalog, CatalogRole

CLUSTER_ARN = "arn:aws:dsql:us-east-1:123456789012:cluster/abcdefghijklmnopqrstuvwxyz"
APP = "arn:aws:iam::123456789012:role/app"


def iam_stub() -> tuple[Any, Stubber]:
    iam = boto3.client("iam", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return iam, Stubber(iam)


def decisions(connect: str, admin: str) -> dict[str, Any]:
    return {"EvaluationResults": [
        {"EvalActionName": "dsql:DbConnect", "EvalDecision": connect, "EvalResourceName": CLUSTER_ARN},
        {"EvalActionName": "dsql:DbConnectAdmin", "EvalDecision": admin, "EvalResourceName": CLUSTER_ARN}],
        "IsTruncated": False}


def expect(stub: Stubber, principal: str, response: dict[str, Any] | None = None, error: str | None = None) -> None:
    params = {"PolicySourceArn": principal, "ActionNames": list(ACTIONS), "ResourceArns": [CLUSTER_ARN]}
    if error:
        stub.add_client_error("simulate_principal_policy", service_error_code=error, http_status_code=403,
                              expected_params=params)
    else:
        stub.add_response("simulate_principal_policy", response, params)


@pytest.fixture()
def catalog(monkeypatch: pytest.MonkeyPatch) -> Catalog:
    cat = Catalog(roles={"app": CatalogRole("app", login=True), "ro": CatalogRole("ro", login=False),
                         "admin": CatalogRole("admin", login=True)},
                  iam={("app", APP), ("ro", APP)})
    monkeypatch.setattr("dsqlops.data.roles.read_catalog", lambda _conn: cat)
    return cat


def test_mapped_role_with_login_and_allowed_policy_can_log_in(catalog: Catalog) -> None:
    iam, stub = iam_stub()
    expect(stub, APP, decisions("allowed", "implicitDeny"))
    with stub:
        rep = check_principal(APP, admin_conn=object(), iam=iam, cluster_arn=CLUSTER_ARN)
    assert rep.ok and rep.iam_verified and rep.summary == f"{APP} can log in as app"
    by_role = {r["role"]: r for r in rep.roles}
    assert by_role["app"]["can_log_in"] is True and by_role["app"]["action"] == "dsql:DbConnect"
    assert by_role["ro"]["can_log_in"] is False and by_role["ro"]["login"] is False
    assert rep.iam == {"dsql:DbConnect": "allowed", "dsql:DbConnectAdmin": "implicitDeny"}


def test_assumed_role_session_is_checked_as_its_role_and_denied_policy_is_said(catalog: Catalog) -> None:
    iam, stub = iam_stub()
    expect(stub, APP, decisions("explicitDeny", "explicitDeny"))
    session = "arn:aws:sts::123456789012:assumed-role/app/ci-run-7"
    with stub:
        rep = check_principal(session, admin_conn=object(), iam=iam, cluster_arn=CLUSTER_ARN, role="app")
    assert not rep.ok and rep.principal_arn == APP
    assert rep.summary == f"{APP} cannot log in: app: IAM explicitDeny for dsql:DbConnect"
    assert [r["role"] for r in rep.roles] == ["app"]


def test_simulation_denied_still_reports_the_database_side(catalog: Catalog) -> None:
    iam, stub = iam_stub()
    expect(stub, APP, error="AccessDenied")
    with stub:
        rep = check_principal(APP, admin_conn=object(), iam=iam, cluster_arn=CLUSTER_ARN)
    assert rep.ok and not rep.iam_verified
    assert "database side ok for app" in rep.summary and "AccessDenied" in rep.summary
    assert {"check": "mapping", "status": "ok", "detail": f"{APP} is mapped to app, ro"} in rep.checks
    assert any(c["check"] == "iam" and c["status"] == "skip" for c in rep.checks)


def test_admin_needs_no_mapping_but_db_connect_admin(catalog: Catalog) -> None:
    iam, stub = iam_stub()
    expect(stub, APP, decisions("allowed", "implicitDeny"))
    with stub:
        rep = check_principal(APP, admin_conn=object(), iam=iam, cluster_arn=CLUSTER_ARN, role="admin")
    assert not rep.ok and "admin: IAM implicitDeny for dsql:DbConnectAdmin" in rep.summary


def test_unmapped_principal_and_unknown_database(catalog: Catalog) -> None:
    other = "arn:aws:iam::123456789012:user/nobody"
    rep = check_principal(other, admin_conn=object(), iam=None, cluster_arn=CLUSTER_ARN)
    assert not rep.ok and "not mapped to any role" in rep.summary
    assert f"AWS IAM GRANT <role> TO '{other}'" in rep.summary
    blind = check_principal(APP, admin_conn=None, iam=None, cluster_arn=None, admin_error="token refused",
                            cluster_arn_note="GetCluster failed (ResourceNotFoundException)")
    assert not blind.ok and "database side unknown" in blind.summary
    assert "token refused" in blind.checks[0]["detail"]
    assert blind.iam_note == "the cluster's ARN is not known (GetCluster failed (ResourceNotFoundException))"


def test_simulate_follows_markers() -> None:
    iam, stub = iam_stub()
    params = {"PolicySourceArn": APP, "ActionNames": list(ACTIONS), "ResourceArns": [CLUSTER_ARN]}
    stub.add_response("simulate_principal_policy", {"EvaluationResults": [
        {"EvalActionName": "dsql:DbConnect", "EvalDecision": "allowed"}], "IsTruncated": True, "Marker": "m1"},
        params)
    stub.add_response("simulate_principal_policy", {"EvaluationResults": [
        {"EvalActionName": "dsql:DbConnectAdmin", "EvalDecision": "implicitDeny"}], "IsTruncated": False},
        {**params, "Marker": "m1"})
    with stub:
        got, why = simulate(iam, APP, CLUSTER_ARN)
    assert why is None and got == {"dsql:DbConnect": "allowed", "dsql:DbConnectAdmin": "implicitDeny"}


# -- end to end on the sandbox -------------------------------------------------------------------------

@pytest.mark.sandbox
def test_role_check_arn_on_the_sandbox(sb, cluster):  # type: ignore[no-untyped-def]
    from tests.data.conftest import invoke

    role = f"app_{uuid.uuid4().hex[:8]}"
    arn = f"arn:aws:iam::123456789012:role/{role}"
    assert invoke(["role", "create", role, "--login"]).exit_code == 0
    unmapped = invoke(["-o", "json", "role", "check", "--arn", arn])
    assert unmapped.exit_code == 1, unmapped.stderr
    assert "not mapped to any role" in unmapped.json()["summary"]
    assert invoke(["role", "grant-iam", role, arn]).exit_code == 0
    r = invoke(["-o", "json", "role", "check", "--arn", arn])
    assert r.exit_code == 0, r.stderr
    rep = r.json()
    assert rep["cluster_arn"].startswith("arn:aws:dsql:") and rep["cluster_arn"].endswith(f"cluster/{cluster}")
    assert [(x["role"], x["exists"], x["login"], x["mapped"]) for x in rep["roles"]] == [(role, True, True, True)]
    # the sandbox's moto has no SimulatePrincipalPolicy: said, and the database side still answered
    assert rep["iam_verified"] is False and "iam:SimulatePrincipalPolicy is unavailable" in rep["iam_note"]
    assert rep["summary"].startswith(f"database side ok for {role}; IAM policy not checked")
    bad = invoke(["role", "check", "--arn", "not-an-arn"])
    assert bad.exit_code == 252 and "internal error" not in bad.stderr
    neither = invoke(["role", "check"])
    assert neither.exit_code == 252 and "--arn ARN" in neither.stderr
