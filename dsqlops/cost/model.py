"""The cost model: pure functions over hourly CloudWatch data and a price table. Decimal throughout.

Assumptions (also printed with every estimate and documented in docs/cost.md):

* The DPU bill line is ``TotalDPU`` (Sum). Its components (Read, Write, Compute, MultiRegionWrite,
  Stream) are shown too; when ``TotalDPU`` and the sum of the components disagree by more than the
  tolerance we warn. With no ``TotalDPU`` data at all, the sum of the components is billed.
* A missing datapoint is 0 DPU (idle clusters emit nothing).
* Storage is GB-month prorated from hourly averages: Σ over the hours of the window of
  (average bytes that hour / 1e9 [GiB: 2^30]) / hours in that hour's month. Not today's size for the
  whole month. An hour without a datapoint (an idle cluster publishes nothing, yet its storage is
  billed) carries the last known size forward; the hours before the first datapoint in the window
  use that first datapoint (from the cluster's creation, when known). A cluster that no longer
  exists carries nothing past its last datapoint.
* The free tier (100,000 DPU + 1 GB-month, from the price table) is applied **once per AWS account
  and calendar month** to the usage inside the window for that month — not prorated — and split across
  the account's clusters in proportion to their usage, priced at each cluster's regional rate.
* Multi-Region peers are separate clusters, each priced in its own region.
* Forecast: month-to-date + the trailing daily rate × the days left in the month. The rate is taken
  over the last 7 full UTC days (fewer since the month or the cluster's first datapoint began; the
  hours so far when there is no full day yet). A cluster that no longer exists forecasts 0.
* This is an estimate from CloudWatch and list prices, not a bill: savings plans, credits, taxes
  and rounding on the AWS bill are not modelled.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from dsqlops.cost.pricing import PriceTable, RegionPrice
from dsqlops.cost.timewin import DAY, hours_in_month, month_start, next_month

ZERO = Decimal(0)
HOUR = dt.timedelta(hours=1)
MILLION = Decimal(1_000_000)
CENT = Decimal("0.01")
DEFAULT_TOLERANCE = Decimal("0.01")  # 1 % relative
ABS_TOLERANCE = Decimal("0.001")  # DPU
RATE_DAYS = 7
CAVEAT = ("Estimate, not a bill: computed from CloudWatch metrics and list prices; savings plans, credits, "
          "taxes and the bill's own rounding are not included.")
ASSUMPTIONS = (
    "DPU billed = TotalDPU (Sum); missing datapoints count as 0 DPU.",
    "Storage = GB-month prorated from hourly ClusterStorageSize averages (bytes/1e9, or 2^30 where the price "
    "table says GiB) divided by the hours in the month; an hour without a datapoint carries the last known size "
    "forward, and the hours before the first datapoint use the first one.",
    "Free tier (from the price table) applied once per AWS account (STS GetCallerIdentity) and calendar month to "
    "the usage in the window, not prorated, split across the clusters in scope in proportion to usage.",
    "Multi-Region peers are priced in their own regions.",
    "Forecast = month-to-date + trailing daily rate (last 7 full UTC days, or fewer) x days left.",
)
COMPONENTS = {"read": "ReadDPU", "write": "WriteDPU", "compute": "ComputeDPU",
              "multi_region_write": "MultiRegionWriteDPU", "stream": "StreamDPU"}


def money(v: Decimal) -> Decimal:
    """Dollars to the cent, rounded once from the unrounded amount; never negative zero."""
    q = v.quantize(CENT, rounding=ROUND_HALF_UP)
    return q.copy_abs() if q.is_zero() else q


def plain(v: Decimal) -> Decimal:
    """Trailing zeros dropped, never an exponent (6.28E+6 → 6280000)."""
    return Decimal(format(v.normalize(), "f")) if v else ZERO


def _q(v: Decimal, places: str = "0.000001") -> Decimal:
    return plain(v.quantize(Decimal(places), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class ClusterUsage:
    """Hourly data of one cluster (what metrics.py fetched), the model's only input besides prices.

    ``dpu[metric][hour_start]`` is the hourly Sum (StreamDPU already summed over streams);
    ``storage_bytes[hour_start]`` the hourly Average of ClusterStorageSize.
    """

    cluster_id: str
    region: str
    dpu: Mapping[str, Mapping[dt.datetime, Decimal]] = field(default_factory=dict)
    storage_bytes: Mapping[dt.datetime, Decimal] = field(default_factory=dict)
    transactions: Decimal = ZERO
    occ_conflicts: Decimal = ZERO
    status: str | None = None
    exists: bool = True
    account: str = "default"
    #: The cluster's creation time (GetCluster), when known: storage is not carried back before it.
    created: dt.datetime | None = None
    #: The last ClusterStorageSize datapoint before the window (time, bytes): looked up only for a
    #: cluster that published none in the window (idle all along), whose storage is still billed.
    storage_before: tuple[dt.datetime, Decimal] | None = None


@dataclass
class Forecast:
    method: str
    rate_start: dt.datetime | None
    rate_end: dt.datetime | None
    dpu_per_day: Decimal
    month_end: dt.datetime
    dpu: Decimal
    storage_gb_month: Decimal
    gross_usd: Decimal = ZERO
    free_tier_usd: Decimal = ZERO
    total_usd: Decimal = ZERO

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "rate_window_start": self.rate_start, "rate_window_end": self.rate_end,
                "dpu_per_day": _q(self.dpu_per_day), "month_end": self.month_end, "dpu": _q(self.dpu),
                "storage_gb_month": _q(self.storage_gb_month), "gross_usd": money(self.gross_usd),
                "free_tier_usd": money(self.free_tier_usd), "total_usd": money(self.total_usd)}


@dataclass
class ClusterCost:
    cluster_id: str
    region: str
    status: str | None
    exists: bool
    account: str
    price: RegionPrice
    components: dict[str, Decimal]
    components_dpu: Decimal
    total_dpu_metric: Decimal | None
    billed_dpu: Decimal
    dpu_basis: str
    storage_gb_month: Decimal
    storage_hours: int
    latest_storage_bytes: Decimal | None
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None
    daily_dpu: dict[dt.date, Decimal]
    transactions: Decimal
    occ_conflicts: Decimal
    monthly_dpu: dict[dt.datetime, Decimal] = field(default_factory=dict)
    monthly_storage: dict[dt.datetime, Decimal] = field(default_factory=dict)
    free_tier_dpu: Decimal = ZERO
    free_tier_storage_gb_month: Decimal = ZERO
    forecast: Forecast | None = None
    warnings: list[str] = field(default_factory=list)
    #: Hours without a storage datapoint that were billed at a carried size (forward and backward).
    storage_hours_carried: int = 0
    #: Hours before the first storage datapoint that were billed at that first datapoint's size.
    storage_hours_backfilled: int = 0
    #: When no datapoint fell in the window: the time of the one before it whose size was billed.
    storage_seen_before: dt.datetime | None = None
    #: False when the price table has no price for the cluster's region: its dollars are unknown.
    priced: bool = True
    #: DPU per UTC day and component (read, write, …), and GB-month per UTC day (carried hours included).
    daily_components: dict[dt.date, dict[str, Decimal]] = field(default_factory=dict)
    daily_storage_gb_month: dict[dt.date, Decimal] = field(default_factory=dict)

    @property
    def has_data(self) -> bool:
        """Whether CloudWatch returned any datapoint for this cluster in the window."""
        return self.first_seen is not None

    def component_usd(self, name: str) -> Decimal:
        return self.components[name] / MILLION * self.price.dpu_usd_per_million

    @property
    def dpu_usd(self) -> Decimal:
        return self.billed_dpu / MILLION * self.price.dpu_usd_per_million

    @property
    def storage_usd(self) -> Decimal:
        return self.storage_gb_month * self.price.storage_usd_per_gb_month

    @property
    def free_tier_dpu_usd(self) -> Decimal:
        return self.free_tier_dpu / MILLION * self.price.dpu_usd_per_million

    @property
    def free_tier_storage_usd(self) -> Decimal:
        return self.free_tier_storage_gb_month * self.price.storage_usd_per_gb_month

    @property
    def free_tier_usd(self) -> Decimal:
        return self.free_tier_dpu_usd + self.free_tier_storage_usd

    @property
    def gross_usd(self) -> Decimal:
        return self.dpu_usd + self.storage_usd

    @property
    def total_usd(self) -> Decimal:
        return self.gross_usd - self.free_tier_usd

    def _usd(self, v: Decimal) -> Decimal | None:
        return money(v) if self.priced else None

    @property
    def occ_conflict_rate(self) -> Decimal | None:
        if not self.transactions:
            return None
        return (self.occ_conflicts / self.transactions).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id, "region": self.region, "status": self.status, "exists": self.exists,
            "account": self.account,
            "read_dpu": _q(self.components["read"]), "write_dpu": _q(self.components["write"]),
            "compute_dpu": _q(self.components["compute"]),
            "multi_region_write_dpu": _q(self.components["multi_region_write"]),
            "stream_dpu": _q(self.components["stream"]), "components_dpu": _q(self.components_dpu),
            "total_dpu": _q(self.total_dpu_metric) if self.total_dpu_metric is not None else None,
            "billed_dpu": _q(self.billed_dpu), "dpu_basis": self.dpu_basis,
            "storage_gb_month": _q(self.storage_gb_month), "storage_unit": self.price.storage_unit,
            "storage_hours": self.storage_hours, "storage_hours_carried": self.storage_hours_carried,
            "storage_first_point_used_backwards": self.storage_hours_backfilled > 0,
            "storage_hours_backfilled": self.storage_hours_backfilled,
            "storage_size_from_before_window": self.storage_seen_before,
            "has_data": self.has_data,
            "priced": self.priced,
            **{f"{k}_usd": self._usd(self.component_usd(k)) for k in COMPONENTS},
            "dpu_usd": self._usd(self.dpu_usd), "storage_usd": self._usd(self.storage_usd),
            "free_tier_dpu": _q(self.free_tier_dpu), "free_tier_storage_gb_month": _q(self.free_tier_storage_gb_month),
            "free_tier_usd": self._usd(self.free_tier_usd), "total_usd": self._usd(self.total_usd),
            "currency": self.price.currency,
            "dpu_usd_per_million": self.price.dpu_usd_per_million if self.priced else None,
            "storage_usd_per_gb_month": self.price.storage_usd_per_gb_month if self.priced else None,
            "price_as_of": self.price.as_of if self.priced else None,
            "price_confidence": self.price.confidence if self.priced else None,
            "transactions": _q(self.transactions), "occ_conflicts": _q(self.occ_conflicts),
            "occ_conflict_rate": self.occ_conflict_rate,
            "first_seen": self.first_seen, "last_seen": self.last_seen,
            "daily_dpu": {d.isoformat(): _q(v) for d, v in sorted(self.daily_dpu.items())},
            "forecast": (self.forecast.to_dict() if self.priced else {**self.forecast.to_dict(), **dict.fromkeys(
                ("gross_usd", "free_tier_usd", "total_usd"))}) if self.forecast else None,
            "warnings": list(self.warnings),
        }


@dataclass
class CostEstimate:
    start: dt.datetime
    end: dt.datetime
    generated_at: dt.datetime
    currency: str
    clusters: list[ClusterCost]
    price_table: str
    free_tier: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    assumptions: tuple[str, ...] = ASSUMPTIONS
    caveat: str = CAVEAT
    forecast_requested: bool = False
    #: Over which clusters the free tier was split: "clusters in this run" or "every cluster of the account
    #: in the regions covered".
    free_tier_scope: str = "clusters in this run"
    #: Regions that could not be covered (``cost --all-regions``): ``{"region", "error"}``; their
    #: clusters are not in ``clusters`` at all.
    failed_regions: list[dict[str, str]] = field(default_factory=list)

    @property
    def total_usd(self) -> Decimal:
        return sum((c.total_usd for c in self.clusters), ZERO)

    @property
    def gross_usd(self) -> Decimal:
        return sum((c.gross_usd for c in self.clusters), ZERO)

    @property
    def free_tier_usd(self) -> Decimal:
        return sum((c.free_tier_usd for c in self.clusters), ZERO)

    # An unpriced cluster's stand-in prices are zero, so these sums are the priced clusters' dollars.

    @property
    def forecast_usd(self) -> Decimal | None:
        if not any(c.forecast for c in self.clusters):
            return None
        return sum((c.forecast.total_usd for c in self.clusters if c.forecast), ZERO)

    @property
    def unpriced(self) -> list[ClusterCost]:
        """Clusters in regions the price table does not price (their dollars are left out of the totals)."""
        return [c for c in self.clusters if not c.priced]

    def daily_dpu(self) -> dict[dt.date, Decimal]:
        out: dict[dt.date, Decimal] = defaultdict(lambda: ZERO)
        for c in self.clusters:
            for d, v in c.daily_dpu.items():
                out[d] += v
        return dict(sorted(out.items()))

    def totals(self) -> dict[str, Any]:
        f = self.forecast_usd
        return {"billed_dpu": _q(sum((c.billed_dpu for c in self.clusters), ZERO)),
                "storage_gb_month": _q(sum((c.storage_gb_month for c in self.clusters), ZERO)),
                "dpu_usd": money(sum((c.dpu_usd for c in self.clusters), ZERO)),
                "storage_usd": money(sum((c.storage_usd for c in self.clusters), ZERO)),
                "gross_usd": money(self.gross_usd), "free_tier_usd": money(self.free_tier_usd),
                "total_usd": money(self.total_usd),
                **{f"{k}_usd": money(sum((c.component_usd(k) for c in self.clusters), ZERO)) for k in COMPONENTS},
                "forecast_usd": money(f) if f is not None else None, "currency": self.currency,
                "unpriced_clusters": len(self.unpriced)}

    def to_dict(self) -> dict[str, Any]:
        return {"window": {"start": self.start, "end": self.end}, "generated_at": self.generated_at,
                "price_table": self.price_table, "clusters": [c.to_dict() for c in self.clusters],
                "totals": self.totals(), "free_tier": self.free_tier, "free_tier_scope": self.free_tier_scope,
                "unpriced_regions": sorted({c.region for c in self.unpriced}),
                "failed_regions": list(self.failed_regions), "warnings": list(self.warnings),
                "assumptions": list(self.assumptions), "caveat": self.caveat}


def _in(t: dt.datetime, start: dt.datetime, end: dt.datetime) -> bool:
    return start <= t < end


def _split(total: Decimal, weights: Sequence[Decimal]) -> list[Decimal]:
    """Split ``total`` in proportion to ``weights`` so that the parts add up exactly."""
    s = sum(weights, ZERO)
    if not s or not total:
        return [ZERO] * len(weights)
    if total == s:  # all of it: exact, so a fully covered cluster is exactly 0, never a hair below
        return list(weights)
    parts = [total * w / s for w in weights]
    parts[-1] = total - sum(parts[:-1], ZERO)
    return parts


def _hour(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def storage_by_hour(points: Mapping[dt.datetime, Decimal], start: dt.datetime, end: dt.datetime, *,
                    created: dt.datetime | None = None, carry_to_end: bool = True,
                    before: Decimal | None = None) -> tuple[dict[dt.datetime, Decimal], int, int]:
    """The size billed for every hour of [start, end): a datapoint where there is one, else the last
    known size; before the first datapoint, the first datapoint (not before ``created``, when that is
    known and earlier than the first datapoint). With ``carry_to_end`` false (a cluster that no longer
    exists) nothing is carried past the last datapoint. ``before``: with no datapoint in the window,
    the size last seen before it, carried over every hour (of a cluster that exists).

    Returns (bytes per hour, hours carried in total, of which hours filled backwards).
    """
    by_hour: dict[dt.datetime, Decimal] = {}
    for t in sorted(points):
        by_hour[_hour(t)] = points[t]
    lower = _hour(start) if start == _hour(start) else _hour(start) + HOUR
    if not by_hour:
        if before is None or not carry_to_end:
            return {}, 0, 0
        hours = {}  # the cluster existed before the window: its creation time bounds nothing here
        t = lower
        while t < end:
            hours[t] = before
            t += HOUR
        return hours, len(hours), 0
    first, last = min(by_hour), max(by_hour)
    if created is not None and created <= first:
        c = created if created == _hour(created) else _hour(created) + HOUR
        lower = max(lower, min(c, first))
    upper = end if carry_to_end else last + HOUR
    out: dict[dt.datetime, Decimal] = {}
    carried = backfilled = 0
    t = min(lower, first)
    current = by_hour[first]
    while t < upper:
        if t in by_hour:
            current = by_hour[t]
            out[t] = current
        elif t >= lower:
            out[t] = current
            carried += 1
            if t < first:
                backfilled += 1
        t += HOUR
    return out, carried, backfilled


def cluster_cost(u: ClusterUsage, price: RegionPrice, start: dt.datetime, end: dt.datetime,
                 tolerance: Decimal = DEFAULT_TOLERANCE) -> ClusterCost:
    """One cluster's usage in [start, end): DPU by component, billed DPU, storage GB-month."""
    warnings: list[str] = []
    daily_comp: dict[dt.date, dict[str, Decimal]] = defaultdict(lambda: dict.fromkeys(COMPONENTS, ZERO))
    for k, m in COMPONENTS.items():
        for t, v in u.dpu.get(m, {}).items():
            if _in(t, start, end):
                daily_comp[t.date()][k] += v
    comps = {k: sum((d[k] for d in daily_comp.values()), ZERO) for k in COMPONENTS}
    comp_sum = sum(comps.values(), ZERO)
    total_pts = {t: v for t, v in u.dpu.get("TotalDPU", {}).items() if _in(t, start, end)}
    total_metric = sum(total_pts.values(), ZERO) if total_pts else None
    hourly: dict[dt.datetime, Decimal] = defaultdict(lambda: ZERO)
    if total_metric is not None:
        basis, billed = "TotalDPU", total_metric
        for t, v in total_pts.items():
            hourly[t] += v
        diff = abs(total_metric - comp_sum)
        if comp_sum and diff > max(tolerance * max(total_metric, comp_sum), ABS_TOLERANCE):
            warnings.append(f"{u.cluster_id}: TotalDPU {_q(total_metric)} differs from the sum of its components "
                            f"{_q(comp_sum)} by more than {tolerance * 100}%; billing TotalDPU")
    else:
        basis, billed = "components", comp_sum
        for m in COMPONENTS.values():
            for t, v in u.dpu.get(m, {}).items():
                if _in(t, start, end):
                    hourly[t] += v
        if comp_sum:
            warnings.append(f"{u.cluster_id}: no TotalDPU data; billing the sum of the DPU components")
    storage = {t: b for t, b in u.storage_bytes.items() if _in(t, start, end)}
    before = u.storage_before if not storage and u.exists else None
    billed_hours, carried, backfilled = storage_by_hour(storage, start, end, created=u.created,
                                                        carry_to_end=u.exists, before=before[1] if before else None)
    byte_hours: dict[dt.datetime, Decimal] = defaultdict(lambda: ZERO)
    for t, b in billed_hours.items():
        byte_hours[month_start(t)] += b
    if before is not None and carried:
        warnings.append(f"{u.cluster_id}: no ClusterStorageSize datapoint in the window (an idle cluster publishes "
                        f"none); {carried} hour(s) billed at {_q(before[1] / price.bytes_per_unit)} "
                        f"{price.storage_unit}, the size last seen {before[0]:%Y-%m-%d %H:%M}Z")
    elif carried:
        warnings.append(f"{u.cluster_id}: {carried} hour(s) without a ClusterStorageSize datapoint billed at the "
                        "last known size" + (f" ({backfilled} before the first datapoint, at its size)"
                                             if backfilled else ""))
    # One division per month (not per hour) keeps the result exact where it can be.
    monthly_storage = {m: bh / price.bytes_per_unit / hours_in_month(m) for m, bh in byte_hours.items()}
    gbm = sum(monthly_storage.values(), ZERO)
    monthly_dpu: dict[dt.datetime, Decimal] = defaultdict(lambda: ZERO)
    daily: dict[dt.date, Decimal] = defaultdict(lambda: ZERO)
    for t, v in hourly.items():
        monthly_dpu[month_start(t)] += v
        daily[t.date()] += v
    daily_storage: dict[dt.date, Decimal] = defaultdict(lambda: ZERO)
    for t, b in billed_hours.items():
        daily_storage[t.date()] += b / price.bytes_per_unit / hours_in_month(t)
    seen = sorted(set(hourly) | set(storage) | {t for m in u.dpu.values() for t in m if _in(t, start, end)})
    latest = storage[max(storage)] if storage else (before[1] if before is not None and carried else None)
    return ClusterCost(
        cluster_id=u.cluster_id, region=u.region, status=u.status, exists=u.exists, account=u.account, price=price,
        components=comps, components_dpu=comp_sum, total_dpu_metric=total_metric, billed_dpu=billed,
        dpu_basis=basis, storage_gb_month=gbm, storage_hours=len(storage), latest_storage_bytes=latest,
        first_seen=seen[0] if seen else None, last_seen=seen[-1] if seen else None, daily_dpu=dict(daily),
        transactions=u.transactions, occ_conflicts=u.occ_conflicts, monthly_dpu=dict(monthly_dpu),
        monthly_storage=dict(monthly_storage), warnings=warnings, storage_hours_carried=carried,
        storage_hours_backfilled=backfilled, storage_seen_before=before[0] if before is not None and carried else None,
        daily_components={d: dict(v) for d, v in daily_comp.items()},
        daily_storage_gb_month=dict(daily_storage))


def _free_tier_amounts(costs: Sequence[ClusterCost], warnings: list[str]) -> tuple[Decimal, Decimal]:
    dpus = {c.price.free_tier_dpu for c in costs}
    gbs = {c.price.free_tier_storage_gb_month for c in costs}
    if len(dpus) > 1 or len(gbs) > 1:
        warnings.append("the price table's regions disagree on the free tier; using the smallest")
    return min(dpus), min(gbs)


def apply_free_tier(costs: Sequence[ClusterCost], warnings: list[str]) -> list[dict[str, Any]]:
    """Subtract the free tier once per (account, month), split by usage. Returns a summary per month."""
    summary: list[dict[str, Any]] = []
    by_account: dict[str, list[ClusterCost]] = defaultdict(list)
    for c in costs:
        by_account[c.account].append(c)
    for account, group in sorted(by_account.items()):
        ft_dpu, ft_gb = _free_tier_amounts(group, warnings)
        months = sorted({m for c in group for m in (*c.monthly_dpu, *c.monthly_storage)})
        for m in months:
            dpu_use = [c.monthly_dpu.get(m, ZERO) for c in group]
            gb_use = [c.monthly_storage.get(m, ZERO) for c in group]
            free_dpu = min(sum(dpu_use, ZERO), ft_dpu)
            free_gb = min(sum(gb_use, ZERO), ft_gb)
            for c, fd, fg in zip(group, _split(free_dpu, dpu_use), _split(free_gb, gb_use), strict=True):
                c.free_tier_dpu += fd
                c.free_tier_storage_gb_month += fg
            summary.append({"account": account, "month": m.strftime("%Y-%m"), "dpu_used": _q(sum(dpu_use, ZERO)),
                            "free_dpu_applied": _q(free_dpu), "free_dpu_allowance": ft_dpu,
                            "storage_gb_month_used": _q(sum(gb_use, ZERO)), "free_storage_applied": _q(free_gb),
                            "free_storage_allowance": ft_gb})
    return summary


def forecast_cluster(u: ClusterUsage, c: ClusterCost, now: dt.datetime, *, rate_days: int = RATE_DAYS) -> Forecast:
    """Month-end usage of ``c`` from the trailing daily rate (see the module docstring)."""
    m_start, m_end = month_start(now), next_month(now)
    hourly: dict[dt.datetime, Decimal] = defaultdict(lambda: ZERO)
    src = ["TotalDPU"] if c.dpu_basis == "TotalDPU" else list(COMPONENTS.values())
    for name in src:
        for t, v in u.dpu.get(name, {}).items():
            if _in(t, m_start, now):
                hourly[t] += v
    mtd = sum(hourly.values(), ZERO)
    mtd_storage = c.monthly_storage.get(m_start, ZERO)
    remaining_days = Decimal((m_end - now).total_seconds()) / Decimal(86400)
    if not c.exists:
        return Forecast("cluster no longer exists: no further usage", None, None, ZERO, m_end, mtd, mtd_storage)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first = c.first_seen or m_start
    first_full_day = first if first == first.replace(hour=0, minute=0, second=0) else (
        first.replace(hour=0, minute=0, second=0) + DAY)
    r_start = max(today - DAY * rate_days, m_start, first_full_day)
    if r_start < today:
        r_end, method = today, f"trailing {int((today - r_start) / DAY)} full day(s)"
    else:
        r_start, r_end, method = max(m_start, first), now, "hours so far this month (no full day yet)"
    span_seconds = Decimal((r_end - r_start).total_seconds())
    used = sum((v for t, v in hourly.items() if _in(t, r_start, r_end)), ZERO)
    rate = used * Decimal(86400) / span_seconds if span_seconds > 0 else ZERO  # one division: exact when it can be
    dpu = mtd + rate * remaining_days
    storage = mtd_storage
    if c.latest_storage_bytes is not None:
        remaining_hours = Decimal((m_end - now).total_seconds()) / Decimal(3600)
        storage += c.latest_storage_bytes / c.price.bytes_per_unit * remaining_hours / hours_in_month(now)
    return Forecast(method, r_start, r_end, rate, m_end, dpu, storage)


def _price_forecasts(costs: Sequence[ClusterCost], warnings: list[str]) -> None:
    by_account: dict[str, list[ClusterCost]] = defaultdict(list)
    for c in costs:
        if c.forecast:
            by_account[c.account].append(c)
    for group in by_account.values():
        ft_dpu, ft_gb = _free_tier_amounts(group, warnings)
        fcs = [c.forecast for c in group if c.forecast]
        free_d = _split(min(sum((f.dpu for f in fcs), ZERO), ft_dpu), [f.dpu for f in fcs])
        free_g = _split(min(sum((f.storage_gb_month for f in fcs), ZERO), ft_gb), [f.storage_gb_month for f in fcs])
        for c, f, fd, fg in zip(group, fcs, free_d, free_g, strict=True):
            p = c.price
            f.gross_usd = f.dpu / MILLION * p.dpu_usd_per_million + f.storage_gb_month * p.storage_usd_per_gb_month
            f.free_tier_usd = fd / MILLION * p.dpu_usd_per_million + fg * p.storage_usd_per_gb_month
            f.total_usd = f.gross_usd - f.free_tier_usd


def _unpriced_price(prices: PriceTable, region: str) -> RegionPrice:
    """A stand-in with zero prices (the cluster's dollars count as unknown), keeping the table's free tier
    so the cluster still takes its share of the account's allowance."""
    known = list(prices.regions.values())
    return RegionPrice(region=region, dpu_usd_per_million=ZERO, storage_usd_per_gb_month=ZERO,
                       storage_unit=known[0].storage_unit if known else "GB",
                       free_tier_dpu=min((p.free_tier_dpu for p in known), default=ZERO),
                       free_tier_storage_gb_month=min((p.free_tier_storage_gb_month for p in known), default=ZERO),
                       currency=prices.currency, as_of=prices.as_of, source="no price",
                       confidence="low", third_party=False)


def _cost_or_unpriced(u: ClusterUsage, prices: PriceTable, start: dt.datetime, end: dt.datetime,
                      tolerance: Decimal) -> ClusterCost:
    if u.region in prices.regions:
        return cluster_cost(u, prices.regions[u.region], start, end, tolerance)
    c = cluster_cost(u, _unpriced_price(prices, u.region), start, end, tolerance)
    c.priced = False
    c.warnings.append(f"{u.cluster_id}: no price for region {u.region} in {prices.path}")
    return c


def estimate(usages: Sequence[ClusterUsage], prices: PriceTable, *, start: dt.datetime, end: dt.datetime,
             now: dt.datetime, forecast: bool = False, tolerance: Decimal = DEFAULT_TOLERANCE,
             rate_days: int = RATE_DAYS) -> CostEstimate:
    """Price ``usages`` over [start, end). ``now`` bounds the data and anchors the forecast."""
    warnings: list[str] = []
    costs = [_cost_or_unpriced(u, prices, start, end, tolerance) for u in usages]
    missing = sorted({c.region for c in costs if not c.priced})
    if missing:
        warnings.append(f"price table {prices.path} has no prices for region(s) {', '.join(missing)}: "
                        "those clusters are listed with their usage but no dollars, and left out of the totals")
    for c in costs:
        warnings.extend(c.warnings)
        if not c.exists:
            c.warnings.append(f"{c.cluster_id}: not found by the control plane in {c.region} (deleted?) but has "
                              "metrics; its usage is billed")
        elif not c.has_data:
            c.warnings.append(f"{c.cluster_id}: CloudWatch has no datapoints for it in {c.region} in the window; "
                              "its $0 is an absence of data, not a measurement")
    if start != month_start(start):
        warnings.append("the window does not start at the beginning of a month: the full monthly free tier is "
                        "applied to the usage in the window (an over-estimate of the free tier)")
    ft = apply_free_tier(costs, warnings)
    if forecast:
        data_end = min(end, now)
        if month_start(start) != month_start(data_end - dt.timedelta(seconds=1)) or data_end < now - DAY:
            warnings.append("--forecast needs a window in the current month ending now; no forecast made")
        else:
            for u, c in zip(usages, costs, strict=True):
                c.forecast = forecast_cluster(u, c, data_end, rate_days=rate_days)
            _price_forecasts(costs, warnings)
    costs.sort(key=lambda c: (-c.total_usd, c.region, c.cluster_id))
    return CostEstimate(start=start, end=end, generated_at=now, currency=prices.currency, clusters=costs,
                        price_table=prices.path, free_tier=ft, warnings=warnings, forecast_requested=forecast)
