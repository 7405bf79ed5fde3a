"""`cost --all-regions` as a real process against a moto server and the shipped price table: moto
serves DSQL in us-east-1 and us-east-2 only, so every other Region answers HTTP 500 with an HTML
page, as an unreachable Region would; those are named, the two that answer are priced, exit 5."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from dsqlops.cost import pricing as P
from dsqlops.errors import ExitCode
from tests.clirun import run_dsqlops
from tests.control.test_regions_e2e import env, moto_url  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow  # real processes


def test_cost_all_regions_prices_what_answers_and_names_the_regions_that_fail(env):  # noqa: F811
    import boto3

    p = run_dsqlops(env, "--region", "us-east-2", "-o", "json", "cluster", "create")
    assert p.returncode == 0, p.stderr
    cid = json.loads(p.stdout)["id"]
    cw = boto3.client("cloudwatch", "us-east-2", endpoint_url=env["DSQLOPS_ENDPOINT_URL"],
                      aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
    cw.put_metric_data(Namespace="AWS/AuroraDSQL", MetricData=[
        {"MetricName": "TotalDPU", "Dimensions": [{"Name": "ClusterId", "Value": cid}], "Timestamp": hour,
         "Value": 250_000.0}])
    window = ["--start", f"{hour:%Y-%m-%dT%H:%M}", "--end", f"{hour + dt.timedelta(hours=1):%Y-%m-%dT%H:%M}"]
    p = run_dsqlops(dict(env, DSQLOPS_MAX_ATTEMPTS="1"), "-o", "json", "cost", "--all-regions", *window)
    assert p.returncode == ExitCode.INCOMPLETE, p.stderr
    out = json.loads(p.stdout)
    regions = set(P.load(P.shipped_path()).regions)
    failed = {f["region"]: f["error"] for f in out["failed_regions"]}
    assert set(failed) == regions - {"us-east-1", "us-east-2"}
    assert all("HTML page (500 Internal Server Error)" in e for e in failed.values())
    mine = [c for c in out["clusters"] if c["cluster_id"] == cid]
    assert [(c["region"], c["billed_dpu"]) for c in mine] == [("us-east-2", "250000")]
    assert f"{len(failed)} region(s) could not be covered" in p.stderr
    assert all(line.startswith(("warning: ", "error: ", "hint: ")) for line in p.stderr.splitlines())
