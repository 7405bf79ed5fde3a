"""Periods and alignment follow CloudWatch's retention rules (docs/dsql-facts.md §R1.2)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsqlops.cost import timewin as T
from dsqlops.errors import UsageError

NOW = dt.datetime(2026, 11, 20, 10, 37, 12, tzinfo=dt.UTC)


@pytest.mark.parametrize("age_days,expected", [(1, 60), (15, 60), (16, 300), (63, 300), (64, 3600), (400, 3600)])
def test_l4_min_period_by_age(age_days, expected):
    assert T.min_period_for(NOW - dt.timedelta(days=age_days), NOW) == expected


def test_auto_period_keeps_series_readable():
    assert T.make_window(NOW - dt.timedelta(hours=24), NOW, "auto", now=NOW).period == 60
    assert T.make_window(NOW - dt.timedelta(days=7), NOW, "auto", now=NOW).period == 900
    assert T.make_window(NOW - dt.timedelta(days=30), NOW, "auto", now=NOW).period == 3600
    assert T.make_window(NOW - dt.timedelta(days=300), NOW, "auto", now=NOW).period == 21600


def test_window_is_aligned_and_recorded():
    w = T.make_window(NOW - dt.timedelta(hours=2), NOW, 300, now=NOW)
    assert w.start == dt.datetime(2026, 11, 20, 8, 35, tzinfo=dt.UTC)
    assert w.end == dt.datetime(2026, 11, 20, 10, 40, tzinfo=dt.UTC)
    assert w.requested_end == NOW and w.points == 25
    assert any("aligned" in m for m in w.warnings)


def test_future_end_is_clamped_with_a_warning():
    w = T.make_window(NOW - dt.timedelta(hours=1), NOW + dt.timedelta(days=1), 60, now=NOW)
    assert w.end == T.ceil_to(NOW, 60)
    assert any("future" in m for m in w.warnings)


@given(st.integers(min_value=-10_000, max_value=100_000), st.integers(min_value=1, max_value=500 * 86400))
def test_any_period_is_accepted_only_if_cloudwatch_would_answer(period, age):
    start = NOW - dt.timedelta(seconds=age)
    try:
        w = T.make_window(start, NOW, period, now=NOW)
    except UsageError:
        assert (period < 60 or period % 60 or period % T.min_period_for(start, NOW)
                or NOW - start > T.MAX_AGE)
    else:
        assert w.period == period and w.start <= start and w.end >= NOW
        assert int(w.start.timestamp()) % period == 0


@pytest.mark.parametrize("text,seconds", [("90m", 5400), ("24h", 86400), ("7d", 604800), ("1d12h", 129600)])
def test_durations(text, seconds):
    assert T.parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "0h", "h", "5y", "-1d", "1d 2"])
def test_bad_durations(text):
    with pytest.raises(UsageError):
        T.parse_duration(text)


def test_the_first_second_of_a_month_is_not_an_empty_window():
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    w = T.make_window(T.month_start(now), T.next_month(now), 3600, now=now)
    assert w.start == now and w.end == now + dt.timedelta(hours=1)
