"""Cost of a bench run: the cluster's DPU metrics over the run's window, priced per 1,000
committed transactions. Works on real DSQL (1-minute CloudWatch periods, so the window is
widened to whole minutes and includes whatever else ran then) and on the sandbox (which is asked
to publish right before and right after the run, so the window holds exactly the run's work).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

DPU_METRICS = ("TotalDPU", "ComputeDPU", "ReadDPU", "WriteDPU", "TotalTransactions", "OccConflicts")


def sandbox_dir_for(endpoint_url: str | None, sslrootcert: str | None = None) -> Path | None:
    """The folder of the running sandbox whose control plane is ``endpoint_url``, if any.

    Looks in ``DSQLOPS_SANDBOX_DIR`` (or the default folder) and in the folder the sandbox CA
    (``sslrootcert`` = ``DIR/tls/ca.pem``, which ``sandbox env`` exports) belongs to.
    """
    if not endpoint_url:
        return None
    from dsqlops.sandbox.state import SandboxDir

    candidates = [SandboxDir(None)]
    if sslrootcert:
        candidates.append(SandboxDir(Path(sslrootcert).expanduser().resolve().parent.parent))
    for sdir in candidates:
        rt = sdir.load_runtime() or {}
        if str(rt.get("api_endpoint", "")).rstrip("/") == endpoint_url.rstrip("/") and sdir.pid() is not None:
            return sdir.path
    return None


def flush_sandbox(sandbox_dir: Path | None, timeout: float = 30.0) -> dt.datetime | None:
    """Ask the sandbox to publish now; returns the publication time (None if not a sandbox)."""
    if sandbox_dir is None:
        return None
    from dsqlops.sandbox.metering import request_flush

    state = request_flush(sandbox_dir, timeout=timeout)
    return dt.datetime.fromisoformat(str(state["last_flush"]).replace("Z", "+00:00"))


def window_usage(cw: CloudWatchClient, region: str, cluster_id: str, start: dt.datetime, end: dt.datetime, *,
                 period: int) -> dict[str, float]:
    """Sum each DPU metric over [start, end) with the cost package's batched fetch."""
    from dsqlops.cost.metrics import SeriesKey, fetch
    from dsqlops.cost.timewin import Window, ceil_to, floor_to

    if period >= 60:
        start, end = floor_to(start, period), ceil_to(end, period)
    keys = [SeriesKey(region, cluster_id, m, "Sum") for m in DPU_METRICS]
    series = fetch(cw, keys, Window(start, end, period, start, end))
    return {k.metric: float(sum(series[k].points.values())) for k in keys}


def price_per_million(settings: Any, region: str) -> tuple[Decimal, str]:
    from dsqlops.cost.pricing import load_for

    table = load_for(None, settings)
    p = table.get(region)
    return p.dpu_usd_per_million, f"{p.source} (as of {p.as_of.isoformat()})"


def bench_cost(usage: dict[str, float], committed: int, price_per_m: Decimal, price_source: str,
               *, window: tuple[dt.datetime, dt.datetime], exact: bool) -> dict[str, Any]:
    total = Decimal(str(round(usage.get("TotalDPU", 0.0), 9)))
    usd = total * price_per_m / Decimal(1_000_000)
    per_1000 = (usd * 1000 / committed) if committed else None
    dpu_per_txn = (total / committed) if committed else None
    return {
        "window_start": window[0], "window_end": window[1], "window_exact": exact,
        "total_dpu": round(usage.get("TotalDPU", 0.0), 6), "compute_dpu": round(usage.get("ComputeDPU", 0.0), 6),
        "read_dpu": round(usage.get("ReadDPU", 0.0), 6), "write_dpu": round(usage.get("WriteDPU", 0.0), 6),
        "dpu_per_transaction": None if dpu_per_txn is None else round(float(dpu_per_txn), 6),
        "usd": f"{usd:.6f}", "usd_per_1000_transactions": None if per_1000 is None else f"{per_1000:.6f}",
        "usd_per_million_dpu": str(price_per_m), "price_source": price_source,
        "cluster_transactions": int(usage.get("TotalTransactions", 0)),
        "cluster_occ_conflicts": int(usage.get("OccConflicts", 0)),
    }
