"""``dsqlops token``, ``dsqlops connect`` and ``dsqlops sql``: working *inside* a cluster."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

import click

from dsqlops.cli.common import CliEnv, cluster_option, output_option, pass_env
from dsqlops.errors import ConfigError, UsageError

ROLE_HELP = "Database role to log in as (default: the profile's user, 'admin'). 'admin' uses DbConnectAdmin."


def _role_option(f: Any) -> Any:
    return click.option("--role", "role", default=None, metavar="NAME", help=ROLE_HELP)(f)


# --------------------------------------------------------------------------- token


@click.command("token")
@cluster_option
@_role_option
@click.option("--expires-in", type=int, default=None, metavar="SECONDS",
              help="Token lifetime, 1..604800 (default: the profile's token_expires_in, 900).")
@output_option
@pass_env
def token(env: CliEnv, cluster: str | None, role: str | None, expires_in: int | None) -> None:
    """Mint an IAM auth token (the password) for a cluster.

    In table output only the token is printed, so it can be captured; other formats print
    {token, host, region, user, expires_in, expires_at}. The token is a bearer credential:
    keep it out of shell history and logs. No token is minted without AWS credentials or for
    something that is not a DSQL endpoint.

    \b
    Example:
      export PGPASSWORD="$(dsqlops token -c abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws)"
      dsqlops -o json token -c $CLUSTER --role reader --expires-in 300
    """
    from dsqlops.data.tokens import validate_expires_in

    target = env.connection_target(cluster, user=role)
    seconds = validate_expires_in(expires_in if expires_in is not None else target.token_expires_in)
    info = env.token_source().mint(target.host, user=target.user, region=target.region, expires_in=seconds)
    if env.output_format == "table":
        sys.stdout.write(info.token + "\n")
        sys.stdout.flush()
        return
    env.render(info.to_dict())


# --------------------------------------------------------------------------- connect


def _psql_major(psql: str) -> int | None:
    try:
        out = subprocess.run([psql, "--version"], capture_output=True, text=True, timeout=15, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"(\d+)(?:\.\d+)?", out or "")
    return int(m.group(1)) if m else None


def build_psql_command(target: Any, psql: str, psql_args: tuple[str, ...], major: int | None) -> list[str]:
    """psql argv: a conninfo string without any secret (the token goes in PGPASSWORD)."""
    from psycopg.conninfo import make_conninfo

    params = target.conninfo()
    if params.get("sslnegotiation") == "postgres":
        params.pop("sslnegotiation")  # the default; the child environment carries no PGSSLNEGOTIATION
    if params.get("sslnegotiation") and (major is None or major < 17):
        # Only libpq >= 17 knows the keyword; an older psql would refuse the whole conninfo.
        params.pop("sslnegotiation")
    return [psql, "-d", make_conninfo(**{k: str(v) for k, v in params.items()}), *psql_args]


@click.command("connect", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@cluster_option
@_role_option
@click.option("--psql", "psql_bin", default=None, metavar="PATH", envvar="DSQLOPS_PSQL",
              help="The psql binary (default: psql on PATH; env DSQLOPS_PSQL).")
@click.option("--print-command", is_flag=True,
              help="Print the psql command and its environment (password redacted) instead of running it.")
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- PSQL-ARGS]...")
@pass_env
def connect(env: CliEnv, cluster: str | None, role: str | None, psql_bin: str | None, print_command: bool,
            psql_args: tuple[str, ...]) -> None:
    """Open psql on a cluster with a fresh token and verify-full TLS.

    The token travels in the PGPASSWORD environment variable of the psql process, never on its
    command line. TLS is sslmode=verify-full against the bundled Amazon Root CA 1 (or your
    sslrootcert), with sslnegotiation=direct when psql's libpq is 17+ and the real endpoint is
    dialled. Arguments after -- go to psql.

    \b
    Example:
      dsqlops connect -c abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws
      dsqlops connect -c $CLUSTER --role reader -- -c 'select count(*) from orders'
      dsqlops connect -c $CLUSTER --print-command
    """
    target = env.connection_target(cluster, user=role)
    psql = shutil.which(psql_bin or "psql")
    if not psql:
        raise ConfigError("psql was not found" + (f" at {psql_bin!r}" if psql_bin else " on PATH"),
                          hint="install the PostgreSQL client (psql 14 or newer: DSQL needs SNI), "
                          "or pass --psql PATH")
    major = _psql_major(psql)
    if major is not None and major < 14:
        from dsqlops.output import warn

        warn(f"psql {major} does not send SNI; DSQL needs psql 14 or newer")
    argv = build_psql_command(target, psql, psql_args, major)
    if print_command:
        shown = {"argv": argv, "env": {"PGPASSWORD": "<redacted: a fresh IAM token>"}}
        if env.output_format == "table":
            import shlex

            sys.stdout.write("PGPASSWORD=<redacted> " + shlex.join(argv) + "\n")
            sys.stdout.flush()
        else:
            env.render(shown)
        return
    child_env = dict(os.environ)
    # libpq fills unset keywords from PG* variables: only what dsqlops decided may apply.
    for var in ("PGHOSTADDR", "PGSSLNEGOTIATION", "PGSERVICE", "PGPASSFILE"):
        child_env.pop(var, None)
    child_env["PGPASSWORD"] = env.token_source()(target)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(psql, argv, child_env)  # noqa: S606 - exec psql directly, no shell
    except OSError as e:
        raise ConfigError(f"cannot run {psql}: {e.strerror}") from None


# --------------------------------------------------------------------------- sql


def _load_params(text: str | None) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--params is not valid JSON: {e}") from None
    if not isinstance(value, list | dict):
        raise UsageError("--params must be a JSON array (for %s placeholders) or object (for %(name)s)")
    return value


@click.command("sql")
@cluster_option
@_role_option
@click.option("-f", "--file", "file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              metavar="FILE", help="Read SQL from FILE ('-' for stdin); statements run in order.")
@click.option("--params", default=None, metavar="JSON",
              help="Bound parameters for a single statement: a JSON array for %s, an object for %(name)s.")
@click.option("--single-transaction", is_flag=True,
              help="Run all statements in one transaction, re-run whole on OCC conflicts (40001).")
@output_option
@click.argument("statement", required=False)
@pass_env
def sql(env: CliEnv, cluster: str | None, role: str | None, file: str | None, params: str | None,
        single_transaction: bool, statement: str | None) -> None:
    """Run SQL on a cluster and render the rows.

    Each statement runs on its own (autocommit), like psql: DSQL allows one DDL per transaction.
    With one statement, JSON/YAML output is the list of rows; with several, a list of
    {statement, line, status, rowcount, columns, rows}. Status lines of statements without rows go
    to stderr. A failing statement stops the run (exit 254, with its SQLSTATE) and says which
    earlier statements already ran. --single-transaction runs them all in one transaction and
    re-runs it on OCC conflicts (SQLSTATE 40001, at most 5 attempts); nothing else is retried.

    \b
    Example:
      dsqlops sql -c $CLUSTER "select now(), current_user"
      dsqlops -o json sql -c $CLUSTER "select * from accounts where id = %s" --params '[42]'
      dsqlops sql -c $CLUSTER -f migrate.sql
      dsqlops sql -c $CLUSTER --single-transaction -f transfer.sql
    """
    from dsqlops.data.sqlexec import check_bindable, run_statements, split_statements
    from dsqlops.output import info

    if (statement is None) == (file is None):
        raise UsageError("give either a SQL statement or -f FILE (not both)")
    if file is not None:
        try:
            if file == "-":
                script = sys.stdin.read()
            else:
                with open(file, encoding="utf-8") as fh:
                    script = fh.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read {file}: {e}") from None
    else:
        script = statement or ""
    statements = split_statements(script)
    if not statements:
        raise UsageError("no SQL statement to run")
    bound = _load_params(params)
    check_bindable(statements, bound)
    with env.connect(cluster, user=role, autocommit=True) as conn:
        if single_transaction:
            from dsqlops.data.retry import RetryStats, run_transaction

            stats = RetryStats()
            results = run_transaction(conn, lambda c: run_statements(c, statements, params=bound,
                                                                     single_transaction=True), stats=stats)
            if stats.retries:
                codes = ", ".join(f"{k}×{v}" for k, v in sorted(stats.by_code.items()))
                info(f"committed after {stats.retries} OCC retr{'y' if stats.retries == 1 else 'ies'} ({codes})")
        else:
            results = run_statements(conn, statements, params=bound)
    fmt = env.output_format
    if len(results) == 1 and fmt in ("json", "yaml"):
        env.render(results[0].rows)
        return
    if fmt in ("json", "yaml"):
        env.render([r.to_dict() for r in results])
        return
    first = True
    for r in results:
        if r.columns is None:
            info(r.status or "OK")
            continue
        if not first:
            sys.stdout.write("\n")
        first = False
        if r.rows:
            env.render(r.rows, columns=r.columns)
        elif fmt == "csv":
            sys.stdout.write(",".join(r.columns) + "\n")
        else:
            info(f"({r.status or 'no rows'}: 0 rows)")
