"""`dsqlops cost`, `metrics`, `report` and `budget` against moto, checked to the cent by hand.

Seeded data (AWS/AuroraDSQL only, so moto's namespace-leak bug in get_metric_data cannot bite),
"now" pinned to 2026-11-20 00:00Z:

* A (us-east-1): TotalDPU 30,000/day at 12:00 on Nov 1..19 = 570,000 DPU (Read 18,000 + Write 9,000 +
  Compute 3,000 a day); ClusterStorageSize 72e9 bytes for the 20 hours Nov 19 04:00..23:00 →
  72 × 20 / 720 = 2 GB-month; TotalTransactions 1,000/day, OccConflicts 10/day → 1 %.
* B (us-east-2): TotalDPU 20,000/day = 380,000 DPU; priced at $10/1M by the test price table.
* C (us-east-1): not a cluster any more (never created in moto); TotalDPU 50,000 on Nov 2.

Month to date (A, B only): A 570,000 × $8/1M = $4.56 + 2 × $0.33 = $0.66; B 380,000 × $10/1M = $3.80.
Free tier 100,000 DPU split 570:380 → A 60,000 ($0.48), B 40,000 ($0.40); 1 GB-month → A ($0.33).
A = 4.56 + 0.66 − 0.48 − 0.33 = $4.41; B = 3.80 − 0.40 = $3.40; total $7.81.
Forecast (rate Nov 13..20, 11 days left): A 570,000 + 11 × 30,000 = 900,000 DPU ($7.20), storage
2 + 72 × 264 / 720 = 28.4 GB-month ($9.372); B 380,000 + 11 × 20,000 = 600,000 ($6.00).
Free split 900:600 → A 60,000 ($0.48) + 1 GB ($0.33); B 40,000 ($0.40).
A = 7.20 + 9.372 − 0.48 − 0.33 = 15.762 → $15.76; B = $5.60; total 21.362 → $21.36.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dsqlops.cli.main import cli, main
from dsqlops.cost import pricing as P

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 20, tzinfo=UTC)
NOV = dt.datetime(2026, 11, 1, tzinfo=UTC)
C_DELETED = "c" * 26


def _put(cw, cluster: str, name: str, points: dict[dt.datetime, float]) -> None:
    data = [{"MetricName": name, "Dimensions": [{"Name": "ClusterId", "Value": cluster}], "Timestamp": t,
             "Value": v} for t, v in points.items()]
    for i in range(0, len(data), 500):
        cw.put_metric_data(Namespace="AWS/AuroraDSQL", MetricData=data[i:i + 500])


@pytest.fixture()
def world(monkeypatch, isolated_config, tmp_path):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setattr("dsqlops.cost.timewin.utcnow", lambda: NOW)
    with mock_aws():
        a = boto3.client("dsql", "us-east-1").create_cluster(deletionProtectionEnabled=False)["identifier"]
        b = boto3.client("dsql", "us-east-2").create_cluster(deletionProtectionEnabled=False)["identifier"]
        cw1 = boto3.client("cloudwatch", "us-east-1")
        cw2 = boto3.client("cloudwatch", "us-east-2")
        days = [NOV + dt.timedelta(days=d, hours=12) for d in range(19)]
        _put(cw1, a, "TotalDPU", dict.fromkeys(days, 30_000.0))
        _put(cw1, a, "ReadDPU", dict.fromkeys(days, 18_000.0))
        _put(cw1, a, "WriteDPU", dict.fromkeys(days, 9_000.0))
        _put(cw1, a, "ComputeDPU", dict.fromkeys(days, 3_000.0))
        _put(cw1, a, "TotalTransactions", dict.fromkeys(days, 1_000.0))
        _put(cw1, a, "OccConflicts", dict.fromkeys(days, 10.0))
        _put(cw1, a, "ClusterStorageSize",
             {dt.datetime(2026, 11, 19, 4, tzinfo=UTC) + dt.timedelta(hours=h): 72e9 for h in range(20)})
        _put(cw2, b, "TotalDPU", dict.fromkeys(days, 20_000.0))
        _put(cw1, C_DELETED, "TotalDPU", {dt.datetime(2026, 11, 2, 5, tzinfo=UTC): 50_000.0})
        data = yaml.safe_load(P.shipped_path().read_text())
        data["regions"]["us-east-2"]["dpu_usd_per_million"] = "10.00"
        prices = tmp_path / "prices.yaml"
        prices.write_text(yaml.safe_dump(data))
        yield {"a": a, "b": b, "prices": str(prices), "cw1": cw1, "tmp": tmp_path}


def run(*args: str):
    r = CliRunner().invoke(cli, list(args))
    return r


def exit_code(*args: str) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return int(e.value.code)


def test_cost_to_the_cent_across_two_regions(world):
    a, b = world["a"], world["b"]
    r = run("-o", "json", "cost", "--cluster-id", f"{a}.dsql.us-east-1.on.aws", "--cluster-id",
            f"{b}.dsql.us-east-2.on.aws", "--forecast", "--pricing-file", world["prices"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    by = {c["cluster_id"]: c for c in d["clusters"]}
    assert by[a]["billed_dpu"] == "570000" and by[a]["components_dpu"] == "570000"
    assert by[a]["read_dpu"] == "342000"
    assert by[a]["storage_gb_month"] == "2"
    assert by[a]["total_usd"] == "4.41" and by[b]["total_usd"] == "3.40"
    assert d["totals"]["total_usd"] == "7.81"
    assert by[a]["occ_conflict_rate"] == "0.0100"
    assert by[a]["forecast"]["total_usd"] == "15.76" and by[b]["forecast"]["total_usd"] == "5.60"
    assert d["totals"]["forecast_usd"] == "21.36"
    assert by[a]["forecast"]["rate_window_start"] == "2026-11-13T00:00:00Z"
    assert d["window"] == {"start": "2026-11-01T00:00:00Z", "end": "2026-11-20T00:00:00Z"}
    assert "not a bill" in d["caveat"].lower()


def test_cost_all_lists_clusters_and_finds_deleted_ones_by_their_metrics(world):
    r = run("-o", "json", "cost", "--all", "--region", "us-east-1", "--month", "2026-11")
    assert r.exit_code == 0, r.output
    by = {c["cluster_id"]: c for c in json.loads(r.stdout)["clusters"]}
    assert set(by) == {world["a"], C_DELETED}
    assert by[C_DELETED]["exists"] is False and by[C_DELETED]["billed_dpu"] == "50000"
    assert "deleted" in " ".join(by[C_DELETED]["warnings"])


def test_cost_table_and_csv(world):
    r = run("cost", "--cluster-id", world["a"], "--region", "us-east-1")
    assert r.exit_code == 0, r.output
    # Alone, A gets the whole free tier: 4.56 + 0.66 − 0.80 − 0.33 = $4.09.
    assert "TOTAL" in r.stdout and "4.09" in r.stdout
    assert "not a bill" in r.stderr.lower()
    r = run("-o", "csv", "cost", "--cluster-id", world["a"], "--region", "us-east-1")
    rows = r.stdout.splitlines()
    assert rows[0].startswith("cluster_id,") and len(rows) == 2


def test_metrics_table_json_csv(world):
    a = world["a"]
    r = run("--region", "us-east-1", "metrics", a, "--start", "2026-11-18", "--end", "2026-11-20",
            "--metric", "TotalDPU", "--metric", "CommitLatency")
    assert r.exit_code == 0, r.output
    assert re.search(r"[▁▂▃▄▅▆▇█]", r.stdout)
    r = run("--region", "us-east-1", "-o", "json", "metrics", a, "--start", "2026-11-18", "--end", "2026-11-20",
            "--metric", "TotalDPU", "--period", "3600")
    d = json.loads(r.stdout)
    s = d["series"][0]
    assert s["stat"] == "Sum" and s["total"] == "60000"
    assert [v["timestamp"] for v in s["values"]] == ["2026-11-18T12:00:00Z", "2026-11-19T12:00:00Z"]
    assert d["window"]["period"] == 3600
    r = run("--region", "us-east-1", "-o", "csv", "metrics", a, "--since", "3d", "--metric", "TotalDPU")
    assert r.stdout.splitlines()[0] == "cluster_id,region,metric,stat,stream_id,timestamp,value"
    assert len(r.stdout.splitlines()) == 4  # Nov 17, 18, 19 at 12:00


@pytest.mark.parametrize("args", [
    ["--start", "2026-11-19", "--end", "2026-11-18"],          # start after end
    ["--start", "2026-11-19", "--end", "2026-11-19"],          # empty
    ["--start", "2026-12-01", "--end", "2026-12-02"],          # future
    ["--start", "2025-01-01", "--end", "2025-01-02"],          # older than 455 days
    ["--since", "1d", "--period", "90"],                       # not a multiple of 60
    ["--start", "2026-11-01", "--end", "2026-11-02", "--period", "60"],  # 19 days old: 300-s data only
    ["--since", "soon"],
    ["--since", "1d", "--start", "2026-11-01"],
])
def test_b6_bad_windows_exit_252(world, args):
    assert exit_code("--region", "us-east-1", "metrics", world["a"], *args) == 252


def test_unknown_metric_and_bad_month_exit_252(world):
    assert exit_code("--region", "us-east-1", "metrics", world["a"], "--metric", "ClusterSize") == 252
    assert exit_code("--region", "us-east-1", "cost", "--cluster-id", world["a"], "--month", "2026-13") == 252
    assert exit_code("--region", "us-east-1", "cost", "--cluster-id", world["a"], "--month", "2027-01") == 252


def _config(world, **extra) -> Path:
    cfg = {"profiles": {"default": {"region": "us-east-1"}},
           "pricing_file": world["prices"],
           "reports": {"regions": ["us-east-1", "us-east-2"], "format": "md",
                       "lock_file": str(world["tmp"] / "report.lock")}}
    cfg.update(extra)
    p = world["tmp"] / "config.yaml"
    p.write_text(yaml.safe_dump(cfg))
    p.chmod(0o600)
    return p


@pytest.mark.parametrize("fmt", ["md", "html", "json", "csv", "prometheus"])
def test_report_formats(world, fmt):
    cfg = _config(world)
    out = world["tmp"] / "out" / f"report.{fmt}"
    out.parent.mkdir(exist_ok=True)  # report never creates folders
    out.unlink(missing_ok=True)
    assert exit_code("report", "--config", str(cfg), "--format", fmt, "--out", str(out)) == 0
    assert out.stat().st_mode & 0o777 == 0o600  # it names clusters and spend
    text = out.read_text()
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp file left behind
    if fmt == "html":
        assert "<svg" in text and "<script" not in text.lower() and "javascript" not in text.lower()
        # Forecast incl. C (50,000 DPU, no more): 1,550,000 DPU; free split 900:600:50 →
        # $0.464516 + $0.387097 + $0.025806, + 1 GB ($0.33). 16.572 + 6.00 + 0.40 − 1.207419 = 21.764581.
        assert "<td>Forecast, month end</td><td>21.76</td>" in text
    elif fmt == "json":
        d = json.loads(text)
        assert d["totals"]["total_usd"] == "8.21"  # see test_report_totals_with_the_deleted_cluster
        assert d["top_clusters"][0] == world["a"]
        assert d["occ_conflict_rate"] == "0.0100"
        assert len(d["daily_dpu"]) == 19
    elif fmt == "prometheus":
        line = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? '
                          r'-?[0-9.eE+-]+$')
        for ln in text.splitlines():
            assert ln.startswith("# HELP ") or ln.startswith("# TYPE ") or line.match(ln), ln
        assert f'dsqlops_cost_forecast_usd{{account="default",region="us-east-1",cluster_id="{world["a"]}"}}' in text
    elif fmt == "csv":
        assert text.splitlines()[0].startswith("account,region,cluster_id")
    else:
        assert "| Month to date" in text and "## DPU per day" in text


def test_report_mode_option_sets_the_file_permissions(world):
    out = world["tmp"] / "report-mode.md"
    assert exit_code("report", "--config", str(_config(world)), "--out", str(out), "--mode", "0644") == 0
    assert out.stat().st_mode & 0o777 == 0o644


def test_report_totals_with_the_deleted_cluster(world):
    # With C: DPU 570k + 380k + 50k = 1,000,000; the free 100,000 splits 57:38:5 →
    # A 57,000 ($0.456), B 38,000 ($0.38), C 5,000 ($0.04). A = 4.56+0.66−0.456−0.33 = 4.434,
    # B = 3.42, C = 0.40 − 0.04 = 0.36 → total 8.214 → $8.21 (unrounded sum, then rounded).
    cfg = _config(world)
    out = world["tmp"] / "r.json"
    assert exit_code("report", "--config", str(cfg), "--format", "json", "--out", str(out)) == 0
    d = json.loads(out.read_text())
    assert d["totals"]["total_usd"] == "8.21"


def test_report_budget_exceeded_exits_3_after_writing(world):
    cfg = _config(world, budgets={"total_monthly_usd": 20, "clusters": {world["b"]: 100}})
    out = world["tmp"] / "r.md"
    assert exit_code("report", "--config", str(cfg), "--out", str(out)) == 3
    assert "**YES**" in out.read_text()
    cfg = _config(world, budgets={"total_monthly_usd": 25})
    assert exit_code("report", "--config", str(cfg), "--out", str(out)) == 0


def test_report_lock_held_exits_75(world):
    from dsqlops.fsutil import single_instance

    cfg = _config(world)
    with single_instance(world["tmp"] / "report.lock"):
        assert exit_code("report", "--config", str(cfg), "--out", str(world["tmp"] / "x.md")) == 75
    assert not (world["tmp"] / "x.md").exists()


def test_report_bad_config_exits_253(world):
    cfg = _config(world, budgets={"total_monthly_usd": "lots"})
    assert exit_code("report", "--config", str(cfg)) == 253


def test_budget_alarm_dry_run_create_list_delete(world):
    a = world["a"]
    r = run("--region", "us-east-1", "budget", "alarm", "create", "--cluster", a, "--monthly-usd", "240",
            "--dry-run", "--pricing-file", world["prices"])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    # $240 / 30 days = $8/day = 1,000,000 DPU at $8/1M; storage: 80 % of 240/0.33 GB = 581.82 GB.
    assert plan[0]["request"]["Threshold"] == 1_000_000.0
    assert plan[0]["request"]["Statistic"] == "Sum" and plan[0]["request"]["Period"] == 86400
    assert plan[1]["request"]["Threshold"] == 581.82e9
    import boto3

    cw = boto3.client("cloudwatch", "us-east-1")
    assert cw.describe_alarms()["MetricAlarms"] == []  # dry run changed nothing
    cw.put_metric_alarm(AlarmName="hand-made", MetricName="TotalDPU", Namespace="AWS/AuroraDSQL", Statistic="Sum",
                        Period=60, EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold")
    r = run("--region", "us-east-1", "budget", "alarm", "create", "--cluster", a, "--monthly-usd", "240",
            "--sns-topic", "arn:aws:sns:us-east-1:123456789012:ops")
    assert r.exit_code == 0, r.output
    r = run("--region", "us-east-1", "-o", "json", "budget", "alarm", "list")
    names = sorted(x["name"] for x in json.loads(r.stdout))
    assert names == [f"dsqlops-budget-{a}-daily-dpu", f"dsqlops-budget-{a}-storage"]
    assert exit_code("--region", "us-east-1", "budget", "alarm", "delete", "--cluster", a) == 252  # no --yes, no TTY
    r = run("--region", "us-east-1", "budget", "alarm", "delete", "--cluster", a, "--yes")
    assert r.exit_code == 0, r.output
    assert [x["AlarmName"] for x in cw.describe_alarms()["MetricAlarms"]] == ["hand-made"]


def test_stream_dpu_is_discovered_per_stream_and_summed_for_cost(world):
    import boto3

    d = "d" * 26
    cw = boto3.client("cloudwatch", "us-east-1")
    for sid, v in (("stream-1", 700.0), ("stream-2", 300.0)):
        cw.put_metric_data(Namespace="AWS/AuroraDSQL", MetricData=[{
            "MetricName": "StreamDPU", "Timestamp": dt.datetime(2026, 11, 10, 3, tzinfo=UTC), "Value": v,
            "Dimensions": [{"Name": "ClusterId", "Value": d}, {"Name": "StreamId", "Value": sid}]}])
    r = run("--region", "us-east-1", "-o", "json", "metrics", d, "--start", "2026-11-09", "--end", "2026-11-11",
            "--metric", "StreamDPU", "--period", "3600")
    assert r.exit_code == 0, r.output
    series = json.loads(r.stdout)["series"]
    assert {(s["stream_id"], s["total"]) for s in series} == {("stream-1", "700"), ("stream-2", "300")}
    r = run("-o", "json", "cost", "--cluster-id", d, "--region", "us-east-1", "--month", "2026-11")
    c = json.loads(r.stdout)["clusters"][0]
    assert c["stream_dpu"] == "1000" and c["billed_dpu"] == "1000" and c["dpu_basis"] == "components"


def test_report_named_clusters_are_probed_across_regions_without_ghosts(world):
    cfg = _config(world)
    data = yaml.safe_load(cfg.read_text())
    data["reports"]["clusters"] = [world["a"], f"{world['b']}.dsql.us-east-2.on.aws"]
    cfg.write_text(yaml.safe_dump(data))
    out = world["tmp"] / "named.json"
    assert exit_code("report", "--config", str(cfg), "--format", "json", "--out", str(out)) == 0
    d = json.loads(out.read_text())
    assert sorted((c["cluster_id"], c["region"]) for c in d["clusters"]) == sorted(
        [(world["a"], "us-east-1"), (world["b"], "us-east-2")])
    assert d["totals"]["total_usd"] == "7.81"
