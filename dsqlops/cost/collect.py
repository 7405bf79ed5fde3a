"""I/O glue between AWS and the pure model: which clusters, which series, hourly usage per cluster.

One :class:`Scope` is one set of AWS credentials (a dsqlops or AWS profile, i.e. usually one
account) and the regions to cover. Clients are built up front in the calling thread; the regions
(and scopes) are then fetched concurrently.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from dsqlops.cost import metrics as M
from dsqlops.cost.model import ZERO, ClusterUsage
from dsqlops.cost.timewin import Window

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dsql import AuroraDSQLClient


@dataclass
class Scope:
    account: str
    aws: Any  # AwsContext
    regions: list[str]
    #: Cluster ids to cover (per region); None = every cluster the control plane lists (+ metrics-only ones).
    clusters: dict[str, list[str]] | None = None
    #: (region, cluster id) pairs that were only guessed (a bare id probed in every region): dropped
    #: from the result when they have no data there.
    probes: set[tuple[str, str]] = field(default_factory=set)


@dataclass(frozen=True)
class Target:
    account: str
    region: str
    cluster_id: str
    exists: bool = True


@dataclass
class Collected:
    usages: list[ClusterUsage]
    stats: M.FetchStats
    window: Window
    warnings: list[str] = field(default_factory=list)


def list_cluster_ids(dsql: Any) -> list[str]:
    """Every cluster id in the client's region (the ListClusters paginator)."""
    from dsqlops.aws import aws_errors

    ids: list[str] = []
    with aws_errors("ListClusters"):
        for page in dsql.get_paginator("list_clusters").paginate():
            ids.extend(c["identifier"] for c in page.get("clusters", []))
    return ids


def targets(scopes: Sequence[Scope], cw_clients: dict[tuple[str, str], CloudWatchClient],
            dsql_clients: dict[tuple[str, str], AuroraDSQLClient], stats: M.FetchStats) -> list[Target]:
    out: dict[tuple[str, str], Target] = {}
    for s in scopes:
        for r in s.regions:
            if s.clusters is not None:
                for cid in s.clusters.get(r, []):
                    out.setdefault((r, cid), Target(s.account, r, cid))
                continue
            listed = list_cluster_ids(dsql_clients[(s.account, r)])
            for cid in listed:
                out.setdefault((r, cid), Target(s.account, r, cid))
            for cid in M.clusters_with_metrics(cw_clients[(s.account, r)], stats=stats):
                out.setdefault((r, cid), Target(s.account, r, cid, exists=False))
    return list(out.values())


def to_usage(t: Target, series: dict[M.SeriesKey, M.Series]) -> ClusterUsage:
    dpu: dict[str, dict[dt.datetime, Decimal]] = defaultdict(dict)
    storage: dict[dt.datetime, Decimal] = {}
    tx = occ = ZERO
    for key, s in series.items():
        if key.region != t.region or key.cluster_id != t.cluster_id:
            continue
        if key.metric in M.DPU_METRICS:
            bucket = dpu[key.metric]
            for ts, v in s.points.items():
                bucket[ts] = bucket.get(ts, ZERO) + v  # StreamDPU: summed over streams
        elif key.metric == "ClusterStorageSize":
            storage.update(s.points)
        elif key.metric == "TotalTransactions":
            tx += s.total()
        elif key.metric == "OccConflicts":
            occ += s.total()
    return ClusterUsage(t.cluster_id, t.region, dpu=dict(dpu), storage_bytes=storage, transactions=tx,
                        occ_conflicts=occ, exists=t.exists, account=t.account,
                        status=None if t.exists else "not listed")


def collect(scopes: Sequence[Scope], window: Window, *, metrics: Sequence[str] = M.COST_METRICS,
            progress: Callable[[str], None] | None = None, **fetch_kw: Any) -> Collected:
    """Fetch hourly usage of every cluster the scopes cover."""
    stats = M.FetchStats()
    cw: dict[tuple[str, str], Any] = {}
    dsql: dict[tuple[str, str], Any] = {}
    for s in scopes:
        for r in s.regions:
            cw[(s.account, r)] = s.aws.cloudwatch(r)
            if s.clusters is None:
                dsql[(s.account, r)] = s.aws.dsql(r)
    if progress:
        progress("listing clusters")
    tgs = targets(scopes, cw, dsql, stats)
    keys_by: dict[tuple[str, str], list[M.SeriesKey]] = defaultdict(list)
    by_scope_region: dict[tuple[str, str], list[str]] = defaultdict(list)
    for t in tgs:
        by_scope_region[(t.account, t.region)].append(t.cluster_id)
    for (acct, region), ids in by_scope_region.items():
        streams = M.discover_streams(cw[(acct, region)], ids, stats=stats) if "StreamDPU" in metrics else {}
        keys_by[(acct, region)] = M.series_keys(region, ids, metrics, streams)
    if progress:
        progress(f"fetching {sum(len(k) for k in keys_by.values())} series of {len(tgs)} cluster(s)")
    series = M.fetch_regions(cw, keys_by, window, stats=stats, **fetch_kw)
    warnings = [m for s in series.values() for m in s.messages]
    probes = {p for s in scopes for p in s.probes}
    usages = [u for u in (to_usage(t, series) for t in tgs)
              if (u.region, u.cluster_id) not in probes or any(u.dpu.values()) or u.storage_bytes or u.transactions]
    return Collected(usages, stats, window, warnings)


def scope_from_refs(account: str, aws: Any, refs: Sequence[Any], regions: Sequence[str],
                    default_region: str | None) -> Scope:
    """Explicit clusters (ClusterRef): the region from the ref, else the only --region, else the default."""
    from dsqlops.errors import UsageError

    by_region: dict[str, list[str]] = defaultdict(list)
    for ref in refs:
        region = ref.region or (regions[0] if len(regions) == 1 else None) or (None if regions else default_region)
        if not region:
            raise UsageError(f"no region for cluster {ref.id}",
                             hint="name it by endpoint or ARN, or pass exactly one --region")
        by_region[region].append(ref.id)
    return Scope(account, aws, sorted(by_region), dict(by_region))


def estimate_for(scopes: Sequence[Scope], window: Window, prices: Any, *, now: dt.datetime, forecast: bool,
                 progress: Callable[[str], None] | None = None, **fetch_kw: Any) -> tuple[Any, Collected]:
    """collect() + model.estimate(): the one core call behind ``cost`` and ``report``."""
    from dsqlops.cost.model import estimate

    got = collect(scopes, window, progress=progress, **fetch_kw)
    est = estimate(got.usages, prices, start=window.start, end=min(window.end, max(now, window.start)),
                   now=now, forecast=forecast)
    est.warnings[:0] = got.warnings
    return est, got
