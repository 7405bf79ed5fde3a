"""Multi-Region settings that cannot work are refused before any AWS call: a peer in the cluster's
own Region, a witness Region equal to a peer's (or the cluster's)."""

from __future__ import annotations

from typing import Any

import pytest

from dsqlops.aws import AwsContext
from dsqlops.errors import ExitCode
from tests.control.conftest import create

PEER_E2 = "arn:aws:dsql:us-east-2:123456789012:cluster/abcdefghijklmnopqrstuvwxyz"
PEER_E1 = "arn:aws:dsql:us-east-1:123456789012:cluster/bcdefghijklmnopqrstuvwxyza"


@pytest.fixture()
def calls(monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    """Every HTTP request dsqlops sends to DSQL, by operation."""
    seen: list[str] = []
    orig = AwsContext.dsql

    def dsql(self: AwsContext, region: str | None = None) -> Any:
        client = orig(self, region)
        client.meta.events.register_first("before-send.dsql", lambda request, event_name, **_: seen.append(
            event_name.rsplit(".", 1)[-1]))
        return client

    monkeypatch.setattr(AwsContext, "dsql", dsql)
    return seen


@pytest.mark.parametrize(("args", "needle"), [
    (["--witness-region", "us-west-2", "--peer", PEER_E1], "is in the cluster's own Region (us-east-1)"),
    (["--witness-region", "us-east-2", "--peer", PEER_E2], "witness Region us-east-2 is the Region of peer"),
    (["--witness-region", "us-east-1", "--peer", PEER_E2], "must differ from the cluster's Region"),
])
def test_create_refuses_impossible_multi_region_before_any_call(run, dsql, calls, args, needle):
    for extra in ([], ["--dry-run"]):
        r = run(["cluster", "create", *args, *extra])
        assert r.exit_code == ExitCode.USAGE, r.stderr
        assert needle in r.stderr
    assert calls == []
    assert dsql.list_clusters()["clusters"] == []


@pytest.mark.parametrize(("args", "needle"), [
    (["--peer", PEER_E1], "is in the cluster's own Region (us-east-1)"),
    (["--witness-region", "us-east-2", "--peer", PEER_E2], "witness Region us-east-2 is the Region of peer"),
    (["--witness-region", "us-east-1"], "must differ from the cluster's Region"),
])
def test_update_refuses_impossible_multi_region_before_any_call(run, calls, args, needle):
    c = create(run, "--witness-region", "us-west-2", "--peer", PEER_E2)
    calls.clear()
    for extra in ([], ["--dry-run"]):
        r = run(["cluster", "update", c["id"], *args, *extra])
        assert r.exit_code == ExitCode.USAGE, r.stderr
        assert needle in r.stderr
    assert calls == []


def test_update_checks_the_merged_witness_against_new_peers(run, calls):
    """The witness kept from GetCluster (us-west-2) may not be the Region of a newly named peer."""
    c = create(run, "--witness-region", "us-west-2", "--peer", PEER_E2)
    calls.clear()
    peer_w2 = "arn:aws:dsql:us-west-2:123456789012:cluster/cdefghijklmnopqrstuvwxyzab"
    r = run(["cluster", "update", c["id"], "--peer", peer_w2])
    assert r.exit_code == ExitCode.USAGE and "witness Region us-west-2 is the Region of peer" in r.stderr
    assert calls == ["GetCluster"]  # read to learn the witness; UpdateCluster never sent


# --------------------------------------------------------------------------- one plan (two Regions on moto)


@pytest.fixture()
def wire(monkeypatch) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(Region, operation) of every DSQL request sent, in order."""
    seen: list[tuple[str, str]] = []
    orig = AwsContext.dsql

    def dsql(self: AwsContext, region: str | None = None) -> Any:
        client = orig(self, region)
        r = client.meta.region_name
        client.meta.events.register_first("before-send.dsql", lambda request, event_name, **_: seen.append(
            (r, event_name.rsplit(".", 1)[-1])))
        return client

    monkeypatch.setattr(AwsContext, "dsql", dsql)
    return seen


PAIR = ["cluster", "create", "--peer-region", "us-east-2", "--witness-region", "us-west-2", "--tag", "app=pay",
        "--no-deletion-protection"]


def _ids(dsql_clients: dict[str, Any]) -> dict[str, list[str]]:
    return {r: [c["identifier"] for c in cl.list_clusters()["clusters"]] for r, cl in dsql_clients.items()}


@pytest.fixture()
def regions(aws: None) -> dict[str, Any]:
    import boto3

    return {r: boto3.client("dsql", region_name=r) for r in ("us-east-1", "us-east-2")}


def test_pair_dry_run_prints_every_call_in_order_and_calls_nothing(run, wire, regions):
    r = run(["-o", "json", *PAIR, "--dry-run", "--wait"])
    assert r.exit_code == 0, r.stderr
    plan = r.json()["plan"]
    assert [(s["step"], s["region"], s["operation"]) for s in plan] == [
        (1, "us-east-1", "CreateCluster"), (2, "us-east-2", "CreateCluster"), (3, "us-east-1", "GetCluster"),
        (4, "us-east-1", "UpdateCluster"), (5, "us-east-1", "GetCluster"), (6, "us-east-2", "GetCluster")]
    assert plan[0]["params"]["multiRegionProperties"] == {"witnessRegion": "us-west-2"}
    assert plan[0]["params"]["clientToken"].startswith("dsqlops-v1-")
    assert plan[1]["params"]["multiRegionProperties"] == {"witnessRegion": "us-west-2",
                                                          "clusters": ["<ARN of cluster 1>"]}
    assert plan[3]["params"]["multiRegionProperties"]["clusters"] == ["<ARN of cluster 2>"]
    assert wire == [] and _ids(regions) == {"us-east-1": [], "us-east-2": []}


def test_pair_is_created_and_peered_both_ways_and_a_rerun_changes_nothing(run, wire, regions):
    r = run(["-o", "json", *PAIR, "--wait", "--interval", "0.01"])
    assert r.exit_code == 0, r.stderr
    c1, c2 = r.json()
    assert (c1["region"], c2["region"]) == ("us-east-1", "us-east-2")
    assert c1["peers"] == [c2["arn"]] and c2["peers"] == [c1["arn"]]
    assert c1["witness_region"] == c2["witness_region"] == "us-west-2"
    assert c1["status"] == c2["status"] == "ACTIVE" and c1["tags"] == c2["tags"] == {"app": "pay"}
    assert [op for _r, op in wire].count("UpdateCluster") == 1
    wire.clear()
    r2 = run(["-o", "json", *PAIR])  # the cron re-run
    assert r2.exit_code == 0, r2.stderr
    assert [c["id"] for c in r2.json()] == [c1["id"], c2["id"]]
    assert "UpdateCluster" not in [op for _r, op in wire] and "already lists cluster 2" in r2.stderr
    assert _ids(regions) == {"us-east-1": [c1["id"]], "us-east-2": [c2["id"]]}


@pytest.mark.parametrize("fail_at", ["second create", "peering update"])
def test_pair_rerun_after_a_failure_resumes_where_it_stopped(run, monkeypatch, regions, fail_at):
    import json as _json

    from botocore.awsrequest import AWSResponse

    from tests.control.test_retries import _Raw

    orig = AwsContext.dsql
    broken = {"on": True}

    def denied(request: Any, event_name: str, **_: Any) -> Any:
        op = event_name.rsplit(".", 1)[-1]
        target = ("us-east-2", "CreateCluster") if fail_at == "second create" else ("us-east-1", "UpdateCluster")
        if not broken["on"] or (request.url.split("//")[1].split(".")[1], op) != target:
            return None
        return AWSResponse(request.url, 403, {"x-amzn-ErrorType": "AccessDeniedException",
                                              "Content-Type": "application/json"},
                           _Raw(_json.dumps({"message": "not allowed"}).encode()))

    def dsql(self: AwsContext, region: str | None = None) -> Any:
        client = orig(self, region)
        client.meta.events.register_first("before-send.dsql", denied)
        return client

    monkeypatch.setattr(AwsContext, "dsql", dsql)
    r = run(["-o", "json", *PAIR])
    assert r.exit_code == ExitCode.SERVICE and "AccessDeniedException" in r.stderr
    first = _ids(regions)
    assert len(first["us-east-1"]) == 1
    broken["on"] = False
    r = run(["-o", "json", *PAIR])
    assert r.exit_code == 0, r.stderr
    c1, c2 = r.json()
    assert c1["id"] == first["us-east-1"][0]  # the first run's cluster, not a second one
    if first["us-east-2"]:
        assert c2["id"] == first["us-east-2"][0]
    assert c1["peers"] == [c2["arn"]] and c2["peers"] == [c1["arn"]]
    assert _ids(regions) == {"us-east-1": [c1["id"]], "us-east-2": [c2["id"]]}


@pytest.mark.parametrize(("args", "needle"), [
    (["--peer-region", "us-east-1", "--witness-region", "us-west-2"], "is the cluster's own Region"),
    (["--peer-region", "us-east-2", "--witness-region", "us-east-2"], "must differ from both cluster Regions"),
    (["--peer-region", "us-east-2"], "needs --witness-region"),
    (["--peer-region", "us-east-2", "--witness-region", "us-west-2", "--peer", PEER_E2], "--peer cannot be combined"),
    (["--peer-region", "us-east-2", "--witness-region", "us-west-2", "--kms-key", "alias/k"], "--kms-key cannot"),
])
def test_pair_bad_regions_refused_before_any_call(run, wire, args, needle):
    r = run(["cluster", "create", *args])
    assert r.exit_code == ExitCode.USAGE and needle in r.stderr
    assert wire == []


def _pair(run, *extra: str) -> tuple[dict[str, Any], dict[str, Any]]:  # type: ignore[no-untyped-def]
    r = run(["-o", "json", "cluster", "create", "--peer-region", "us-east-2", "--witness-region", "us-west-2",
             *extra])
    assert r.exit_code == 0, r.stderr
    c1, c2 = r.json()
    return c1, c2


def test_delete_with_peers_checks_every_member_first(run, wire, regions):
    c1, c2 = _pair(run)  # protected (the default)
    wire.clear()
    r = run(["cluster", "delete", c1["endpoint"], "--with-peers", "--yes"])
    assert r.exit_code == ExitCode.USAGE and "nothing was deleted" in r.stderr
    assert c1["endpoint"] in r.stderr and c2["endpoint"] in r.stderr
    assert [op for _r, op in wire] == ["GetCluster", "GetCluster"]
    r = run(["-o", "json", "cluster", "delete", c1["endpoint"], "--with-peers", "--disable-deletion-protection",
             "--dry-run"])
    assert [(s["region"], s["operation"]) for s in r.json()["plan"]] == [
        ("us-east-1", "GetCluster"), ("us-east-2", "GetCluster"),
        ("us-east-1", "UpdateCluster"), ("us-east-1", "DeleteCluster"),
        ("us-east-2", "UpdateCluster"), ("us-east-2", "DeleteCluster")]
    r = run(["-o", "json", "cluster", "delete", c1["endpoint"], "--with-peers", "--disable-deletion-protection",
             "--yes", "--wait", "--interval", "0.01"])
    assert r.exit_code == 0, r.stderr
    assert [(x["region"], x["id"], x["status"]) for x in r.json()] == [
        ("us-east-1", c1["id"], "DELETED"), ("us-east-2", c2["id"], "DELETED")]
    assert _ids(regions) == {"us-east-1": [], "us-east-2": []}


def test_plain_delete_of_a_peered_cluster_explains(run, regions):
    c1, c2 = _pair(run, "--no-deletion-protection")
    r = run(["-o", "json", "cluster", "delete", c1["id"], "--yes"])
    assert r.exit_code == 0, r.stderr
    assert r.json()["peers"] == [c2["arn"]]
    assert f"is peered with {c2['arn']}" in r.stderr and "--with-peers" in r.stderr


def test_update_of_the_witness_alone_keeps_peers_the_service_lists_with_the_cluster_itself():
    """DSQL lists a cluster among its own multiRegionProperties.clusters: filled from the cluster as
    it is, that entry is not a peer "in the cluster's own Region"."""
    from dsqlops.control.clusters import Cluster, UpdateRequest, update_params
    from dsqlops.errors import UsageError

    own = "arn:aws:dsql:us-east-1:123456789012:cluster/cdefghijklmnopqrstuvwxyzab"
    current = Cluster(id="cdefghijklmnopqrstuvwxyzab", arn=own, region="us-east-1", status="ACTIVE",
                      endpoint="e", witness_region="us-west-2", peers=[own, PEER_E2])
    params = update_params(UpdateRequest(cluster_id=current.id, witness_region="us-west-1"), current,
                           region="us-east-1")
    assert params["multiRegionProperties"] == {"clusters": sorted([own, PEER_E2]), "witnessRegion": "us-west-1"}
    with pytest.raises(UsageError, match="own Region"):  # named by the user, the same ARN is still refused
        update_params(UpdateRequest(cluster_id=current.id, peers=(own,)), current, region="us-east-1")
