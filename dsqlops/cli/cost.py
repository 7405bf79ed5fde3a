"""``dsqlops cost``: estimate DSQL spend from CloudWatch and the price table (plus shared window options)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import click

from dsqlops.cli.common import CliEnv, output_option, pass_env
from dsqlops.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])


def pricing_file_option(f: F) -> F:
    return click.option("--pricing-file", default=None, metavar="FILE",
                        help="Price table to use (default: config pricing_file, then the shipped table).")(f)


def time_window(since: str | None, start: str | None, end: str | None, *, default_since: str = "24h",
                now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """--since D | --start T [--end T] → (start, end) in UTC."""
    from dsqlops.cost.timewin import parse_duration, parse_time, utcnow

    now = now or utcnow()
    if since and (start or end):
        raise UsageError("--since cannot be combined with --start/--end")
    if end and not start:
        raise UsageError("--end needs --start")
    if start:
        return parse_time(start, what="--start"), parse_time(end, what="--end") if end else now
    return now - parse_duration(since or default_since), now


def warn_all(messages: list[str]) -> None:
    from dsqlops.output import warn

    for m in dict.fromkeys(messages):
        warn(m)


def render_estimate(env: CliEnv, est: Any) -> None:
    from dsqlops.cost import tables
    from dsqlops.output import info

    fmt = env.output_format
    if fmt in ("json", "yaml"):
        env.render(est.to_dict())
    elif fmt == "csv":
        env.render(tables.cluster_rows(est))
    else:
        rows, cols = tables.table(est)
        env.render(rows, columns=cols, empty_message="no clusters found")
        for c in est.clusters:
            if c.forecast:
                f = c.forecast
                info(f"forecast {c.cluster_id}: {f.method} ({f.rate_start:%Y-%m-%d %H:%M}Z.."
                     f"{f.rate_end:%Y-%m-%d %H:%M}Z), {f.dpu_per_day.quantize(1)} DPU/day"
                     if f.rate_start and f.rate_end else f"forecast {c.cluster_id}: {f.method}")
        info(f"window {est.start:%Y-%m-%dT%H:%MZ} .. {est.end:%Y-%m-%dT%H:%MZ}; prices: {est.price_table}")
        for a in est.assumptions:
            info(f"assumption: {a}")
        info(est.caveat)
    warn_all(est.warnings + [w for c in est.clusters for w in c.warnings])


def cost_window(month: str | None, start: str | None, end: str | None, now: dt.datetime) -> Any:
    from dsqlops.cost.timewin import make_window, month_start, next_month, parse_month, parse_time

    if month and (start or end):
        raise UsageError("--month cannot be combined with --start/--end")
    if start or end:
        if not (start and end):
            raise UsageError("--start and --end go together (or use --month)")
        s, e = parse_time(start, what="--start"), parse_time(end, what="--end")
    elif month:
        s, e = parse_month(month)
    else:
        s, e = month_start(now), next_month(now)
    w = make_window(s, e, 3600, now=now)
    return w


def history_option(f: F) -> F:
    return click.option("--history", "history_file", default=None, metavar="PATH",
                        help="Cost history file (SQLite) [default: config history_file, then "
                        "$XDG_DATA_HOME/dsqlops/history.sqlite3].")(f)


def record_history(est: Any, history_file: str | None, settings: Any, *, command: str) -> None:
    """Record the run in the cost history; a history that cannot be written is a warning, never a lost answer."""
    from dsqlops.cost import history
    from dsqlops.errors import DsqlopsError
    from dsqlops.output import warn

    path = history.resolve_path(history_file, settings)
    try:
        history.record(path, est, command=command)
    except DsqlopsError as e:
        warn(f"cost history not recorded: {e.message}")


@click.group("cost", invoke_without_command=True)
@click.option("--cluster-id", "cluster_ids", multiple=True, metavar="ID",
              help="Cluster id, endpoint or ARN (repeatable). Default: the profile's cluster.")
@click.option("--all", "all_clusters", is_flag=True,
              help="Every cluster in the regions (ListClusters), plus deleted ones that still have metrics.")
@click.option("--region", "regions", multiple=True, metavar="REGION", help="Region(s) to cover (repeatable).")
@click.option("--all-regions", is_flag=True,
              help="Every cluster in every Region where DSQL exists (the price table's Regions), in parallel; "
              "a Region that fails is named and the rest still answers (exit 5).")
@click.option("--region-workers", type=click.IntRange(1, 16), default=4, show_default=True,
              help="Regions listed and fetched at once.")
@click.option("--month", default=None, metavar="YYYY-MM", help="Calendar month [default: the current month].")
@click.option("--start", default=None, metavar="TIME", help="Window start (ISO-8601, UTC), with --end.")
@click.option("--end", default=None, metavar="TIME", help="Window end (exclusive).")
@click.option("--forecast", is_flag=True, help="Add a month-end forecast (current month only).")
@click.option("--free-tier-scope", type=click.Choice(["run", "account"]), default="run", show_default=True,
              help="Split the account's free tier over the clusters of this run, or over every cluster of the "
              "account in the regions covered (lists them; only the named clusters are shown).")
@pricing_file_option
@history_option
@output_option
@click.pass_context
def cost(ctx: click.Context, cluster_ids: tuple[str, ...], all_clusters: bool, regions: tuple[str, ...],
         all_regions: bool, region_workers: int, month: str | None, start: str | None, end: str | None,
         forecast: bool, free_tier_scope: str, pricing_file: str | None, history_file: str | None) -> None:
    """Estimate DSQL cost from CloudWatch, with a month-end forecast.

    DPU by component (and its dollars), TotalDPU, storage GB-month prorated from hourly averages, the
    free tier (once per AWS account and month), dollars per cluster and in total. An estimate, not a
    bill. Exit 5 when some cluster's region has no price (the others are still priced and shown), or
    when a Region of --all-regions could not be covered (it is named with why; the rest is shown).

    \b
    Every run is recorded in the cost history (see 'cost history' and 'cost anomalies').

    \b
    Example:
      dsqlops cost --all --region us-east-1 --region us-east-2 --forecast
      dsqlops cost --all-regions --forecast
      dsqlops cost --cluster-id abcdefghijklmnopqrstuvwxyz --month 2026-10 -o json
      dsqlops cost history --months 6
    """
    if ctx.invoked_subcommand is not None:
        return
    env = ctx.ensure_object(CliEnv)
    from dsqlops.cost import pricing
    from dsqlops.cost.collect import Scope, estimate_for, scope_from_refs
    from dsqlops.cost.timewin import utcnow
    from dsqlops.validate import parse_cluster, validate_region

    for r in regions:
        validate_region(r)
    if all_clusters and cluster_ids:
        raise UsageError("pass either --cluster-id or --all, not both")
    if all_regions and (cluster_ids or regions):
        raise UsageError(f"--all-regions covers every cluster in every Region; it does not go with "
                         f"{'--cluster-id' if cluster_ids else '--region'}")
    now = utcnow()
    window = cost_window(month, start, end, now)
    prices = pricing.load_for(pricing_file, env.settings)
    default_region = env.settings.get("region")
    label = env.settings.profile_name
    only: set[tuple[str, str]] | None = None
    scope_text = "clusters in this run"
    if all_regions:
        all_clusters = True
        regions = tuple(pricing.dsql_regions(prices))
    if all_clusters:
        regs = list(regions) or ([default_region] if default_region else [])
        if not regs:
            raise UsageError("--all needs a region", hint="pass --region (repeatable) or set a default region")
        scopes = [Scope(label, env.aws(), regs, None)]
        scope_text = "every cluster of the account in the regions covered"
    else:
        refs = [parse_cluster(c) for c in cluster_ids]
        if not refs:
            ref = env.cluster(None, required=False)
            if ref is None:
                raise UsageError("no cluster given", hint="pass --cluster-id ID (repeatable) or --all")
            refs = [ref]
        named = scope_from_refs(label, env.aws(), refs, list(regions), default_region)
        scopes = [named]
        if free_tier_scope == "account":
            scopes.append(Scope(label, named.aws, list(named.regions), None))
            only = {(r, cid) for r, ids in (named.clusters or {}).items() for cid in ids}
            scope_text = "every cluster of the account in the regions covered"
    progress = env.progress_line("cost")
    est, _got = estimate_for(scopes, window, prices, now=now, forecast=forecast, progress=progress.update,
                             only=only, free_tier_scope=scope_text, partial_regions=all_regions,
                             region_workers=region_workers)
    progress.done()
    if not all_clusters and free_tier_scope == "run":
        est.warnings.append(
            f"the free tier was split over the {len(est.clusters)} cluster(s) of this run only; other clusters of "
            "the same account share it: use --all, or --free-tier-scope account, for the account-wide split")
    render_estimate(env, est)
    record_history(est, history_file, env.settings, command="cost")
    raise_incomplete(est)


def raise_incomplete(est: Any) -> None:
    """Exit 5 (after printing) when part of the estimate is missing: unpriced regions, failed regions."""
    from dsqlops.errors import Incomplete

    parts, hints = [], []
    if est.failed_regions:
        names = [f["region"] for f in est.failed_regions]
        parts.append(f"{len(names)} region(s) could not be covered ({', '.join(names)}): their clusters are "
                     "missing from the totals")
        hints.append("the reason for each is above (and under failed_regions in JSON); a Region not enabled "
                     "for the account answers with an invalid-token error")
    if est.unpriced:
        regs = sorted({c.region for c in est.unpriced})
        parts.append(f"{len(est.unpriced)} cluster(s) in region(s) {', '.join(regs)} have no price in "
                     f"{est.price_table}: their dollars are missing from the totals")
        hints.append("add the region to a price table (see docs/cost.md) and pass --pricing-file")
    if parts:
        raise Incomplete("; ".join(parts), hint="; ".join(hints))


@cost.command("history")
@click.option("--cluster-id", "cluster_ids", multiple=True, metavar="ID", help="Only this cluster (repeatable).")
@click.option("--months", type=click.IntRange(1, 120), default=6, show_default=True, help="How many months back.")
@click.option("--forecast-error", is_flag=True,
              help="Instead: how far the forecasts made during closed months were from the closing figure, "
              "by day of month.")
@history_option
@output_option
@pass_env
def history_cmd(env: CliEnv, cluster_ids: tuple[str, ...], months: int, forecast_error: bool,
                history_file: str | None) -> None:
    """Month over month cost from the local history, with the change in % and a trend.

    Months are recorded by 'cost' runs whose window starts on the 1st (month to date, or a whole
    month) and by 'report'; a closed month is one recorded after its end (e.g. 'report --month').

    \b
    Example:
      dsqlops cost history --months 12
      dsqlops cost history --cluster-id abcdefghijklmnopqrstuvwxyz -o csv
      dsqlops cost history --forecast-error
    """
    from dsqlops.cost import history
    from dsqlops.validate import parse_cluster

    ids = [parse_cluster(c).id for c in cluster_ids]
    with history.connect(history.resolve_path(history_file, env.settings), create=False) as conn:
        if forecast_error:
            rows = history.forecast_error(conn, cluster_ids=ids)
            env.render(rows, empty_message="no forecast of a closed month in the history yet")
            return
        rows = history.month_over_month(conn, cluster_ids=ids, months=months)
    if env.output_format != "table":
        rows = [{k: v for k, v in r.items() if k != "trend"} for r in rows]
    env.render(rows, empty_message="no months in the cost history yet")


@cost.command("anomalies")
@click.option("--threshold", default="3", show_default=True, metavar="K",
              help="Flag a day whose DPU is above K x the median of the days before it.")
@click.option("--days", type=click.IntRange(1, 366), default=7, show_default=True,
              help="How many of the latest recorded days to check (per cluster).")
@click.option("--trailing", type=click.IntRange(3, 90), default=7, show_default=True,
              help="How many earlier days the median is taken over.")
@click.option("--cluster-id", "cluster_ids", multiple=True, metavar="ID", help="Only this cluster (repeatable).")
@history_option
@output_option
@pass_env
def anomalies_cmd(env: CliEnv, threshold: str, days: int, trailing: int, cluster_ids: tuple[str, ...],
                  history_file: str | None) -> None:
    """Days whose DPU jumped above K x the trailing median, with the component that moved.

    Reads the cost history (complete days only). Exit 3 when any day is flagged, for cron alerting.

    \b
    Example:
      dsqlops cost anomalies --threshold 3
      dsqlops cost anomalies --days 1 -o json || mail -s "DSQL DPU anomaly" ops@example.com
    """
    from decimal import Decimal, InvalidOperation

    from dsqlops.cost import history
    from dsqlops.errors import DsqlopsError, ExitCode
    from dsqlops.validate import parse_cluster

    try:
        k = Decimal(threshold)
    except InvalidOperation:
        raise UsageError(f"--threshold must be a number, not {threshold!r}") from None
    if not k.is_finite() or k <= 1:
        raise UsageError("--threshold must be a finite number above 1")
    ids = [parse_cluster(c).id for c in cluster_ids]
    with history.connect(history.resolve_path(history_file, env.settings), create=False) as conn:
        rows = history.anomalies(conn, threshold=k, days=days, trailing=trailing, cluster_ids=ids)
    env.render(rows, empty_message="no anomalies")
    if rows:
        raise DsqlopsError(f"{len(rows)} day(s) with DPU above {k} x the trailing median",
                           exit_code=ExitCode.BUDGET_EXCEEDED)


@cost.command("reconcile")
@click.option("--month", required=True, metavar="YYYY-MM", help="The month to compare (closed or current).")
@click.option("--region", "regions", multiple=True, metavar="REGION",
              help="Only this Region, on both sides (repeatable) [default: every Region of the price table].")
@click.option("--service-name", default=None, metavar="NAME",
              help="DSQL's name in Cost Explorer's SERVICE dimension [default: Amazon Aurora DSQL].")
@click.option("--region-workers", type=click.IntRange(1, 16), default=4, show_default=True,
              help="Regions listed and fetched at once.")
@pricing_file_option
@output_option
@pass_env
def reconcile_cmd(env: CliEnv, month: str, regions: tuple[str, ...], service_name: str | None,
                  region_workers: int, pricing_file: str | None) -> None:
    """Our estimate for a month against the bill (Cost Explorer), by usage type.

    Asks Cost Explorer's GetCostAndUsage for DSQL's UnblendedCost and UsageQuantity in the month,
    grouped by usage type (DPU, storage), and sets our estimate for every cluster of the account
    (every Region of the price table, or --region) beside it: the difference in $ and % of the
    bill. Both sides are list price: credits and refunds are left out of the bill, discounts and
    tax are in neither. Needs ce:GetCostAndUsage (each request costs $0.01); the bill lags about
    24 h. Exit 5 when a Region could not be estimated (it is named).

    \b
    Example:
      dsqlops cost reconcile --month 2026-10
      dsqlops cost reconcile --month 2026-11 --region us-east-1 -o json
    """
    from dsqlops.cost import pricing
    from dsqlops.cost import reconcile as R
    from dsqlops.cost.collect import Scope, estimate_for
    from dsqlops.cost.timewin import utcnow
    from dsqlops.output import info
    from dsqlops.validate import validate_region

    for r in regions:
        validate_region(r)
    service = (service_name if service_name is not None else R.CE_SERVICE).strip()
    if not service:
        raise UsageError("--service-name must not be empty")
    now = utcnow()
    period = R.bill_period(month, now)  # a month that has not begun: 252 before any call
    window = cost_window(month, None, None, now)
    prices = pricing.load_for(pricing_file, env.settings)
    regs = list(dict.fromkeys(regions)) or pricing.dsql_regions(prices)
    aws = env.aws()
    params = R.request(period, service=service, regions=list(regions) or None)
    progress = env.progress_line("cost reconcile")
    progress.update("asking Cost Explorer")
    lines = R.fetch_bill(aws.ce(), params)  # first: one call, and the permission most likely missing
    est, _got = estimate_for([Scope(env.settings.profile_name, aws, regs, None)], window, prices, now=now,
                             forecast=False, progress=progress.update,
                             free_tier_scope="every cluster of the account in the regions covered",
                             partial_regions=not regions, region_workers=region_workers)
    progress.done()
    rows = R.compare(est, lines)
    warnings = list(est.warnings)
    if not lines:
        warnings.append(f"Cost Explorer has no {service!r} charges in {month}: no usage, a bill not processed yet "
                        "(it lags about 24 h), or DSQL is named differently there (aws ce get-dimension-values "
                        "--dimension SERVICE …; pass --service-name)")
    currencies = {b.cost_unit for b in lines if b.cost_unit} - {est.currency}
    if currencies:
        warnings.append(f"the bill is in {', '.join(sorted(currencies))}, the price table in {est.currency}: "
                        "the differences mix currencies")
    if regions:
        warnings.append("the account's whole free tier was applied to the clusters of "
                        f"{', '.join(regs)}; the bill may have spent part of it in other Regions")
    if not period.closed:
        warnings.append(f"{month} is not over: both sides run to now, and the bill lags about 24 h behind "
                        "CloudWatch, so our estimate runs ahead")
    fmt = env.output_format
    if fmt in ("json", "yaml"):
        env.render({"month": month, "closed": period.closed,
                    "bill_period": {"start": period.start, "end": period.end},
                    "estimate_window": {"start": est.start, "end": est.end},
                    "service": service, "regions": regs, "rows": rows,
                    "bill_lines": [b.to_dict() for b in lines], "failed_regions": est.failed_regions,
                    "unpriced_regions": sorted({c.region for c in est.unpriced}),
                    "warnings": warnings, "caveat": RECONCILE_CAVEAT})
    else:
        env.render(rows, columns=["usage", "estimate_quantity", "billed_quantity", "unit", "estimate_usd",
                                  "billed_usd", "difference_usd", "difference_pct", "usage_types"])
        if fmt == "table":
            info(f"bill: {service!r}, {period.start}..{period.end} (end exclusive), UnblendedCost without credits "
                 f"and refunds; estimate: {est.start:%Y-%m-%dT%H:%MZ}..{est.end:%Y-%m-%dT%H:%MZ}, "
                 f"{len(est.clusters)} cluster(s) in {len(regs)} region(s), prices: {est.price_table}")
            info(RECONCILE_CAVEAT)
    warn_all(warnings)
    raise_incomplete(est)


RECONCILE_CAVEAT = ("Both sides at list price: the estimate is CloudWatch x the price table less the free tier; the "
                    "bill is Cost Explorer's UnblendedCost without credits and refunds (savings plans, discounts and "
                    "tax are in neither). difference = estimate - billed; % of billed.")
