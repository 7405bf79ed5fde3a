"""``dsqlops stats …``: dump, diff and refresh planner statistics."""

from __future__ import annotations

import sys
from typing import Any

import click

from dsqlops.cli.common import CliEnv, cluster_option, output_option, pass_env
from dsqlops.errors import UsageError

SUMMARY_COLUMNS = ["table", "reltuples", "relpages", "size_bytes", "last_analyze", "columns", "indexes",
                   "extended_statistics"]


@click.group("stats")
def stats() -> None:
    """Dump, diff and refresh planner statistics.

    \b
    Example:
      dsqlops -o json stats dump -c CLUSTER > before.json
      dsqlops stats diff before.json after.json
    """


@stats.command("dump")
@cluster_option
@click.option("--schema", "schemas", multiple=True, metavar="SCHEMA", help="Only tables in this schema (repeatable).")
@click.option("--table", "tables", multiple=True, metavar="[SCHEMA.]TABLE", help="Only this table (repeatable).")
@click.option("--exact", is_flag=True, help="Also count(*) each table (bounded) and flag estimates off by > 20%.")
@click.option("--count-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True, metavar="SECONDS",
              help="statement_timeout for each --exact count(*).")
@click.option("--drift", type=click.FloatRange(min=0.0), default=0.20, show_default=True,
              help="With --exact: relative drift above which statistics are stale.")
@output_option
@pass_env
def dump_cmd(env: CliEnv, cluster: str | None, schemas: tuple[str, ...], tables: tuple[str, ...], exact: bool,
             count_timeout: float, drift: float) -> int:
    """Dump planner statistics as deterministic JSON/YAML (or a summary table).

    Keys and rows are sorted and nothing volatile is included, so two dumps of an unchanged
    cluster are identical and 'stats diff' shows only real changes. With --exact the exit code
    is 1 when some table's statistics are stale.

    \b
    Example:
      dsqlops -o json stats dump -c CLUSTER --schema public > stats.json
      dsqlops stats dump --table public.accounts --exact
    """
    from dsqlops.data import stats as core
    from dsqlops.errors import ExitCode

    refs = [core.parse_table_ref(t) for t in tables]
    conn = env.connect(cluster)
    try:
        data = core.dump(conn, schemas=list(schemas) or None, tables=refs or None)
        counts = core.exact_counts(conn, data["tables"], timeout_s=count_timeout, drift=drift) if exact else None
    finally:
        conn.close()
    if counts is not None:
        data["exact"] = counts
    fmt = env.output_format
    if fmt == "json":
        sys.stdout.write(core.to_json(data))
        sys.stdout.flush()
    elif fmt == "yaml":
        env.render(core.normalise(data))
    else:
        rows = [{"table": f"{t['schema']}.{t['name']}", "reltuples": t["reltuples"], "relpages": t["relpages"],
                 "size_bytes": t.get("size_bytes"), "last_analyze": t.get("last_analyze"),
                 "columns": len(t["columns"]), "indexes": len(t["indexes"]),
                 "extended_statistics": len(t["extended_statistics"])} for t in data["tables"]]
        if counts is not None:
            for r, c in zip(rows, counts, strict=True):
                r.update({"count": c["count"], "drift": c["drift"], "stale": c["stale"]})
        env.render(rows, empty_message="no tables")
    stale = [c for c in counts or [] if c["stale"]]
    for c in counts or []:
        if c["note"]:
            from dsqlops.output import warn

            warn(f"{c['table']}: {c['note']}")
    return int(ExitCode.FAILED if stale else ExitCode.OK)


@stats.command("diff")
@click.argument("before", type=click.Path(dir_okay=False))
@click.argument("after", type=click.Path(dir_okay=False))
@output_option
@pass_env
def diff_cmd(env: CliEnv, before: str, after: str) -> None:
    """Show what changed between two 'stats dump -o json' files.

    \b
    Example:
      dsqlops stats diff before.json after.json
    """
    from dsqlops.data import stats as core
    from dsqlops.output import info

    changes = core.diff(core.load_dump(before), core.load_dump(after))
    if not changes:
        info("no differences")
        if env.output_format in ("json", "yaml"):
            env.render([])
        return
    if env.output_format == "table":
        # pg_stats arrays run to hundreds of characters: shorten them on screen (JSON/CSV stay whole)
        changes = [{**c, "before": _short(c["before"]), "after": _short(c["after"])} for c in changes]
    env.render(changes, columns=["path", "change", "before", "after"])


def _short(v: Any, width: int = 48) -> Any:
    if isinstance(v, str) and len(v) > width:
        return v[: width - 1] + "…"
    return v


@stats.command("analyze")
@click.argument("tables", nargs=-1, required=True, metavar="[SCHEMA.]TABLE...")
@cluster_option
@output_option
@pass_env
def analyze_cmd(env: CliEnv, tables: tuple[str, ...], cluster: str | None) -> None:
    """Refresh statistics: ANALYZE each table.

    \b
    Example:
      dsqlops stats analyze public.accounts public.ledger -c CLUSTER
    """
    from dsqlops.data import stats as core

    refs = [core.parse_table_ref(t) for t in tables]
    if len(set(refs)) != len(refs):
        raise UsageError("a table is named twice")
    conn = env.connect(cluster)
    try:
        rows: list[dict[str, Any]] = core.analyze(conn, refs)
    finally:
        conn.close()
    env.render(rows)
