"""`dsqlops cost`, `metrics`, `report` and `budget` against moto, checked to the cent by hand.

Seeded data (AWS/AuroraDSQL only, so moto's namespace-leak bug in get_metric_data cannot bite),
"now" pinned to 2026-11-20 00:00Z:

* A (us-east-1): TotalDPU 30,000/day at 12:00 on Nov 1..19 = 570,000 DPU (Read 18,000 + Write 9,000 +
  Compute 3,000 a day); ClusterStorageSize 72e9 bytes for the 20 hours Nov 19 04:00..23:00 only. The
  idle hours are billed too: the first size is used back to Nov 1 00:00 (436 hours), so
  72 × 456 / 720 = 45.6 GB-month; TotalTransactions 1,000/day, OccConflicts 10/day → 1 %.
* B (us-east-2): TotalDPU 20,000/day = 380,000 DPU; priced at $10/1M by the test price table.
* C (us-east-1): not a cluster any more (never created in moto); TotalDPU 50,000 on Nov 2.

Month to date (A, B only): A 570,000 × $8/1M = $4.56 + 45.6 × $0.33 = $15.048; B 380,000 × $10/1M = $3.80.
Free tier 100,000 DPU split 570:380 → A 60,000 ($0.48), B 40,000 ($0.40); 1 GB-month → A ($0.33).
A = 4.56 + 15.048 − 0.48 − 0.33 = 18.798 → $18.80; B = 3.80 − 0.40 = $3.40; total 22.198 → $22.20.
Forecast (rate Nov 13..20, 11 days left): A 570,000 + 11 × 30,000 = 900,000 DPU ($7.20), storage
45.6 + 72 × 264 / 720 = 72 GB-month ($23.76); B 380,000 + 11 × 20,000 = 600,000 ($6.00).
Free split 900:600 → A 60,000 ($0.48) + 1 GB ($0.33); B 40,000 ($0.40).
A = 7.20 + 23.76 − 0.48 − 0.33 = $30.15; B = $5.60; total $35.75.
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
    assert by[a]["storage_gb_month"] == "45.6"
    assert by[a]["storage_hours"] == 20 and by[a]["storage_hours_carried"] == 436
    assert by[a]["storage_first_point_used_backwards"] is True
    assert by[a]["total_usd"] == "18.80" and by[b]["total_usd"] == "3.40"
    assert d["totals"]["total_usd"] == "22.20"
    assert by[a]["occ_conflict_rate"] == "0.0100"
    assert by[a]["forecast"]["total_usd"] == "30.15" and by[b]["forecast"]["total_usd"] == "5.60"
    assert d["totals"]["forecast_usd"] == "35.75"
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
    # Alone, A gets the whole free tier: 4.56 + 15.048 − 0.80 − 0.33 = 18.478 → $18.48.
    assert "TOTAL" in r.stdout and "18.48" in r.stdout
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
        # $0.464516 + $0.387097 + $0.025806, + 1 GB ($0.33). 30.96 + 6.00 + 0.40 − 1.207419 = 36.152581.
        assert "<td>Forecast, month end</td><td>36.15</td>" in text
    elif fmt == "json":
        d = json.loads(text)
        assert d["totals"]["total_usd"] == "22.60"  # see test_report_totals_with_the_deleted_cluster
        assert d["top_clusters"][0] == world["a"]
        assert d["occ_conflict_rate"] == "0.0100"
        assert len(d["daily_dpu"]) == 19
    elif fmt == "prometheus":
        line = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? '
                          r'-?[0-9.eE+-]+$')
        for ln in text.splitlines():
            assert ln.startswith("# HELP ") or ln.startswith("# TYPE ") or line.match(ln), ln
        # The account label is the AWS account behind the credentials (moto's STS answers 123456789012).
        assert (f'dsqlops_cost_forecast_usd{{account="123456789012",region="us-east-1",cluster_id="{world["a"]}"}}'
                in text)
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
    # A 57,000 ($0.456), B 38,000 ($0.38), C 5,000 ($0.04). A = 4.56+15.048−0.456−0.33 = 18.822,
    # B = 3.42, C = 0.40 − 0.04 = 0.36 → total 22.602 → $22.60 (unrounded sum, then rounded).
    cfg = _config(world)
    out = world["tmp"] / "r.json"
    assert exit_code("report", "--config", str(cfg), "--format", "json", "--out", str(out)) == 0
    d = json.loads(out.read_text())
    assert d["totals"]["total_usd"] == "22.60"


def test_report_budget_exceeded_exits_3_after_writing(world):
    cfg = _config(world, budgets={"total_monthly_usd": 20, "clusters": {world["b"]: 100}})
    out = world["tmp"] / "r.md"
    assert exit_code("report", "--config", str(cfg), "--out", str(out)) == 3
    assert "**YES**" in out.read_text()
    cfg = _config(world, budgets={"total_monthly_usd": 40})
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
    # One alarm on dollars per month (DPU and storage together) above $240; November has 30 days.
    assert len(plan) == 1 and plan[0]["operation"] == "PutMetricAlarm"
    req = plan[0]["request"]
    assert req["Threshold"] == 240.0 and req["ComparisonOperator"] == "GreaterThanThreshold"
    assert [q["Id"] for q in req["Metrics"]] == ["dpu", "bytes", "dpu_usd", "storage_usd", "usd_per_month"]
    assert "FILL(dpu, 0) * 30 " in req["Metrics"][2]["Expression"]
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
    assert names == [f"dsqlops-budget-{a}-monthly-usd"]
    listed = json.loads(r.stdout)[0]
    assert listed["cluster_id"] == a and listed["metric"] == "TotalDPU + ClusterStorageSize (metric math)"
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
    assert d["totals"]["total_usd"] == "22.20"


def test_cost_for_a_cluster_that_is_not_there_names_the_region_searched(world, capsys):
    assert exit_code("cost", "--cluster-id", "z" * 26, "--region", "us-east-2", "--month", "2026-11") == 254
    out = capsys.readouterr()
    assert "z" * 26 in out.err and "us-east-2" in out.err and "not found" in out.err
    assert out.out == ""
    # A is in us-east-1, not us-east-2: asked in the wrong region, it is not found there either.
    assert exit_code("cost", "--cluster-id", world["a"], "--region", "us-east-2", "--month", "2026-11") == 254
    assert "us-east-2" in capsys.readouterr().err


def test_a_cluster_without_datapoints_warns_and_says_so_in_json(world):
    import boto3

    idle = boto3.client("dsql", "us-east-1").create_cluster(deletionProtectionEnabled=False)["identifier"]
    r = run("-o", "json", "cost", "--cluster-id", idle, "--region", "us-east-1", "--month", "2026-11")
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)["clusters"][0]
    assert c["has_data"] is False and c["total_usd"] == "0.00" and c["exists"] is True
    assert "no datapoints" in r.stderr and idle in r.stderr


def test_a_named_deleted_cluster_with_metrics_is_still_billed(world):
    r = run("-o", "json", "cost", "--cluster-id", C_DELETED, "--region", "us-east-1", "--month", "2026-11")
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)["clusters"][0]
    assert c["exists"] is False and c["billed_dpu"] == "50000" and c["has_data"] is True


def test_free_tier_is_keyed_by_the_account_and_its_split_is_stated(world):
    a = world["a"]
    r = run("-o", "json", "cost", "--cluster-id", a, "--region", "us-east-1")
    d = json.loads(r.stdout)
    assert d["clusters"][0]["account"] == "123456789012"
    assert d["free_tier"][0]["account"] == "123456789012"
    assert d["free_tier_scope"] == "clusters in this run"
    assert "split over the 1 cluster(s) of this run only" in r.stderr
    assert d["clusters"][0]["total_usd"] == "18.48"
    # Account-wide: A shares the 100,000 free DPU with the deleted C (570,000 : 50,000 → A 91,935.48 DPU,
    # $0.735484). A = 4.56 + 15.048 − 0.735484 − 0.33 = 18.542516 → $18.54. Only A is shown.
    r = run("-o", "json", "cost", "--cluster-id", a, "--region", "us-east-1", "--free-tier-scope", "account")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert [c["cluster_id"] for c in d["clusters"]] == [a]
    assert d["clusters"][0]["total_usd"] == "18.54"
    assert d["free_tier_scope"].startswith("every cluster of the account")
    assert "split over" not in r.stderr


def test_two_profiles_of_one_account_share_one_free_tier(world):
    # Two report profiles with the same credentials: one account, so one free tier for A and B
    # (the totals of test_report_totals_with_the_deleted_cluster), not one per profile.
    cfg = _config(world, profiles={"default": {"region": "us-east-1"}, "other": {"region": "us-east-1"}})
    data = yaml.safe_load(cfg.read_text())
    data["reports"]["profiles"] = ["default", "other"]
    cfg.write_text(yaml.safe_dump(data))
    out = world["tmp"] / "two.json"
    assert exit_code("report", "--config", str(cfg), "--format", "json", "--out", str(out)) == 0
    d = json.loads(out.read_text())
    assert {c["account"] for c in d["clusters"]} == {"123456789012"}
    assert d["totals"]["total_usd"] == "22.60"


def test_a_region_without_a_price_is_marked_the_rest_priced_and_the_exit_is_5(world, capsys):
    data = yaml.safe_load(Path(world["prices"]).read_text())
    del data["regions"]["us-east-2"]
    prices = world["tmp"] / "no-us-east-2.yaml"
    prices.write_text(yaml.safe_dump(data))
    a, b = world["a"], world["b"]
    assert exit_code("cost", "--cluster-id", f"{a}.dsql.us-east-1.on.aws", "--cluster-id",
                     f"{b}.dsql.us-east-2.on.aws", "--pricing-file", str(prices)) == 5
    out = capsys.readouterr()
    rows = {ln.split()[0]: ln for ln in out.out.splitlines() if ln.strip()}
    assert "no price" in rows[b] and "no price" not in rows[a]
    # A as in test_cost_to_the_cent_across_two_regions ($18.80, B still takes its share of the free
    # tier); the total is A's alone.
    assert rows["TOTAL"].split()[-1] == "18.80"
    assert "us-east-2" in out.err and "error:" in out.err


def test_report_month_gives_a_closing_report_for_a_past_month(world):
    # October: A used 150,000 read + 50,000 write = 200,000 DPU on Oct 10 ($1.20 + $0.40 = $1.60) and held
    # 10 GB, reported once (Oct 5 00:00) and billed for all 744 hours → 10 GB-month ($3.30). Free tier:
    # 100,000 DPU ($0.80) + 1 GB-month ($0.33). Month total 1.60 + 3.30 − 1.13 = $3.77. No forecast.
    cw1, a = world["cw1"], world["a"]
    oct10 = dt.datetime(2026, 10, 10, 12, tzinfo=UTC)
    _put(cw1, a, "TotalDPU", {oct10: 200_000.0})
    _put(cw1, a, "ReadDPU", {oct10: 150_000.0})
    _put(cw1, a, "WriteDPU", {oct10: 50_000.0})
    _put(cw1, a, "ClusterStorageSize", {dt.datetime(2026, 10, 5, tzinfo=UTC): 10e9})
    cfg = _config(world)
    out = world["tmp"] / "october.json"
    assert exit_code("report", "--config", str(cfg), "--month", "2026-10", "--format", "json", "--out", str(out)) == 0
    d = json.loads(out.read_text())
    assert d["month"] == "2026-10" and d["closed"] is True
    assert d["window"] == {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}
    by = {c["cluster_id"]: c for c in d["clusters"]}
    assert by[a]["storage_gb_month"] == "10" and by[a]["forecast"] is None
    assert by[a]["read_usd"] == "1.20" and by[a]["write_usd"] == "0.40"
    assert d["totals"]["total_usd"] == "3.77" and d["totals"]["forecast_usd"] is None
    md = world["tmp"] / "october.md"
    assert exit_code("report", "--config", str(cfg), "--month", "2026-10", "--out", str(md)) == 0
    text = md.read_text()
    assert "(closed month)" in text and "| Month total (after free tier) | 3.77 |" in text
    assert "read $" in text and "| 1.20 |" in text


def test_report_month_in_the_future_is_refused(world, capsys):
    assert exit_code("report", "--config", str(_config(world)), "--month", "2026-12") == 252
    assert "2026-12 is in the future" in capsys.readouterr().err


def test_cost_table_shows_dollars_per_component(world, capsys):
    # A in November: read 342,000 DPU × $8/1M = $2.736, write 171,000 → $1.368, compute 57,000 → $0.456.
    r = run("cost", "--cluster-id", world["a"], "--region", "us-east-1")
    assert r.exit_code == 0, r.output
    head, row = r.stdout.splitlines()[0].split(), r.stdout.splitlines()[2].split()
    cells = dict(zip(head, row, strict=True))
    assert (cells["read_usd"], cells["write_usd"], cells["compute_usd"]) == ("2.74", "1.37", "0.46")
    assert cells["multi_region_write_usd"] == "0.00" and cells["stream_usd"] == "0.00"


def test_cost_and_report_runs_are_recorded_in_the_history(world):
    h = world["tmp"] / "history.sqlite3"
    a = world["a"]
    r = run("cost", "--cluster-id", a, "--region", "us-east-1", "--forecast", "--history", str(h))
    assert r.exit_code == 0, r.output
    r = run("cost", "--cluster-id", a, "--region", "us-east-1", "--forecast", "--history", str(h))  # same day again
    r = run("-o", "json", "cost", "history", "--history", str(h))
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(x["cluster_id"], x["month"], x["total_usd"], x["closed"]) for x in rows] == [
        (a, "2026-11", "18.48", False)]
    from dsqlops.cost import history

    with history.connect(h) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM forecasts").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM daily WHERE cluster_id = ?", (a,)).fetchone()[0] == 19


def _month_chart_bars(page: str) -> int:
    from html.parser import HTMLParser

    class Bars(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.inside, self.bars = False, 0

        def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
            if tag == "svg":
                self.inside = dict(attrs).get("id") == "month-over-month"
            elif tag == "rect" and self.inside:
                self.bars += 1

        def handle_endtag(self, tag):  # type: ignore[no-untyped-def]
            if tag == "svg":
                self.inside = False

    p = Bars()
    p.feed(page)
    return p.bars


def test_html_report_has_a_month_over_month_chart_from_the_history(world):
    # October's closing report (as in test_report_month_gives_a_closing_report_for_a_past_month: $3.77 for A),
    # then November's: the November page charts both months, one bar each.
    cw1, a = world["cw1"], world["a"]
    _put(cw1, a, "TotalDPU", {dt.datetime(2026, 10, 10, 12, tzinfo=UTC): 200_000.0})
    _put(cw1, a, "ClusterStorageSize", {dt.datetime(2026, 10, 5, tzinfo=UTC): 10e9})
    cfg = _config(world)
    h = world["tmp"] / "history.sqlite3"
    out = world["tmp"] / "page.html"
    assert exit_code("report", "--config", str(cfg), "--month", "2026-10", "--format", "html", "--out", str(out),
                     "--history", str(h)) == 0
    assert _month_chart_bars(out.read_text()) == 1
    assert exit_code("report", "--config", str(cfg), "--format", "json", "--out", str(out), "--history", str(h)) == 0
    months = json.loads(out.read_text())["months"]
    assert [m["month"] for m in months] == ["2026-10", "2026-11"] and months[0]["total_usd"] == "3.77"
    assert months[1]["total_usd"] == "22.60"
    assert exit_code("report", "--config", str(cfg), "--format", "html", "--out", str(out), "--history", str(h)) == 0
    page = out.read_text()
    assert _month_chart_bars(page) == 2 and "<script" not in page


def test_html_report_renders_in_a_headless_browser():
    """The page in a real headless browser: it loads, the month chart has one bar per month, no console
    errors. Skipped where no browser can be installed."""
    from decimal import Decimal as D

    from dsqlops.cost.model import ClusterUsage, estimate
    from dsqlops.cost.report import Report, read_config, render

    prices = P.load(P.shipped_path())
    u = ClusterUsage("a" * 26, "us-east-1", dpu={"TotalDPU": {NOV: D(500_000)}})
    rep = Report(estimate([u], prices, start=NOV, end=NOW, now=NOW, forecast=True), read_config(None, None), [])
    rep.months = [{"month": "2026-09", "total_usd": D("3.00"), "change_pct": None},
                  {"month": "2026-10", "total_usd": D("4.50"), "change_pct": D("50.0")},
                  {"month": "2026-11", "total_usd": D("3.20"), "change_pct": D("-28.9")}]
    page = render(rep, "html")
    assert _month_chart_bars(page) == 3
    bars = 3
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install playwright; "
        "python -m playwright install chromium)")
    errors: list[str] = []
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch()
            tab = browser.new_page()
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.set_content(page)
            assert tab.locator("svg#month-over-month rect").count() == bars
            browser.close()
    except sync_api.Error as e:  # no browser binary: its download is not on the package index
        pytest.skip(f"no headless Chromium available to Playwright: {str(e).splitlines()[0]}")
    assert errors == []


def test_a_cluster_idle_all_month_is_billed_the_storage_it_last_reported(world):
    """An idle cluster publishes no ClusterStorageSize, yet its storage is billed: with no datapoint
    in the window, the size last seen before it is carried over every hour (10 GB × 456 h / 720 h)."""
    import boto3

    idle = boto3.client("dsql", "us-east-1").create_cluster(deletionProtectionEnabled=False)["identifier"]
    _put(world["cw1"], idle, "ClusterStorageSize", {dt.datetime(2026, 10, 20, 7, tzinfo=UTC): 10e9})
    r = run("-o", "json", "cost", "--cluster-id", idle, "--region", "us-east-1", "--month", "2026-11")
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)["clusters"][0]
    assert c["storage_gb_month"] == "6.333333" and c["storage_hours"] == 0 and c["storage_hours_carried"] == 456
    assert c["storage_size_from_before_window"].startswith("2026-10-20")
    assert c["storage_usd"] == "2.09"  # 6.3333 × $0.33, before the free tier
    assert "no ClusterStorageSize datapoint in the window" in r.stderr and "10 GB" in r.stderr
