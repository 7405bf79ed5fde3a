"""Storage in hours without a datapoint: an idle cluster publishes nothing, but its storage is billed."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal as D

from dsqlops.cost.model import ClusterUsage, estimate, storage_by_hour
from dsqlops.output import to_jsonable
from tests.cost.test_model import PRICES, t

H = dt.timedelta(hours=1)
OCT = t(2026, 10, 1)
GB500 = D(500 * 10**9)


def test_idle_hours_carry_the_last_size_and_the_first_point_fills_backwards():
    # 500 GB seen in 4 of the 43 hours of Oct 1 00:00 .. Oct 2 19:00. Billed: 500 GB for all 43 hours
    # = 500 × 43 / 744 = 28.897849… GB-month (counting only the 4 hours gave 2.69). 5 hours before the
    # first point (00:00..04:00) use the first point; 34 more hours are carried forward.
    now = OCT + 43 * H
    u = ClusterUsage("a" * 26, "us-east-1", storage_bytes={OCT + h * H: GB500 for h in (5, 6, 20, 30)})
    e = estimate([u], PRICES, start=OCT, end=now, now=now)
    c = e.clusters[0]
    assert c.storage_gb_month == D(500) * 43 / 744
    assert str(c.storage_gb_month.quantize(D("0.1"))) == "28.9"
    d = json.loads(json.dumps(to_jsonable(e.to_dict())))["clusters"][0]
    assert d["storage_hours"] == 4
    assert d["storage_hours_carried"] == 39
    assert d["storage_hours_backfilled"] == 5
    assert d["storage_first_point_used_backwards"] is True
    assert any("39 hour(s) without a ClusterStorageSize datapoint" in w for w in d["warnings"])


def test_a_carried_size_changes_when_a_new_datapoint_arrives():
    sizes = {OCT: D(100), OCT + 3 * H: D(400)}
    hours, carried, back = storage_by_hour(sizes, OCT, OCT + 6 * H)
    assert [hours[OCT + h * H] for h in range(6)] == [D(100), D(100), D(100), D(400), D(400), D(400)]
    assert (carried, back) == (4, 0)


def test_no_carry_before_the_creation_time_nor_after_a_deleted_clusters_last_point():
    sizes = {OCT + 10 * H: D(100), OCT + 12 * H: D(100)}
    hours, carried, back = storage_by_hour(sizes, OCT, OCT + 24 * H, created=OCT + 8 * H + dt.timedelta(minutes=20),
                                           carry_to_end=False)
    assert min(hours) == OCT + 9 * H and max(hours) == OCT + 12 * H
    assert (carried, back) == (2, 1)
    # A creation time after the first datapoint cannot be right (a mock's clock): it is not used.
    hours, _, back = storage_by_hour(sizes, OCT, OCT + 24 * H, created=OCT + 20 * H)
    assert min(hours) == OCT and back == 10


def test_a_cluster_with_every_hour_present_carries_nothing():
    u = ClusterUsage("a" * 26, "us-east-1", storage_bytes={OCT + h * H: GB500 for h in range(744)})
    c = estimate([u], PRICES, start=OCT, end=t(2026, 11, 1), now=t(2026, 11, 1)).clusters[0]
    assert c.storage_gb_month == 500 and c.storage_hours_carried == 0 and not c.warnings


def test_with_no_datapoint_in_the_window_the_size_seen_before_is_carried_over_every_hour():
    hours, carried, back = storage_by_hour({}, OCT + dt.timedelta(minutes=30), OCT + 5 * H, before=D(7))
    assert hours == {OCT + h * H: D(7) for h in range(1, 5)} and (carried, back) == (4, 0)
    # a cluster that no longer exists is billed nothing past its last datapoint
    assert storage_by_hour({}, OCT, OCT + 5 * H, before=D(7), carry_to_end=False) == ({}, 0, 0)
    assert storage_by_hour({}, OCT, OCT + 5 * H) == ({}, 0, 0)
