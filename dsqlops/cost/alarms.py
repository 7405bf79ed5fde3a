"""CloudWatch budget alarms for DSQL clusters (the alarms users build by hand today).

* ``<prefix><cluster>-daily-dpu``: TotalDPU, Sum over 1 day, above the daily share of the monthly
  dollar budget converted to DPU with the cluster's regional price: ``budget / 30 / price × 1e6``.
* ``<prefix><cluster>-storage``: ClusterStorageSize, Maximum over 1 hour, above a size (default:
  80 % of the storage whose monthly cost alone would equal the budget).

dsqlops only lists and deletes alarms whose name starts with :data:`PREFIX` (and tags them
``dsqlops:managed=budget``), so hand-made alarms are never touched.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

from dsqlops.cost.metrics import NAMESPACE, call_with_backoff
from dsqlops.cost.pricing import RegionPrice
from dsqlops.errors import UsageError

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

PREFIX = "dsqlops-budget-"
TAG_KEY = "dsqlops:managed"
TAG_VALUE = "budget"
DAYS_PER_MONTH = Decimal(30)
STORAGE_SHARE = Decimal("0.8")


def alarm_requests(cluster_id: str, region: str, monthly_usd: Decimal, price: RegionPrice, *,
                   sns_topic: str | None = None, storage_gb: Decimal | None = None) -> list[dict[str, Any]]:
    """The PutMetricAlarm requests for one cluster (pure; ``--dry-run`` prints these)."""
    if monthly_usd <= 0:
        raise UsageError("--monthly-usd must be greater than 0")
    if price.dpu_usd_per_million <= 0:
        raise UsageError(f"the price table has a zero DPU price for {region}; cannot convert dollars to DPU")
    daily_usd = monthly_usd / DAYS_PER_MONTH
    dpu = (daily_usd / price.dpu_usd_per_million * Decimal(1_000_000)).quantize(Decimal(1), rounding=ROUND_DOWN)
    if storage_gb is None:
        if price.storage_usd_per_gb_month <= 0:
            raise UsageError(f"the price table has a zero storage price for {region}; pass --storage-gb")
        storage_gb = (monthly_usd / price.storage_usd_per_gb_month * STORAGE_SHARE).quantize(Decimal("0.01"))
    storage_bytes = (storage_gb * price.bytes_per_unit).quantize(Decimal(1), rounding=ROUND_DOWN)
    actions = {"AlarmActions": [sns_topic], "OKActions": [sns_topic]} if sns_topic else {}
    tags = [{"Key": TAG_KEY, "Value": TAG_VALUE}, {"Key": "dsqlops:cluster", "Value": cluster_id}]
    dims = [{"Name": "ClusterId", "Value": cluster_id}]
    return [
        {"AlarmName": f"{PREFIX}{cluster_id}-daily-dpu",
         "AlarmDescription": (f"dsqlops budget: TotalDPU per day above {dpu} DPU = ${monthly_usd}/month / "
                              f"{DAYS_PER_MONTH} days at ${price.dpu_usd_per_million}/1M DPU ({region}, "
                              f"prices as of {price.as_of})"),
         "Namespace": NAMESPACE, "MetricName": "TotalDPU", "Dimensions": dims, "Statistic": "Sum",
         "Period": 86400, "EvaluationPeriods": 1, "DatapointsToAlarm": 1, "Threshold": float(dpu),
         "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching", "Tags": tags, **actions},
        {"AlarmName": f"{PREFIX}{cluster_id}-storage",
         "AlarmDescription": (f"dsqlops budget: ClusterStorageSize above {storage_gb} {price.storage_unit} "
                              f"(${price.storage_usd_per_gb_month}/{price.storage_unit}-month in {region})"),
         "Namespace": NAMESPACE, "MetricName": "ClusterStorageSize", "Dimensions": dims, "Statistic": "Maximum",
         "Period": 3600, "EvaluationPeriods": 1, "DatapointsToAlarm": 1, "Threshold": float(storage_bytes),
         "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching", "Tags": tags, **actions},
    ]


def create(cw: CloudWatchClient, requests: list[dict[str, Any]]) -> list[str]:
    for req in requests:
        call_with_backoff(lambda req=req: cw.put_metric_alarm(**req), what="PutMetricAlarm")  # type: ignore[misc]
    return [r["AlarmName"] for r in requests]


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
            dims = {d["Name"]: d["Value"] for d in a.get("Dimensions", [])}
            out.append({"name": a["AlarmName"], "cluster_id": dims.get("ClusterId"), "metric": a.get("MetricName"),
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
