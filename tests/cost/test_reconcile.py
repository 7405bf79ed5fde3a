"""`cost reconcile --month`: our estimate against Cost Explorer's GetCostAndUsage, by usage type.

moto has no real Cost Explorer, so Cost Explorer is a botocore ``Stubber`` answering in its real
response shape (ResultsByTime → Groups → Keys/Metrics{Amount, Unit}, NextPageToken), checked by
botocore against the service model; our side is moto's DSQL and CloudWatch.

Hand computation, October 2026 (closed; "now" is 2026-11-20), us-east-1 at $8.00/1M DPU and
$0.33/GB-month, free tier 100,000 DPU + 1 GB-month:
* DPU: 1,100,000 → $8.80 − $0.80 free = **$8.00**; billed $7.50 → +$0.50, +6.7 %.
* Storage: 2e9 bytes from Oct 1 00:00, carried over the 744 hours → 2 GB-month → $0.66 − $0.33 free
  = **$0.33**; billed $0.33 → $0.00, 0.0 %.
* Total $8.33 vs $7.83 → +$0.50, +6.4 %.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import yaml
from botocore.stub import Stubber

from dsqlops.aws import AwsContext
from dsqlops.cost import pricing as P
from dsqlops.errors import ExitCode
from tests.clirun import invoke

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 20, tzinfo=UTC)
OCT = dt.datetime(2026, 10, 1, tzinfo=UTC)
DPU_TYPE = "USE1-DistributedProcessingUnits"
STORAGE_TYPE = "USE1-StorageUsage"


@pytest.fixture()
def world(monkeypatch, isolated_config, tmp_path):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setattr("dsqlops.cost.timewin.utcnow", lambda: NOW)
    data = yaml.safe_load(P.shipped_path().read_text())
    data["regions"] = {r: data["regions"][r] for r in ("us-east-1", "us-east-2")}
    prices = tmp_path / "prices.yaml"
    prices.write_text(yaml.safe_dump(data))
    with mock_aws():
        a = boto3.client("dsql", "us-east-1").create_cluster(deletionProtectionEnabled=False)["identifier"]
        boto3.client("cloudwatch", "us-east-1").put_metric_data(Namespace="AWS/AuroraDSQL", MetricData=[
            {"MetricName": "TotalDPU", "Dimensions": [{"Name": "ClusterId", "Value": a}],
             "Timestamp": OCT + dt.timedelta(days=4, hours=12), "Value": 1_100_000.0},
            {"MetricName": "ClusterStorageSize", "Dimensions": [{"Name": "ClusterId", "Value": a}],
             "Timestamp": OCT, "Value": 2e9},
        ])
        yield {"a": a, "prices": str(prices)}


def group(usage_type: str, usd: str, qty: str, unit: str) -> dict[str, Any]:
    return {"Keys": [usage_type], "Metrics": {"UnblendedCost": {"Amount": usd, "Unit": "USD"},
                                              "UsageQuantity": {"Amount": qty, "Unit": unit}}}


def page(groups: list[dict[str, Any]], start: str = "2026-10-01", end: str = "2026-11-01",
         token: str | None = None) -> dict[str, Any]:
    resp: dict[str, Any] = {
        "GroupDefinitions": [{"Type": "DIMENSION", "Key": "USAGE_TYPE"}],
        "ResultsByTime": [{"TimePeriod": {"Start": start, "End": end}, "Total": {}, "Groups": groups,
                           "Estimated": False}],
        "DimensionValueAttributes": [],
    }
    if token:
        resp["NextPageToken"] = token
    return resp


def expected(start: str, end: str, regions: list[str] | None = None, token: str | None = None) -> dict[str, Any]:
    filters: list[dict[str, Any]] = [
        {"Dimensions": {"Key": "SERVICE", "Values": ["Amazon Aurora DSQL"], "MatchOptions": ["EQUALS"]}},
        {"Not": {"Dimensions": {"Key": "RECORD_TYPE", "Values": ["Credit", "Refund"], "MatchOptions": ["EQUALS"]}}},
    ]
    if regions:
        filters.append({"Dimensions": {"Key": "REGION", "Values": regions, "MatchOptions": ["EQUALS"]}})
    params: dict[str, Any] = {"TimePeriod": {"Start": start, "End": end}, "Granularity": "MONTHLY",
                              "Metrics": ["UnblendedCost", "UsageQuantity"],
                              "GroupBy": [{"Type": "DIMENSION", "Key": "USAGE_TYPE"}], "Filter": {"And": filters}}
    if token:
        params["NextPageToken"] = token
    return params


@pytest.fixture()
def ce(monkeypatch):
    """The Cost Explorer client the command gets, with a Stubber on it (checked empty at the end)."""
    client = AwsContext(region="us-east-1").client("ce", "us-east-1")
    stub = Stubber(client)
    monkeypatch.setattr(AwsContext, "ce", lambda self: client)
    with stub:
        yield stub
    stub.assert_no_pending_responses()


def rows_by_usage(stdout: str) -> dict[str, dict[str, Any]]:
    return {r["usage"]: r for r in json.loads(stdout)["rows"]}


def test_a_closed_month_by_usage_type_across_pages(world, ce):
    ce.add_response("get_cost_and_usage", page([group(DPU_TYPE, "7.5", "1100000", "DPU")], token="p2"),
                    expected("2026-10-01", "2026-11-01"))
    ce.add_response("get_cost_and_usage", page([group(STORAGE_TYPE, "0.33", "2", "GB-Mo")]),
                    expected("2026-10-01", "2026-11-01", token="p2"))
    r = invoke(["-o", "json", "cost", "reconcile", "--month", "2026-10", "--pricing-file", world["prices"]])
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["closed"] is True and d["bill_period"] == {"start": "2026-10-01", "end": "2026-11-01"}
    rows = rows_by_usage(r.stdout)
    assert rows["dpu"] == {"usage": "dpu", "usage_types": DPU_TYPE, "estimate_quantity": "1100000",
                           "billed_quantity": "1100000", "unit": "DPU", "estimate_usd": "8.00",
                           "billed_usd": "7.50", "difference_usd": "0.50", "difference_pct": "6.7"}
    assert (rows["storage"]["estimate_quantity"], rows["storage"]["estimate_usd"], rows["storage"]["billed_usd"],
            rows["storage"]["difference_usd"], rows["storage"]["difference_pct"]) == ("2", "0.33", "0.33", "0.00",
                                                                                      "0.0")
    assert (rows["TOTAL"]["estimate_usd"], rows["TOTAL"]["billed_usd"], rows["TOTAL"]["difference_usd"],
            rows["TOTAL"]["difference_pct"]) == ("8.33", "7.83", "0.50", "6.4")
    assert "other" not in rows
    assert [b["usage_type"] for b in d["bill_lines"]] == [DPU_TYPE, STORAGE_TYPE]
    assert d["failed_regions"] == [] and "UnblendedCost" in d["caveat"]


def test_table_and_csv(world, ce):
    for _ in range(2):
        ce.add_response("get_cost_and_usage", page([group(DPU_TYPE, "7.5", "1100000", "DPU"),
                                                    group("USE1-DataTransfer-Out-Bytes", "0.10", "1", "GB")]),
                        expected("2026-10-01", "2026-11-01"))
    r = invoke(["cost", "reconcile", "--month", "2026-10", "--pricing-file", world["prices"]])
    assert r.exit_code == 0, r.stderr
    header = r.stdout.splitlines()[0].split()
    assert header[:3] == ["usage", "estimate_quantity", "billed_quantity"]
    assert any(line.startswith("other") and "0.10" in line for line in r.stdout.splitlines())
    assert "UnblendedCost" in r.stderr
    r = invoke(["-o", "csv", "cost", "reconcile", "--month", "2026-10", "--pricing-file", world["prices"]])
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("usage,estimate_quantity") and lines[-1].startswith("TOTAL,")
    assert "dpu,1100000,1100000,DPU,8.00,7.50,0.50,6.7," in r.stdout


def test_access_denied_names_the_permission(world, ce):
    ce.add_client_error("get_cost_and_usage", service_error_code="AccessDeniedException",
                        service_message="User: arn:aws:iam::123456789012:user/ops is not authorized to perform: "
                        "ce:GetCostAndUsage", http_status_code=400)
    r = invoke(["cost", "reconcile", "--month", "2026-10", "--pricing-file", world["prices"]])
    assert r.exit_code == ExitCode.SERVICE
    assert "AccessDeniedException" in r.stderr and "allow ce:GetCostAndUsage" in r.stderr
    assert r.stdout == ""


def test_a_month_without_dsql_charges(world, ce):
    ce.add_response("get_cost_and_usage", page([]), expected("2026-10-01", "2026-11-01"))
    r = invoke(["-o", "json", "cost", "reconcile", "--month", "2026-10", "--pricing-file", world["prices"]])
    assert r.exit_code == 0, r.stderr
    rows = rows_by_usage(r.stdout)
    assert (rows["dpu"]["estimate_usd"], rows["dpu"]["billed_usd"], rows["dpu"]["difference_usd"],
            rows["dpu"]["difference_pct"]) == ("8.00", "0.00", "8.00", None)
    assert rows["TOTAL"]["billed_usd"] == "0.00"
    assert json.loads(r.stdout)["bill_lines"] == []
    assert "no 'Amazon Aurora DSQL' charges in 2026-10" in r.stderr


@pytest.mark.parametrize("month", ["2026-12", "2027-01"])
def test_a_month_in_the_future_is_refused_before_any_call(world, monkeypatch, month):
    def no_call(self: AwsContext) -> Any:
        raise AssertionError("Cost Explorer was called")

    monkeypatch.setattr(AwsContext, "ce", no_call)
    r = invoke(["cost", "reconcile", "--month", month, "--pricing-file", world["prices"]])
    assert r.exit_code == ExitCode.USAGE and f"month {month} has not begun" in r.stderr


@pytest.mark.parametrize("args", [["--month", "2026-13"], ["--month", "october"], [],
                                  ["--month", "2026-10", "--service-name", " "],
                                  ["--month", "2026-10", "--region", "nowhere"]])
def test_bad_input_is_a_usage_error(world, args):
    r = invoke(["cost", "reconcile", *args, "--pricing-file", world["prices"]])
    assert r.exit_code == ExitCode.USAGE and "Traceback" not in r.stderr


def test_the_current_month_runs_to_tomorrow_and_regions_filter_both_sides(world, ce):
    ce.add_response("get_cost_and_usage", page([group(DPU_TYPE, "0.01", "1000", "DPU")], "2026-11-01", "2026-11-21"),
                    expected("2026-11-01", "2026-11-21", regions=["us-east-1"]))
    r = invoke(["-o", "json", "cost", "reconcile", "--month", "2026-11", "--region", "us-east-1",
                "--pricing-file", world["prices"]])
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["closed"] is False and d["regions"] == ["us-east-1"]
    assert d["bill_period"] == {"start": "2026-11-01", "end": "2026-11-21"}
    assert "2026-11 is not over" in r.stderr
    assert "whole free tier was applied to the clusters of us-east-1" in r.stderr


def test_a_region_our_side_cannot_cover_is_named_after_printing_exit_5(world, ce, monkeypatch):
    from tests.cost.test_all_regions import _answer, _denied

    _answer("dsql", "us-east-2", monkeypatch, _denied)
    ce.add_response("get_cost_and_usage", page([group(DPU_TYPE, "7.5", "1100000", "DPU")]),
                    expected("2026-10-01", "2026-11-01"))
    r = invoke(["-o", "json", "cost", "reconcile", "--month", "2026-10", "--pricing-file", world["prices"]])
    assert r.exit_code == ExitCode.INCOMPLETE, r.stderr
    d = json.loads(r.stdout)
    assert [f["region"] for f in d["failed_regions"]] == ["us-east-2"]
    assert rows_by_usage(r.stdout)["dpu"]["estimate_usd"] == "8.00"  # us-east-1 still estimated
    assert "1 region(s) could not be covered (us-east-2)" in r.stderr
