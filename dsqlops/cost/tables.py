"""Rows and columns of the ``cost`` command's table and CSV views (pure; the CLI only renders them)."""

from __future__ import annotations

from typing import Any

from dsqlops.cost.model import COMPONENTS, CostEstimate

#: Per-component dollars (read, write, compute, multi-Region write, stream), then the bill lines.
COMPONENT_COLUMNS = [f"{k}_usd" for k in COMPONENTS]
TABLE_COLUMNS = ["cluster_id", "region", "billed_dpu", *COMPONENT_COLUMNS, "dpu_usd", "storage_gb_month",
                 "storage_usd", "free_tier_usd", "total_usd"]
NOT_PRICED = "no price"
_NESTED = ("daily_dpu", "forecast", "warnings")


def cluster_rows(est: CostEstimate) -> list[dict[str, Any]]:
    """One flat row per cluster (every scalar field of the JSON view, plus ``forecast_usd``)."""
    rows = []
    for c in est.clusters:
        d = c.to_dict()
        d["forecast_usd"] = d["forecast"]["total_usd"] if d["forecast"] else None
        rows.append({k: v for k, v in d.items() if k not in _NESTED})
    return rows


def table(est: CostEstimate) -> tuple[list[dict[str, Any]], list[str]]:
    """The terminal table: one row per cluster and a TOTAL row; a cluster without a price shows
    ``no price`` in its dollar cells (the totals leave it out)."""
    cols = [*TABLE_COLUMNS, "forecast_usd"] if est.forecast_requested else list(TABLE_COLUMNS)
    rows = []
    for r in cluster_rows(est):
        if not r["priced"]:
            r = {k: (NOT_PRICED if k.endswith("_usd") else v) for k, v in r.items()}
        rows.append(r)
    t = est.totals()
    total = {"cluster_id": "TOTAL", "region": "", **{k: t.get(k) for k in cols if k not in ("cluster_id", "region")}}
    return [*rows, total], cols
