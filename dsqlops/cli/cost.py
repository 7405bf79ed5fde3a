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


@click.command("cost")
@click.option("--cluster-id", "cluster_ids", multiple=True, metavar="ID",
              help="Cluster id, endpoint or ARN (repeatable). Default: the profile's cluster.")
@click.option("--all", "all_clusters", is_flag=True,
              help="Every cluster in the regions (ListClusters), plus deleted ones that still have metrics.")
@click.option("--region", "regions", multiple=True, metavar="REGION", help="Region(s) to cover (repeatable).")
@click.option("--month", default=None, metavar="YYYY-MM", help="Calendar month [default: the current month].")
@click.option("--start", default=None, metavar="TIME", help="Window start (ISO-8601, UTC), with --end.")
@click.option("--end", default=None, metavar="TIME", help="Window end (exclusive).")
@click.option("--forecast", is_flag=True, help="Add a month-end forecast (current month only).")
@click.option("--free-tier-scope", type=click.Choice(["run", "account"]), default="run", show_default=True,
              help="Split the account's free tier over the clusters of this run, or over every cluster of the "
              "account in the regions covered (lists them; only the named clusters are shown).")
@pricing_file_option
@output_option
@pass_env
def cost(env: CliEnv, cluster_ids: tuple[str, ...], all_clusters: bool, regions: tuple[str, ...],
         month: str | None, start: str | None, end: str | None, forecast: bool, free_tier_scope: str,
         pricing_file: str | None) -> None:
    """Estimate DSQL cost from CloudWatch, with a month-end forecast.

    DPU by component (and its dollars), TotalDPU, storage GB-month prorated from hourly averages, the
    free tier (once per AWS account and month), dollars per cluster and in total. An estimate, not a
    bill. Exit 5 when some cluster's region has no price (the others are still priced and shown).

    \b
    Example:
      dsqlops cost --all --region us-east-1 --region us-east-2 --forecast
      dsqlops cost --cluster-id abcdefghijklmnopqrstuvwxyz --month 2026-10 -o json
    """
    from dsqlops.cost import pricing
    from dsqlops.cost.collect import Scope, estimate_for, scope_from_refs
    from dsqlops.cost.timewin import utcnow
    from dsqlops.errors import Incomplete
    from dsqlops.validate import parse_cluster, validate_region

    for r in regions:
        validate_region(r)
    if all_clusters and cluster_ids:
        raise UsageError("pass either --cluster-id or --all, not both")
    now = utcnow()
    window = cost_window(month, start, end, now)
    prices = pricing.load_for(pricing_file, env.settings)
    default_region = env.settings.get("region")
    label = env.settings.profile_name
    only: set[tuple[str, str]] | None = None
    scope_text = "clusters in this run"
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
                             only=only, free_tier_scope=scope_text)
    progress.done()
    if not all_clusters and free_tier_scope == "run":
        est.warnings.append(
            f"the free tier was split over the {len(est.clusters)} cluster(s) of this run only; other clusters of "
            "the same account share it: use --all, or --free-tier-scope account, for the account-wide split")
    render_estimate(env, est)
    if est.unpriced:
        regs = sorted({c.region for c in est.unpriced})
        raise Incomplete(f"{len(est.unpriced)} cluster(s) in region(s) {', '.join(regs)} have no price in "
                         f"{est.price_table}: their dollars are missing from the totals",
                         hint="add the region to a price table (see docs/cost.md) and pass --pricing-file")
