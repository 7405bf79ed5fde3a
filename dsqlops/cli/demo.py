"""``dsqlops demo``: replay the DSQL banking talk end to end on the local sandbox."""

from __future__ import annotations

import sys

import click

from dsqlops.cli.common import CliEnv, pass_env


@click.command()
@click.option("--accounts", type=click.IntRange(min=2), default=1000, show_default=True, help="Accounts to load.")
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
              help="Concurrent clients in the transfer runs.")
@click.option("--duration", type=click.FloatRange(min=1), default=15.0, show_default=True, metavar="SECONDS",
              help="Length of each of the two transfer runs.")
@click.option("--role", default="teller", show_default=True, help="The IAM role / PostgreSQL role to create.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None, envvar="DSQLOPS_SANDBOX_DIR",
              metavar="DIR", help="Sandbox folder (started if not running) [default: the sandbox default].")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True, metavar="SECONDS",
              help="Give up on a step after this long.")
@pass_env
def demo(env: CliEnv, accounts: int, concurrency: int, duration: float, role: str, directory: str | None,
         timeout: float) -> None:
    """Replay the DSQL banking talk end to end on the sandbox, with the real commands.

    Starts (or reuses) the sandbox, creates a cluster, an IAM role mapped to a PostgreSQL role
    (refused before the grant), the accounts table, loads accounts, runs concurrent transfers
    with OCC retries and live telemetry, adds the transactions log, shows a full scan in EXPLAIN,
    builds an index with CREATE INDEX ASYNC, shows the plan using it, dumps planner statistics,
    flushes metrics and prints the cost estimate and the cost per 1,000 transfers. Each step
    prints the command a user would type. A failing step stops the demo (exit 1).

    \b
    Example:
      dsqlops demo
      dsqlops demo --accounts 200 --duration 5 --concurrency 4
    """
    from dsqlops.bench.demo import DemoOptions, run_demo
    from dsqlops.validate import validate_role_name

    validate_role_name(role)
    opts = DemoOptions(accounts=accounts, concurrency=concurrency, duration=duration, sandbox_dir=directory,
                       role=role, timeout=timeout)
    run_demo(opts, sys.stdout, color=sys.stdout.isatty())
