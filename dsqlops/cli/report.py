"""``dsqlops report``: the cron cost report (md, html, json, csv, prometheus), locked and atomic."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from dsqlops.cli.common import CliEnv, pass_env
from dsqlops.cli.cost import history_option, pricing_file_option, record_history, warn_all
from dsqlops.errors import BudgetExceeded, UsageError


def history_months(rep: Any, history_file: str | None, settings: Any) -> list[dict[str, Any]]:
    """The report's clusters' dollars per month from the cost history (up to the report's month)."""
    from dsqlops.cost import history
    from dsqlops.cost.report import monthly_totals
    from dsqlops.errors import DsqlopsError
    from dsqlops.output import warn

    try:
        with history.connect(history.resolve_path(history_file, settings), create=False) as conn:
            rows = history.month_over_month(conn, months=12, today=rep.estimate.start.date())
    except DsqlopsError as e:
        warn(f"no month-over-month chart: {e.message}")
        return []
    return monthly_totals(rows, rep.estimate.clusters, upto=f"{rep.estimate.start:%Y-%m}")


@click.command("report")
@click.option("--config", "config_file", default=None, metavar="FILE",
              help="Config file with the reports/budgets sections (same as the global --config).")
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json", "csv", "prometheus"]), default=None,
              help="Report format [default: config reports.format, then md].")
@click.option("--out", default=None, metavar="PATH",
              help="Write here atomically [default: config reports.out, then stdout].")
@click.option("--lock-file", default=None, metavar="PATH",
              help="Lock against overlapping runs [default: config reports.lock_file, then "
              "$XDG_RUNTIME_DIR/dsqlops-report.lock].")
@click.option("--month", default=None, metavar="YYYY-MM",
              help="Report on this month: a past month gives a closing report (the whole month, no forecast) "
              "[default: the current month].")
@click.option("--mode", "file_mode", default=None, metavar="OCTAL",
              help="Permissions of the --out file, e.g. 0644 [default: 0600; the report names clusters "
              "and spend].")
@pricing_file_option
@history_option
@pass_env
def report(env: CliEnv, config_file: str | None, fmt: str | None, out: str | None, lock_file: str | None,
           month: str | None, file_mode: str | None, pricing_file: str | None, history_file: str | None) -> None:
    """Write the cron cost report (md, html, json, csv, prometheus).

    Month-to-date spend and month-end forecast of every cluster in the configured profiles and
    regions (or, with --month, a past month's closing report), top clusters, dollars per DPU
    component, OCC conflict rate, DPU per day (inline SVG in HTML, no JavaScript). Never prompts.
    Exit 75 when another run holds the lock; exit 3 when a budget is forecast to be exceeded; exit 5
    when some cluster's region has no price (the report is written first in both cases). --out is
    written atomically with mode 0600 (unless --mode), into a folder that must already exist.

    \b
    Example:
      dsqlops report --format html --out /var/www/dsql-cost.html
      dsqlops report --month 2026-10 --format md --out october.md
      # crontab: 15 * * * * dsqlops report --format prometheus --out /var/lib/node_exporter/dsql.prom
    """
    from dsqlops.config import resolve
    from dsqlops.cost import pricing
    from dsqlops.cost.report import build, read_config, render, report_month, report_scopes
    from dsqlops.cost.timewin import utcnow
    from dsqlops.errors import Incomplete
    from dsqlops.fsutil import atomic_write, check_output_file, default_lock_path, single_instance

    if config_file:
        env.config_path = config_file
        env._settings = None
    settings = env.settings
    cfg = read_config(settings.section("reports"), settings.section("budgets"))
    fmt = fmt or cfg.format
    target = out or cfg.out
    lock = lock_file or cfg.lock_file or str(default_lock_path("dsqlops-report"))
    report_month(month, utcnow())  # a bad --month, --mode or --out is refused before the lock and any AWS call
    mode = _parse_mode(file_mode)
    out_path = check_output_file(Path(str(target)).expanduser(), "--out") if target else None
    with single_instance(lock):
        prices = pricing.load_for(pricing_file, settings)
        scopes = report_scopes(cfg, settings,
                               lambda prof: resolve(config_path=env.config_path, profile=prof, flags=env.flags))
        rep = build(cfg, scopes, prices, now=utcnow(), month=month)
        record_history(rep.estimate, history_file, settings, command="report")
        rep.months = history_months(rep, history_file, settings)
        text = render(rep, fmt)
        if out_path is not None:
            atomic_write(out_path, text.encode("utf-8"), mode=mode)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
    est = rep.estimate
    warn_all(est.warnings)
    if rep.exceeded:
        names = ", ".join(b["cluster_id"] or "total" for b in rep.exceeded)
        raise BudgetExceeded(f"budget forecast to be exceeded: {names}",
                             hint="see the report's Budgets section")
    if est.unpriced:
        raise Incomplete(f"{len(est.unpriced)} cluster(s) in region(s) "
                         f"{', '.join(sorted({c.region for c in est.unpriced}))} have no price in "
                         f"{est.price_table}: their dollars are missing from the report")


def _parse_mode(text: str | None) -> int:
    if text is None:
        return 0o600
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise UsageError(f"--mode must be octal permissions such as 0600 or 0644, not {text!r}")
    return mode
