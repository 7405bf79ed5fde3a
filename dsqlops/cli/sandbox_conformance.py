"""``dsqlops sandbox conformance``: replay recorded real-DSQL behaviour against a cluster and compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dsqlops.cli.common import CliEnv, cluster_option, output_option, pass_env


@click.command("conformance")
@click.argument("directory", type=click.Path(exists=True, file_okay=False), metavar="DIR")
@click.option("--endpoint", "endpoint", default=None, metavar="CLUSTER",
              help="Cluster to replay against (id, endpoint or ARN); same as -c.")
@cluster_option
@click.option("--record", is_flag=True,
              help="Also write this run's observations as case files in the record's format.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Where --record writes its files [default: DIR itself].")
@output_option
@pass_env
def conformance(env: CliEnv, directory: str, endpoint: str | None, cluster: str | None, record: bool,
                out_dir: str | None) -> None:
    """Replay a folder of recorded DSQL probes against a cluster and report what differs.

    Runs the folder's setup.sql, every case in ORDER.md order (extended protocol, one simple
    Query for multi-statement cases, two concurrent sessions for the OCC cases), then
    teardown.sql, and compares each answer with the recording (SQLSTATE, command tag, columns,
    rows). Prints matched/total per file and every mismatch (expected vs got in JSON). Exits 1
    when below target (95% overall, 90% per file, 100% of index, transaction, occ_conflict).
    It creates and drops baseline_* tables: use a scratch cluster.

    \b
    Example:
      dsqlops sandbox conformance tests/fixtures/conformance -c abcdefghijklmnopqrstuvwxyz
      dsqlops -o json sandbox conformance ./conformance --endpoint <id>.dsql.us-east-1.on.aws
      dsqlops sandbox conformance ./conformance --endpoint <real cluster> --record --out ./new-record
    """
    from dsqlops.errors import OperationFailed
    from dsqlops.output import warn
    from dsqlops.sandbox import conformance as conf

    suite = conf.load_suite(directory)
    cluster_value = endpoint or cluster

    def connect() -> conf.PgConn:
        return conf.PgConn(env.connect(cluster_value, autocommit=True))

    observed: dict[str, Any] | None = {} if record else None
    progress = env.progress_line("conformance")

    def on_case(res: conf.CaseResult) -> None:
        progress.update(f"{res.group}/{res.name}")

    report = conf.run_suite(suite, connect, on_case=on_case, record=observed)
    progress.done()
    data = conf.report_json(report)
    if observed is not None:
        first = connect()
        try:
            version = first.extended("SELECT version()").get("rows", [["PostgreSQL 16"]])[0][0]
        finally:
            first.close()
        written = conf.write_record(suite, observed, Path(out_dir or directory), server_version=version)
        data["recorded_files"] = [str(p) for p in written]
    if env.output_format == "table":
        env.render([{"file": f["file"], "matched": f["matched"], "total": f["total"],
                     "percent": f"{100 * f['ratio']:.1f}"} for f in data["files"]]
                   + [{"file": "ALL", "matched": data["matched"], "total": data["total"],
                       "percent": f"{100 * data['ratio']:.1f}"}])
        for m in data["mismatches"]:
            warn(f"mismatch {m['file']}/{m['name']}: {'; '.join(m['differences'])}")
        for s in data["setup_errors"]:
            warn(f"setup: {s}")
    else:
        env.render(data)
    if not report.meets_target:
        raise OperationFailed(
            f"conformance below target: {report.matched}/{report.total} cases match "
            f"(target {int(100 * conf.TARGET_OVERALL)}% overall, {int(100 * conf.TARGET_PER_FILE)}% per file, "
            f"100% of {', '.join(conf.TARGET_EXACT)})")
