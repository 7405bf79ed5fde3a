"""Report renderers on edge cases: no clusters at all, hostile label values, budgets parsing."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal as D

import pytest

from dsqlops.cost import pricing
from dsqlops.cost.model import ClusterUsage, estimate
from dsqlops.cost.report import FORMATS, Report, evaluate_budgets, read_config, render

UTC = dt.UTC
NOV, NOW = dt.datetime(2026, 11, 1, tzinfo=UTC), dt.datetime(2026, 11, 10, tzinfo=UTC)
PRICES = pricing.load(pricing.shipped_path())


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_report_renders(fmt):
    est = estimate([], PRICES, start=NOV, end=NOW, now=NOW, forecast=True)
    text = render(Report(est, read_config(None, None), []), fmt)
    assert text.endswith("\n")
    if fmt == "json":
        assert json.loads(text)["clusters"] == []
    if fmt == "html":
        assert "<svg" in text and "<script" not in text


def test_html_escapes_and_prometheus_labels_escape():
    u = ClusterUsage("a" * 26, "us-east-1", dpu={"TotalDPU": {NOV: D(10)}}, account='evil"<b>\\')
    est = estimate([u], PRICES, start=NOV, end=NOW, now=NOW, forecast=True)
    rep = Report(est, read_config(None, {"total_monthly_usd": "0.001"}), [])
    rep.budgets = evaluate_budgets(est, rep.config)
    assert rep.exceeded == []  # 10 DPU is inside the free tier: $0.00 is not above $0.001
    prom = render(rep, "prometheus")
    assert 'account="evil\\"<b>\\\\"' in prom
    est.warnings.append("<script>alert(1)</script>")
    page = render(rep, "html")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize("reports,budgets,match", [
    ({"format": "pdf"}, None, "reports.format"),
    ({"regions": ["mars"]}, None, "region"),
    ({"top": 0}, None, "reports.top"),
    ({"colour": "red"}, None, "unknown key"),
    (None, {"total_monthly_usd": -1}, "non-negative"),
    (None, {"clusters": {"not-a-cluster": 5}}, "cluster"),
])
def test_bad_report_config(reports, budgets, match):
    with pytest.raises(Exception, match=match) as e:
        read_config(reports, budgets)
    assert e.value.exit_code in (252, 253)


def test_budget_exceeded_only_when_forecast_is_above():
    u = ClusterUsage("a" * 26, "us-east-1", dpu={"TotalDPU": {NOV: D(1_100_000)}})
    est = estimate([u], PRICES, start=NOV, end=NOW, now=NOW)
    # $8.80 − $0.80 free = $8.00 month to date, no forecast requested → compared as is.
    cfg = read_config(None, {"clusters": {"a" * 26: "8.00"}, "total_monthly_usd": "7.99"})
    b = evaluate_budgets(est, cfg)
    assert [(x["scope"], x["exceeded"]) for x in b] == [("cluster", False), ("total", True)]
