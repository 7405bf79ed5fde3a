"""DSQL CloudWatch metrics: which ones, with which statistic, fetched in as few calls as possible.

* Namespace ``AWS/AuroraDSQL``, dimension ``ClusterId``; ``StreamDPU`` also has ``StreamId`` and
  is discovered per stream with ListMetrics (docs/dsql-facts.md §4.1).
* GetMetricData with at most 500 queries and 100,800 datapoints per call (docs/dsql-facts.md §R1.2): the
  queries of many clusters share calls; a series longer than 100,800 points is split by time.
* ``NextToken`` pages are merged per query without duplicate timestamps; ``PartialData`` without a
  further page and ``InternalError`` become warnings on the series.
* No metric math (moto does not evaluate it; we compute in Python, with :class:`~decimal.Decimal`).
* Throttling: botocore alone retries ``Throttling`` and ``ThrottlingException`` with backoff (the
  client's retry config, :mod:`dsqlops.aws`); when its attempts run out the error is reported.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from dsqlops.aws import per_region
from dsqlops.cost.timewin import Window

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

NAMESPACE = "AWS/AuroraDSQL"
MAX_QUERIES_PER_CALL = 500
MAX_POINTS_PER_CALL = 100_800


@dataclass(frozen=True)
class MetricSpec:
    name: str
    stat: str
    unit: str
    dpu: bool = False
    per_stream: bool = False


#: Every DSQL metric dsqlops reads and the statistic that is right for it (docs/dsql-facts.md §4.1 table).
METRICS: dict[str, MetricSpec] = {m.name: m for m in (
    MetricSpec("TotalDPU", "Sum", "DPU", dpu=True),
    MetricSpec("ReadDPU", "Sum", "DPU", dpu=True),
    MetricSpec("WriteDPU", "Sum", "DPU", dpu=True),
    MetricSpec("ComputeDPU", "Sum", "DPU", dpu=True),
    MetricSpec("MultiRegionWriteDPU", "Sum", "DPU", dpu=True),
    MetricSpec("StreamDPU", "Sum", "DPU", dpu=True, per_stream=True),
    MetricSpec("ClusterStorageSize", "Average", "bytes"),
    MetricSpec("TotalTransactions", "Sum", "count"),
    MetricSpec("ReadOnlyTransactions", "Sum", "count"),
    MetricSpec("OccConflicts", "Sum", "count"),
    MetricSpec("QueryTimeouts", "Sum", "count"),
    MetricSpec("CommitLatency", "Average", "ms"),  # already a P50 per period: never Sum it
    MetricSpec("BytesRead", "Sum", "bytes"),
    MetricSpec("BytesWritten", "Sum", "bytes"),
    MetricSpec("ComputeTime", "Sum", "ms"),
)}
DPU_METRICS = tuple(n for n, m in METRICS.items() if m.dpu)
#: What the cost model needs.
COST_METRICS = (*DPU_METRICS, "ClusterStorageSize", "TotalTransactions", "OccConflicts")


def spec(name: str) -> MetricSpec:
    from dsqlops.errors import UsageError

    try:
        return METRICS[name]
    except KeyError:
        raise UsageError(f"unknown DSQL metric {name!r}", hint="one of: " + ", ".join(METRICS)) from None


@dataclass(frozen=True)
class SeriesKey:
    region: str
    cluster_id: str
    metric: str
    stat: str
    stream_id: str | None = None

    def dimensions(self) -> list[dict[str, str]]:
        dims = [{"Name": "ClusterId", "Value": self.cluster_id}]
        if self.stream_id is not None:
            dims.append({"Name": "StreamId", "Value": self.stream_id})
        return dims


@dataclass
class Series:
    key: SeriesKey
    points: dict[dt.datetime, Decimal] = field(default_factory=dict)
    status: str = "Complete"
    messages: list[str] = field(default_factory=list)

    def sorted_points(self) -> list[tuple[dt.datetime, Decimal]]:
        return sorted(self.points.items())

    def total(self) -> Decimal:
        return sum(self.points.values(), Decimal(0))


@dataclass
class FetchStats:
    calls: int = 0
    pages: int = 0
    queries: int = 0
    #: Attempts botocore repeated (throttling, 5xx) inside calls that finally succeeded.
    retries: int = 0
    batches: int = 0
    datapoints_requested: int = 0
    #: Queries per region (the key :func:`fetch_regions` was given): a call goes to one region's
    #: endpoint, so the lower bound on calls is per region.
    region_queries: dict[Any, int] = field(default_factory=dict)

    def add(self, other: FetchStats) -> None:
        for f in ("calls", "pages", "queries", "retries", "batches", "datapoints_requested"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        for r, q in other.region_queries.items():
            self.region_queries[r] = self.region_queries.get(r, 0) + q

    def minimum_calls(self, points_per_query: int) -> int:
        """The fewest GetMetricData calls that could carry these queries within both limits: the sum
        of :func:`lower_bound_calls` over the regions (all queries as one region when none are known)."""
        per_region = self.region_queries or {None: self.queries}
        return sum(lower_bound_calls(q, points_per_query) for q in per_region.values())


def lower_bound_calls(queries: int, points_per_query: int) -> int:
    """No fewer GetMetricData calls (to one region) can carry ``queries`` series of
    ``points_per_query`` points each: at most 500 queries and 100,800 datapoints per call."""
    if queries <= 0:
        return 0
    return max(math.ceil(queries / MAX_QUERIES_PER_CALL),
               math.ceil(queries * points_per_query / MAX_POINTS_PER_CALL))


@dataclass(frozen=True)
class Batch:
    """One GetMetricData request: up to 500 queries over one time slice."""

    start: dt.datetime
    end: dt.datetime
    keys: tuple[SeriesKey, ...]

    def points(self, period: int) -> int:
        return len(self.keys) * math.ceil((self.end - self.start).total_seconds() / period)


def plan_batches(keys: Sequence[SeriesKey], window: Window, *, max_queries: int = MAX_QUERIES_PER_CALL,
                 max_points: int = MAX_POINTS_PER_CALL) -> list[Batch]:
    """Split the queries into calls that respect both per-call limits.

    A series longer than ``max_points`` is split by time into slices of whole periods; within a
    slice, ``min(max_queries, max_points // points_per_query)`` queries share a call.
    """
    if not keys:
        return []
    period = window.period
    slice_points = min(window.points, max_points)
    slices: list[tuple[dt.datetime, dt.datetime]] = []
    t = window.start
    step = dt.timedelta(seconds=period * slice_points)
    while t < window.end:
        slices.append((t, min(t + step, window.end)))
        t += step
    out: list[Batch] = []
    for s, e in slices:
        pts = math.ceil((e - s).total_seconds() / period)
        per_call = max(1, min(max_queries, max_points // pts))
        for i in range(0, len(keys), per_call):
            out.append(Batch(s, e, tuple(keys[i:i + per_call])))
    return out


def _query(i: int, key: SeriesKey, period: int) -> dict[str, Any]:
    return {
        "Id": f"q{i}",
        "MetricStat": {"Metric": {"Namespace": NAMESPACE, "MetricName": key.metric,
                                  "Dimensions": key.dimensions()},
                       "Period": period, "Stat": key.stat},
        "ReturnData": True,
    }


def to_decimal(v: Any) -> Decimal:
    if isinstance(v, Decimal):
        return v
    d = Decimal(repr(v)) if isinstance(v, float) else Decimal(str(v))
    return Decimal(format(d.normalize(), "f")) if d else Decimal(0)


def _as_utc(t: Any) -> dt.datetime:
    if isinstance(t, dt.datetime):
        return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)
    raise TypeError(f"unexpected timestamp {t!r}")


def call_with_backoff(fn: Callable[[], Any], *, what: str, stats: FetchStats | None = None) -> Any:
    """Call ``fn`` once and map its errors to dsqlops errors.

    The backoff is botocore's: the client's retry config (:mod:`dsqlops.aws`) retries
    ``Throttling`` (CloudWatch is awsQueryCompatible, so that is its code, not
    ``ThrottlingException``) and 5xx answers; nothing is retried again here. ``stats.retries``
    counts the retries botocore made for the calls that succeeded.
    """
    import botocore.exceptions as bex

    from dsqlops.aws import translate_client_error

    try:
        resp = fn()
    except (bex.ClientError, bex.BotoCoreError) as e:
        raise translate_client_error(e, what=what) from None
    if stats is not None and isinstance(resp, Mapping):
        stats.retries += int((resp.get("ResponseMetadata") or {}).get("RetryAttempts") or 0)
    return resp


def _bind(fn: Callable[..., Any], req: dict[str, Any]) -> Callable[[], Any]:
    return lambda: fn(**req)


def fetch(cw: CloudWatchClient, keys: Sequence[SeriesKey], window: Window, *, stats: FetchStats | None = None,
          max_queries: int = MAX_QUERIES_PER_CALL, max_points: int = MAX_POINTS_PER_CALL) -> dict[SeriesKey, Series]:
    """Fetch ``keys`` (all in the client's region) over ``window``. Missing series come back empty."""
    stats = stats if stats is not None else FetchStats()
    result: dict[SeriesKey, Series] = {k: Series(k) for k in keys}
    unique = list(result)
    stats.queries += len(unique)
    for batch in plan_batches(unique, window, max_queries=max_queries, max_points=max_points):
        stats.batches += 1
        stats.datapoints_requested += batch.points(window.period)
        ids = {f"q{i}": k for i, k in enumerate(batch.keys)}
        params: dict[str, Any] = {
            "MetricDataQueries": [_query(i, k, window.period) for i, k in enumerate(batch.keys)],
            "StartTime": batch.start, "EndTime": batch.end, "ScanBy": "TimestampAscending",
            "MaxDatapoints": max_points,
        }
        last_status: dict[str, str] = {}
        token: str | None = None
        while True:
            req = dict(params)
            if token:
                req["NextToken"] = token
            resp = call_with_backoff(_bind(cw.get_metric_data, req), what="GetMetricData", stats=stats)
            stats.calls += 1
            stats.pages += 1
            for r in resp.get("MetricDataResults", []):
                key = ids.get(r.get("Id", ""))
                if key is None:
                    continue
                series = result[key]
                for ts, v in zip(r.get("Timestamps", []), r.get("Values", []), strict=False):
                    t = _as_utc(ts)
                    if t < batch.start or t >= batch.end:
                        continue
                    series.points.setdefault(t, to_decimal(v))  # first page wins on a duplicate
                last_status[r["Id"]] = r.get("StatusCode", "Complete")
                for m in r.get("Messages", []) or []:
                    series.messages.append(f"{m.get('Code', '')}: {m.get('Value', '')}".strip(": "))
            for m in resp.get("Messages", []) or []:
                for s in result.values():
                    if s.key in batch.keys:
                        s.messages.append(f"{m.get('Code', '')}: {m.get('Value', '')}".strip(": "))
            token = resp.get("NextToken")
            if not token:
                break
        for qid, status in last_status.items():
            series = result[ids[qid]]
            if status != "Complete":
                series.status = status
                series.messages.append(
                    f"CloudWatch returned {status} for {series.key.metric} of {series.key.cluster_id} "
                    f"({batch.start:%Y-%m-%dT%H:%MZ}..{batch.end:%Y-%m-%dT%H:%MZ}) and no further page")
    return result


def discover_streams(cw: CloudWatchClient, cluster_ids: Iterable[str], *,
                     stats: FetchStats | None = None) -> dict[str, list[str]]:
    """ClusterId → StreamIds that have a ``StreamDPU`` metric (ListMetrics, paged)."""
    wanted = set(cluster_ids)
    found: dict[str, set[str]] = {c: set() for c in wanted}
    for metric in list_metrics(cw, "StreamDPU", stats=stats):
        dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
        cid, sid = dims.get("ClusterId"), dims.get("StreamId")
        if cid in wanted and sid:
            found[cid].add(sid)
    return {c: sorted(s) for c, s in found.items()}


def list_metrics(cw: CloudWatchClient, metric_name: str, *, stats: FetchStats | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        req: dict[str, Any] = {"Namespace": NAMESPACE, "MetricName": metric_name}
        if token:
            req["NextToken"] = token
        resp = call_with_backoff(_bind(cw.list_metrics, req), what="ListMetrics", stats=stats)
        out.extend(resp.get("Metrics", []))
        token = resp.get("NextToken")
        if not token:
            return out


def clusters_with_metrics(cw: CloudWatchClient, *, stats: FetchStats | None = None) -> list[str]:
    """Cluster ids that have a TotalDPU or ClusterStorageSize metric in this region (deleted ones too)."""
    ids: set[str] = set()
    for name in ("TotalDPU", "ClusterStorageSize"):
        for m in list_metrics(cw, name, stats=stats):
            dims = {d["Name"]: d["Value"] for d in m.get("Dimensions", [])}
            if set(dims) == {"ClusterId"}:
                ids.add(dims["ClusterId"])
    return sorted(ids)


def series_keys(region: str, cluster_ids: Iterable[str], metrics: Iterable[str],
                streams: Mapping[str, Sequence[str]] | None = None) -> list[SeriesKey]:
    keys: list[SeriesKey] = []
    for cid in cluster_ids:
        for name in metrics:
            m = spec(name)
            if m.per_stream:
                keys.extend(SeriesKey(region, cid, name, m.stat, sid) for sid in (streams or {}).get(cid, ()))
            else:
                keys.append(SeriesKey(region, cid, name, m.stat))
    return keys


def fetch_regions(clients: Mapping[Any, CloudWatchClient], keys_by_region: Mapping[Any, Sequence[SeriesKey]],
                  window: Window, *, stats: FetchStats | None = None, max_workers: int = 8,
                  failures: dict[Any, str] | None = None, **kw: Any) -> dict[SeriesKey, Series]:
    """Fetch every region concurrently (at most ``max_workers`` at a time; clients are built
    beforehand, because creating boto3 clients is not thread-safe).

    ``failures`` as for :func:`dsqlops.aws.per_region`: without it the first region that fails
    raises; with it, a region whose fetch fails (access denied, unreachable, throttled past
    botocore's retries) is recorded there with its message and its series are left out, and the
    other regions still answer.
    """
    stats = stats if stats is not None else FetchStats()
    regions = [r for r in keys_by_region if keys_by_region[r]]
    per_stats = {r: FetchStats() for r in regions}
    out: dict[SeriesKey, Series] = {}
    tasks = {r: functools.partial(fetch, clients[r], keys_by_region[r], window, stats=per_stats[r], **kw)
             for r in regions}
    for got in per_region(tasks, workers=max_workers, failures=failures).values():
        out.update(got)
    for r, s in per_stats.items():
        s.region_queries = {r: s.queries}
        stats.add(s)
    return out
