"""``dsqlops metrics``: fetch named series and shape them for table (sparklines), JSON and CSV."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from dsqlops.cost import metrics as M
from dsqlops.cost.timewin import Window

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[Decimal | None], width: int = 40) -> str:
    """Unicode bars; long series are averaged down to ``width`` cells; ``None`` is a blank cell."""
    if not values:
        return ""
    cells: list[Decimal | None] = []
    n = len(values)
    groups = min(width, n)
    for g in range(groups):
        chunk = [v for v in values[g * n // groups:(g + 1) * n // groups] if v is not None]
        cells.append(sum(chunk, Decimal(0)) / len(chunk) if chunk else None)
    present = [c for c in cells if c is not None]
    if not present:
        return " " * len(cells)
    lo, hi = min(present), max(present)
    span = hi - lo
    out = []
    for c in cells:
        if c is None:
            out.append(" ")
        elif not span:
            out.append(BARS[0] if hi == 0 else BARS[len(BARS) // 2])
        else:
            out.append(BARS[min(len(BARS) - 1, int((c - lo) / span * (len(BARS) - 1) + Decimal("0.5")))])
    return "".join(out)


def _short(v: Decimal) -> Decimal:
    q = v.quantize(Decimal("0.0001"))
    return Decimal(format(q.normalize(), "f")) if q else Decimal(0)


@dataclass
class MetricsResult:
    window: Window
    series: list[M.Series]
    stats: M.FetchStats
    warnings: list[str] = field(default_factory=list)

    def timeline(self, s: M.Series) -> list[tuple[dt.datetime, Decimal | None]]:
        """Every period in the window; DPU gaps are 0, other gaps None."""
        out = []
        t = self.window.start
        step = dt.timedelta(seconds=self.window.period)
        dpu = M.METRICS[s.key.metric].dpu
        while t < self.window.end:
            v = s.points.get(t)
            out.append((t, v if v is not None else (Decimal(0) if dpu else None)))
            t += step
        return out

    def summary_rows(self, *, spark: bool = True) -> list[dict[str, Any]]:
        rows = []
        for s in self.series:
            vals = [v for _t, v in self.timeline(s)]
            present = [v for v in vals if v is not None]
            row: dict[str, Any] = {
                "cluster_id": s.key.cluster_id, "region": s.key.region, "metric": s.key.metric,
                "stat": s.key.stat, "stream_id": s.key.stream_id, "unit": M.METRICS[s.key.metric].unit,
                "points": len(s.points), "min": min(present) if present else None,
                "max": max(present) if present else None,
                "last": s.sorted_points()[-1][1] if s.points else None,
                "total": s.total() if M.METRICS[s.key.metric].stat == "Sum" else None,
            }
            if spark:  # the terminal table: 4 decimals are plenty; JSON/CSV keep full precision
                for k in ("min", "max", "last", "total"):
                    if row[k] is not None:
                        row[k] = _short(row[k])
                row["trend"] = sparkline(vals)
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window.to_dict(), "namespace": M.NAMESPACE,
                "series": [{**r, "values": [{"timestamp": t, "value": v} for t, v in sorted(s.points.items())],
                            "status": s.status}
                           for r, s in zip(self.summary_rows(spark=False), self.series, strict=True)],
                "calls": self.stats.calls, "warnings": self.warnings}

    def csv_rows(self) -> list[dict[str, Any]]:
        return [{"cluster_id": s.key.cluster_id, "region": s.key.region, "metric": s.key.metric,
                 "stat": s.key.stat, "stream_id": s.key.stream_id, "timestamp": t, "value": v}
                for s in self.series for t, v in sorted(s.points.items())]


def query(aws: Any, refs: Sequence[Any], window: Window, names: Sequence[str], *,
          default_region: str | None) -> MetricsResult:
    """Fetch ``names`` for clusters ``refs`` (ClusterRef) across their regions, concurrently."""
    from dsqlops.errors import UsageError

    by_region: dict[str, list[str]] = defaultdict(list)
    for ref in refs:
        region = ref.region or default_region
        if not region:
            raise UsageError(f"no region for cluster {ref.id}", hint="pass --region or name it by endpoint/ARN")
        if ref.id not in by_region[region]:
            by_region[region].append(ref.id)
    for n in names:
        M.spec(n)
    stats = M.FetchStats()
    clients = {r: aws.cloudwatch(r) for r in by_region}
    keys: dict[str, list[M.SeriesKey]] = {}
    for r, ids in by_region.items():
        streams = M.discover_streams(clients[r], ids, stats=stats) if "StreamDPU" in names else {}
        keys[r] = M.series_keys(r, ids, names, streams)
    got = M.fetch_regions(clients, keys, window, stats=stats)
    order = [k for r in by_region for k in keys[r]]
    series = [got[k] for k in order]
    warnings = list(window.warnings) + [m for s in series for m in s.messages]
    return MetricsResult(window, series, stats, warnings)
