"""``dsqlops metrics``: a cluster's CloudWatch metrics with the right statistic per metric."""

from __future__ import annotations

import click

from dsqlops.cli.common import CliEnv, output_option, pass_env
from dsqlops.cli.cost import time_window, warn_all


@click.command("metrics")
@click.argument("clusters", nargs=-1, metavar="CLUSTER...")
@click.option("--since", default=None, metavar="DURATION", help="Window ending now, e.g. 90m, 24h, 7d [default: 24h].")
@click.option("--start", default=None, metavar="TIME", help="Window start (ISO-8601; naive = UTC).")
@click.option("--end", default=None, metavar="TIME", help="Window end, exclusive [default: now].")
@click.option("--period", default="auto", show_default=True, metavar="auto|SECONDS",
              help="Seconds per point (a multiple of 60 that CloudWatch still keeps for that age), or auto.")
@click.option("--metric", "names", multiple=True, metavar="NAME",
              help="Metric name (repeatable) [default: every DSQL metric].")
@output_option
@pass_env
def metrics(env: CliEnv, clusters: tuple[str, ...], since: str | None, start: str | None, end: str | None,
            period: str, names: tuple[str, ...]) -> None:
    """Show a cluster's CloudWatch metrics.

    AWS/AuroraDSQL metrics per ClusterId (StreamDPU per stream), fetched with batched
    GetMetricData. A table with a sparkline per series; the full series with -o json or -o csv.

    \b
    Example:
      dsqlops metrics abcdefghijklmnopqrstuvwxyz --since 24h
      dsqlops metrics CLUSTER --metric TotalDPU --metric OccConflicts --since 7d -o csv
    """
    from dsqlops.cost import metrics as M
    from dsqlops.cost.timewin import make_window, parse_period, utcnow
    from dsqlops.cost.views import query
    from dsqlops.validate import parse_cluster

    refs = [parse_cluster(c) for c in clusters]
    if not refs:
        refs = [env.cluster(None)]
    now = utcnow()
    s, e = time_window(since, start, end, now=now)
    window = make_window(s, e, parse_period(period), now=now)
    wanted = list(dict.fromkeys(names)) or list(M.METRICS)
    result = query(env.aws(), refs, window, wanted, default_region=env.settings.get("region"))
    fmt = env.output_format
    if fmt in ("json", "yaml"):
        env.render(result.to_dict())
    elif fmt == "csv":
        env.render(result.csv_rows())
    else:
        env.render(result.summary_rows(), empty_message="no series")
    warn_all(result.warnings)
