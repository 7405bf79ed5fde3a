"""``dsqlops explain``: EXPLAIN a statement, read DSQL's DPU estimate, price it, point at costly shapes."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from dsqlops.cli.common import CliEnv, cluster_option, output_option, pass_env
from dsqlops.data.sqlexec import Statement, check_bindable
from dsqlops.errors import UsageError


def _param(value: str) -> Any:
    """A JSON scalar when the text is one (42, 1.5, true, null, "x"), else the text itself."""
    try:
        v = json.loads(value)
    except ValueError:
        return value
    if isinstance(v, dict | list):
        raise UsageError(f"--params takes scalars, one per option: {value!r}")
    return v


def _read(fh: Any) -> str:
    try:
        return str(fh.read())
    except UnicodeDecodeError as e:
        name = getattr(fh, "name", "the file")
        raise UsageError(f"cannot read {name}: not UTF-8 ({e.reason} at byte {e.start})") from None


@click.command("explain")
@click.argument("statement", required=False)
@click.option("-f", "--file", "file", type=click.File("r", encoding="utf-8"), default=None,
              help="Read the statement from FILE ('-' for stdin).")
@click.option("--analyze", is_flag=True,
              help="Run it: EXPLAIN (ANALYZE, VERBOSE), which prints DSQL's DPU estimate. The transaction is "
              "always rolled back, so writes change nothing.")
@click.option("--params", "params", multiple=True, metavar="VALUE",
              help="A value for the next %s placeholder (repeatable; JSON scalars such as 42 or null are typed).")
@click.option("--large-rows", type=click.IntRange(min=1), default=1000, show_default=True,
              help="A full scan reading at least this many rows is a warning.")
@click.option("--pricing-file", default=None, metavar="FILE", help="Price table (default: config, then shipped).")
@click.option("--plan-file", type=click.File("r", encoding="utf-8"), default=None,
              help="Do not connect: read saved EXPLAIN output from FILE and report on it.")
@cluster_option
@output_option
@pass_env
def explain(env: CliEnv, statement: str | None, file: Any, analyze: bool, params: tuple[str, ...],
            large_rows: int, pricing_file: str | None, plan_file: Any, cluster: str | None) -> None:
    """EXPLAIN a query with DSQL's DPU estimate, priced.

    Prints the plan, the Statement DPU Estimate (Compute/Read/Write/Total and the transaction
    minimums) priced per execution and per million executions, and findings: full scans, filters
    run in the query processor instead of storage, sorts and storage lookups. -o json for data.

    \b
    Example:
      dsqlops explain -c CLUSTER --analyze "SELECT * FROM accounts WHERE id = %s" --params 42
      dsqlops explain -f query.sql
      dsqlops -o json explain --plan-file saved_plan.txt
    """
    from dsqlops.data import explain as core
    from dsqlops.output import info

    sources = sum(x is not None for x in (statement, file, plan_file))
    if sources != 1:
        raise UsageError("give exactly one of: a statement, -f FILE, or --plan-file FILE")
    region: str | None
    if plan_file is not None:
        report = core.parse_explain(_read(plan_file), large_rows=large_rows)
        ref = env.cluster(cluster, required=False)
        region = (ref.region if ref is not None else None) or env.settings.get("region")
    else:
        text = statement if statement is not None else _read(file)
        stmt = core.strip_sql(text)
        bound = [_param(p) for p in params] or None
        check_bindable([Statement(stmt, 1)], bound)  # before connecting: UTF-8, placeholder count
        target = env.connection_target(cluster)
        region = target.region
        if analyze and core.is_write(stmt):
            info("note: the statement writes; it runs inside a transaction that is rolled back, so nothing "
                 "is changed (the DPU estimate still counts the writes)")
        conn = env.connect(cluster)
        try:
            report = core.run_explain(conn, stmt, params=bound, analyze=analyze,
                                      large_rows=large_rows)
        finally:
            conn.close()
        if report.rolled_back:
            info("rolled back: the EXPLAIN ANALYZE transaction was rolled back")
    if region:
        report.price = core.price_for(region, pricing_file=pricing_file, settings=env.settings)
    if env.output_format in ("json", "yaml"):
        env.render(report.to_dict())
    else:
        sys.stdout.write(core.render_text(report))
        sys.stdout.flush()
