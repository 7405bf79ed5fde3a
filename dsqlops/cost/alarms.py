"""CloudWatch budget alarms for DSQL clusters: one alarm per cluster on the monthly dollar rate.

``<prefix><cluster>-monthly-usd`` is a metric-math alarm over DPU and storage **together**, so DPU
at 60 % of the budget plus storage at 50 % fires (two alarms that each used the whole budget fired
nothing). Per day (Period 86,400 s):

* ``dpu``: TotalDPU, Sum (a day's DPU); missing days (an idle cluster publishes nothing) are 0.
* ``bytes``: ClusterStorageSize, Average; a missing day repeats the last size (storage is billed
  while idle).
* ``dpu_usd`` = max(0, dpu × D − free DPU) × price per DPU — the month's DPU at this day's rate.
* ``storage_usd`` = max(0, bytes / bytes per unit − free GB-month) × price per GB-month.
* ``usd_per_month`` = dpu_usd + storage_usd, alarmed above the budget.

D is the real number of days of the month the alarm is created in (28-31), written into the
expression; creating the alarm again (PutMetricAlarm replaces it) updates it for a new month. The
free tier (from the price table) is subtracted unless ``free_tier=False``; it is the account's, so
with several clusters per account each alarm assumes the whole allowance (at most its dollar value
too optimistic). CloudWatch evaluates the math; moto does not, so the tests check the request and
evaluate the expression themselves.

dsqlops only lists and deletes alarms whose name starts with :data:`PREFIX` (and tags them
``dsqlops:managed=budget``), so hand-made alarms are never touched.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from dsqlops.cost.metrics import NAMESPACE, call_with_backoff
from dsqlops.cost.pricing import RegionPrice
from dsqlops.errors import UsageError

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

PREFIX = "dsqlops-budget-"
TAG_KEY = "dsqlops:managed"
TAG_VALUE = "budget"
PERIOD = 86400


def _num(v: Decimal | int) -> str:
    """A plain decimal for an expression: no exponent, no trailing zeros."""
    d = Decimal(v)
    return format(d.normalize(), "f") if d else "0"


def days_in_month(t: dt.datetime) -> int:
    from dsqlops.cost.timewin import month_start, next_month

    return (next_month(t) - month_start(t)).days


def expressions(price: RegionPrice, days: int, *, free_tier: bool = True) -> dict[str, str]:
    """The metric-math expressions (by query id) of the monthly-dollar alarm."""
    free_dpu = price.free_tier_dpu if free_tier else Decimal(0)
    free_gb = price.free_tier_storage_gb_month if free_tier else Decimal(0)
    per_dpu = _num(price.dpu_usd_per_million / Decimal(1_000_000))
    month_dpu = f"FILL(dpu, 0) * {days}"
    size = f"FILL(bytes, REPEAT) / {_num(price.bytes_per_unit)}"
    return {
        "dpu_usd": f"IF({month_dpu} > {_num(free_dpu)}, ({month_dpu} - {_num(free_dpu)}) * {per_dpu}, 0)",
        "storage_usd": (f"IF({size} > {_num(free_gb)}, ({size} - {_num(free_gb)}) * "
                        f"{_num(price.storage_usd_per_gb_month)}, 0)"),
        "usd_per_month": "dpu_usd + storage_usd",
    }


def alarm_requests(cluster_id: str, region: str, monthly_usd: Decimal, price: RegionPrice, *,
                   now: dt.datetime, sns_topic: str | None = None, free_tier: bool = True) -> list[dict[str, Any]]:
    """The PutMetricAlarm request for one cluster (pure; ``--dry-run`` prints it)."""
    if monthly_usd <= 0:
        raise UsageError("--monthly-usd must be greater than 0")
    if price.dpu_usd_per_million <= 0 and price.storage_usd_per_gb_month <= 0:
        raise UsageError(f"the price table has zero prices for {region}; cannot convert usage to dollars")
    days = days_in_month(now)
    exprs = expressions(price, days, free_tier=free_tier)
    actions = {"AlarmActions": [sns_topic], "OKActions": [sns_topic]} if sns_topic else {}
    tags = [{"Key": TAG_KEY, "Value": TAG_VALUE}, {"Key": "dsqlops:cluster", "Value": cluster_id}]
    dims = [{"Name": "ClusterId", "Value": cluster_id}]

    def stat(qid: str, metric: str, statistic: str) -> dict[str, Any]:
        return {"Id": qid, "MetricStat": {"Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dims},
                                          "Period": PERIOD, "Stat": statistic}, "ReturnData": False}

    free = (f"minus the free tier ({_num(price.free_tier_dpu)} DPU + {_num(price.free_tier_storage_gb_month)} "
            f"{price.storage_unit}-month)" if free_tier else "no free tier subtracted")
    return [{
        "AlarmName": f"{PREFIX}{cluster_id}-monthly-usd",
        "AlarmDescription": (
            f"dsqlops budget ${_num(monthly_usd)}/month: a day's TotalDPU x {days} days ({now:%Y-%m}) at "
            f"${_num(price.dpu_usd_per_million)}/1M DPU plus the day's ClusterStorageSize at "
            f"${_num(price.storage_usd_per_gb_month)}/{price.storage_unit}-month, {free} ({region}, prices as of "
            f"{price.as_of}). Re-create each month to update the day count."),
        "Metrics": [stat("dpu", "TotalDPU", "Sum"), stat("bytes", "ClusterStorageSize", "Average"),
                    {"Id": "dpu_usd", "Expression": exprs["dpu_usd"], "Label": "DPU $/month", "ReturnData": False},
                    {"Id": "storage_usd", "Expression": exprs["storage_usd"], "Label": "storage $/month",
                     "ReturnData": False},
                    {"Id": "usd_per_month", "Expression": exprs["usd_per_month"],
                     "Label": "DSQL $/month at this day's rate", "ReturnData": True}],
        "EvaluationPeriods": 1, "DatapointsToAlarm": 1, "Threshold": float(monthly_usd),
        "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching", "Tags": tags, **actions,
    }]


def create(cw: CloudWatchClient, requests: list[dict[str, Any]]) -> list[str]:
    for req in requests:
        call_with_backoff(lambda req=req: cw.put_metric_alarm(**req), what="PutMetricAlarm")  # type: ignore[misc]
    return [r["AlarmName"] for r in requests]


def _watched(a: dict[str, Any]) -> str | None:
    if a.get("MetricName"):
        return str(a["MetricName"])
    names = [q["MetricStat"]["Metric"]["MetricName"] for q in a.get("Metrics", []) if q.get("MetricStat")]
    return " + ".join(names) + " (metric math)" if names else None


def _cluster(a: dict[str, Any]) -> str | None:
    dims = {d["Name"]: d["Value"] for d in a.get("Dimensions", [])}
    for q in a.get("Metrics", []):
        if not dims and q.get("MetricStat"):
            dims = {d["Name"]: d["Value"] for d in q["MetricStat"]["Metric"].get("Dimensions", [])}
    return dims.get("ClusterId")


def list_alarms(cw: CloudWatchClient, cluster_id: str | None = None) -> list[dict[str, Any]]:
    prefix = PREFIX + (cluster_id or "")
    out: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        req: dict[str, Any] = {"AlarmNamePrefix": prefix, "AlarmTypes": ["MetricAlarm"]}
        if token:
            req["NextToken"] = token
        resp = call_with_backoff(lambda req=req: cw.describe_alarms(**req), what="DescribeAlarms")  # type: ignore[misc]
        for a in resp.get("MetricAlarms", []):
            out.append({"name": a["AlarmName"], "cluster_id": _cluster(a), "metric": _watched(a),
                        "statistic": a.get("Statistic"), "period": a.get("Period"), "threshold": a.get("Threshold"),
                        "state": a.get("StateValue"), "actions": a.get("AlarmActions", [])})
        token = resp.get("NextToken")
        if not token:
            return out


def delete(cw: CloudWatchClient, names: list[str]) -> list[str]:
    bad = [n for n in names if not n.startswith(PREFIX)]
    if bad:
        raise UsageError(f"not a dsqlops budget alarm (name must start with {PREFIX!r}): {', '.join(bad)}")
    for i in range(0, len(names), 100):
        chunk = names[i:i + 100]
        call_with_backoff(lambda chunk=chunk: cw.delete_alarms(AlarmNames=chunk), what="DeleteAlarms")  # type: ignore[misc]
    return names
