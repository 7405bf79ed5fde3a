"""I/O glue between AWS and the pure model: which clusters, which series, hourly usage per cluster.

One :class:`Scope` is one set of AWS credentials (a dsqlops or AWS profile) and the regions to
cover. The free tier belongs to the AWS account behind the credentials, so each scope's account is
resolved with STS GetCallerIdentity (cached per credentials); two profiles of one account share one
allowance. Clients are built up front in the calling thread; the regions (and scopes) are then
fetched concurrently.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from dsqlops.aws import per_region
from dsqlops.control.clusters import LIST_WORKERS, REGION_WORKERS, RegionFailure
from dsqlops.cost import metrics as M
from dsqlops.cost.model import ZERO, ClusterUsage
from dsqlops.cost.timewin import Window, ceil_to, floor_to, utcnow

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dsql import AuroraDSQLClient


@dataclass
class Scope:
    #: A label for the credentials (the profile name); replaced by the AWS account id when STS answers.
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
    status: str | None = None
    created: dt.datetime | None = None
    #: Named by the user (not listed, not probed): a missing one is an error, not an empty row.
    explicit: bool = False


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


#: Account ids by (access key, endpoint): one STS call per set of credentials and process.
_ACCOUNTS: dict[tuple[str, str | None], str] = {}


def account_of(aws: Any, region: str, fallback: str, warnings: list[str]) -> str:
    """The AWS account id behind ``aws``'s credentials (STS GetCallerIdentity, cached per credentials).

    When STS cannot answer (no permission, an endpoint without STS) the ``fallback`` label is used and
    a warning says that the free tier is then keyed by it.
    """
    from dsqlops.errors import DsqlopsError

    try:
        key = (str(aws.credentials().access_key), getattr(aws, "endpoint_url", None))
    except DsqlopsError:
        key = None
    if key is not None and key in _ACCOUNTS:
        return _ACCOUNTS[key]
    import botocore.exceptions as bex

    try:
        account = str(aws.client("sts", region).get_caller_identity()["Account"])
    except (bex.BotoCoreError, bex.ClientError, DsqlopsError, KeyError) as e:
        warnings.append(f"could not find the AWS account of {fallback!r} (STS GetCallerIdentity: {e}); "
                        f"its free tier is keyed by {fallback!r}")
        return fallback
    if key is not None:
        _ACCOUNTS[key] = account
    return account


#: Error codes that mean "you may not ask", not "there is no such cluster".
_DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"})


def describe(dsql: Any, cluster_id: str) -> dict[str, Any] | None:
    """GetCluster, or None when the region has no such cluster."""
    from dsqlops.aws import aws_errors
    from dsqlops.errors import NotFoundError

    try:
        with aws_errors("GetCluster"):
            return dict(dsql.get_cluster(identifier=cluster_id))
    except NotFoundError:
        return None


def _checked(account: str, region: str, cid: str, dsql: Any, *, explicit: bool, probe: bool = False,
             warnings: list[str] | None = None) -> Target:
    from dsqlops.errors import ServiceError

    try:
        info = describe(dsql, cid)
    except ServiceError as e:
        if e.code not in _DENIED:
            raise
        # A cost-only role may read CloudWatch but not the control plane: price what CloudWatch has.
        if warnings is not None:
            warnings.append(f"{cid}: could not check the cluster in {region} with GetCluster ({e.code}); "
                            "allow dsql:GetCluster to have missing clusters reported and creation times used")
        return Target(account, region, cid, exists=not probe, status=None if not probe else "not checked")
    if info is None:
        return Target(account, region, cid, exists=False, status="not found", explicit=explicit)
    created = info.get("creationTime")
    if isinstance(created, dt.datetime) and created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    return Target(account, region, cid, status=info.get("status"), explicit=explicit,
                  created=created if isinstance(created, dt.datetime) else None)


def _scope_region_targets(s: Scope, r: str, cw: CloudWatchClient, dsql: AuroraDSQLClient, stats: M.FetchStats,
                          warnings: list[str], skip: set[tuple[str, str]]) -> list[Target]:
    """The clusters one scope covers in one region (``skip``: already checked by an earlier scope).

    The GetCluster calls run on at most LIST_WORKERS threads, like ``cluster list``'s."""
    def check(cids: list[str], listed: bool) -> list[Target]:
        def one(cid: str) -> tuple[Target, list[str]]:
            ws: list[str] = []
            probe = not listed and (r, cid) in s.probes
            return _checked(s.account, r, cid, dsql, explicit=not listed and not probe, probe=probe, warnings=ws), ws
        cids = [cid for cid in cids if (r, cid) not in skip]
        if len(cids) > 1:
            with ThreadPoolExecutor(max_workers=min(LIST_WORKERS, len(cids))) as pool:
                done = list(pool.map(one, cids))
        else:
            done = [one(cid) for cid in cids]
        for _t, ws in done:
            warnings.extend(ws)
        return [t for t, _ws in done]

    if s.clusters is not None:
        return check(list(s.clusters.get(r, [])), listed=False)
    listed = list_cluster_ids(dsql)
    known = set(listed)
    out = check(listed, listed=True)
    out += [Target(s.account, r, cid, exists=False)
            for cid in M.clusters_with_metrics(cw, stats=stats) if cid not in known]
    return out


def targets(scopes: Sequence[Scope], cw_clients: dict[tuple[str, str], CloudWatchClient],
            dsql_clients: dict[tuple[str, str], AuroraDSQLClient], stats: M.FetchStats,
            warnings: list[str] | None = None, *, workers: int = REGION_WORKERS,
            failures: dict[tuple[str, str], str] | None = None) -> list[Target]:
    """Every cluster the scopes cover: the regions are listed concurrently (at most ``workers`` at a
    time); see :func:`per_region` for ``failures``. A cluster two scopes cover is the first scope's."""
    tasks: dict[tuple[int, str], Callable[[], tuple[list[Target], M.FetchStats, list[str]]]] = {}
    named: set[tuple[str, str]] = set()
    for i, s in enumerate(scopes):
        for r in s.regions:
            def task(s: Scope = s, r: str = r, skip: frozenset[tuple[str, str]] = frozenset(named)) -> Any:
                st, ws = M.FetchStats(), list[str]()  # per task: the counters are not thread-safe
                found = _scope_region_targets(s, r, cw_clients[(s.account, r)], dsql_clients[(s.account, r)],
                                              st, ws, set(skip))
                return found, st, ws
            tasks[(i, r)] = task
        if s.clusters is not None:
            named |= {(r, cid) for r, ids in s.clusters.items() for cid in ids}
    failed: dict[tuple[int, str], str] = {}
    done = per_region(tasks, workers=workers, failures=failed if failures is not None else None)
    if failures is not None:
        for (i, r), error in failed.items():
            failures[(scopes[i].account, r)] = error
    out: dict[tuple[str, str], Target] = {}
    for found, st, ws in done.values():
        stats.add(st)
        if warnings is not None:
            warnings.extend(ws)
        for t in found:
            out.setdefault((t.region, t.cluster_id), t)
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
                        status=t.status if t.exists else (t.status or "not listed"), created=t.created)


#: How far back the size of a cluster that published no ClusterStorageSize in the window is looked
#: for (CloudWatch keeps hourly datapoints for 455 days; docs/dsql-facts.md §4.1).
STORAGE_LOOKBACK = dt.timedelta(days=450)
_DAY = 86400


def with_storage_before(usages: list[ClusterUsage], cw: dict[tuple[str, str], CloudWatchClient], window: Window,
                        stats: M.FetchStats, *,
                        failures: dict[tuple[str, str], str] | None = None) -> list[ClusterUsage]:
    """Each existing cluster without a ClusterStorageSize datapoint in the window (idle all along: it
    publishes nothing, yet its storage is billed) gets the last size seen before the window, from one
    batched daily fetch per region. Clusters with a datapoint cost no extra call. ``failures``: as
    :func:`dsqlops.cost.metrics.fetch_regions` (the caller drops the regions recorded there)."""
    idle = [u for u in usages if u.exists and not u.storage_bytes]
    if not idle:
        return usages
    start = floor_to(max(window.start - STORAGE_LOOKBACK, utcnow() - STORAGE_LOOKBACK), _DAY)
    end = ceil_to(window.start, _DAY)
    if start >= end:
        return usages
    lookback = Window(start, end, _DAY, start, window.start)
    stat = M.spec("ClusterStorageSize").stat
    keys_by: dict[tuple[str, str], list[M.SeriesKey]] = defaultdict(list)
    for u in idle:
        keys_by[(u.account, u.region)].append(M.SeriesKey(u.region, u.cluster_id, "ClusterStorageSize", stat))
    series = M.fetch_regions(cw, keys_by, lookback, stats=stats, failures=failures)
    out = []
    for u in usages:
        s = series.get(M.SeriesKey(u.region, u.cluster_id, "ClusterStorageSize", stat))
        points = {t: v for t, v in (s.points if s else {}).items() if t < window.start}
        if u.exists and not u.storage_bytes and points:  # one of the idle ones
            last = max(points)
            u = dataclasses.replace(u, storage_before=(last, points[last]))
        out.append(u)
    return out


def _has_data(u: ClusterUsage) -> bool:
    return bool(any(u.dpu.values()) or u.storage_bytes or u.transactions)


def _sts_region(s: Scope) -> str:
    """Where to ask STS: the profile's own Region when the scope covers it (with --all-regions the
    first Region in name order may be an opt-in one the account has not enabled)."""
    own = getattr(s.aws, "region", None)
    return own if own in s.regions else s.regions[0]


def collect(scopes: Sequence[Scope], window: Window, *, metrics: Sequence[str] = M.COST_METRICS,
            progress: Callable[[str], None] | None = None, region_workers: int = REGION_WORKERS,
            region_failures: list[RegionFailure] | None = None, **fetch_kw: Any) -> Collected:
    """Fetch hourly usage of every cluster the scopes cover.

    A cluster the user named that GetCluster does not find and that has no metrics in the window is
    an error naming the region searched (never a silent $0).

    The regions are listed, searched for streams and fetched concurrently, at most ``region_workers``
    at a time. With ``region_failures`` (``cost --all-regions``), a region that fails at any step is
    appended there with why and left out entirely (none of its clusters is priced at a made-up $0);
    without it, the first failure is raised.
    """
    from dsqlops.errors import NotFoundError

    stats = M.FetchStats()
    warnings: list[str] = []
    scopes = [Scope(account_of(s.aws, _sts_region(s), s.account, warnings) if s.regions else s.account,
                    s.aws, s.regions, s.clusters, s.probes) for s in scopes]
    cw: dict[tuple[str, str], Any] = {}
    dsql: dict[tuple[str, str], Any] = {}
    for s in scopes:
        for r in s.regions:
            cw[(s.account, r)] = s.aws.cloudwatch(r)
            dsql[(s.account, r)] = s.aws.dsql(r)
    failed: dict[tuple[str, str], str] | None = {} if region_failures is not None else None
    if progress:
        progress("listing clusters")
    tgs = targets(scopes, cw, dsql, stats, warnings, workers=region_workers, failures=failed)
    by_scope_region: dict[tuple[str, str], list[str]] = defaultdict(list)
    for t in tgs:
        by_scope_region[(t.account, t.region)].append(t.cluster_id)
    streams: dict[tuple[str, str], dict[str, list[str]]] = {}
    if "StreamDPU" in metrics:
        tasks: dict[tuple[str, str], Callable[[], Any]] = {}
        for key, ids in by_scope_region.items():
            def discover(key: tuple[str, str] = key, ids: list[str] = ids) -> tuple[dict[str, list[str]], M.FetchStats]:
                st = M.FetchStats()
                return M.discover_streams(cw[key], ids, stats=st), st
            tasks[key] = discover
        for key, (found, st) in per_region(tasks, workers=region_workers, failures=failed).items():
            streams[key] = found
            stats.add(st)
    keys_by: dict[tuple[str, str], list[M.SeriesKey]] = {
        key: M.series_keys(key[1], ids, metrics, streams.get(key, {}))
        for key, ids in by_scope_region.items() if not (failed and key in failed)}
    if progress:
        progress(f"fetching {sum(len(k) for k in keys_by.values())} series of {len(tgs)} cluster(s)")
    fetch_kw.setdefault("max_workers", region_workers)
    series = M.fetch_regions(cw, keys_by, window, stats=stats, failures=failed, **fetch_kw)
    if failed:
        tgs = [t for t in tgs if (t.account, t.region) not in failed]
    warnings += [m for s in series.values() for m in s.messages]
    probes = {p for s in scopes for p in s.probes}
    usages: list[ClusterUsage] = []
    missing: list[Target] = []
    for t in tgs:
        u = to_usage(t, series)
        if (u.region, u.cluster_id) in probes and not t.exists and not _has_data(u):
            continue
        if t.explicit and not t.exists and not _has_data(u):
            missing.append(t)
            continue
        usages.append(u)
    if missing:
        names = ", ".join(f"{t.cluster_id} in {t.region}" for t in missing)
        raise NotFoundError(f"cluster not found: {names} (GetCluster found no such cluster and CloudWatch has no "
                            "metrics for it in the window)", code="ResourceNotFoundException",
                            hint="check the id, or name the cluster by endpoint or ARN (or pass --region) to "
                            "search the region it lives in")
    if "ClusterStorageSize" in metrics:
        usages = with_storage_before(usages, cw, window, stats, failures=failed)
    if failed and region_failures is not None:
        usages = [u for u in usages if (u.account, u.region) not in failed]
        many = len({a for a, _r in failed}) > 1 or len(scopes) > 1
        for (acct, region), error in sorted(failed.items(), key=lambda kv: kv[0][1]):
            region_failures.append(RegionFailure(region, f"{acct}: {error}" if many else error))
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
                 progress: Callable[[str], None] | None = None, only: set[tuple[str, str]] | None = None,
                 free_tier_scope: str = "clusters in this run", partial_regions: bool = False,
                 **fetch_kw: Any) -> tuple[Any, Collected]:
    """collect() + model.estimate(): the one core call behind ``cost`` and ``report``.

    ``only`` ((region, cluster id) pairs): price every cluster the scopes cover (so the free tier is split
    over all of them) but show only these. ``partial_regions``: a region that fails is listed in
    ``est.failed_regions`` (with a warning) instead of failing the run.
    """
    from dsqlops.cost.model import estimate

    failures: list[RegionFailure] | None = [] if partial_regions else None
    got = collect(scopes, window, progress=progress, region_failures=failures, **fetch_kw)
    est = estimate(got.usages, prices, start=window.start, end=min(window.end, max(now, window.start)),
                   now=now, forecast=forecast)
    est.warnings[:0] = got.warnings
    for f in failures or []:
        est.failed_regions.append({"region": f.region, "error": f.error})
        est.warnings.append(f"region {f.region} left out: {f.error}")
    if failures:
        est.warnings.append("the free tier was split without the clusters of the failed region(s): the others "
                            "may look cheaper than they are")
    est.free_tier_scope = free_tier_scope
    if only is not None:
        est.clusters = [c for c in est.clusters if (c.region, c.cluster_id) in only]
    return est, got
