"""End to end on the local sandbox: work on a cluster → metering publishes DPU → `dsqlops cost`
prices exactly what CloudWatch holds (cross-checked with GetMetricStatistics)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal as D

import pytest
from click.testing import CliRunner

from dsqlops.cli.main import cli

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def test_cost_prices_what_the_sandbox_metered(sandbox, monkeypatch, isolated_config):
    for k, v in sandbox.env().items():
        monkeypatch.setenv(k, v)
    cid = sandbox.create_cluster()
    with sandbox.connect(cid) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS cost_e2e (id int PRIMARY KEY, v text)")
        conn.commit()
        for i in range(50):
            conn.execute("INSERT INTO cost_e2e VALUES (%s, %s) ON CONFLICT (id) DO NOTHING", (i, "x" * 200))
            conn.commit()
        conn.execute("SELECT count(*) FROM cost_e2e").fetchone()
        conn.commit()
    r = CliRunner().invoke(cli, ["sandbox", "flush-metrics", "--dir", str(sandbox.dir)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["-o", "json", "cost", "--cluster-id", cid, "--region", sandbox.region])
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)["clusters"][0]
    assert D(c["billed_dpu"]) > 0

    from dsqlops.aws import AwsContext

    cw = AwsContext(region=sandbox.region, endpoint_url=sandbox.api_endpoint).cloudwatch()
    now = dt.datetime.now(dt.UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    stats = cw.get_metric_statistics(Namespace="AWS/AuroraDSQL", MetricName="TotalDPU", StartTime=start,
                                     EndTime=now + dt.timedelta(hours=1), Period=3600, Statistics=["Sum"],
                                     Dimensions=[{"Name": "ClusterId", "Value": cid}])
    expected = sum(D(repr(p["Sum"])) for p in stats["Datapoints"])
    assert abs(D(c["billed_dpu"]) - expected) < D("0.000001")
