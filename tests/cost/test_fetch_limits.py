"""GetMetricData batching, paging and throttling against a double that enforces CloudWatch's limits."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal as D

import pytest

from dsqlops.aws import AwsContext
from dsqlops.cost import metrics as M
from dsqlops.cost.timewin import Window

from .cwstub import CloudWatchLimits

UTC = dt.UTC
T0 = dt.datetime(2026, 10, 1, tzinfo=UTC)


def cid(i: int) -> str:
    return f"c{i:025d}"


def window(days: float, period: int) -> Window:
    end = T0 + dt.timedelta(days=days)
    return Window(T0, end, period, T0, end)


@pytest.fixture()
def client():
    # A real botocore client with the standard retry mode AwsContext configures; nothing leaves the process.
    return AwsContext(region="us-east-1", endpoint_url="https://monitoring.us-east-1.amazonaws.com").cloudwatch()


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("botocore.endpoint.time.sleep", lambda s: slept.append(s))
    return slept


def keys(n: int, metric: str = "TotalDPU") -> list[M.SeriesKey]:
    return [M.SeriesKey("us-east-1", cid(i), metric, "Sum") for i in range(n)]


@pytest.mark.parametrize("n,days,period,expected_calls", [
    (1200, 30, 3600, 9),   # 720 points/query → 140 queries/call (point limit) → ceil(1200/140)
    (1100, 1 / 24, 60, 3),  # 60 points/query → the 500-query limit binds → ceil(1100/500)
    (600, 1, 300, 2),      # 288 points → 350 queries/call
    (3, 14, 60, 1),        # 20,160 points → 5 queries/call
])
def test_l4_batches_respect_both_limits_and_are_minimal(client, n, days, period, expected_calls):
    stub = CloudWatchLimits(data={(cid(i), "TotalDPU"): {T0: float(i)} for i in range(n)}).install(client)
    stats = M.FetchStats()
    w = window(days, period)
    got = M.fetch(client, keys(n), w, stats=stats)
    assert stub.violations == []
    assert stub.calls == expected_calls == stats.calls
    assert stats.minimum_calls(w.points) == expected_calls
    assert all(got[k].points == {T0: D(i)} for i, k in enumerate(keys(n)))


def test_l4_a_series_longer_than_100800_points_is_split_by_time(client):
    w = window(71, 60)  # 102,240 points in one series
    assert w.points > M.MAX_POINTS_PER_CALL
    data = {T0 + dt.timedelta(days=d): float(d) for d in range(71)}
    stub = CloudWatchLimits(data={(cid(0), "TotalDPU"): data}).install(client)
    got = M.fetch(client, keys(1), w)
    assert stub.violations == [] and stub.calls == 2
    assert got[keys(1)[0]].points == {t: D(int(v)) for t, v in data.items()}
    assert [r["StartTime"] for r in stub.requests] == [T0, T0 + dt.timedelta(minutes=100_800)]


def test_f5_next_token_pages_are_merged_without_duplicates(client):
    w = window(2, 60)
    data = {(cid(i), "TotalDPU"): {T0 + dt.timedelta(minutes=m): float(m) for m in range(0, 2880, 7)}
            for i in range(4)}
    stub = CloudWatchLimits(data=data, page_points=250, overlap=1).install(client)
    stats = M.FetchStats()
    got = M.fetch(client, keys(4), w, stats=stats)
    total = sum(len(v) for v in data.values())
    assert stats.pages == stub.calls >= math.ceil(total / 250) > 1  # paged, with overlapping pages
    for i, k in enumerate(keys(4)):
        assert got[k].points == {t: D(int(v)) for t, v in data[(cid(i), "TotalDPU")].items()}
        assert got[k].status == "Complete"


def test_f5_partial_data_without_a_next_page_is_reported(client):
    CloudWatchLimits(data={(cid(0), "TotalDPU"): {T0: 1.0}}, partial_without_token=True).install(client)
    got = M.fetch(client, keys(1), window(1, 300))
    s = got[keys(1)[0]]
    assert s.status == "PartialData"
    assert any("PartialData" in m for m in s.messages)


@pytest.mark.parametrize("code", ["Throttling", "ThrottlingException"])
def test_query_compatible_throttling_is_retried_by_botocore(client, code, no_sleep):
    stub = CloudWatchLimits(data={(cid(0), "TotalDPU"): {T0: 5.0}}, throttle=3, throttle_code=code).install(client)
    got = M.fetch(client, keys(1), window(1, 300))
    assert got[keys(1)[0]].points == {T0: D(5)}
    assert stub.sends == 4 and stub.calls == 1  # one API call, three retries inside botocore
    assert len(no_sleep) == 3


def test_f4_throttling_is_retried_by_botocore_alone(client):
    """One retry policy: past botocore's attempts (5 here) the error is reported, not retried again."""
    from dsqlops.errors import ServiceError

    stub = CloudWatchLimits(data={(cid(0), "TotalDPU"): {T0: 5.0}}, throttle=7).install(client)
    with pytest.raises(ServiceError, match="Throttling"):
        M.fetch(client, keys(1), window(1, 300))
    assert stub.sends == 5 and stub.calls == 1


def test_f4_throttled_retries_are_counted(client):
    CloudWatchLimits(data={(cid(0), "TotalDPU"): {T0: 5.0}}, throttle=2).install(client)
    stats = M.FetchStats()
    got = M.fetch(client, keys(1), window(1, 300), stats=stats)
    assert got[keys(1)[0]].points == {T0: D(5)}
    assert stats.retries == 2 and stats.calls == 1


def test_persistent_throttling_becomes_a_service_error(client):
    from dsqlops.errors import ServiceError

    CloudWatchLimits(throttle=10_000).install(client)
    with pytest.raises(ServiceError, match="Throttling"):
        M.fetch(client, keys(1), window(1, 300))


def test_plan_batches_is_pure_and_counts_points():
    w = window(30, 3600)
    batches = M.plan_batches(keys(1000), w)
    assert all(len(b.keys) <= 500 and b.points(3600) <= 100_800 for b in batches)
    assert sum(len(b.keys) for b in batches) == 1000
