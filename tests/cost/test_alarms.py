"""Budget alarms: one metric-math alarm over DPU and storage together, in dollars per month.

moto stores metric-math alarms but does not evaluate them, so the request is checked exactly
(botocore Stubber) and the expressions are evaluated here, the way CloudWatch does per period.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal as D

import pytest

from dsqlops.cost import alarms
from tests.cost.test_model import PRICES

UTC = dt.UTC
NOV = dt.datetime(2026, 11, 20, tzinfo=UTC)  # a 30-day month
A = "a" * 26
USE1 = PRICES.regions["us-east-1"]  # $8 / 1M DPU, $0.33 / GB-month, free 100,000 DPU + 1 GB-month


def evaluate(exprs: dict[str, str], dpu: float | None, size: float | None, last_size: float = 0.0) -> float:
    """Evaluate our expressions for one period: FILL(dpu, 0) and FILL(bytes, REPEAT) as CloudWatch does,
    IF(c, a, b) as a conditional, the rest as arithmetic."""
    env = {"dpu_v": 0.0 if dpu is None else dpu, "bytes_v": last_size if size is None else size}

    def py(e: str) -> str:
        e = e.replace("FILL(dpu, 0)", "dpu_v").replace("FILL(bytes, REPEAT)", "bytes_v")
        return re.sub(r"\bIF\(", "_if(", e)

    scope = {"_if": lambda c, a, b: a if c else b, **env}
    scope["dpu_usd"] = eval(py(exprs["dpu_usd"]), {}, scope)  # our own fixed expressions, never input
    scope["storage_usd"] = eval(py(exprs["storage_usd"]), {}, scope)
    return float(eval(py(exprs["usd_per_month"]), {}, scope))


def test_dpu_and_storage_below_their_own_budgets_fire_together():
    # Budget $240/month. DPU at "100 %" alone: 1,000,000 DPU/day over 30 days = 30M DPU = $240 minus the
    # free 100,000 ($0.80) = $239.20. Storage at "79 %": 0.79 × 240 / 0.33 = 574.545… GB → $189.60 − $0.33.
    # Each alone stays under $240; together $428.47 is above it.
    exprs = alarms.expressions(USE1, 30)
    gb = 0.79 * 240 / 0.33
    assert evaluate(exprs, 1_000_000, 0) == pytest.approx(239.20)
    assert evaluate(exprs, 0, gb * 1e9) == pytest.approx(189.60 - 0.33)
    assert evaluate(exprs, 1_000_000, gb * 1e9) == pytest.approx(239.20 + 189.27)
    assert evaluate(exprs, 1_000_000, gb * 1e9) > 240


def test_free_tier_is_subtracted_never_below_zero_and_idle_days_keep_the_storage():
    exprs = alarms.expressions(USE1, 30)
    assert evaluate(exprs, 1000, 10**8) == 0  # 30,000 DPU and 0.1 GB: inside the free tier, not negative
    # An idle day (no datapoint of either metric): no DPU, the last size repeats: 11 GB → 10 × $0.33.
    assert evaluate(exprs, None, None, last_size=11e9) == pytest.approx(3.30)
    no_free = alarms.expressions(USE1, 30, free_tier=False)
    assert evaluate(no_free, 1000, 10**8) == pytest.approx(30_000 * 8e-6 + 0.1 * 0.33)


def test_the_real_days_of_the_month_are_used():
    assert alarms.days_in_month(dt.datetime(2028, 2, 10, tzinfo=UTC)) == 29
    assert alarms.days_in_month(dt.datetime(2026, 10, 31, tzinfo=UTC)) == 31
    # 1,000,000 DPU a day is $248 (− $0.80 free) in a 31-day month but $224 (− $0.80) in February 2027.
    assert evaluate(alarms.expressions(USE1, 31), 1_000_000, 0) == pytest.approx(247.20)
    assert evaluate(alarms.expressions(USE1, 28), 1_000_000, 0) == pytest.approx(223.20)


def test_put_metric_alarm_request_is_exactly_the_intended_one():
    import boto3
    from botocore.stub import Stubber

    reqs = alarms.alarm_requests(A, "us-east-1", D(240), USE1, now=NOV,
                                 sns_topic="arn:aws:sns:us-east-1:123456789012:ops")
    assert len(reqs) == 1
    dims = [{"Name": "ClusterId", "Value": A}]
    expected = {
        "AlarmName": f"dsqlops-budget-{A}-monthly-usd",
        "AlarmDescription": reqs[0]["AlarmDescription"],
        "Metrics": [
            {"Id": "dpu", "MetricStat": {"Metric": {"Namespace": "AWS/AuroraDSQL", "MetricName": "TotalDPU",
                                                    "Dimensions": dims}, "Period": 86400, "Stat": "Sum"},
             "ReturnData": False},
            {"Id": "bytes", "MetricStat": {"Metric": {"Namespace": "AWS/AuroraDSQL", "MetricName": "ClusterStorageSize",
                                                      "Dimensions": dims}, "Period": 86400, "Stat": "Average"},
             "ReturnData": False},
            {"Id": "dpu_usd",
             "Expression": "IF(FILL(dpu, 0) * 30 > 100000, (FILL(dpu, 0) * 30 - 100000) * 0.000008, 0)",
             "Label": "DPU $/month", "ReturnData": False},
            {"Id": "storage_usd", "Expression": "IF(FILL(bytes, REPEAT) / 1000000000 > 1, "
                                                "(FILL(bytes, REPEAT) / 1000000000 - 1) * 0.33, 0)",
             "Label": "storage $/month", "ReturnData": False},
            {"Id": "usd_per_month", "Expression": "dpu_usd + storage_usd", "Label": "DSQL $/month at this day's rate",
             "ReturnData": True},
        ],
        "EvaluationPeriods": 1, "DatapointsToAlarm": 1, "Threshold": 240.0,
        "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
        "Tags": [{"Key": "dsqlops:managed", "Value": "budget"}, {"Key": "dsqlops:cluster", "Value": A}],
        "AlarmActions": ["arn:aws:sns:us-east-1:123456789012:ops"],
        "OKActions": ["arn:aws:sns:us-east-1:123456789012:ops"],
    }
    assert "30 days (2026-11)" in reqs[0]["AlarmDescription"] and "$240/month" in reqs[0]["AlarmDescription"]
    cw = boto3.client("cloudwatch", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    with Stubber(cw) as stub:
        stub.add_response("put_metric_alarm", {}, expected)
        assert alarms.create(cw, reqs) == [f"dsqlops-budget-{A}-monthly-usd"]
        stub.assert_no_pending_responses()
