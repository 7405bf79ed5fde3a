"""The latency histogram: merging is exact, percentiles are within the bucket width."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from dsqlops.bench.histogram import Histogram, Snapshot

latencies = st.lists(st.floats(min_value=1e-5, max_value=30.0, allow_nan=False), min_size=1, max_size=300)


@settings(max_examples=60, deadline=None)
@given(a=latencies, b=latencies, p=st.floats(min_value=1, max_value=100))
def test_merge_equals_union_and_percentiles_are_close(a: list[float], b: list[float], p: float) -> None:
    ha, hb, hu = Histogram(), Histogram(), Histogram()
    for x in a:
        ha.add(x)
        hu.add(x)
    for x in b:
        hb.add(x)
        hu.add(x)
    ha.merge(hb)
    assert ha.counts == hu.counts and ha.total == len(a) + len(b)
    samples = sorted(a + b)
    exact = samples[max(1, math.ceil(len(samples) * p / 100)) - 1]
    got = ha.percentile(p)
    assert got is not None
    assert abs(got - max(exact, 1e-5)) <= 0.011 * max(exact, 1e-5) + 1e-9  # 2 % buckets, reported mid-bucket
    assert ha.percentile(50) <= ha.percentile(99)  # type: ignore[operator]


@given(st.dictionaries(st.sampled_from(["committed", "retries", "occ_escaped", "errors"]),
                       st.integers(min_value=0, max_value=10**6)))
def test_snapshot_round_trips(counters: dict[str, int]) -> None:
    s = Snapshot()
    for k, v in counters.items():
        setattr(s, k, v)
    s.latency.add(0.01)
    back = Snapshot.from_dict(s.to_dict())
    assert back.to_dict() == s.to_dict()


def test_pacer_budget_and_stop() -> None:
    import threading

    from dsqlops.bench.runner import _Pacer

    stop = threading.Event()
    p = _Pacer(rate=10_000.0, budget=5, deadline=None)
    assert [p.next(stop) for _ in range(7)] == [True] * 5 + [False, False]
    stop.set()
    assert _Pacer(rate=None, budget=None, deadline=None).next(stop) is False
