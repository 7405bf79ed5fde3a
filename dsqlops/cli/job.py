"""``dsqlops job …``: asynchronous jobs in sys.jobs (index builds, validations, drops, ANALYZE)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from dsqlops.cli.common import CliEnv, cluster_option, output_option, pass_env, timeout_option

WAIT_COLUMNS = ["job_id", "status", "succeeded", "job_type", "object_name", "elapsed_seconds", "details"]


def wait_and_report(env: CliEnv, cluster: str | None, job_ids: Sequence[str], *, timeout: float,
                    method: str = "auto", extra: dict[str, Any] | None = None,
                    single: bool = False) -> tuple[int, list[Any]]:
    """Wait for the jobs (live status line on a TTY), render the summary, return (exit code, results).

    Shared by ``job wait``, ``index build --wait`` (``single``: one object, not a list) and
    ``index repair --wait``.
    """
    from dsqlops.data.jobs import wait_all
    from dsqlops.errors import ExitCode
    from dsqlops.output import Progress, info

    progress = Progress("waiting", enabled=env.progress)
    status_conn = env.connect(cluster) if progress.enabled else None

    def on_status(job_id: str, status: str) -> None:
        progress.label = f"job {job_id}"
        progress.update(status)

    try:
        results = wait_all(lambda: env.connect(cluster, autocommit=True), job_ids, timeout=timeout, method=method,
                           on_status=on_status if progress.enabled else None, status_conn=status_conn,
                           resume=lambda jid: env.resume_wait(cluster, jid))
    finally:
        progress.done()
        if status_conn is not None:
            status_conn.close()
    rows = [{**(extra or {}), **r.to_dict()} for r in results]
    if single and len(rows) == 1 and env.output_format in ("json", "yaml"):
        env.render(rows[0])
    else:
        env.render(rows, columns=[*(extra or {}).keys(), *WAIT_COLUMNS] if env.output_format in ("table", "csv")
                   else None)
    code = ExitCode.OK
    for r in results:
        if r.timed_out:
            why = f" ({r.details})" if r.details else ""
            info(f"job {r.job_id}: still {r.status} after the {timeout:g}s timeout{why}; it keeps running: "
                 f"resume with '{env.resume_wait(cluster, r.job_id)}'")
            code = ExitCode.TIMEOUT
        elif not r.succeeded:
            info(f"job {r.job_id}: {r.status}" + (f": {r.details}" if r.details else ""))
            if code == ExitCode.OK:
                code = ExitCode.FAILED
    return int(code), results


@click.group("job")
def job() -> None:
    """List, show and wait on asynchronous jobs (sys.jobs).

    \b
    Example:
      dsqlops job list -c CLUSTER --status processing
      dsqlops job wait 5nojsvs2fjbxrdt4poxgm5klym --timeout 600
    """


@job.command("list")
@cluster_option
@click.option("--status", type=click.Choice(["submitted", "processing", "completed", "failed", "cancelled", "canceled"],
                                            case_sensitive=False), default=None, help="Only jobs in this status.")
@click.option("--type", "job_type", type=click.Choice(["INDEX_BUILD", "VALIDATE_CONSTRAINT", "DROP", "ANALYZE"],
                                                      case_sensitive=False), default=None, help="Only this job type.")
@click.option("--since", default=None, metavar="WHEN", help="Started after: 30m, 2h, 1d or an ISO-8601 time.")
@output_option
@pass_env
def list_cmd(env: CliEnv, cluster: str | None, status: str | None, job_type: str | None, since: str | None) -> None:
    """List jobs, newest first (finished ones stay ~30 minutes).

    \b
    Example:
      dsqlops job list -c CLUSTER --type INDEX_BUILD --since 1h
    """
    from dsqlops.data.jobs import list_jobs, parse_since

    when = parse_since(since) if since else None
    conn = env.connect(cluster)
    try:
        jobs = list_jobs(conn, status=status, job_type=job_type, since=when)
    finally:
        conn.close()
    env.render(jobs, columns=["job_id", "status", "job_type", "object_name", "start_time", "update_time", "details"],
               empty_message="no jobs (finished jobs leave sys.jobs about 30 minutes after they end)")


@job.command("show")
@click.argument("job_id")
@cluster_option
@output_option
@pass_env
def show_cmd(env: CliEnv, job_id: str, cluster: str | None) -> None:
    """Show one job (status, details, object, times).

    \b
    Example:
      dsqlops job show 5nojsvs2fjbxrdt4poxgm5klym -c CLUSTER
    """
    from dsqlops.data.jobs import show_job, validate_job_id

    validate_job_id(job_id)
    conn = env.connect(cluster)
    try:
        j = show_job(conn, job_id)
    finally:
        conn.close()
    env.render(j)


@job.command("wait")
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@cluster_option
@timeout_option(600.0)
@click.option("--method", type=click.Choice(["auto", "call", "poll"]), default="auto", show_default=True,
              help="CALL sys.wait_for_job on a dedicated connection, or poll sys.jobs (auto: CALL unless the "
              "wait could outlive a connection).")
@output_option
@pass_env
def wait_cmd(env: CliEnv, job_ids: tuple[str, ...], cluster: str | None, timeout: float, method: str) -> int:
    """Wait for jobs to finish; print a summary. Exit 0 all succeeded, 1 one failed, 4 timeout.

    \b
    Example:
      dsqlops job wait JOB1 JOB2 -c CLUSTER --timeout 1800
    """
    from dsqlops.data.jobs import validate_job_id

    for j in job_ids:
        validate_job_id(j)
    code, _ = wait_and_report(env, cluster, job_ids, timeout=timeout, method=method)
    return code
