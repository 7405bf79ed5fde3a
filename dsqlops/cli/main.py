"""``dsqlops``: the root command, global options, lazy sub-command loading, error translation.

Sub-command modules are imported only when used, so ``dsqlops --help`` imports neither boto3 nor
psycopg (checked by a test and by ``benchmarks/startup``).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from typing import Any, ClassVar

import click

from dsqlops import __version__
from dsqlops.cli.common import CliEnv
from dsqlops.errors import DsqlopsError, ExitCode, Terminated
from dsqlops.output import FORMATS

#: name -> (module, attribute, one-line summary shown by ``dsqlops --help``).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "config": ("dsqlops.cli.config_cmd", "config", "Initialise and show dsqlops settings."),
    "cluster": ("dsqlops.cli.cluster", "cluster", "Create, inspect, update, tag, delete and wait on clusters."),
    "token": ("dsqlops.cli.connect", "token", "Mint an IAM auth token (the password) for a cluster."),
    "connect": ("dsqlops.cli.connect", "connect", "Open psql on a cluster with a fresh token and verify-full TLS."),
    "sql": ("dsqlops.cli.connect", "sql", "Run SQL on a cluster and render the rows."),
    "role": ("dsqlops.cli.role", "role", "PostgreSQL roles and their IAM mappings, declaratively."),
    "index": ("dsqlops.cli.index", "index", "Build (CREATE INDEX ASYNC), list, drop and repair indexes."),
    "job": ("dsqlops.cli.job", "job", "List, show and wait on asynchronous jobs (sys.jobs)."),
    "stats": ("dsqlops.cli.stats", "stats", "Dump, diff and refresh planner statistics."),
    "explain": ("dsqlops.cli.explain", "explain", "EXPLAIN a query with DSQL's DPU estimate, priced."),
    "metrics": ("dsqlops.cli.metrics", "metrics", "Show a cluster's CloudWatch metrics."),
    "pricing": ("dsqlops.cli.pricing", "pricing", "Show and refresh the DSQL price table."),
    "cost": ("dsqlops.cli.cost", "cost", "Estimate DSQL cost from CloudWatch, with a month-end forecast."),
    "report": ("dsqlops.cli.report", "report", "Write the cron cost report (md, html, json, csv, prometheus)."),
    "budget": ("dsqlops.cli.budget", "budget", "Create, list and delete CloudWatch budget alarms."),
    "sandbox": ("dsqlops.cli.sandbox", "sandbox", "Run a local DSQL: control plane, wire front, PostgreSQL."),
    "bench": ("dsqlops.cli.bench", "bench", "Run workloads (banking transfer…) with OCC telemetry and cost."),
    "demo": ("dsqlops.cli.demo", "demo", "Replay the DSQL banking talk end to end on the sandbox."),
}


class LazyGroup(click.Group):
    """A group whose registered sub-commands (``lazy``: name → module, attribute, summary) are
    imported on first use, so ``--help`` and every other command start fast."""

    lazy: ClassVar[dict[str, tuple[str, str, str]]] = COMMANDS

    def list_commands(self, ctx: click.Context) -> list[str]:
        # Every registered command is listed: a missing or broken module must fail loudly (the
        # help test imports each one), not vanish from the list.
        return sorted(set(self.lazy) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = self.lazy.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        cmd = getattr(module, entry[1])
        if not isinstance(cmd, click.Command):  # pragma: no cover - a wiring bug
            raise TypeError(f"{entry[0]}.{entry[1]} is not a click command")
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the registry's summaries: listing commands must not import their modules.
        rows = [(n, self.lazy[n][2] if n in self.lazy else (self.commands[n].get_short_help_str()))
                for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.option("--profile", envvar="DSQLOPS_PROFILE", default=None,
              help="dsqlops profile from the config file (or, if none has that name, the AWS profile).")
@click.option("--region", envvar="DSQLOPS_REGION", default=None, help="AWS region (default: profile, AWS_REGION).")
@click.option("--endpoint-url", envvar="DSQLOPS_ENDPOINT_URL", default=None,
              help="Control-plane endpoint (the sandbox, LocalStack, a proxy).")
@click.option("-o", "--output", envvar="DSQLOPS_OUTPUT", type=click.Choice(FORMATS), default=None,
              help="Output format for data on stdout [default: table].")
@click.option("--config", "config_path", envvar="DSQLOPS_CONFIG", default=None, metavar="FILE",
              help="Config file (default: $XDG_CONFIG_HOME/dsqlops/config.yaml).")
@click.option("--debug", envvar="DSQLOPS_DEBUG", is_flag=True, help="Log dsqlops' steps to stderr (secrets redacted).")
@click.option("--no-progress", envvar="DSQLOPS_NO_PROGRESS", is_flag=True, help="No live progress lines on stderr.")
@click.version_option(__version__, prog_name="dsqlops")
@click.pass_context
def cli(ctx: click.Context, profile: str | None, region: str | None, endpoint_url: str | None,
        output: str | None, config_path: str | None, debug: bool, no_progress: bool) -> None:
    """Operations and cost observability for Amazon Aurora DSQL.

    \b
    Example:
      eval "$(dsqlops sandbox env)"    # or use your AWS credentials
      dsqlops cluster create --no-deletion-protection --wait
      dsqlops -o json cluster list
    """
    from dsqlops.logs import setup_logging

    env = ctx.ensure_object(CliEnv)
    env.config_path = config_path
    env.profile = profile
    env.flags = {"region": region, "endpoint_url": endpoint_url}
    if output and env.output is None:
        env.output = output
    env.debug = debug
    env.progress = not no_progress
    setup_logging(debug)


def _print_error(exc: DsqlopsError) -> None:
    from dsqlops.logs import redact

    sys.stderr.write(f"error: {redact(exc.message)}\n")
    if exc.hint:
        sys.stderr.write(f"hint: {redact(exc.hint)}\n")
    sys.stderr.flush()


def translate(exc: BaseException) -> DsqlopsError | None:
    """Map library exceptions that escaped the core to dsqlops errors (the one translation point)."""
    mod = type(exc).__module__ or ""
    if mod.startswith("botocore") or mod.startswith("boto3"):
        from dsqlops.aws import translate_client_error

        mapped = translate_client_error(exc)
        return mapped if isinstance(mapped, DsqlopsError) else None
    if any((c.__module__ or "").startswith("psycopg") for c in type(exc).__mro__):  # incl. subclasses of ours
        from dsqlops.errors import ServiceError

        # Cleaning up after a lost connection (a rollback on it) raises "the connection is closed"
        # and hides why it was lost; report the first cause.
        seen = exc.__context__
        for _ in range(8):
            if seen is None:
                break
            if type(seen).__name__ == "NoAnswer":
                exc = seen
                break
            seen = seen.__context__

        code = getattr(exc, "sqlstate", None)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ServiceError(f"database error{f' {code}' if code else ''}: {text}", code=code)
    return None


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and turn every outcome into an ExitCode."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(os.environ.get("DSQLOPS_DEBUG"))
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (systemd, docker stop, a cron timeout) unwinds like Ctrl-C instead of killing the
        # process mid-write: temp files go, locks are released, bench writes what it counted.
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rv: Any = cli.main(args=argv, prog_name="dsqlops", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        code = ExitCode.INTERRUPTED
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:
        e.show()
        code = ExitCode.USAGE
    except DsqlopsError as e:
        _print_error(e)
        code = e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        code = ExitCode.INTERRUPTED
    except Terminated:
        sys.stderr.write("terminated (SIGTERM)\n")
        code = ExitCode.TERMINATED
    except BrokenPipeError:
        code = ExitCode.OK
    except Exception as e:  # noqa: BLE001 - the one translation point
        mapped = translate(e)
        if mapped is not None:
            _print_error(mapped)
            code = mapped.exit_code
        else:
            if debug:
                import traceback

                from dsqlops.logs import redact

                sys.stderr.write(redact(traceback.format_exc()))
            sys.stderr.write(f"error: internal error: {type(e).__name__}: {e}\n")
            code = ExitCode.INTERNAL
    sys.exit(int(code))
