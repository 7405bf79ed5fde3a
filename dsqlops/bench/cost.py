"""Cost of a bench run: the cluster's DPU metrics over the run's window, priced per 1,000
committed transactions. Works on real DSQL (1-minute CloudWatch periods, so the window is
widened to whole minutes and includes whatever else ran then) and on the sandbox (which is asked
to publish right before and right after the run, so the window holds exactly the run's work).

Merged runs (``bench merge``): the metrics are the *cluster's*, so two hosts benching one cluster
side by side each see both hosts' work. The merged cost is the cluster's cost over the union of
the runs' windows: disjoint windows add up, identical windows count once, and overlapping but
different windows are fetched again for their combined span (or, when that is not possible, the
largest part is kept as a lower bound and a warning says so).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

DPU_METRICS = ("TotalDPU", "ComputeDPU", "ReadDPU", "WriteDPU", "TotalTransactions", "OccConflicts")
#: Usage fields of a cost record (metric → field name).
_FIELDS = {"TotalDPU": "total_dpu", "ComputeDPU": "compute_dpu", "ReadDPU": "read_dpu", "WriteDPU": "write_dpu",
           "TotalTransactions": "cluster_transactions", "OccConflicts": "cluster_occ_conflicts"}

#: fetch(region, cluster_id, start, end, exact) → {metric: sum}
Fetch = Callable[[str, str, dt.datetime, dt.datetime, bool], dict[str, float]]


def window_usage(cw: CloudWatchClient, region: str, cluster_id: str, start: dt.datetime, end: dt.datetime, *,
                 exact: bool) -> dict[str, float]:
    """Sum each DPU metric over a run's window.

    ``exact``: the window's ends are two sandbox publications (``start`` = the one before the run,
    whose datapoints are not the run's); the sandbox stamps datapoints to the second, so
    [start + 1 s, end + 1 s) at a 1-second period holds exactly the run's. Otherwise the window
    is widened to whole minutes, CloudWatch's DSQL period.
    """
    from dsqlops.cost.metrics import SeriesKey, fetch
    from dsqlops.cost.timewin import Window, ceil_to, floor_to

    if exact:
        start, end, period = start + dt.timedelta(seconds=1), end + dt.timedelta(seconds=1), 1
    else:
        start, end, period = floor_to(start, 60), ceil_to(end, 60), 60
    keys = [SeriesKey(region, cluster_id, m, "Sum") for m in DPU_METRICS]
    series = fetch(cw, keys, Window(start, end, period, start, end))
    return {k.metric: float(sum(series[k].points.values())) for k in keys}


def price_per_million(settings: Any, region: str) -> tuple[Decimal, str]:
    from dsqlops.cost.pricing import load_for

    table = load_for(None, settings)
    p = table.get(region)
    return p.dpu_usd_per_million, f"{p.source} (as of {p.as_of.isoformat()})"


def bench_cost(usage: dict[str, float], committed: int, price_per_m: Decimal, price_source: str,
               *, window: tuple[dt.datetime, dt.datetime], exact: bool, cluster_id: str | None = None,
               region: str | None = None, usd: Decimal | None = None) -> dict[str, Any]:
    """The cost record of a run (or of merged runs): usage, dollars, and per-transaction figures."""
    total = Decimal(str(round(usage.get("TotalDPU", 0.0), 9)))
    if usd is None:
        usd = total * price_per_m / Decimal(1_000_000)
    per_1000 = (usd * 1000 / committed) if committed else None
    dpu_per_txn = (total / committed) if committed else None
    out: dict[str, Any] = {
        "window_start": window[0], "window_end": window[1], "window_exact": exact,
        "total_dpu": round(usage.get("TotalDPU", 0.0), 6), "compute_dpu": round(usage.get("ComputeDPU", 0.0), 6),
        "read_dpu": round(usage.get("ReadDPU", 0.0), 6), "write_dpu": round(usage.get("WriteDPU", 0.0), 6),
        "dpu_per_transaction": None if dpu_per_txn is None else round(float(dpu_per_txn), 6),
        "usd": f"{usd:.6f}", "usd_per_1000_transactions": None if per_1000 is None else f"{per_1000:.6f}",
        "usd_per_million_dpu": str(price_per_m), "price_source": price_source,
        "cluster_transactions": int(usage.get("TotalTransactions", 0)),
        "cluster_occ_conflicts": int(usage.get("OccConflicts", 0)),
    }
    if cluster_id is not None:
        out["cluster_id"] = cluster_id
    if region is not None:
        out["region"] = region
    return out


class RunCost:
    """Marks a run's cost window and prices it.

    On the sandbox (``sandbox`` given, see :mod:`dsqlops.sandbox.client`) the window is two
    publications of its metering, right before and right after the run, so it holds exactly the
    run's work; elsewhere it is the run's wall-clock window, widened to CloudWatch's minutes.
    """

    def __init__(self, sandbox: Any | None, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sandbox = sandbox
        self.sleep = sleep
        self.start: dt.datetime | None = None
        self.end: dt.datetime | None = None

    def before_run(self) -> None:
        if self.sandbox is not None:
            self.start = self.sandbox.flush_metrics().published_at

    def after_run(self) -> None:
        if self.sandbox is None or self.start is None:
            return
        # the sandbox stamps datapoints to the second: publish in a later second than the start
        wait = (self.start + dt.timedelta(seconds=1) - dt.datetime.now(dt.UTC)).total_seconds()
        if wait > 0:
            self.sleep(wait)
        self.end = self.sandbox.flush_metrics().published_at

    def price(self, cw: CloudWatchClient, settings: Any, region: str, cluster_id: str, *, committed: int,
              started_at: dt.datetime, ended_at: dt.datetime) -> tuple[dict[str, Any], list[str]]:
        """The run's cost record and warnings (e.g. CloudWatch has no datapoints for it yet)."""
        warnings: list[str] = []
        if self.start is not None and self.end is not None:
            start, end, exact = self.start, self.end, True
        else:
            start, end, exact = started_at, ended_at, False
        usage = window_usage(cw, region, cluster_id, start, end, exact=exact)
        if not exact and not usage.get("TotalDPU"):
            warnings.append("no DPU datapoints for the run yet (CloudWatch lags a few minutes): re-run "
                            "`dsqlops cost` for the window later")
        price, source = price_per_million(settings, region)
        return bench_cost(usage, committed, price, source, window=(start, end), exact=exact, cluster_id=cluster_id,
                          region=region), warnings


# --------------------------------------------------------------------------------------------
# Merging the costs of several runs


def _time(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass
class _Part:
    cost: dict[str, Any]
    committed: int
    start: dt.datetime
    end: dt.datetime
    key: tuple[str, str]


@dataclass
class _Span:
    parts: list[_Part] = field(default_factory=list)

    @property
    def start(self) -> dt.datetime:
        return min(p.start for p in self.parts)

    @property
    def end(self) -> dt.datetime:
        return max(p.end for p in self.parts)


def _usage(cost: dict[str, Any]) -> dict[str, float]:
    return {m: float(cost.get(f) or 0) for m, f in _FIELDS.items()}


def merged_cost(runs: Sequence[tuple[dict[str, Any] | None, int, str]], *,
                fetch: Fetch | None = None) -> tuple[dict[str, Any] | None, list[str]]:
    """The cost of merged runs: ``runs`` = [(cost record or None, committed, target)].

    Returns the merged cost record (None when no run has one) and warnings. Per cluster, the
    runs' windows are grouped into spans of overlapping windows: a span of one window keeps its
    cost, a span of identical windows counts it once, any other span is fetched again for its
    whole width through ``fetch`` (a lower bound, the largest part, when it cannot be).
    """
    warnings: list[str] = []
    parts: list[_Part] = []
    for cost, committed, target in runs:
        if not cost:
            continue
        key = (str(cost.get("region") or ""), str(cost.get("cluster_id") or f"target {target}"))
        parts.append(_Part(cost, committed, _time(cost["window_start"]), _time(cost["window_end"]), key))
    if not parts:
        return None, warnings
    if len(parts) < len(runs):
        warnings.append(f"{len(runs) - len(parts)} of {len(runs)} runs have no cost: the merged cost covers "
                        "the others only")
    spans: list[tuple[tuple[str, str], _Span]] = []
    for key in sorted({p.key for p in parts}):
        current: _Span | None = None
        for p in sorted((p for p in parts if p.key == key), key=lambda p: (p.start, p.end)):
            if current is None or p.start >= current.end:
                current = _Span()
                spans.append((key, current))
            current.parts.append(p)
    totals = dict.fromkeys(_FIELDS, 0.0)
    usd = Decimal(0)
    exact = True
    for (region, cluster_id), span in spans:
        first = span.parts[0]
        price = Decimal(str(first.cost.get("usd_per_million_dpu") or 0))
        same_window = all((p.start, p.end) == (first.start, first.end) for p in span.parts)
        span_exact = all(bool(p.cost.get("window_exact")) for p in span.parts)
        usage: dict[str, float] | None = None
        if same_window:
            usage, span_usd = _usage(first.cost), Decimal(str(first.cost.get("usd") or 0))
        else:
            if fetch is not None and region and first.cost.get("cluster_id"):
                try:
                    usage = fetch(region, cluster_id, span.start, span.end, span_exact)
                except Exception as exc:  # noqa: BLE001 - said in the warning; the parts remain
                    warnings.append(f"cannot fetch the metrics of {cluster_id} for the merged window: {exc}")
            if usage is not None:
                span_usd = Decimal(str(round(usage.get("TotalDPU", 0.0), 9))) * price / Decimal(1_000_000)
            else:
                biggest = max(span.parts, key=lambda p: float(p.cost.get("total_dpu") or 0))
                usage, span_usd = _usage(biggest.cost), Decimal(str(biggest.cost.get("usd") or 0))
                span_exact = False
                warnings.append(f"runs on {cluster_id} overlap in different windows and the merged window could "
                                "not be fetched: the cost shown is a lower bound (the largest run's window)")
        assert usage is not None
        exact = exact and span_exact
        usd += span_usd
        for m in _FIELDS:
            totals[m] += usage.get(m, 0.0)
    committed = sum(p.committed for p in parts)
    prices = {str(p.cost.get("usd_per_million_dpu") or 0) for p in parts}
    sources = sorted({str(p.cost.get("price_source")) for p in parts})
    clusters = {k[1] for k, _ in spans}
    out = bench_cost(totals, committed, Decimal(next(iter(prices))) if len(prices) == 1 else Decimal(0),
                     "; ".join(sources), window=(min(p.start for p in parts), max(p.end for p in parts)),
                     exact=exact, usd=usd, cluster_id=next(iter(clusters)) if len(clusters) == 1 else None)
    if len(prices) > 1:
        out["usd_per_million_dpu"] = None   # regions with different prices: the dollars are summed per part
    out["windows"] = len(spans)
    return out, warnings
