"""Our estimate for a month against what the bill says: Cost Explorer's GetCostAndUsage.

* One request shape: the month as ``TimePeriod`` (``End`` exclusive; for the current month, up to
  tomorrow), ``Granularity=MONTHLY``, ``Metrics=[UnblendedCost, UsageQuantity]``, grouped by
  ``USAGE_TYPE``, filtered to the DSQL service (``SERVICE``, as Cost Explorer spells it, see
  docs/dsql-facts.md §5.5), credits and refunds left out (``RECORD_TYPE``) so both sides are list
  price, and to the Regions covered when the user names them (``REGION``).
* Usage types are mapped to our two bill lines by name (docs/dsql-facts.md §5.4): a name containing
  ``DistributedProcessingUnits`` is DPU, one containing ``Storage`` is storage; anything else is
  shown as ``other`` (billed, not estimated).
* Cost Explorer lives in us-east-1 only and charges per request; the answer is paged with
  ``NextPageToken``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from dsqlops.cost.model import ZERO, money, plain
from dsqlops.errors import ServiceError, UsageError

if TYPE_CHECKING:
    from mypy_boto3_ce import CostExplorerClient

#: The DSQL service's name in Cost Explorer's SERVICE dimension (docs/dsql-facts.md §5.5).
CE_SERVICE = "Amazon Aurora DSQL"
#: Cost Explorer's only endpoint.
CE_REGION = "us-east-1"
DPU_MARKER = "DistributedProcessingUnits"
STORAGE_MARKER = "Storage"
KINDS = ("dpu", "storage", "other")
#: Stops a Cost Explorer that keeps answering with a page token (each page is billed).
MAX_PAGES = 100


@dataclass(frozen=True)
class BillPeriod:
    month: str
    start: dt.date
    #: Exclusive, as Cost Explorer takes it.
    end: dt.date
    #: The month has ended (its bill may still move for a day or so).
    closed: bool


@dataclass
class BillLine:
    usage_type: str
    kind: str
    cost: Decimal
    cost_unit: str
    quantity: Decimal
    quantity_unit: str

    def to_dict(self) -> dict[str, Any]:
        return {"usage_type": self.usage_type, "usage": self.kind, "billed_usd": self.cost,
                "currency": self.cost_unit, "billed_quantity": plain(self.quantity), "unit": self.quantity_unit}


def usage_kind(usage_type: str) -> str:
    if DPU_MARKER.lower() in usage_type.lower():
        return "dpu"
    if STORAGE_MARKER.lower() in usage_type.lower():
        return "storage"
    return "other"


def bill_period(month: str, now: dt.datetime) -> BillPeriod:
    """``YYYY-MM`` → the period to ask Cost Explorer for; a month that has not begun is a usage error."""
    from dsqlops.cost.timewin import parse_month

    start, nxt = parse_month(month)
    if start > now:
        raise UsageError(f"month {month} has not begun: there is no bill for it yet",
                         hint="pass the current month or one before it")
    closed = now >= nxt
    end = nxt.date() if closed else min(nxt.date(), now.date() + dt.timedelta(days=1))
    return BillPeriod(month, start.date(), end, closed)


def request(period: BillPeriod, *, service: str = CE_SERVICE, regions: list[str] | None = None) -> dict[str, Any]:
    """The GetCostAndUsage parameters (without a page token)."""
    filters: list[dict[str, Any]] = [
        {"Dimensions": {"Key": "SERVICE", "Values": [service], "MatchOptions": ["EQUALS"]}},
        {"Not": {"Dimensions": {"Key": "RECORD_TYPE", "Values": ["Credit", "Refund"], "MatchOptions": ["EQUALS"]}}},
    ]
    if regions:
        filters.append({"Dimensions": {"Key": "REGION", "Values": sorted(regions), "MatchOptions": ["EQUALS"]}})
    return {"TimePeriod": {"Start": period.start.isoformat(), "End": period.end.isoformat()},
            "Granularity": "MONTHLY", "Metrics": ["UnblendedCost", "UsageQuantity"],
            "GroupBy": [{"Type": "DIMENSION", "Key": "USAGE_TYPE"}], "Filter": {"And": filters}}


def _decimal(metric: Mapping[str, Any] | None, what: str) -> tuple[Decimal, str]:
    if not metric:
        return ZERO, ""
    try:
        v = Decimal(str(metric.get("Amount", "0")))
    except InvalidOperation:
        raise ServiceError(f"GetCostAndUsage: {what} is not a number: {metric.get('Amount')!r}") from None
    if not v.is_finite():
        raise ServiceError(f"GetCostAndUsage: {what} is not a finite number: {metric.get('Amount')!r}")
    return v, str(metric.get("Unit") or "")


def fetch_bill(ce: CostExplorerClient, params: Mapping[str, Any]) -> list[BillLine]:
    """Every usage type's UnblendedCost and UsageQuantity over the period (all pages, all time slices)."""
    import botocore.exceptions as bex

    from dsqlops.aws import translate_client_error

    lines: dict[str, BillLine] = {}
    token: str | None = None
    for _page in range(MAX_PAGES):
        req = dict(params)
        if token:
            req["NextPageToken"] = token
        try:
            resp = ce.get_cost_and_usage(**req)
        except bex.ClientError as e:
            err = translate_client_error(e, what="GetCostAndUsage")
            code = getattr(err, "code", None)
            if code in ("AccessDeniedException", "AccessDenied"):
                raise ServiceError(f"{err}", code=code,
                                   hint="allow ce:GetCostAndUsage (Cost Explorer; with AWS Organizations, a member "
                                   "account sees its bill only when the management account allows it)") from None
            if code == "DataUnavailableException":
                raise ServiceError(f"{err}", code=code, hint="Cost Explorer has no data for this account yet: it "
                                   "must be enabled (once, in the Billing console) and takes up to 24 h") from None
            raise err from None
        except bex.BotoCoreError as e:
            raise translate_client_error(e, what="GetCostAndUsage") from None
        for slice_ in resp.get("ResultsByTime", []):
            for g in slice_.get("Groups", []):
                keys = g.get("Keys") or ["(none)"]
                ut = str(keys[0])
                cost, cost_unit = _decimal(g.get("Metrics", {}).get("UnblendedCost"), f"UnblendedCost of {ut}")
                qty, qty_unit = _decimal(g.get("Metrics", {}).get("UsageQuantity"), f"UsageQuantity of {ut}")
                line = lines.get(ut)
                if line is None:
                    lines[ut] = BillLine(ut, usage_kind(ut), cost, cost_unit, qty, qty_unit)
                else:
                    line.cost += cost
                    line.quantity += qty
        token = resp.get("NextPageToken")
        if not token:
            return sorted(lines.values(), key=lambda b: (KINDS.index(b.kind), b.usage_type))
    raise ServiceError(f"GetCostAndUsage: still paging after {MAX_PAGES} pages; stopped")


def _pct(diff: Decimal, billed: Decimal) -> Decimal | None:
    if not billed:
        return None
    return (diff / billed * 100).quantize(Decimal("0.1"))


def compare(est: Any, lines: list[BillLine]) -> list[dict[str, Any]]:
    """One row per bill line (dpu, storage, other) and a TOTAL: our dollars (net of the free tier)
    against the billed UnblendedCost, the difference (ours − billed) in $ and % of billed."""
    ours_usd: dict[str, Decimal] = defaultdict(lambda: ZERO)
    ours_qty: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for c in est.clusters:
        ours_usd["dpu"] += c.dpu_usd - c.free_tier_dpu_usd
        ours_usd["storage"] += c.storage_usd - c.free_tier_storage_usd
        ours_qty["dpu"] += c.billed_dpu
        ours_qty["storage"] += c.storage_gb_month
    rows: list[dict[str, Any]] = []
    for kind in KINDS:
        mine = [b for b in lines if b.kind == kind]
        if kind == "other" and not mine:
            continue
        billed = sum((b.cost for b in mine), ZERO)
        units = sorted({b.quantity_unit for b in mine if b.quantity_unit})
        estimated = ours_usd[kind] if kind != "other" else None
        diff = estimated - billed if estimated is not None else None
        rows.append({
            "usage": kind,
            "usage_types": ", ".join(b.usage_type for b in mine),
            "estimate_quantity": plain(ours_qty[kind].quantize(Decimal("0.000001"))) if kind != "other" else None,
            "billed_quantity": plain(sum((b.quantity for b in mine), ZERO)) if mine else None,
            "unit": ", ".join(units) or None,
            "estimate_usd": money(estimated) if estimated is not None else None,
            "billed_usd": money(billed),
            "difference_usd": money(diff) if diff is not None else None,
            "difference_pct": _pct(diff, billed) if diff is not None else None,
        })
    total_ours = ours_usd["dpu"] + ours_usd["storage"]
    total_billed = sum((b.cost for b in lines), ZERO)
    rows.append({"usage": "TOTAL", "usage_types": None, "estimate_quantity": None, "billed_quantity": None,
                 "unit": None, "estimate_usd": money(total_ours), "billed_usd": money(total_billed),
                 "difference_usd": money(total_ours - total_billed),
                 "difference_pct": _pct(total_ours - total_billed, total_billed)})
    return rows
