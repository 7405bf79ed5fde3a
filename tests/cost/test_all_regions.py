"""`cost --all-regions`: every cluster in every Region of the price table, the Regions in parallel
(bounded), one table; a Region that fails is named with why, the rest is still priced, exit 5
(moto, three Regions; the failures are injected with ``before-send`` hooks)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import yaml
from botocore.awsrequest import AWSResponse

from dsqlops.aws import AwsContext
from dsqlops.cost import pricing as P
from dsqlops.errors import ExitCode, ServiceError
from tests.clirun import invoke
from tests.overlap import Overlap

from .cwstub import _Raw
from .cwstub import response as cw_response

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 20, tzinfo=UTC)
REGIONS = ("us-east-1", "us-east-2", "us-west-2")


@pytest.fixture()
def fleet(monkeypatch, isolated_config, tmp_path):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("MOTO_ALLOW_NONEXISTENT_REGION", "true")  # moto's DSQL knows only two Regions
    monkeypatch.setattr("dsqlops.cost.timewin.utcnow", lambda: NOW)
    data = yaml.safe_load(P.shipped_path().read_text())
    data["regions"] = {r: data["regions"][r] for r in REGIONS}
    prices = tmp_path / "prices.yaml"
    prices.write_text(yaml.safe_dump(data))
    with mock_aws():
        ids = {}
        for n, r in enumerate(REGIONS):
            ids[r] = boto3.client("dsql", r).create_cluster(deletionProtectionEnabled=False)["identifier"]
            boto3.client("cloudwatch", r).put_metric_data(Namespace="AWS/AuroraDSQL", MetricData=[
                {"MetricName": "TotalDPU", "Dimensions": [{"Name": "ClusterId", "Value": ids[r]}],
                 "Timestamp": dt.datetime(2026, 11, 2, 12, tzinfo=UTC), "Value": 1_000_000.0 * (n + 1)}])
        yield {"ids": ids, "prices": str(prices)}


def run(*args: str) -> Any:
    return invoke(args)


def _answer(service: str, region: str, monkeypatch, respond) -> list[str]:  # type: ignore[no-untyped-def]
    """Every request of ``service`` to ``region`` gets ``respond(request)`` (None: let it through)."""
    seen: list[str] = []
    orig = AwsContext.client

    def hook(request: Any, **_kw: Any) -> AWSResponse | None:
        seen.append(request.url)
        return respond(request)

    def client(self: AwsContext, svc: str, r: str | None = None, **extra: Any) -> Any:
        c = orig(self, svc, r, **extra)
        if svc == service and (r or self.region) == region:
            c.meta.events.register_first(f"before-send.{service}", hook)
        return c

    monkeypatch.setattr(AwsContext, "client", client)
    return seen


def _denied(request: Any) -> AWSResponse:
    body = json.dumps({"message": "User is not authorized to perform: dsql:ListClusters"}).encode()
    return AWSResponse(request.url, 403, {"x-amzn-ErrorType": "AccessDeniedException",
                                          "Content-Type": "application/json"}, _Raw(body))


def test_every_region_in_one_table(fleet):
    r = run("-o", "json", "cost", "--all-regions", "--pricing-file", fleet["prices"])
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert {(c["region"], c["cluster_id"]) for c in d["clusters"]} == {(g, fleet["ids"][g]) for g in REGIONS}
    assert d["failed_regions"] == []
    assert d["totals"]["billed_dpu"] == "6000000"
    r = run("cost", "--all-regions", "--pricing-file", fleet["prices"])
    assert r.exit_code == 0, r.stderr
    assert all(f"{fleet['ids'][g]}  {g}" in r.stdout for g in REGIONS)


def test_a_region_denied_is_named_and_the_rest_still_answers_exit_5(fleet, monkeypatch):
    seen = _answer("dsql", "us-east-2", monkeypatch, _denied)
    r = run("-o", "json", "cost", "--all-regions", "--pricing-file", fleet["prices"])
    assert r.exit_code == ExitCode.INCOMPLETE, r.stderr
    d = json.loads(r.stdout)
    assert {c["region"] for c in d["clusters"]} == {"us-east-1", "us-west-2"}
    (failed,) = d["failed_regions"]
    assert failed["region"] == "us-east-2" and "AccessDeniedException" in failed["error"]
    assert d["totals"]["billed_dpu"] == "4000000"  # 1M + 3M: the failed region is left out, not priced at $0
    assert "region us-east-2 left out: " in r.stderr
    assert "1 region(s) could not be covered (us-east-2)" in r.stderr
    assert seen  # the hook answered for us-east-2
    r = run("cost", "--all-regions", "--pricing-file", fleet["prices"])  # the table still shows the others
    assert r.exit_code == ExitCode.INCOMPLETE and fleet["ids"]["us-west-2"] in r.stdout


def test_a_region_throttled_past_the_retries_is_named(fleet, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setattr("botocore.endpoint.time.sleep", lambda _s: None)

    def throttle(request: Any) -> AWSResponse | None:
        if b"GetMetricData" not in (request.headers.get("X-Amz-Target") or b"") and b"GetMetricData" not in (
                request.body or b""):
            return None
        return cw_response(400, {"__type": "com.amazonaws.cloudwatch#Throttling", "message": "Rate exceeded"},
                           {"x-amzn-query-error": "Throttling;Sender"})

    seen = _answer("cloudwatch", "us-west-2", monkeypatch, throttle)
    r = run("-o", "json", "cost", "--all-regions", "--pricing-file", fleet["prices"])
    assert r.exit_code == ExitCode.INCOMPLETE, r.stderr
    d = json.loads(r.stdout)
    assert {c["region"] for c in d["clusters"]} == {"us-east-1", "us-east-2"}
    assert [(f["region"], "Throttling" in f["error"]) for f in d["failed_regions"]] == [("us-west-2", True)]
    assert seen


def test_a_region_failing_in_the_storage_lookback_is_named_too(fleet, monkeypatch):
    # The clusters publish no ClusterStorageSize in the window: their last size is looked up before it,
    # in a second, daily GetMetricData. A region that fails there is left out like one failing earlier.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")

    def deny_daily(request: Any) -> AWSResponse | None:
        body = request.body or b""
        if b"GetMetricData" not in (request.headers.get("X-Amz-Target") or b"") or b"86400" not in body:
            return None
        return cw_response(400, {"__type": "com.amazonaws.cloudwatch#AccessDenied", "message": "no"},
                           {"x-amzn-query-error": "AccessDenied;Sender"})

    seen = _answer("cloudwatch", "us-east-2", monkeypatch, deny_daily)
    r = run("-o", "json", "cost", "--all-regions", "--pricing-file", fleet["prices"])
    assert r.exit_code == ExitCode.INCOMPLETE, r.stderr
    d = json.loads(r.stdout)
    assert {c["region"] for c in d["clusters"]} == {"us-east-1", "us-west-2"}
    assert [(f["region"], "AccessDenied" in f["error"]) for f in d["failed_regions"]] == [("us-east-2", True)]
    assert seen


def test_without_all_regions_a_failing_region_still_fails_the_run(fleet, monkeypatch):
    _answer("dsql", "us-east-2", monkeypatch, _denied)
    r = run("cost", "--all", "--region", "us-east-1", "--region", "us-east-2", "--pricing-file", fleet["prices"])
    assert r.exit_code == ExitCode.SERVICE and "AccessDeniedException" in r.stderr


@pytest.mark.parametrize("extra,word", [(["--cluster-id", "a" * 26], "--cluster-id"),
                                        (["--region", "us-east-1"], "--region")])
def test_all_regions_with_a_narrower_scope_is_a_usage_error(fleet, extra, word):
    r = run("cost", "--all-regions", *extra, "--pricing-file", fleet["prices"])
    assert r.exit_code == ExitCode.USAGE and word in r.stderr


def test_regions_are_covered_in_parallel_within_the_bound():
    from dsqlops.aws import per_region

    seen = Overlap(meet=3)

    def task(i: int) -> Any:
        def go() -> int:
            seen.visit()
            if i == 5:
                raise ServiceError("ListClusters: AccessDeniedException: no", code="AccessDeniedException")
            return i
        return go

    failures: dict[Any, str] = {}
    got = per_region({f"r{i}": task(i) for i in range(8)}, workers=3, failures=failures)
    assert seen.max == 3 and seen.calls == 8
    assert got == {f"r{i}": i for i in range(8) if i != 5}
    assert failures == {"r5": "ListClusters: AccessDeniedException: no"}
    with pytest.raises(ServiceError):  # without a place to record it, a failure fails the call
        per_region({f"r{i}": task(i) for i in range(8)}, workers=8)


def test_sts_is_asked_in_the_profiles_own_region_when_covered():
    from dsqlops.cost.collect import Scope, _sts_region

    regions = ["af-south-1", "us-east-1", "us-west-2"]  # name order puts an opt-in Region first
    assert _sts_region(Scope("p", AwsContext(region="us-west-2"), regions)) == "us-west-2"
    assert _sts_region(Scope("p", AwsContext(region="eu-west-1"), regions)) == "af-south-1"
