"""GetMetricData stays at its lower bound for a fleet spread over several regions.

A call goes to one region's endpoint, so the bound is per region: max(ceil(Q/500), ceil(Q x p / 100,800))
for Q queries of p points there, summed over the regions. The calls are counted on the wire (a
``before-send`` double per region that also enforces CloudWatch's per-call limits), not taken from
dsqlops' own counters.
"""

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
REGIONS = ("us-east-1", "us-east-2", "us-west-2")
#: What `dsqlops cost` queries per cluster (StreamDPU only exists per discovered stream).
COST_SERIES = tuple(m for m in M.COST_METRICS if not M.METRICS[m].per_stream)


def bound(queries: int, points: int) -> int:
    return max(math.ceil(queries / 500), math.ceil(queries * points / 100_800)) if queries else 0


def month_window(year: int, month: int, period: int) -> Window:
    start = dt.datetime(year, month, 1, tzinfo=UTC)
    end = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return Window(start, end, period, start, end)


@pytest.mark.parametrize("clusters,metrics,window", [
    (1000, COST_SERIES, month_window(2026, 10, 3600)),   # `cost` over a 31-day month: 744 points a series
    (1000, COST_SERIES, month_window(2026, 11, 3600)),   # a 30-day month: 720 points
    (1000, ("TotalDPU", "ClusterStorageSize"), month_window(2026, 11, 86400)),  # the benchmark's setting
    (7, COST_SERIES, month_window(2026, 10, 3600)),      # fewer clusters than regions x calls
    # Calls filled to the last query: one query fewer per call would cost a call more per region.
    (105, COST_SERIES, month_window(2026, 11, 3600)),    # 280 queries a region = 2 x 140 (point limit)
    (750, ("TotalDPU", "ClusterStorageSize"), month_window(2026, 11, 86400)),  # 500 a region (query limit)
], ids=["31d-hourly", "30d-hourly", "30d-daily", "7-clusters", "full-calls-points", "full-calls-queries"])
def test_a_fleet_over_three_regions_is_fetched_in_the_fewest_calls(clusters, metrics, window):
    aws = AwsContext(region="us-east-1", endpoint_url="https://monitoring.us-east-1.amazonaws.com")
    ids = [f"c{i:025d}" for i in range(clusters)]
    home = {cid: REGIONS[i % len(REGIONS)] for i, cid in enumerate(ids)}
    t = window.start + dt.timedelta(days=2)
    clients, stubs, keys = {}, {}, {}
    for r in REGIONS:
        mine = [cid for cid in ids if home[cid] == r]
        clients[r] = aws.cloudwatch(r)
        stubs[r] = CloudWatchLimits(data={(cid, m): {t: float(n)} for n, cid in enumerate(mine)
                                          for m in metrics}).install(clients[r])
        keys[r] = M.series_keys(r, mine, metrics)
    stats = M.FetchStats()
    got = M.fetch_regions(clients, keys, window, stats=stats)

    expected = sum(bound(len(keys[r]), window.points) for r in REGIONS)
    assert all(s.violations == [] for s in stubs.values())
    assert {r: stubs[r].sends for r in REGIONS} == {r: bound(len(keys[r]), window.points) for r in REGIONS}
    assert sum(s.sends for s in stubs.values()) == stats.calls == expected
    assert stats.minimum_calls(window.points) == expected
    assert stats.region_queries == {r: len(keys[r]) for r in REGIONS}
    # Every series came back from its own region, with its own value.
    for r in REGIONS:
        mine = [cid for cid in ids if home[cid] == r]
        for n, cid in enumerate(mine):
            for m in metrics:
                assert got[M.SeriesKey(r, cid, m, M.METRICS[m].stat)].points == {t: D(n)}


def test_the_bound_is_per_region_not_over_the_whole_fleet():
    # 600 one-point queries: 2 calls to one region, but 3 when they are spread over three regions.
    s = M.FetchStats()
    for r in REGIONS:
        s.add(M.FetchStats(queries=200, region_queries={r: 200}))
    assert s.minimum_calls(1) == 3
    assert M.FetchStats(queries=600).minimum_calls(1) == 2
