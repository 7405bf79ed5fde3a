"""``dsqlops index …``: asynchronous index builds (CREATE INDEX ASYNC), listing, drops, repair."""

from __future__ import annotations

import click

from dsqlops.cli.common import (
    CliEnv,
    cluster_option,
    dry_run_option,
    output_option,
    pass_env,
    timeout_option,
    yes_option,
)

LIST_COLUMNS = ["schema", "table", "name", "state", "unique", "size_bytes", "building_job", "definition"]


@click.group("index")
def index() -> None:
    """Build (CREATE INDEX ASYNC), list, drop and repair indexes.

    \b
    Example:
      dsqlops index build public.accounts email --unique --wait
      dsqlops index list --invalid
    """


@index.command("build")
@click.argument("table")
@click.argument("columns", nargs=-1, required=True, metavar="COLUMN...")
@click.option("--name", default=None, help="Index name (default: DSQL's TABLE_COL_idx).")
@click.option("--unique", is_flag=True, help="A UNIQUE index (the build fails on duplicates).")
@click.option("--include", "include", multiple=True, metavar="COLUMN", help="INCLUDE column (repeatable).")
@click.option("--where", "where", default=None, metavar="PREDICATE", help="A partial index: WHERE PREDICATE.")
@click.option("--nulls-not-distinct", is_flag=True, help="NULLS NOT DISTINCT (with --unique).")
@click.option("--if-not-exists", is_flag=True, help="Do nothing if an index of that --name exists.")
@click.option("--wait", is_flag=True, help="Wait for the build job to finish.")
@timeout_option(1800.0)
@cluster_option
@dry_run_option
@output_option
@pass_env
def build_cmd(env: CliEnv, table: str, columns: tuple[str, ...], name: str | None, unique: bool,
              include: tuple[str, ...], where: str | None, nulls_not_distinct: bool, if_not_exists: bool,
              wait: bool, timeout: float, cluster: str | None, dry_run: bool) -> int:
    """Start an asynchronous index build; print its job id at once.

    The job id goes to stderr immediately and into the output, so an interrupted --wait can be
    resumed with 'dsqlops job wait ID'. A failed build exits 1 with the job's details and names the
    invalid index it left behind.

    \b
    Example:
      dsqlops index build public.accounts email --unique --name accounts_email_uq --wait
      dsqlops index build orders customer_id --include total --where "status <> 'done'"
    """
    from dsqlops.data.indexes import build_statement, preflight, start_build
    from dsqlops.errors import ExitCode, OperationFailed, Terminated, WaitTimeout
    from dsqlops.output import info

    stmt = build_statement(table, columns, name=name, unique=unique, include=include, where=where,
                           nulls_not_distinct=nulls_not_distinct, if_not_exists=if_not_exists)
    if dry_run:
        from psycopg import sql as _sql

        text = stmt.as_string(None) if isinstance(stmt, _sql.Composable) else str(stmt)
        env.render([{"step": 1, "sql": text}])
        info("dry run: nothing was started")
        return int(ExitCode.OK)
    conn = env.connect(cluster)
    try:
        if preflight(conn, table, columns, include=include, name=name, if_not_exists=if_not_exists):
            from dsqlops.data.indexes import BuildStarted, _table_ref

            schema, tbl = _table_ref(table)
            started = BuildStarted(None, f"{schema}.{name}", f"{schema}.{tbl}", stmt.as_string(conn))
        else:
            started = start_build(conn, table, stmt, name=name)
    finally:
        conn.close()
    if started.job_id is None:
        info(f"index {started.index} already exists (--if-not-exists): nothing to build")
        env.render({**started.to_dict(), "status": "exists"})
        return int(ExitCode.OK)
    info(f"job {started.job_id}: building index {started.index or '?'} on {started.table}")
    info(f"  resume a wait with: {env.resume_wait(cluster, started.job_id)}")
    if not wait:
        env.render({**started.to_dict(), "status": "submitted"})
        return int(ExitCode.OK)
    from dsqlops.cli.job import wait_and_report

    try:
        code, results = wait_and_report(env, cluster, [started.job_id], timeout=timeout, single=True,
                                        extra={"index": started.index, "table": started.table, "sql": started.sql})
    except (KeyboardInterrupt, Terminated):
        env.render({**started.to_dict(), "status": "interrupted"})
        raise
    r = results[0]
    if r.timed_out:
        raise WaitTimeout(f"index build job {r.job_id} is still {r.status} after {timeout:g}s",
                          hint=f"it keeps running; resume with: {env.resume_wait(cluster, r.job_id)}")
    if not r.succeeded:
        raise OperationFailed(f"index build job {r.job_id} {r.status}: {r.details or 'no details'}",
                              hint=_failed_build_hint(env, cluster, started.index, unique=unique))
    return code


def _failed_build_hint(env: CliEnv, cluster: str | None, index: str | None, *, unique: bool) -> str:
    """What a failed build left behind, read from the catalog: only an index that is there is named.

    A failed build leaves its index INVALID: never used by queries, still counted toward the
    24-index limit, and a UNIQUE one keeps rejecting writes that would duplicate a key until it is
    dropped (dsql-facts.md §3.1; docs/dataplane.md "Failed builds")."""
    from dsqlops.data.indexes import existing_index

    try:
        conn = env.connect(cluster)
        try:
            left = existing_index(conn, index)
        finally:
            conn.close()
    except Exception:  # noqa: BLE001 - the hint must not hide the job's own failure
        return "see 'dsqlops index list --invalid' for what the build left behind"
    if not left:
        return "no index was left behind: fix the cause and build it again"
    return (f"the invalid index {index} is left behind: queries never use it, it still counts toward the "
            "24-index limit"
            + (", and as a UNIQUE index it still rejects writes that would duplicate a key" if unique else "")
            + f"; fix the data and run 'dsqlops index repair', or 'dsqlops index drop {index}'")


@index.command("list")
@click.option("--table", default=None, metavar="[SCHEMA.]TABLE", help="Only this table's indexes.")
@click.option("--invalid", is_flag=True, help="Only invalid indexes (failed builds).")
@cluster_option
@output_option
@pass_env
def list_cmd(env: CliEnv, table: str | None, invalid: bool, cluster: str | None) -> None:
    """List indexes: definition, state (valid / INVALID / building), size.

    \b
    Example:
      dsqlops index list --table public.accounts
      dsqlops -o json index list --invalid
    """
    from dsqlops.data.indexes import list_indexes

    conn = env.connect(cluster)
    try:
        rows = list_indexes(conn, table=table, invalid=invalid)
    finally:
        conn.close()
    env.render(rows, columns=LIST_COLUMNS if env.output_format in ("table", "csv") else None,
               empty_message="no invalid indexes" if invalid else "no indexes")


@index.command("drop")
@click.argument("name", metavar="[SCHEMA.]INDEX")
@cluster_option
@yes_option
@output_option
@pass_env
def drop_cmd(env: CliEnv, name: str, cluster: str | None, yes: bool) -> None:
    """Drop an index (this also cancels a build in progress).

    \b
    Example:
      dsqlops index drop public.accounts_email_uq --yes
    """
    from dsqlops.data.indexes import drop_index
    from dsqlops.data.jobs import get_job
    from dsqlops.output import info

    env.confirm(f"drop index {name}?", yes=yes)
    conn = env.connect(cluster)
    try:
        dropped = drop_index(conn, name)
        job = get_job(conn, dropped.building_job) if dropped.building_job else None
    finally:
        conn.close()
    info(f"dropped index {dropped.schema}.{dropped.name}")
    row: dict[str, object] = {"index": f"{dropped.schema}.{dropped.name}",
                              "table": f"{dropped.schema}.{dropped.table}", "dropped": True}
    if dropped.building_job:
        status = job.status if job is not None else "unknown"
        info(f"build job {dropped.building_job} {status}")
        row.update(build_job=dropped.building_job, build_job_status=status)
    env.render(row)


@index.command("repair")
@click.option("--table", default=None, metavar="[SCHEMA.]TABLE", help="Only this table's indexes.")
@click.option("--wait", is_flag=True, help="Wait for the rebuild jobs.")
@click.option("--max-duplicates", type=click.IntRange(1, 10000), default=20, show_default=True, metavar="N",
              help="Duplicate keys shown per UNIQUE index (the most repeated first).")
@timeout_option(1800.0)
@cluster_option
@dry_run_option
@yes_option
@output_option
@pass_env
def repair_cmd(env: CliEnv, table: str | None, wait: bool, max_duplicates: int, timeout: float,
               cluster: str | None, dry_run: bool, yes: bool) -> int:
    """Drop and rebuild (asynchronously) every invalid index left by failed builds.

    A UNIQUE index whose table still holds duplicate keys is not touched (its rebuild would fail
    the same way): the duplicated keys are printed (GROUP BY the key HAVING count(*) > 1) and the
    command exits 1 once the other indexes are rebuilding. Fix those rows and run it again.

    \b
    Example:
      dsqlops index repair --dry-run
      dsqlops index repair --yes --wait
    """
    from dsqlops.data.indexes import describe_duplicates, repair, repair_plan
    from dsqlops.errors import ExitCode, OperationFailed
    from dsqlops.output import info

    conn = env.connect(cluster)
    try:
        items = repair_plan(conn, table=table, duplicates_shown=max_duplicates)
        if not items:
            info("nothing to repair: no invalid indexes")
            if env.output_format in ("json", "yaml"):
                env.render([])
            return int(ExitCode.OK)
        if dry_run or env.output_format in ("table", "csv"):
            env.render([i.to_dict() for i in items],
                       columns=["index", "table", "action", "duplicate_keys", "drop_sql", "rebuild_sql"]
                       if env.output_format in ("table", "csv") else None)
        blocked = [i for i in items if i.blocked]
        todo = [i for i in items if not i.blocked]
        for it in blocked:
            for line in describe_duplicates(it):
                info(line)
        if dry_run:
            info(f"dry run: {len(todo)} index(es) would be dropped and rebuilt"
                 + (f"; {len(blocked)} need their duplicate keys fixed first" if blocked else ""))
            return int(ExitCode.OK)
        rows: list[dict[str, object]] = []
        if todo:
            env.confirm(f"drop and rebuild {len(todo)} invalid index(es)?", yes=yes)
            rows = repair(conn, todo)
    finally:
        conn.close()
    for r in rows:
        hint = env.resume_wait(cluster, str(r["job_id"]))
        info(f"job {r['job_id']}: rebuilding {r['index']} (resume a wait with: {hint})")
    code = int(ExitCode.OK)
    if rows and wait:
        from dsqlops.cli.job import wait_and_report

        code, _ = wait_and_report(env, cluster, [str(r["job_id"]) for r in rows if r["job_id"]], timeout=timeout)
    elif env.output_format in ("json", "yaml") and (rows or not blocked):
        env.render(rows)
    if blocked:
        if env.output_format in ("json", "yaml") and not rows:
            env.render([i.to_dict() for i in blocked])
        names = ", ".join(f"{i.index.schema}.{i.index.name}" for i in blocked)
        raise OperationFailed(f"not rebuilt: {names} (duplicate keys in the table, listed above)",
                              hint="delete or change the duplicated rows (the invalid UNIQUE index keeps new "
                              "duplicates out meanwhile), then run 'dsqlops index repair' again")
    return code
