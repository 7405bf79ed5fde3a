"""Every `dsqlops cluster …` command against moto, through the real entry point (exit codes)."""

from __future__ import annotations

import json

import pytest

from dsqlops.control.clusters import CreateRequest, client_token_for, normalize_policy
from dsqlops.errors import ExitCode
from tests.control.conftest import create, manual_transitions

POLICY = {"Version": "2012-10-17",
          "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "dsql:*", "Resource": "*",
                         "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}


def test_create_returns_real_endpoint_format_and_token(run):
    c = create(run, "--tag", "env=dev", "--no-deletion-protection")
    assert c["status"] in ("CREATING", "ACTIVE")
    # moto answers "<id>.us-east-1.on.aws"; dsqlops always shows the real format (docs/dsql-facts.md §1.6.2).
    assert c["endpoint"] == f"{c['id']}.dsql.us-east-1.on.aws"
    assert c["tags"] == {"env": "dev"}
    assert c["deletion_protection"] is False
    req = CreateRequest.build(region="us-east-1", deletion_protection=False, tags={"env": "dev"})
    assert c["client_token"] == client_token_for(req)


def test_create_is_idempotent_across_reruns(run, dsql):
    a = create(run, "--tag", "env=dev", "--tag", "team=x")
    b = create(run, "--tag", "team=x", "--tag", "env=dev")  # same request, other flag order
    assert a["id"] == b["id"]
    assert len(dsql.list_clusters()["clusters"]) == 1
    c = create(run, "--tag", "env=prod", "--tag", "team=x")  # a different request → a new cluster
    assert c["id"] != a["id"]
    d = create(run, "--tag", "env=dev", "--tag", "team=x", "--client-token", "my-second-one")
    assert d["id"] not in (a["id"], c["id"])
    assert len(dsql.list_clusters()["clusters"]) == 3


def test_create_token_reused_by_a_deleted_cluster_is_explained(run):
    a = create(run, "--no-deletion-protection", "--tag", "k=v")
    manual_transitions(50)  # keep it DELETING
    r = run(["cluster", "delete", a["id"], "--yes"])
    assert r.exit_code == 0, r.stderr
    r = run(["cluster", "create", "--no-deletion-protection", "--tag", "k=v"])
    assert r.exit_code == ExitCode.SERVICE
    assert "DELETING" in r.stderr and "--client-token" in r.stderr


def test_create_conflicting_params_for_a_token(run):
    create(run, "--client-token", "tok-1")
    r = run(["cluster", "create", "--client-token", "tok-1", "--tag", "x=y"])
    assert r.exit_code == ExitCode.SERVICE
    assert "ConflictException" in r.stderr and "hint:" in r.stderr


def test_create_dry_run_prints_request_and_calls_nothing(run, dsql, tmp_path):
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps(POLICY, indent=4))
    r = run(["cluster", "create", "--dry-run", "--tag", "a=b", "--policy-file", str(pf),
             "--kms-key", "alias/mine", "--witness-region", "us-west-2",
             "--peer", "arn:aws:dsql:us-east-2:123456789012:cluster/abcdefghijklmnopqrstuvwxyz"])
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["operation"] == "CreateCluster" and plan["region"] == "us-east-1"
    p = plan["params"]
    assert p["deletionProtectionEnabled"] is True
    assert p["tags"] == {"a": "b"} and p["kmsEncryptionKey"] == "alias/mine"
    peer = "arn:aws:dsql:us-east-2:123456789012:cluster/abcdefghijklmnopqrstuvwxyz"
    assert p["multiRegionProperties"] == {"witnessRegion": "us-west-2", "clusters": [peer]}
    assert json.loads(p["policy"]) == POLICY
    assert p["clientToken"].startswith("dsqlops-v1-")
    assert dsql.list_clusters()["clusters"] == []


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('"a string"', "must be a JSON object"),
])
def test_create_policy_file_validated_before_any_call(run, dsql, tmp_path, content, needle):
    pf = tmp_path / "p.json"
    pf.write_text(content)
    r = run(["cluster", "create", "--policy-file", str(pf)])
    assert r.exit_code == ExitCode.USAGE
    assert needle in r.stderr
    assert dsql.list_clusters()["clusters"] == []


def test_create_with_policy_then_show(run):
    pf_text = json.dumps(POLICY)
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(pf_text)
    c = create(run, "--policy-file", f.name, "--tag", "a=b")
    r = run(["-o", "json", "cluster", "show", c["id"]])
    assert r.exit_code == 0, r.stderr
    d = r.json()
    assert d["policy"] == POLICY and d["policy_version"]
    assert d["vpc_endpoint_service_name"].startswith("com.amazonaws.us-east-1.dsql")
    assert d["vpc_endpoint"] == f"{c['id']}.dsql.us-east-1.on.aws"
    assert d["tags"] == {"a": "b"} and d["streams"] == [] and d["unavailable"] == []


@pytest.mark.parametrize("bad", [
    ["--tag", "novalue"], ["--tag", "aws:reserved=x"], ["--kms-key", "bad key!"],
    ["--witness-region", "us-east-1"], ["--peer", "arn:aws:dsql:us-east-2:1:cluster/x"],
    ["--peer", "arn:aws:dsql:us-east-2:123456789012:cluster/abcdefghijklmnopqrstuvwxyz"],  # no witness
    ["--client-token", "has space"],
])
def test_create_bad_input_is_usage_error(run, dsql, bad):
    r = run(["cluster", "create", *bad])
    assert r.exit_code == ExitCode.USAGE, r.stderr
    assert r.stderr.startswith("error:")
    assert dsql.list_clusters()["clusters"] == []


def test_list_shows_details_and_filters_by_status(run, dsql):
    a = create(run, "--tag", "n=1")
    assert dsql.get_cluster(identifier=a["id"])["status"] == "ACTIVE"
    manual_transitions(100)
    b = create(run, "--tag", "n=2")  # stays CREATING
    r = run(["-o", "json", "cluster", "list"])
    assert r.exit_code == 0, r.stderr
    rows = {x["id"]: x for x in r.json()}
    assert set(rows) == {a["id"], b["id"]}
    assert rows[a["id"]]["status"] == "ACTIVE" and rows[b["id"]]["status"] == "CREATING"
    assert rows[a["id"]]["endpoint"] == f"{a['id']}.dsql.us-east-1.on.aws"
    assert rows[a["id"]]["tags"] == {"n": "1"} and rows[a["id"]]["deletion_protection"] is True
    assert rows[a["id"]]["creation_time"].endswith("Z")
    r = run(["-o", "json", "cluster", "list", "--status", "creating"])
    assert [x["id"] for x in r.json()] == [b["id"]]
    r = run(["cluster", "list", "--status", "ACTIVE"])  # table
    assert a["id"] in r.stdout and b["id"] not in r.stdout
    assert "deletion_protection" in r.stdout.splitlines()[0]


def test_list_many_clusters_bounded_workers(run, dsql):
    ids = {dsql.create_cluster(deletionProtectionEnabled=True, clientToken=f"t{i}")["identifier"] for i in range(12)}
    r = run(["-o", "json", "cluster", "list", "--workers", "3"])
    assert r.exit_code == 0
    assert {x["id"] for x in r.json()} == ids


def test_list_empty_and_csv(run):
    r = run(["cluster", "list"])
    assert r.exit_code == 0 and r.stdout == "" and "no clusters" in r.stderr
    create(run)
    r = run(["-o", "csv", "cluster", "list"])
    assert r.stdout.splitlines()[0] == "id,status,endpoint,deletion_protection,creation_time,tags"


def test_list_in_second_region(run):
    c = create(run, region="us-east-2")
    r = run(["--region", "us-east-2", "-o", "json", "cluster", "list"])
    assert [x["id"] for x in r.json()] == [c["id"]]
    assert r.json()[0]["endpoint"] == f"{c['id']}.dsql.us-east-2.on.aws"
    assert run(["-o", "json", "cluster", "list"]).json() == []


def test_show_accepts_id_host_and_arn_and_takes_region_from_them(run):
    c = create(run, region="us-east-2")
    for ref in (c["id"], c["endpoint"], c["arn"]):
        args = ["-o", "json", "cluster", "show", ref]
        if ref == c["id"]:
            args = ["--region", "us-east-2", *args]
        r = run(args)  # AWS_REGION is us-east-1: host/ARN must win
        assert r.exit_code == 0, (ref, r.stderr)
        assert r.json()["id"] == c["id"] and r.json()["region"] == "us-east-2"


def test_show_refuses_lookalike_and_reports_missing(run):
    r = run(["cluster", "show", "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws.evil.com"])
    assert r.exit_code == ExitCode.USAGE
    r = run(["cluster", "show", "abcdefghijklmnopqrstuvwxyz"])
    assert r.exit_code == ExitCode.SERVICE and "ResourceNotFoundException" in r.stderr


def test_update_protection_kms_and_revert(run, dsql):
    c = create(run)
    r = run(["-o", "json", "cluster", "update", c["id"], "--no-deletion-protection"])
    assert r.exit_code == 0, r.stderr
    assert r.json()["deletion_protection"] is False
    r = run(["-o", "json", "cluster", "update", c["id"], "--kms-key", "arn:aws:kms:us-east-1:123456789012:key/k1"])
    assert r.json()["encryption_type"] == "CUSTOMER_MANAGED_KMS_KEY"
    r = run(["-o", "json", "cluster", "update", c["id"], "--kms-key", "AWS_OWNED_KMS_KEY",
             "--dry-run"])
    assert json.loads(r.stdout)["params"] == {"identifier": c["id"], "kmsEncryptionKey": "AWS_OWNED_KMS_KEY"}
    r = run(["cluster", "update", c["id"]])
    assert r.exit_code == ExitCode.USAGE and "nothing to update" in r.stderr


def test_update_multi_region_merges_unnamed_part(run, dsql):
    peer1 = "arn:aws:dsql:us-east-2:123456789012:cluster/abcdefghijklmnopqrstuvwxyz"
    peer2 = "arn:aws:dsql:us-east-2:123456789012:cluster/bcdefghijklmnopqrstuvwxyza"
    c = create(run, "--witness-region", "us-west-2", "--peer", peer1)
    assert c["witness_region"] == "us-west-2" and c["peers"] == [peer1]
    r = run(["-o", "json", "cluster", "update", c["id"], "--peer", peer2, "--peer", peer1])
    assert r.exit_code == 0, r.stderr
    assert r.json()["witness_region"] == "us-west-2"  # kept from GetCluster: a full replacement otherwise
    assert r.json()["peers"] == sorted([peer1, peer2])
    r = run(["-o", "json", "cluster", "update", c["id"], "--no-peers"])
    assert r.json()["peers"] == [] and r.json()["witness_region"] == "us-west-2"
    r = run(["cluster", "update", c["id"], "--witness-region", "us-east-1"])
    assert r.exit_code == ExitCode.USAGE and "must differ" in r.stderr


def test_delete_refuses_protected_cluster(run, dsql):
    c = create(run)  # protected by default
    r = run(["cluster", "delete", c["id"], "--yes"])
    assert r.exit_code == ExitCode.USAGE
    assert "deletion protection" in r.stderr and "--disable-deletion-protection" in r.stderr
    assert dsql.get_cluster(identifier=c["id"])["status"] == "ACTIVE"


def test_delete_with_disable_protection_says_so_and_waits(run, dsql):
    c = create(run)
    r = run(["-o", "json", "cluster", "delete", c["id"], "--yes", "--disable-deletion-protection",
             "--wait", "--interval", "0.01", "--timeout", "60"])
    assert r.exit_code == 0, r.stderr
    assert "deletion protection disabled" in r.stderr
    assert r.json() == {"id": c["id"], "status": "DELETED", "protection_disabled": True, "peers": []}
    assert dsql.list_clusters()["clusters"] == []


def test_delete_without_tty_needs_yes(run, dsql):
    c = create(run, "--no-deletion-protection")
    r = run(["cluster", "delete", c["id"]])
    assert r.exit_code == ExitCode.USAGE and "--yes" in r.stderr
    assert dsql.get_cluster(identifier=c["id"])["status"] == "ACTIVE"


def test_delete_dry_run(run, dsql):
    c = create(run)
    r = run(["cluster", "delete", c["id"], "--dry-run", "--disable-deletion-protection"])
    assert r.exit_code == 0
    ops = [x["operation"] for x in json.loads(r.stdout)["calls"]]
    assert ops == ["GetCluster", "UpdateCluster", "DeleteCluster"]
    assert dsql.get_cluster(identifier=c["id"])["deletionProtectionEnabled"] is True


def test_tag_untag(run):
    c = create(run, "--tag", "a=1")
    r = run(["-o", "json", "cluster", "tag", c["arn"], "b=2", "c=3"])
    assert r.exit_code == 0, r.stderr
    assert r.json() == {"a": "1", "b": "2", "c": "3"}
    r = run(["-o", "json", "cluster", "untag", c["id"], "a", "c"])
    assert r.json() == {"b": "2"}
    r = run(["cluster", "tag", c["id"], "aws:x=1"])
    assert r.exit_code == ExitCode.USAGE


def test_policy_get_put_delete_with_versions(run, tmp_path):
    c = create(run)
    r = run(["cluster", "policy", "get", c["id"]])
    assert r.exit_code == ExitCode.SERVICE and "no resource policy" in r.stderr
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps(POLICY))
    r = run(["-o", "json", "cluster", "policy", "put", c["id"], str(pf)])
    assert r.exit_code == 0, r.stderr
    v1 = r.json()["version"]
    r = run(["-o", "json", "cluster", "policy", "get", c["id"]])
    assert r.json()["policy"] == POLICY and r.json()["version"] == v1
    r = run(["-o", "json", "cluster", "policy", "put", c["id"], str(pf), "--expected-version", v1])
    assert r.exit_code == 0
    v2 = r.json()["version"]
    assert v2 != v1
    # A stale version is a conflict: someone changed the policy meanwhile.
    r = run(["cluster", "policy", "put", c["id"], str(pf), "--expected-version", v1])
    assert r.exit_code == ExitCode.SERVICE
    assert f"no longer at version {v1}" in r.stderr and "policy get" in r.stderr
    r = run(["cluster", "policy", "delete", c["id"], "--expected-version", v1, "--yes"])
    assert r.exit_code == ExitCode.SERVICE and "no longer at version" in r.stderr
    r = run(["cluster", "policy", "delete", c["id"], "--expected-version", v2, "--yes"])
    assert r.exit_code == 0, r.stderr
    assert run(["cluster", "policy", "get", c["id"]]).exit_code == ExitCode.SERVICE


def test_policy_put_from_stdin_and_invalid(run, dsql):
    c = create(run)
    r = run(["-o", "json", "cluster", "policy", "put", c["id"], "-"], input=json.dumps(POLICY))
    assert r.exit_code == 0, r.stderr
    r = run(["cluster", "policy", "put", c["id"], "-"], input="[]")
    assert r.exit_code == ExitCode.USAGE
    r = run(["cluster", "policy", "put", c["id"], "-", "--dry-run"], input=json.dumps(POLICY))
    assert json.loads(r.stdout)["params"]["policy"] == normalize_policy(json.dumps(POLICY))


def test_streams_list_and_show(run, dsql):
    c = create(run)
    s = dsql.create_stream(clusterIdentifier=c["id"], ordering="UNORDERED", format="JSON",
                           targetDefinition={"kinesis": {"streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/s",
                                                         "roleArn": "arn:aws:iam::123456789012:role/r"}})
    r = run(["-o", "json", "cluster", "streams", "list", c["id"]])
    assert r.exit_code == 0, r.stderr
    assert [x["id"] for x in r.json()] == [s["streamIdentifier"]]
    r = run(["-o", "json", "cluster", "streams", "show", c["id"], s["streamIdentifier"]])
    assert r.exit_code == 0, r.stderr
    assert r.json()["target"]["kinesis"]["streamArn"].endswith("stream/s")
    r = run(["-o", "json", "cluster", "show", c["id"]])
    assert [x["id"] for x in r.json()["streams"]] == [s["streamIdentifier"]]
    r = run(["cluster", "streams", "show", c["id"], "NOT-AN-ID"])
    assert r.exit_code == ExitCode.USAGE
    r = run(["cluster", "streams", "show", c["id"], "zzzzzzzzzzzzzzzzzzzzzzzzzz"])
    assert r.exit_code == ExitCode.SERVICE


def test_list_core_never_exceeds_workers(dsql):
    import threading
    import time

    from dsqlops.control.clusters import list_clusters

    for i in range(10):
        dsql.create_cluster(deletionProtectionEnabled=False, clientToken=f"w{i}")
    real = dsql.get_cluster
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def counted(**kw):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        try:
            time.sleep(0.05)  # hold the slot so that overlapping calls are observable
            return real(**kw)
        finally:
            with lock:
                state["now"] -= 1

    dsql.get_cluster = counted
    rows = list_clusters(dsql, "us-east-1", workers=3)
    assert len(rows) == 10
    assert 2 <= state["max"] <= 3
