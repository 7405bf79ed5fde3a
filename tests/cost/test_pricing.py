"""The price table: shipped file, validation errors naming file and key, refresh from stubbed GetProducts."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal as D
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from dsqlops.cli.main import cli
from dsqlops.cost import pricing as P
from dsqlops.errors import ConfigError


def test_shipped_table_loads_and_marks_third_party_entries():
    t = P.load(P.shipped_path())
    us = t.get("us-east-1")
    assert us.dpu_usd_per_million == D("8.00") and us.storage_usd_per_gb_month == D("0.33")
    assert us.storage_unit == "GB" and us.free_tier_dpu == D(100000)
    assert t.get("ap-northeast-1").dpu_usd_per_million == D("10.00")
    assert all(p.third_party for p in t.regions.values())  # nothing in docs/dsql-facts.md §5.2 is from an AWS page


def test_repo_root_table_is_the_shipped_one():
    root = Path(__file__).resolve().parents[2] / "pricing" / "dsql.yaml"
    assert root.read_bytes() == P.shipped_path().read_bytes()


def test_unknown_region_names_the_file():
    t = P.load(P.shipped_path())
    with pytest.raises(ConfigError, match=r"dsql\.yaml.*'xx-nowhere-9'"):
        t.get("xx-nowhere-9")


def _write(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(P.shipped_path().read_text())
    mutate(data)
    p = tmp_path / "prices.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d["regions"]["us-east-1"].update(dpu_usd_per_million="eight"),
     r"regions\.us-east-1\.dpu_usd_per_million"),
    (lambda d: d["regions"]["us-east-1"].update(storage_usd_per_gb_month="-1"), r"storage_usd_per_gb_month"),
    (lambda d: d["regions"]["us-east-1"].update(storage_unit="TB"), r"storage_unit must be GB or GiB"),
    (lambda d: d["regions"]["us-east-1"].pop("source"), r"regions\.us-east-1: missing key\(s\) source"),
    (lambda d: d["regions"]["us-east-1"].update(confidence="sure"), r"confidence"),
    (lambda d: d["regions"]["us-east-1"].update(as_of="yesterday"), r"regions\.us-east-1\.as_of"),
    (lambda d: d["regions"].update({"Mars": {}}), r"regions\.Mars: not an AWS region"),
    (lambda d: d.update(regions=[]), r"regions must be a non-empty mapping"),
    (lambda d: d["regions"]["us-east-1"].update(currency="EUR"), r"mixed currencies"),
])
def test_validation_errors_name_file_and_key(tmp_path, mutate, match):
    p = _write(tmp_path, mutate)
    with pytest.raises(ConfigError, match=match) as ei:
        P.load(p)
    assert str(p) in str(ei.value)


def test_broken_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("regions:\n  us-east-1: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml line"):
        P.load(p)


def _product(region: str, usagetype: str, unit: str, price: str, *, free_end: str | None = None) -> str:
    dims = {"R1": {"unit": unit, "pricePerUnit": {"USD": price}, "beginRange": "0", "endRange": "Inf"}}
    if free_end:
        dims = {"R0": {"unit": unit, "pricePerUnit": {"USD": "0.0000000000"}, "beginRange": "0",
                       "endRange": free_end},
                "R1": {"unit": unit, "pricePerUnit": {"USD": price}, "beginRange": free_end, "endRange": "Inf"}}
    return json.dumps({"product": {"sku": f"SKU{region}{usagetype}", "productFamily": "x",
                                   "attributes": {"regionCode": region, "usagetype": usagetype}},
                       "terms": {"OnDemand": {"T": {"priceDimensions": dims}}}})


PRICE_LIST = [
    _product("us-east-1", "USE1-DistributedProcessingUnits", "DPU", "0.0000080000", free_end="100000"),
    _product("us-east-1", "USE1-TimedStorage-ByteHrs", "GB-Mo", "0.3300000000"),
    _product("eu-north-1", "EUN1-DistributedProcessingUnits", "DPU", "0.0000095000"),
    _product("eu-north-1", "EUN1-TimedStorage-ByteHrs", "GiB-Mo", "0.3800000000"),
    _product("us-east-1", "USE1-DataTransfer-Out-Bytes", "GB", "0.09"),
]


def test_parse_price_list():
    got = P.parse_price_list(PRICE_LIST)
    assert got["us-east-1"].dpu_per_unit == D("0.0000080000")
    assert got["us-east-1"].free_dpu == D(100000)
    assert got["eu-north-1"].storage_unit == "GiB"


def _stubbed_client(pages):
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("pricing", region_name="us-east-1")
    stub = Stubber(client)
    for i, page in enumerate(pages):
        expected = {"ServiceCode": "AuroraDSQL", "FormatVersion": "aws_v1", "MaxResults": 100}
        if i:
            expected["NextToken"] = f"t{i}"
        resp = {"PriceList": page, "FormatVersion": "aws_v1"}
        if i + 1 < len(pages):
            resp["NextToken"] = f"t{i + 1}"
        stub.add_response("get_products", resp, expected)
    stub.activate()
    return client, stub


def test_refresh_pages_writes_atomically_and_diffs(tmp_path):
    client, stub = _stubbed_client([PRICE_LIST[:2], PRICE_LIST[2:]])
    old = P.load(P.shipped_path())
    out = tmp_path / "new.yaml"
    _new, changes = P.refresh(client, old, out, today=dt.date(2026, 12, 1))
    stub.assert_no_pending_responses()
    reloaded = P.load(out)
    assert reloaded.as_of == dt.date(2026, 12, 1)
    assert reloaded.get("us-east-1").confidence == "high" and not reloaded.get("us-east-1").third_party
    assert reloaded.get("eu-north-1").dpu_usd_per_million == D("9.5")
    assert reloaded.get("ap-northeast-1").third_party  # regions the API did not price are kept
    fields = {(c["region"], c["field"]) for c in changes}
    assert ("eu-north-1", "*") in fields and ("us-east-1", "confidence") in fields
    assert [p.name for p in tmp_path.iterdir()] == ["new.yaml"]  # no temp file left behind


def test_refresh_refuses_the_shipped_table():
    client, _stub = _stubbed_client([])
    with pytest.raises(Exception, match="refusing to overwrite"):
        P.refresh(client, P.load(P.shipped_path()), P.shipped_path())


def test_cli_show_and_pricing_file_override(tmp_path, isolated_config):
    r = CliRunner().invoke(cli, ["-o", "json", "pricing", "show", "--region", "us-east-1"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["dpu_usd_per_million"] == "8.00"
    p = _write(tmp_path, lambda d: d["regions"]["us-east-1"].update(dpu_usd_per_million="9.99"))
    r = CliRunner().invoke(cli, ["-o", "json", "pricing", "show", "--region", "us-east-1", "--pricing-file", str(p)])
    assert json.loads(r.stdout)[0]["dpu_usd_per_million"] == "9.99"
    cfg = isolated_config / "dsqlops" / "config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f"pricing_file: {p}\n")
    cfg.chmod(0o600)
    r = CliRunner().invoke(cli, ["-o", "json", "pricing", "show", "--region", "us-east-1"])
    assert json.loads(r.stdout)[0]["dpu_usd_per_million"] == "9.99"


def test_cli_unknown_region_and_bad_file_exit_codes(tmp_path, isolated_config):
    from dsqlops.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["pricing", "show", "--region", "xx-nowhere-9"])
    assert e.value.code == 253
    bad = _write(tmp_path, lambda d: d["regions"]["us-east-1"].update(storage_unit="TB"))
    with pytest.raises(SystemExit) as e:
        main(["pricing", "show", "--pricing-file", str(bad)])
    assert e.value.code == 253


def test_cli_refresh_needs_a_destination(isolated_config):
    from dsqlops.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["pricing", "refresh"])
    assert e.value.code == 252


def test_cli_refresh_writes_configured_file_and_shows_diff(tmp_path, isolated_config, monkeypatch):
    from dsqlops.aws import AwsContext

    client, stub = _stubbed_client([PRICE_LIST])
    regions_seen = []

    def fake_client(self, service, region=None, **kw):
        assert service == "pricing"
        regions_seen.append(region)
        return client

    monkeypatch.setattr(AwsContext, "client", fake_client)
    target = tmp_path / "mine.yaml"
    cfg = isolated_config / "dsqlops" / "config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f"pricing_file: {target}\n")
    cfg.chmod(0o600)
    r = CliRunner().invoke(cli, ["-o", "json", "pricing", "refresh"])
    assert r.exit_code == 0, r.output
    changes = json.loads(r.stdout)
    assert {"region": "eu-north-1", "field": "*", "old": "absent", "new": "present"} in changes
    assert regions_seen == ["us-east-1"]
    assert P.load(target).get("eu-north-1").storage_unit == "GiB"
    stub.assert_no_pending_responses()


_junk = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12),
                  st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                  st.dates())


_BASE = yaml.safe_load(P.shipped_path().read_text())


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from([*P.REQUIRED, "third_party", "extra"]), value=_junk)
def test_any_bad_value_is_a_config_error_never_a_crash(key, value):
    import copy

    data = copy.deepcopy(_BASE)
    data["regions"]["us-east-1"][key] = value
    try:
        t = P.parse_table(yaml.safe_load(yaml.safe_dump(data)), "fuzz.yaml")
    except ConfigError as e:
        assert "fuzz.yaml" in str(e)
    else:
        assert t.get("us-east-1").dpu_usd_per_million >= 0


def test_refresh_with_only_part_of_a_regions_prices_is_not_high_confidence():
    # The API answers the DPU price of us-east-1 (known: medium, third party) but no storage price,
    # and only a DPU price for ap-south-2 (not in the table at all).
    parsed = P.parse_price_list([
        _product("us-east-1", "USE1-DistributedProcessingUnits", "DPU", "0.0000085000"),
        _product("ap-south-2", "APS2-DistributedProcessingUnits", "DPU", "0.0000099000"),
        PRICE_LIST[2], PRICE_LIST[3],  # eu-north-1: both prices
    ])
    old = P.load(P.shipped_path())
    skipped: list[str] = []
    new = P.refreshed(old, parsed, dt.date(2026, 12, 1), path="x.yaml", skipped=skipped)
    use1 = new.regions["us-east-1"]
    assert use1.dpu_usd_per_million == D("8.5")
    assert use1.storage_usd_per_gb_month == old.regions["us-east-1"].storage_usd_per_gb_month
    assert use1.confidence == old.regions["us-east-1"].confidence != "high"
    assert use1.third_party is True
    assert use1.source.startswith("DPU price: AWS Price List API") and "the rest:" in use1.source
    assert "ap-south-2" not in new.regions and skipped == ["ap-south-2"]
    assert new.regions["eu-north-1"].confidence == "high" and not new.regions["eu-north-1"].third_party
