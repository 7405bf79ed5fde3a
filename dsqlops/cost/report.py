"""The cron cost report: month-to-date spend + forecast for every configured cluster, budgets,
and five renderings (Markdown, HTML with an inline SVG chart and no JavaScript, JSON, CSV,
Prometheus node_exporter textfile). Pure functions over a :class:`~dsqlops.cost.model.CostEstimate`.

HTML is built with :func:`html.escape` and f-strings rather than a template engine: the page is
one small fixed layout, every interpolated value passes through one escaping helper, and it keeps
Jinja2 out of the core dependencies (it is only present via moto's server extra).
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from dsqlops.cost.model import COMPONENTS, ZERO, CostEstimate, money, plain
from dsqlops.errors import ConfigError, UsageError

FORMATS = ("md", "html", "json", "csv", "prometheus")


@dataclass
class ReportConfig:
    profiles: list[str | None] = field(default_factory=lambda: [None])
    regions: list[str] = field(default_factory=list)
    #: Cluster refs (ClusterRef): with a region when named by endpoint/ARN, else probed in every region.
    clusters: list[Any] = field(default_factory=list)
    format: str = "md"
    out: str | None = None
    lock_file: str | None = None
    top: int = 10
    total_budget: Decimal | None = None
    cluster_budgets: dict[str, Decimal] = field(default_factory=dict)


def _list(v: Any, key: str) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"config reports.{key} must be a list of strings")
    return list(v)


def _usd(v: Any, key: str) -> Decimal:
    try:
        d = Decimal(str(v))
    except Exception:  # noqa: BLE001 - any unparsable value is a config error
        raise ConfigError(f"config {key} must be a dollar amount, not {v!r}") from None
    if not d.is_finite() or d < 0:
        raise ConfigError(f"config {key} must be a non-negative dollar amount, not {v!r}")
    return d


def read_config(reports: Any, budgets: Any) -> ReportConfig:
    """Parse the ``reports`` and ``budgets`` sections of the config file (see config.example.yaml)."""
    from dsqlops.validate import parse_cluster, validate_region

    cfg = ReportConfig()
    if reports is not None:
        if not isinstance(reports, dict):
            raise ConfigError("config section reports must be a mapping")
        unknown = set(reports) - {"profiles", "regions", "clusters", "format", "out", "lock_file", "top"}
        if unknown:
            raise ConfigError(f"config section reports has unknown key(s): {', '.join(sorted(unknown))}")
        profiles = _list(reports.get("profiles"), "profiles")
        cfg.profiles = list(profiles) if profiles else [None]
        cfg.regions = [validate_region(r) for r in _list(reports.get("regions"), "regions")]
        cfg.clusters = [parse_cluster(c) for c in _list(reports.get("clusters"), "clusters")]
        fmt = reports.get("format", "md")
        if fmt not in FORMATS:
            raise ConfigError(f"config reports.format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        cfg.format = fmt
        cfg.out = reports.get("out")
        cfg.lock_file = reports.get("lock_file")
        top = reports.get("top", 10)
        if not isinstance(top, int) or top < 1:
            raise ConfigError("config reports.top must be a positive whole number")
        cfg.top = top
    if budgets is not None:
        if not isinstance(budgets, dict):
            raise ConfigError("config section budgets must be a mapping")
        unknown = set(budgets) - {"total_monthly_usd", "clusters"}
        if unknown:
            raise ConfigError(f"config section budgets has unknown key(s): {', '.join(sorted(unknown))}")
        if budgets.get("total_monthly_usd") is not None:
            cfg.total_budget = _usd(budgets["total_monthly_usd"], "budgets.total_monthly_usd")
        per = budgets.get("clusters") or {}
        if not isinstance(per, dict):
            raise ConfigError("config budgets.clusters must be a mapping of cluster id -> monthly USD")
        for cid, usd in per.items():
            cfg.cluster_budgets[parse_cluster(str(cid)).id] = _usd(usd, f"budgets.clusters.{cid}")
    return cfg


@dataclass
class Report:
    estimate: CostEstimate
    config: ReportConfig
    budgets: list[dict[str, Any]]
    fetch_calls: int = 0
    #: A past month's closing report (the whole month, no forecast).
    closed: bool = False
    #: Dollars per month of the report's clusters, from the cost history (see :func:`monthly_totals`).
    months: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exceeded(self) -> list[dict[str, Any]]:
        return [b for b in self.budgets if b["exceeded"]]

    def top(self) -> list[Any]:
        def key(c: Any) -> Decimal:
            return c.forecast.total_usd if c.forecast else c.total_usd
        return sorted(self.estimate.clusters, key=key, reverse=True)[: self.config.top]

    def occ_rate(self) -> Decimal | None:
        tx = sum((c.transactions for c in self.estimate.clusters), ZERO)
        occ = sum((c.occ_conflicts for c in self.estimate.clusters), ZERO)
        return (occ / tx).quantize(Decimal("0.0001")) if tx else None

    def to_dict(self) -> dict[str, Any]:
        e = self.estimate
        return {"generated_at": e.generated_at, "month": e.start.strftime("%Y-%m"), "closed": self.closed,
                "window": {"start": e.start, "end": e.end}, "totals": e.totals(),
                "occ_conflict_rate": self.occ_rate(),
                "clusters": [c.to_dict() for c in e.clusters],
                "top_clusters": [c.cluster_id for c in self.top()],
                "daily_dpu": [{"date": d, "dpu": plain(v)} for d, v in e.daily_dpu().items()],
                "budgets": self.budgets, "months": self.months, "free_tier": e.free_tier,
                "price_table": e.price_table,
                "warnings": e.warnings + [w for c in e.clusters for w in c.warnings],
                "assumptions": list(e.assumptions), "caveat": e.caveat}


def report_month(month: str | None, now: dt.datetime) -> tuple[dt.datetime, dt.datetime, bool]:
    """The report's month: ``YYYY-MM`` (a past month gives a closing report) or, by default, the
    current one. Returns (start, end, closed)."""
    from dsqlops.cost.timewin import month_start, next_month, parse_month

    if month is None:
        return month_start(now), next_month(now), False
    start, end = parse_month(month)
    if start > now:
        raise UsageError(f"--month {month} is in the future", hint="name the current or a past month")
    return start, end, end <= now


def report_scopes(cfg: ReportConfig, settings: Any, settings_for: Any) -> list[Any]:
    """One :class:`~dsqlops.cost.collect.Scope` per configured profile (``settings_for(name)`` resolves a
    profile's settings; ``None`` is the current one), over ``reports.regions`` or the profile's region,
    and ``reports.clusters`` when set (a bare id is probed in every region)."""
    from dsqlops.aws import AwsContext
    from dsqlops.cost.collect import Scope

    scopes = []
    for prof in cfg.profiles:
        s = settings if prof is None else settings_for(prof)
        regions = cfg.regions or ([s.get("region")] if s.get("region") else [])
        if not regions:
            raise ConfigError(f"no regions to report on for profile {prof or s.profile_name}",
                              hint="set reports.regions in the config or a region in the profile")
        clusters: dict[str, list[str]] | None = None
        probes: set[tuple[str, str]] = set()
        if cfg.clusters:
            clusters = {}
            for ref in cfg.clusters:
                for r in [ref.region] if ref.region else regions:
                    clusters.setdefault(r, []).append(ref.id)
                    if not ref.region:
                        probes.add((r, ref.id))
        scopes.append(Scope(prof or s.profile_name, AwsContext.from_settings(s),
                            sorted(clusters) if clusters else regions, clusters, probes))
    return scopes


def build(cfg: ReportConfig, scopes: Any, prices: Any, *, now: dt.datetime, month: str | None = None) -> Report:
    """Fetch, price and evaluate the budgets: the report for ``month`` (default: the current month, with
    a forecast; a past month is closed: its whole usage, no forecast)."""
    from dsqlops.cost.collect import estimate_for
    from dsqlops.cost.timewin import make_window

    start, end, closed = report_month(month, now)
    window = make_window(start, end, 3600, now=now)
    est, got = estimate_for(scopes, window, prices, now=now, forecast=not closed,
                            free_tier_scope="every cluster the report covers")
    return Report(est, cfg, evaluate_budgets(est, cfg), fetch_calls=got.stats.calls, closed=closed)


def evaluate_budgets(est: CostEstimate, cfg: ReportConfig) -> list[dict[str, Any]]:
    """Each configured budget vs the forecast (or, without one, the month-to-date amount)."""
    out: list[dict[str, Any]] = []

    def projected(c: Any) -> Decimal:
        return c.forecast.total_usd if c.forecast else c.total_usd

    by_id = {c.cluster_id: c for c in est.clusters}
    for cid, budget in sorted(cfg.cluster_budgets.items()):
        c = by_id.get(cid)
        value = projected(c) if c else ZERO
        out.append({"scope": "cluster", "cluster_id": cid, "budget_usd": money(budget),
                    "month_to_date_usd": money(c.total_usd) if c else money(ZERO),
                    "forecast_usd": money(value), "exceeded": value > budget})
    if cfg.total_budget is not None:
        value = sum((projected(c) for c in est.clusters), ZERO)
        out.append({"scope": "total", "cluster_id": None, "budget_usd": money(cfg.total_budget),
                    "month_to_date_usd": money(est.total_usd), "forecast_usd": money(value),
                    "exceeded": value > cfg.total_budget})
    return out


# ----------------------------------------------------------------------------------- renderers


def _fc(c: Any) -> str:
    return str(money(c.forecast.total_usd)) if c.forecast and c.priced else ""


def _rate(c: Any) -> str:
    r = c.occ_conflict_rate
    return f"{r * 100:.2f}%" if r is not None else ""


COMPONENT_HEADS = {"read": "read $", "write": "write $", "compute": "compute $",
                   "multi_region_write": "multi-Region write $", "stream": "stream $"}


def _dollars(c: Any, v: Decimal) -> str:
    return str(money(v)) if c.priced else "no price"


def _cluster_table(r: Report) -> tuple[list[str], list[list[str]]]:
    head = ["cluster", "region", "billed DPU", *COMPONENT_HEADS.values(), "storage GB-mo",
            "month total $" if r.closed else "month-to-date $", "forecast $", "OCC conflict rate"]
    rows = [[c.cluster_id + ("" if c.exists else " (not listed)"), c.region, str(plain(c.billed_dpu.quantize(
        Decimal("0.01")))), *(_dollars(c, c.component_usd(k)) for k in COMPONENTS),
        str(plain(c.storage_gb_month.quantize(Decimal("0.0001")))),
        _dollars(c, c.total_usd), _fc(c), _rate(c)] for c in r.estimate.clusters]
    return head, rows


def _title(r: Report) -> str:
    return f"DSQL cost report — {r.estimate.start:%Y-%m}" + (" (closed month)" if r.closed else "")


def _spend_label(r: Report) -> str:
    return "Month total (after free tier)" if r.closed else "Month to date (after free tier)"


def render_md(r: Report) -> str:
    e, t = r.estimate, r.estimate.totals()
    lines = [f"# {_title(r)}", "",
             f"Generated {e.generated_at:%Y-%m-%d %H:%M}Z · window {e.start:%Y-%m-%d %H:%M}Z .. "
             f"{e.end:%Y-%m-%d %H:%M}Z · prices `{e.price_table}`", "",
             f"> {e.caveat}", "",
             "| | USD |", "|---|---:|",
             f"| {_spend_label(r)} | {t['total_usd']} |",
             f"| Free tier applied | {t['free_tier_usd']} |",
             f"| Forecast, month end | {t['forecast_usd'] if t['forecast_usd'] is not None else 'n/a'} |", ""]
    occ = r.occ_rate()
    lines += [f"OCC conflict rate (all clusters): {f'{occ * 100:.2f}%' if occ is not None else 'n/a'}", ""]
    head, rows = _cluster_table(r)
    lines += ["## Clusters", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(x.replace("|", "\\|") for x in row) + " |" for row in rows]
    lines += ["", "## Top clusters (by forecast)", ""]
    lines += [f"{i}. `{c.cluster_id}` ({c.region}): ${_fc(c) or money(c.total_usd)}" for i, c in enumerate(r.top(), 1)]
    lines += ["", "## DPU per day", "", "| date | DPU |", "|---|---:|"]
    lines += [f"| {d} | {plain(v.quantize(Decimal('0.01')))} |" for d, v in r.estimate.daily_dpu().items()]
    if r.months:
        lines += ["", "## Month over month", "", "| month | USD | change |", "|---|---:|---:|"]
        lines += [f"| {m['month']} | {m['total_usd']} | "
                  f"{'' if m['change_pct'] is None else str(m['change_pct']) + ' %'} |" for m in r.months]
    if r.budgets:
        lines += ["", "## Budgets", "", "| scope | budget $ | forecast $ | exceeded |", "|---|---:|---:|---|"]
        lines += [f"| {b['cluster_id'] or 'total'} | {b['budget_usd']} | {b['forecast_usd']} | "
                  f"{'**YES**' if b['exceeded'] else 'no'} |" for b in r.budgets]
    warnings = r.to_dict()["warnings"]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    lines += ["", "## Assumptions", ""] + [f"- {a}" for a in e.assumptions]
    return "\n".join(lines) + "\n"


def _bar_chart(items: list[tuple[str, str, Decimal]], *, what: str, unit: str, chart_id: str,
               width: int = 720, height: int = 220) -> str:
    """An inline SVG bar chart (no JavaScript, renders in mail clients): one bar per (title, label, value)."""
    esc = html.escape
    pad_l, pad_b, pad_t = 60, 30, 10
    peak = max((v for _t, _l, v in items), default=ZERO)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="{chart_id}" width="{width}" height="{height}" '
             f'role="img" aria-label="{esc(what)}">', f'<title>{esc(what)} (peak {esc(str(plain(peak)))})</title>',
             f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width}" y2="{height - pad_b}" stroke="#444"/>',
             f'<text x="{pad_l - 5}" y="{pad_t + 10}" text-anchor="end" font-size="10">'
             f'{esc(str(plain(peak.quantize(Decimal(1)))))}</text>',
             f'<text x="{pad_l - 5}" y="{height - pad_b}" text-anchor="end" font-size="10">0</text>']
    if items and peak > 0:
        bw = (width - pad_l) / len(items)
        plot_h = height - pad_b - pad_t
        for i, (title, label, v) in enumerate(items):
            h = float(v / peak) * plot_h
            x = pad_l + i * bw
            parts.append(f'<rect x="{x + 1:.1f}" y="{height - pad_b - h:.1f}" width="{max(bw - 2, 1):.1f}" '
                         f'height="{h:.1f}" fill="#2f6fb0"><title>{esc(title)}: '
                         f'{esc(str(plain(v.quantize(Decimal("0.01")))))} {esc(unit)}</title></rect>')
            if len(items) <= 31:
                parts.append(f'<text x="{x + bw / 2:.1f}" y="{height - pad_b + 14}" text-anchor="middle" '
                             f'font-size="9">{esc(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_chart(daily: Mapping[dt.date, Decimal], *, width: int = 720, height: int = 220) -> str:
    """A bar chart of DPU per day."""
    return _bar_chart([(d.isoformat(), str(d.day), v) for d, v in daily.items()], what="DPU per day", unit="DPU",
                      chart_id="dpu-per-day", width=width, height=height)


def month_chart(months: list[dict[str, Any]], *, width: int = 720, height: int = 220) -> str:
    """A bar chart of the report's clusters' dollars per month, from the cost history."""
    return _bar_chart([(m["month"], m["month"][2:], m["total_usd"]) for m in months], what="USD per month",
                      unit="USD", chart_id="month-over-month", width=width, height=height)


def monthly_totals(rows: list[dict[str, Any]], clusters: Any, *, upto: str | None = None) -> list[dict[str, Any]]:
    """The history's month-over-month rows of ``clusters`` summed per month (up to the month ``upto``,
    YYYY-MM), with the change in %."""
    keys = {(c.account, c.region, c.cluster_id) for c in clusters}
    by: dict[str, Decimal] = {}
    for row in rows:
        if upto is not None and row["month"] > upto:
            continue
        if (row["account"], row["region"], row["cluster_id"]) in keys and row["total_usd"] is not None:
            by[row["month"]] = by.get(row["month"], ZERO) + row["total_usd"]
    out: list[dict[str, Any]] = []
    prev: Decimal | None = None
    for month in sorted(by):
        v = by[month]
        out.append({"month": month, "total_usd": money(v),
                    "change_pct": ((v - prev) / prev * 100).quantize(Decimal("0.1")) if prev else None})
        prev = v
    return out


def render_html(r: Report) -> str:
    esc = html.escape
    e, t = r.estimate, r.estimate.totals()
    head, rows = _cluster_table(r)
    occ = r.occ_rate()

    def table(h: list[str], rs: list[list[str]]) -> str:
        return ("<table><thead><tr>" + "".join(f"<th>{esc(x)}</th>" for x in h) + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{esc(str(x))}</td>" for x in row) + "</tr>" for row in rs)
                + "</tbody></table>")

    budgets = table(["scope", "budget $", "forecast $", "exceeded"],
                    [[b["cluster_id"] or "total", str(b["budget_usd"]), str(b["forecast_usd"]),
                      "YES" if b["exceeded"] else "no"] for b in r.budgets]) if r.budgets else "<p>none configured</p>"
    warnings = r.to_dict()["warnings"]
    body = [
        f"<h1>{esc(_title(r))}</h1>",
        f"<p>Generated {esc(e.generated_at.strftime('%Y-%m-%d %H:%M'))}Z · window "
        f"{esc(e.start.strftime('%Y-%m-%d %H:%M'))}Z .. {esc(e.end.strftime('%Y-%m-%d %H:%M'))}Z · "
        f"prices <code>{esc(e.price_table)}</code></p>",
        f'<p class="caveat">{esc(e.caveat)}</p>',
        table(["", "USD"], [[_spend_label(r), str(t["total_usd"])],
                            ["Free tier applied", str(t["free_tier_usd"])],
                            ["Forecast, month end",
                             str(t["forecast_usd"]) if t["forecast_usd"] is not None else "n/a"]]),
        f"<p>OCC conflict rate (all clusters): {esc(f'{occ * 100:.2f}%' if occ is not None else 'n/a')}</p>",
        "<h2>DPU per day</h2>", svg_chart(e.daily_dpu()),
        ("<h2>Month over month</h2>" + month_chart(r.months)) if r.months else "",
        "<h2>Clusters</h2>", table(head, rows),
        "<h2>Top clusters (by forecast)</h2><ol>"
        + "".join(f"<li><code>{esc(c.cluster_id)}</code> ({esc(c.region)}): ${esc(_fc(c) or str(money(c.total_usd)))}"
                  "</li>" for c in r.top()) + "</ol>",
        "<h2>Budgets</h2>", budgets,
        ("<h2>Warnings</h2><ul>" + "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>") if warnings else "",
        "<h2>Assumptions</h2><ul>" + "".join(f"<li>{esc(a)}</li>" for a in e.assumptions) + "</ul>",
    ]
    style = ("body{font-family:sans-serif;max-width:60em;margin:1em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}.caveat{color:#a33}")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>DSQL cost report</title>"
            f"<style>{style}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def render_json(r: Report) -> str:
    from dsqlops.output import to_jsonable

    return json.dumps(to_jsonable(r.to_dict()), indent=2, ensure_ascii=False) + "\n"


def render_csv(r: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["account", "region", "cluster_id", "exists", "billed_dpu", "storage_gb_month", "month_to_date_usd",
                "forecast_usd", "occ_conflict_rate", "budget_usd", "budget_exceeded"])
    budgets = {b["cluster_id"]: b for b in r.budgets if b["scope"] == "cluster"}
    for c in r.estimate.clusters:
        b = budgets.get(c.cluster_id)
        w.writerow([c.account, c.region, c.cluster_id, str(c.exists).lower(), plain(c.billed_dpu),
                    plain(c.storage_gb_month.quantize(Decimal("0.000001"))),
                    money(c.total_usd) if c.priced else "", _fc(c),
                    c.occ_conflict_rate if c.occ_conflict_rate is not None else "",
                    b["budget_usd"] if b else "", str(b["exceeded"]).lower() if b else ""])
    return buf.getvalue()


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_prometheus(r: Report) -> str:
    """node_exporter textfile collector format (one gauge family per metric)."""
    e = r.estimate
    fams: dict[str, tuple[str, list[tuple[dict[str, str], Decimal | int | float]]]] = {
        "dsqlops_cost_month_to_date_usd": ("Estimated month-to-date DSQL cost after the free tier (list prices).", []),
        "dsqlops_cost_forecast_usd": ("Estimated month-end DSQL cost (trailing daily rate).", []),
        "dsqlops_dpu_month_to_date": ("Billed DPU month to date.", []),
        "dsqlops_storage_gb_month": ("Storage GB-month month to date (prorated hourly).", []),
        "dsqlops_occ_conflict_rate": ("OccConflicts / TotalTransactions month to date.", []),
        "dsqlops_budget_usd": ("Configured monthly budget.", []),
        "dsqlops_budget_exceeded": ("1 when the forecast exceeds the budget.", []),
        "dsqlops_cost_report_timestamp_seconds": ("When this report was generated.", []),
    }
    for c in e.clusters:
        lab = {"account": c.account, "region": c.region, "cluster_id": c.cluster_id}
        if c.priced:  # an unpriced cluster has no dollar sample (absent, not 0)
            fams["dsqlops_cost_month_to_date_usd"][1].append((lab, money(c.total_usd)))
        if c.forecast and c.priced:
            fams["dsqlops_cost_forecast_usd"][1].append((lab, money(c.forecast.total_usd)))
        fams["dsqlops_dpu_month_to_date"][1].append((lab, plain(c.billed_dpu)))
        fams["dsqlops_storage_gb_month"][1].append((lab, plain(c.storage_gb_month.quantize(Decimal("0.000001")))))
        if c.occ_conflict_rate is not None:
            fams["dsqlops_occ_conflict_rate"][1].append((lab, c.occ_conflict_rate))
    for b in r.budgets:
        lab = {"scope": b["scope"], "cluster_id": b["cluster_id"] or ""}
        fams["dsqlops_budget_usd"][1].append((lab, b["budget_usd"]))
        fams["dsqlops_budget_exceeded"][1].append((lab, 1 if b["exceeded"] else 0))
    fams["dsqlops_cost_report_timestamp_seconds"][1].append(({}, int(e.generated_at.timestamp())))
    out: list[str] = []
    for name, (help_text, samples) in fams.items():
        if not samples:
            continue
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")
    return "\n".join(out) + "\n"


RENDERERS = {"md": render_md, "html": render_html, "json": render_json, "csv": render_csv,
             "prometheus": render_prometheus}


def render(r: Report, fmt: str) -> str:
    return RENDERERS[fmt](r)
