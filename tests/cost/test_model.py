"""The pure cost model, checked against bills computed by hand (the arithmetic is in each comment)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from dsqlops.cost import pricing
from dsqlops.cost.model import ClusterUsage, estimate, money
from dsqlops.cost.timewin import hours_in_month

UTC = dt.UTC
H = dt.timedelta(hours=1)
A = "a" * 26
B = "b" * 26


def t(*a: int) -> dt.datetime:
    return dt.datetime(*a, tzinfo=UTC)


def hours(start: dt.datetime, n: int, value: D | int) -> dict[dt.datetime, D]:
    return {start + i * H: D(value) for i in range(n)}


def table(**regions: tuple[str, str, str]) -> pricing.PriceTable:
    data = {"schema": 1, "currency": "USD", "as_of": "2026-11-01", "regions": {
        r.replace("_", "-"): {"dpu_usd_per_million": dpu, "storage_usd_per_gb_month": gb, "storage_unit": unit,
                              "free_tier_dpu": "100000", "free_tier_storage_gb_month": "1", "currency": "USD",
                              "as_of": "2026-11-01", "source": "test", "confidence": "high"}
        for r, (dpu, gb, unit) in regions.items()}}
    return pricing.parse_table(data, "test.yaml")


PRICES = table(us_east_1=("8.00", "0.33", "GB"), us_east_2=("10.00", "0.40", "GB"))
NOV, DEC = t(2026, 11, 1), t(2026, 12, 1)


def usage(cid: str = A, region: str = "us-east-1", total: dict | None = None, storage: dict | None = None,
          **kw) -> ClusterUsage:
    return ClusterUsage(cid, region, dpu={"TotalDPU": total or {}}, storage_bytes=storage or {}, **kw)


def test_hours_in_month_including_a_leap_february():
    assert hours_in_month(t(2026, 11, 5)) == 720
    assert hours_in_month(t(2026, 10, 5)) == 744
    assert hours_in_month(t(2027, 2, 5)) == 672
    assert hours_in_month(t(2028, 2, 5)) == 696


def test_below_the_free_tier_costs_nothing():
    # 50,000 DPU ($0.40) + 0.5 GB for all 720 h = 0.5 GB-month ($0.165): all inside the free tier.
    u = usage(total={NOV + H * 5: D(50_000)}, storage=hours(NOV, 720, 500_000_000))
    e = estimate([u], PRICES, start=NOV, end=DEC, now=DEC)
    c = e.clusters[0]
    assert c.billed_dpu == D(50_000)
    assert c.storage_gb_month == D("0.5")
    assert money(c.gross_usd) == D("0.57")  # 0.40 + 0.165
    assert money(c.total_usd) == D("0.00")
    assert e.totals()["total_usd"] == D("0.00")


def test_above_the_free_tier():
    # 1,100,000 DPU = $8.80; 3 GB for 720 h = 3 GB-month = $0.99; free: 100,000 DPU ($0.80) + 1 GB-mo ($0.33).
    u = usage(total=hours(NOV, 11, 100_000), storage=hours(NOV, 720, 3_000_000_000))
    e = estimate([u], PRICES, start=NOV, end=DEC, now=DEC)
    d = e.to_dict()
    assert d["clusters"][0]["dpu_usd"] == D("8.80")
    assert d["clusters"][0]["storage_usd"] == D("0.99")
    assert d["clusters"][0]["free_tier_usd"] == D("1.13")
    assert d["totals"]["total_usd"] == D("8.66")
    assert d["free_tier"][0]["free_dpu_applied"] == D(100_000)


def test_month_boundary_applies_the_free_tier_per_month_and_prorates_storage_per_month():
    # Oct 31 12:00 .. Nov 1 12:00. 200,000 DPU on each side: each month gets its own 100,000 free.
    # 31 GB for 12 h of October = 31*12/744 = 0.5 GB-mo; 12 h of November = 31*12/720 = 0.51666… GB-mo.
    start, end = t(2026, 10, 31, 12), t(2026, 11, 1, 12)
    total = {t(2026, 10, 31, 20): D(200_000), t(2026, 11, 1, 3): D(200_000)}
    u = usage(total=total, storage=hours(start, 24, 31_000_000_000))
    e = estimate([u], PRICES, start=start, end=end, now=t(2026, 11, 2))
    c = e.clusters[0]
    assert c.storage_gb_month == D("0.5") + D(31) * 12 / 720
    assert [f["month"] for f in e.free_tier] == ["2026-10", "2026-11"]
    assert c.free_tier_dpu == D(200_000)
    # DPU $3.20 gross, $1.60 free; storage entirely free (0.5 ≤ 1 and 0.5167 ≤ 1).
    assert money(c.total_usd) == D("1.60")
    assert any("does not start at the beginning of a month" in w for w in e.warnings)


def test_leap_year_february_has_696_hours():
    # Feb 2028: 4 GB for all 696 hours = 4 GB-month → (4 - 1 free) × 0.33 = $0.99. 100,000 DPU: free.
    feb, mar = t(2028, 2, 1), t(2028, 3, 1)
    u = usage(total={feb: D(100_000)}, storage=hours(feb, 696, 4_000_000_000))
    e = estimate([u], PRICES, start=feb, end=mar, now=t(2028, 3, 2))
    assert e.clusters[0].storage_gb_month == D(4)
    assert e.totals()["total_usd"] == D("0.99")
    # The same bytes over a 672-hour February (2027) would be 4 GB-month as well, but only over 672 hours.
    feb27 = t(2027, 2, 1)
    u27 = usage(total={}, storage=hours(feb27, 696, 4_000_000_000))  # 24 hours spill into March
    e27 = estimate([u27], PRICES, start=feb27, end=t(2027, 3, 1), now=t(2027, 3, 5))
    assert e27.clusters[0].storage_gb_month == D(4)


def test_cluster_created_mid_month_forecasts_from_its_first_full_day():
    # Created Nov 16 00:00, 1,000 DPU/h → 24,000/day; now Nov 20 00:00: MTD 96,000 (free).
    # Rate over Nov 16..20 (4 full days, not 7 with zeros) = 24,000/day; 11 days left → 360,000 DPU.
    # Forecast: 360,000 × $8/M = $2.88 − free 100,000 ($0.80) = $2.08.
    now = t(2026, 11, 20)
    u = usage(total=hours(t(2026, 11, 16), 96, 1_000))
    e = estimate([u], PRICES, start=NOV, end=now, now=now, forecast=True)
    f = e.clusters[0].forecast
    assert f is not None
    assert f.rate_start == t(2026, 11, 16) and f.rate_end == now
    assert f.dpu_per_day == D(24_000)
    assert f.dpu == D(360_000)
    assert money(f.total_usd) == D("2.08")
    assert e.totals()["total_usd"] == D("0.00")
    assert e.totals()["forecast_usd"] == D("2.08")


def test_gaps_in_the_data_count_as_zero():
    # 700,000 DPU in the first hour, then nothing but 7,000 DPU on Nov 14. now = Nov 15 00:00.
    # MTD 707,000 → $5.656 − $0.80 = $4.856 → $4.86. Rate over Nov 8..15 = 7,000/7 = 1,000/day,
    # 16 days left → 723,000 → $5.784 − $0.80 = $4.984 → $4.98.
    now = t(2026, 11, 15)
    u = usage(total={NOV: D(700_000), t(2026, 11, 14, 10): D(7_000)})
    e = estimate([u], PRICES, start=NOV, end=now, now=now, forecast=True)
    assert e.totals()["total_usd"] == D("4.86")
    assert e.clusters[0].forecast.dpu_per_day == D(1_000)
    assert e.totals()["forecast_usd"] == D("4.98")
    assert e.clusters[0].daily_dpu == {dt.date(2026, 11, 1): D(700_000), dt.date(2026, 11, 14): D(7_000)}


def test_multi_region_peers_are_priced_in_their_own_regions():
    # 600,000 DPU each: $4.80 in us-east-1 ($8/M) and $6.00 in us-east-2 ($10/M, a test price).
    # The one free tier (100,000 DPU) is split 50/50: $0.40 + $0.50. Total $10.80 − $0.90 = $9.90.
    a = usage(A, "us-east-1", total={NOV: D(600_000)})
    b = usage(B, "us-east-2", total={NOV: D(600_000)})
    e = estimate([a, b], PRICES, start=NOV, end=DEC, now=DEC)
    by = {c.cluster_id: c for c in e.clusters}
    assert money(by[A].total_usd) == D("4.40")
    assert money(by[B].total_usd) == D("5.50")
    assert e.totals()["total_usd"] == D("9.90")
    assert e.clusters[0].cluster_id == B  # most expensive first


def test_deleted_cluster_with_metrics_is_billed_and_forecasts_nothing_more():
    # Deleted after Nov 5: 300,000 DPU. MTD and forecast are both $2.40 − $0.80 = $1.60.
    now = t(2026, 11, 20)
    u = usage(total=hours(NOV, 5, 60_000), exists=False, status="DELETED")
    e = estimate([u], PRICES, start=NOV, end=now, now=now, forecast=True)
    c = e.clusters[0]
    assert money(c.total_usd) == D("1.60")
    assert c.forecast is not None and c.forecast.dpu == D(300_000)
    assert money(c.forecast.total_usd) == D("1.60")
    assert any("deleted" in w for w in c.warnings)


def test_total_dpu_disagreeing_with_components_warns_and_components_only_is_billed():
    now = DEC
    u = ClusterUsage(A, "us-east-1", dpu={"TotalDPU": {NOV: D(1000)}, "ReadDPU": {NOV: D(400)},
                                          "WriteDPU": {NOV: D(300)}, "ComputeDPU": {NOV: D(100)}})
    e = estimate([u], PRICES, start=NOV, end=now, now=now)
    assert e.clusters[0].billed_dpu == D(1000) and e.clusters[0].dpu_basis == "TotalDPU"
    assert any("differs from the sum" in w for w in e.warnings)
    ok = ClusterUsage(A, "us-east-1", dpu={"TotalDPU": {NOV: D(1000)}, "ReadDPU": {NOV: D("999.5")}})
    assert not estimate([ok], PRICES, start=NOV, end=now, now=now).warnings
    comp = ClusterUsage(A, "us-east-1", dpu={"ReadDPU": {NOV: D(400)}, "StreamDPU": {NOV: D(50)}})
    c = estimate([comp], PRICES, start=NOV, end=now, now=now).clusters[0]
    assert c.billed_dpu == D(450) and c.dpu_basis == "components"
    assert c.components["stream"] == D(50)


def test_gib_priced_storage_divides_by_2_to_the_30():
    gib = table(us_east_1=("8.00", "0.33", "GiB"))
    u = usage(storage=hours(NOV, 720, 2 * 2**30))
    c = estimate([u], gib, start=NOV, end=DEC, now=DEC).clusters[0]
    assert c.storage_gb_month == D(2)
    assert money(c.total_usd) == D("0.33")


def test_free_tier_is_per_account():
    a = usage(A, total={NOV: D(100_000)}, account="prod")
    b = usage(B, total={NOV: D(100_000)}, account="dev")
    e = estimate([a, b], PRICES, start=NOV, end=DEC, now=DEC)
    assert e.totals()["total_usd"] == D("0.00")


def test_a_region_without_a_price_is_marked_and_left_out_of_the_totals():
    # A priced alone: 1,100,000 DPU = $8.80. The eu-north-1 cluster still takes its share of the free
    # tier (the allowance is the account's): 1,100,000:100,000 → A gets 91,666.67 free DPU ($0.733333).
    a = usage(total={NOV: D(1_100_000)})
    x = usage(B, region="eu-north-1", total={NOV: D(100_000)})
    e = estimate([a, x], PRICES, start=NOV, end=DEC, now=DEC)
    by = {c.cluster_id: c for c in e.clusters}
    assert by[B].priced is False and by[A].priced is True
    assert e.totals()["total_usd"] == D("8.07") and e.totals()["unpriced_clusters"] == 1
    d = e.to_dict()
    xb = next(c for c in d["clusters"] if c["cluster_id"] == B)
    assert xb["billed_dpu"] == D(100_000) and xb["total_usd"] is None and xb["dpu_usd_per_million"] is None
    assert d["unpriced_regions"] == ["eu-north-1"]
    assert any("test.yaml" in w and "eu-north-1" in w for w in e.warnings)


def test_forecast_outside_the_current_month_is_refused_with_a_warning():
    e = estimate([usage(total={NOV: D(1)})], PRICES, start=NOV, end=DEC, now=t(2027, 1, 15), forecast=True)
    assert e.clusters[0].forecast is None
    assert any("no forecast" in w for w in e.warnings)


_hour = st.integers(min_value=0, max_value=24 * 60 - 1).map(lambda h: t(2026, 10, 15) + h * H)
_usage = st.builds(
    lambda cid, region, acct, dpu, stor: ClusterUsage(cid, region, dpu={"TotalDPU": dpu}, storage_bytes=stor,
                                                      account=acct),
    st.sampled_from([A, B, "e" * 26, "f" * 26]), st.sampled_from(["us-east-1", "us-east-2"]),
    st.sampled_from(["prod", "dev"]),
    st.dictionaries(_hour, st.integers(min_value=0, max_value=300_000).map(D), max_size=6),
    st.dictionaries(_hour, st.integers(min_value=0, max_value=10**12).map(D), max_size=6),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_usage, max_size=5, unique_by=lambda u: (u.cluster_id, u.region)))
def test_free_tier_is_applied_exactly_once_per_account_and_month(usages):
    start, end = t(2026, 10, 15), t(2026, 12, 14)
    e = estimate(usages, PRICES, start=start, end=end, now=end)
    for row in e.free_tier:
        group = [c for c in e.clusters if c.account == row["account"]]
        used = sum((c.monthly_dpu.get(t(*map(int, row["month"].split("-")), 1), D(0)) for c in group), D(0))
        assert row["free_dpu_applied"] == min(used, D(100_000)).quantize(D("0.000001"))
    for c in e.clusters:
        assert c.free_tier_dpu <= c.billed_dpu + D("1e-18")
        assert money(c.total_usd) >= 0
    assert e.totals()["total_usd"] == money(sum((c.total_usd for c in e.clusters), D(0)))


def test_forecast_in_the_first_hour_of_a_month_uses_the_hours_so_far():
    # Dec 1 00:30: 100 DPU in half an hour → 4,800 DPU/day over the remaining 30.979… days.
    now = t(2026, 12, 1, 0, 30)
    u = usage(total={t(2026, 12, 1): D(100)})
    f = estimate([u], PRICES, start=t(2026, 12, 1), end=now, now=now, forecast=True).clusters[0].forecast
    assert f is not None and f.method.startswith("hours so far")
    assert f.dpu_per_day == D(4800)
    assert f.dpu == D(100) + D(4800) * (D(31 * 86400 - 1800) / D(86400))
