"""``dsqlops report``: the cron cost report (md, html, json, csv, prometheus), locked and atomic."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dsqlops.cli.common import CliEnv, pass_env
from dsqlops.cli.cost import pricing_file_option, warn_all
from dsqlops.errors import BudgetExceeded, UsageError


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
@click.option("--mode", "file_mode", default=None, metavar="OCTAL",
              help="Permissions of the --out file, e.g. 0644 [default: 0600; the report names clusters "
              "and spend].")
@pricing_file_option
@pass_env
def report(env: CliEnv, config_file: str | None, fmt: str | None, out: str | None, lock_file: str | None,
           file_mode: str | None, pricing_file: str | None) -> None:
    """Write the cron cost report (md, html, json, csv, prometheus).

    Month-to-date spend and month-end forecast of every cluster in the configured profiles and
    regions, top clusters, OCC conflict rate, DPU per day (inline SVG in HTML, no JavaScript).
    Never prompts. Exit 75 when another run holds the lock; exit 3 when a budget is forecast to be
    exceeded (the report is written first). --out is written atomically with mode 0600 (unless
    --mode), into a folder that must already exist.

    \b
    Example:
      dsqlops report --format html --out /var/www/dsql-cost.html
      # crontab: 15 * * * * dsqlops report --format prometheus --out /var/lib/node_exporter/dsql.prom
    """
    from dsqlops.config import resolve
    from dsqlops.cost import pricing
    from dsqlops.cost.collect import Scope, estimate_for
    from dsqlops.cost.report import Report, evaluate_budgets, read_config, render
    from dsqlops.cost.timewin import make_window, month_start, next_month, utcnow
    from dsqlops.fsutil import atomic_write, default_lock_path, single_instance

    if config_file:
        env.config_path = config_file
        env._settings = None
    settings = env.settings
    cfg = read_config(settings.section("reports"), settings.section("budgets"))
    fmt = fmt or cfg.format
    target = out or cfg.out
    lock = lock_file or cfg.lock_file or str(default_lock_path("dsqlops-report"))
    mode = _parse_mode(file_mode)
    out_path = _check_out(target) if target else None
    with single_instance(lock):
        now = utcnow()
        window = make_window(month_start(now), next_month(now), 3600, now=now)
        prices = pricing.load_for(pricing_file, settings)
        from dsqlops.aws import AwsContext

        scopes = []
        for prof in cfg.profiles:
            s = settings if prof is None else resolve(config_path=env.config_path, profile=prof, flags=env.flags)
            regions = cfg.regions or ([s.get("region")] if s.get("region") else [])
            if not regions:
                from dsqlops.errors import ConfigError

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
        est, got = estimate_for(scopes, window, prices, now=now, forecast=True)
        rep = Report(est, cfg, evaluate_budgets(est, cfg), fetch_calls=got.stats.calls)
        text = render(rep, fmt)
        if out_path is not None:
            atomic_write(out_path, text.encode("utf-8"), mode=mode)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
    warn_all(est.warnings)
    if rep.exceeded:
        names = ", ".join(b["cluster_id"] or "total" for b in rep.exceeded)
        raise BudgetExceeded(f"budget forecast to be exceeded: {names}",
                             hint="see the report's Budgets section")


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


def _check_out(target: object) -> Path:
    """Refuse, before any AWS call, an --out whose folder does not exist: a typo in a crontab must
    not create folder trees, and a report that cannot be written is not worth fetching."""
    p = Path(str(target)).expanduser()
    parent = p.parent
    if not parent.is_dir():
        raise UsageError(f"--out {p}: the folder {parent} does not exist (dsqlops does not create folders)")
    if p.is_dir():
        raise UsageError(f"--out {p} is a folder; give a file name")
    return p
