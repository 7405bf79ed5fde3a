"""`dsqlops cost` when CloudWatch throttles: botocore's retries (the configured attempts) and no
others. Throttling answers are injected at botocore's ``before-send`` in CloudWatch's
query-compatible form; what gets through is answered by moto."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from dsqlops.aws import AwsContext
from tests.clirun import invoke

from .cwstub import response

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 20, tzinfo=UTC)


class Throttle:
    def __init__(self, n: int):
        self.n, self.sends = n, 0

    def __call__(self, request: Any, **_kw: Any) -> Any:
        self.sends += 1
        if self.sends > self.n:
            return None
        return response(400, {"__type": "com.amazonaws.cloudwatch#Throttling", "message": "Rate exceeded"},
                        {"x-amzn-query-error": "Throttling;Sender"})


@pytest.fixture()
def world(monkeypatch, isolated_config):  # type: ignore[no-untyped-def]
    import boto3
    from moto import mock_aws

    for var in ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "DSQLOPS_MAX_ATTEMPTS", "DSQLOPS_RETRY_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr("dsqlops.cost.timewin.utcnow", lambda: NOW)
    monkeypatch.setattr("time.sleep", lambda s: None)
    with mock_aws():
        cid = boto3.client("dsql", "us-east-1").create_cluster(deletionProtectionEnabled=False)["identifier"]
        boto3.client("cloudwatch", "us-east-1").put_metric_data(Namespace="AWS/AuroraDSQL", MetricData=[
            {"MetricName": "TotalDPU", "Dimensions": [{"Name": "ClusterId", "Value": cid}],
             "Timestamp": dt.datetime(2026, 11, 2, 12, tzinfo=UTC), "Value": 500_000.0}])
        yield cid


def _throttle_cloudwatch(monkeypatch, n: int) -> Throttle:  # type: ignore[no-untyped-def]
    t = Throttle(n)
    orig = AwsContext.cloudwatch

    def cloudwatch(self: AwsContext, region: str | None = None) -> Any:
        client = orig(self, region)
        client.meta.events.register_first("before-send.cloudwatch.GetMetricData", t)
        return client

    monkeypatch.setattr(AwsContext, "cloudwatch", cloudwatch)
    return t


def test_f4_get_metric_data_throttled_twice_cost_is_still_right(world, monkeypatch):
    t = _throttle_cloudwatch(monkeypatch, 2)
    r = invoke(["-o", "json", "cost", "--cluster-id", world, "--region", "us-east-1"])
    assert r.exit_code == 0, r.stderr
    (c,) = json.loads(r.stdout)["clusters"]
    assert c["billed_dpu"] == "500000"
    assert t.sends >= 3  # two throttled attempts, then the answer


def test_f4_throttling_past_the_configured_attempts_fails_without_more_tries(world, monkeypatch):
    t = _throttle_cloudwatch(monkeypatch, 10_000)
    r = invoke(["cost", "--cluster-id", world, "--region", "us-east-1"], env={"AWS_MAX_ATTEMPTS": "3"})
    assert r.exit_code == 254, r.stderr
    assert "Throttling" in r.stderr
    assert t.sends == 3
