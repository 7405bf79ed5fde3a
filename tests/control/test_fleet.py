"""`cluster list --all-regions`: every Region of the price table in one table, in parallel; a Region
that fails is named with why and the others still answer (moto, two Regions)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from botocore.awsrequest import AWSResponse

from dsqlops.aws import AwsContext
from dsqlops.cost import pricing as P
from dsqlops.errors import ExitCode
from tests.control.conftest import create
from tests.control.test_retries import _Raw
from tests.overlap import Overlap


@pytest.fixture()
def two_region_prices(tmp_path) -> list[str]:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(P.shipped_path().read_text())
    data["regions"] = {r: data["regions"][r] for r in ("us-east-1", "us-east-2")}
    prices = tmp_path / "prices.yaml"
    prices.write_text(yaml.safe_dump(data))
    cfg = tmp_path / "dsqlops.yaml"
    cfg.write_text(f"pricing_file: {prices}\n")
    cfg.chmod(0o600)
    return ["--config", str(cfg)]


def _deny_region(monkeypatch, region: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Answer every request to ``region`` the way a Region not enabled for the account does."""
    seen: list[str] = []
    orig = AwsContext.dsql

    def deny(request: Any, **_kw: Any) -> AWSResponse:
        seen.append(request.url)
        body = json.dumps({"message": "The security token included in the request is invalid"}).encode()
        return AWSResponse(request.url, 403, {"x-amzn-ErrorType": "UnrecognizedClientException",
                                              "Content-Type": "application/json"}, _Raw(body))

    def dsql(self: AwsContext, r: str | None = None) -> Any:
        client = orig(self, r)
        if (r or self.region) == region:
            client.meta.events.register_first("before-send.dsql", deny)
        return client

    monkeypatch.setattr(AwsContext, "dsql", dsql)
    return seen


def test_all_regions_one_table(run, two_region_prices):
    a = create(run, "--tag", "r=1", region="us-east-1")
    b = create(run, "--tag", "r=2", region="us-east-2")
    r = run([*two_region_prices, "cluster", "list", "--all-regions"])
    assert r.exit_code == 0, r.stderr
    header = r.stdout.splitlines()[0].split()
    assert header[:2] == ["region", "id"]
    assert f"us-east-1  {a['id']}" in r.stdout and f"us-east-2  {b['id']}" in r.stdout
    r = run([*two_region_prices, "-o", "json", "cluster", "list", "--all-regions", "--status", "ACTIVE"])
    out = r.json()
    assert out["regions"] == ["us-east-1", "us-east-2"] and out["failed_regions"] == []
    assert [(c["region"], c["id"]) for c in out["clusters"]] == [("us-east-1", a["id"]), ("us-east-2", b["id"])]


def test_a_failing_region_is_named_and_the_rest_still_answers(run, monkeypatch, two_region_prices):
    a = create(run, region="us-east-1")
    create(run, region="us-east-2")
    seen = _deny_region(monkeypatch, "us-east-2")
    r = run([*two_region_prices, "-o", "json", "cluster", "list", "--all-regions"])
    assert r.exit_code == ExitCode.INCOMPLETE  # printed, but partial: as cost --all-regions
    out = r.json()
    assert [c["id"] for c in out["clusters"]] == [a["id"]]
    (failed,) = out["failed_regions"]
    assert failed["region"] == "us-east-2" and "UnrecognizedClientException" in failed["error"]
    assert "region us-east-2: could not list clusters: " in r.stderr
    assert "1 of 2 regions could not be listed (us-east-2)" in r.stderr
    assert len(seen) == 1  # 403 is not retried
    r = run([*two_region_prices, "cluster", "list", "--all-regions"])  # the table still shows us-east-1
    assert r.exit_code == ExitCode.INCOMPLETE and a["id"] in r.stdout


def test_regions_are_listed_in_parallel_within_the_bound(aws: None):
    from dsqlops.control.clusters import list_fleet

    seen = Overlap(meet=3)

    class Slow:
        """A dsql client double whose ListClusters holds its slot, so overlapping Regions are observable."""

        def get_paginator(self, _name: str) -> Any:
            return self

        def paginate(self) -> Any:
            seen.visit()
            return [{"clusters": []}]

    regions = [f"us-test-{i}" for i in range(8)]
    fleet = list_fleet({r: Slow() for r in regions}, region_workers=3)
    assert fleet.regions == sorted(regions) and fleet.failed_regions == [] and fleet.clusters == []
    assert seen.max == 3 and seen.calls == 8


def test_a_region_failing_in_any_way_is_reported_not_fatal(aws: None):
    from dsqlops.control.clusters import list_fleet

    class Broken:
        def get_paginator(self, _name: str) -> Any:
            raise KeyError("eu-west-1")

    class Empty:
        def get_paginator(self, _name: str) -> Any:
            return self

        def paginate(self) -> Any:
            return [{"clusters": []}]

    fleet = list_fleet({"eu-west-1": Broken(), "us-east-1": Empty()})
    assert [(f.region, f.error) for f in fleet.failed_regions] == [("eu-west-1", "KeyError: 'eu-west-1'")]


def test_service_messages_are_one_line():
    from botocore.exceptions import ClientError

    from dsqlops.aws import translate_client_error

    page = "<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n<h1>Oops</h1>\n"
    e = translate_client_error(ClientError({"Error": {"Code": "500", "Message": page}}, "ListClusters"))
    assert str(e) == "500: an HTML page (500 Internal Server Error) instead of an AWS error"
    e = translate_client_error(ClientError({"Error": {"Code": "X", "Message": "a\nb  " + "c" * 500}}, "Op"))
    assert "\n" not in str(e) and len(str(e)) < 320 and str(e).startswith("X: a b cc")
