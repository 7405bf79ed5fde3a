"""``dsqlops sandbox``: run a local DSQL (control plane, wire front, one PostgreSQL per cluster)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

import click

from dsqlops.cli.common import CliEnv, output_option, pass_env
from dsqlops.cli.main import LazyGroup
from dsqlops.sandbox.state import SandboxDir

dir_option = click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
                          envvar="DSQLOPS_SANDBOX_DIR", metavar="DIR",
                          help="Sandbox folder [default: $XDG_DATA_HOME/dsqlops/sandbox].")


def _sdir(directory: str | None) -> SandboxDir:

    return SandboxDir(directory)


class SandboxGroup(LazyGroup):
    """The sub-commands defined in their own modules load on use (``sandbox_metering`` imports
    this module)."""

    lazy: ClassVar[dict[str, tuple[str, str, str]]] = {
        "conformance": ("dsqlops.cli.sandbox_conformance", "conformance",
                        "Replay recorded DSQL probes against a cluster and compare."),
        "flush-metrics": ("dsqlops.cli.sandbox_metering", "flush_metrics",
                          "Publish the clusters' DPU metrics now."),
    }


@click.group(cls=SandboxGroup)
def sandbox() -> None:
    """Run a local DSQL: moto control plane, TLS + IAM-token wire front, PostgreSQL.

    \b
    Example:
      dsqlops sandbox start
      eval "$(dsqlops sandbox env)"
      dsqlops cluster create --no-deletion-protection --wait
    """


@sandbox.command()
@dir_option
@click.option("--api-port", type=click.IntRange(0, 65535), default=None,
              help="Control-plane (AWS API) port [default: 4577, or the last one used].")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="DSQL wire front port [default: 5433, or the last one used].")
@click.option("--foreground", is_flag=True, help="Run in this process until Ctrl-C (logs on stderr).")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True, metavar="SECONDS",
              help="Give up waiting for the sandbox to accept connections after this many seconds.")
@output_option
@pass_env
def start(env: CliEnv, directory: str | None, api_port: int | None, port: int | None, foreground: bool,
          timeout: float) -> None:
    """Start the sandbox (in the background) and print how to use it.

    Returns once the control plane and the wire front accept connections. Clusters created
    earlier in the same folder come back with their data.

    \b
    Example:
      dsqlops sandbox start --dir ./.sandbox --api-port 4577 --port 5433
      dsqlops sandbox start --foreground
    """
    from dsqlops.sandbox import lifecycle

    sdir = _sdir(directory)
    if foreground:
        import logging

        from dsqlops.sandbox import server
        from dsqlops.sandbox.state import DEFAULT_API_PORT, DEFAULT_PORT

        logging.getLogger("dsqlops").setLevel(logging.INFO if not env.debug else logging.DEBUG)
        prev = sdir.load_runtime() or {}
        server.run(sdir, api_port=api_port if api_port is not None else int(prev.get("api_port") or DEFAULT_API_PORT),
                   port=port if port is not None else int(prev.get("port") or DEFAULT_PORT),
                   on_ready=lambda rt: sys.stderr.write(
                       f"sandbox ready: api {rt['api_endpoint']}, front 127.0.0.1:{rt['port']}; "
                       f"in another shell: eval \"$(dsqlops sandbox env --dir {sdir.path})\"\n"))
        return
    res = lifecycle.start_background(sdir, api_port=api_port, port=port, timeout=timeout)
    from dataclasses import asdict

    env.render(asdict(res))
    if not res.already_running:
        sys.stderr.write(f"sandbox started in {res.startup_seconds:.2f}s (log: {sdir.log_file})\n")
    else:
        sys.stderr.write("sandbox already running\n")
    sys.stderr.write(f"use it: eval \"$(dsqlops sandbox env --dir {sdir.path})\"\n")


@sandbox.command()
@dir_option
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True, metavar="SECONDS",
              help="Give up waiting for the sandbox to stop after this many seconds.")
@output_option
@pass_env
def stop(env: CliEnv, directory: str | None, timeout: float) -> None:
    """Stop the sandbox and its databases (clusters and data are kept).

    \b
    Example:
      dsqlops sandbox stop
    """
    from dsqlops.sandbox import lifecycle

    env.render(lifecycle.stop(_sdir(directory), timeout=timeout))


@sandbox.command()
@dir_option
@output_option
@pass_env
def status(env: CliEnv, directory: str | None) -> None:
    """Show whether the sandbox runs: endpoints, components, clusters, uptime.

    Exits 0 when the sandbox runs, 1 when it does not.

    \b
    Example:
      dsqlops -o json sandbox status
    """
    from dsqlops.errors import ExitCode
    from dsqlops.sandbox import lifecycle

    data = lifecycle.status(_sdir(directory))
    if env.output_format == "table":
        clusters = data.pop("clusters")
        comps = data.pop("components")
        data["components"] = ", ".join(f"{k}={v}" for k, v in comps.items()) or None
        env.render([{"key": k, "value": v} for k, v in data.items()])
        if clusters:
            sys.stdout.write("\n")
            env.render(clusters)
    else:
        env.render(data)
    if not data["running"]:
        raise click.exceptions.Exit(int(ExitCode.FAILED))


@sandbox.command("env")
@dir_option
@click.option("--write-profile", is_flag=True,
              help="Also write a 'sandbox' profile to the dsqlops config and the key to the AWS "
                   "credentials file (profile dsqlops-sandbox).")
@pass_env
def env_cmd(env: CliEnv, directory: str | None, write_profile: bool) -> None:
    """Print shell exports that point boto3, the AWS CLI, psql and dsqlops at the sandbox.

    \b
    Example:
      eval "$(dsqlops sandbox env)"
      dsqlops sandbox env --write-profile && dsqlops --profile sandbox cluster list
    """
    from dsqlops.sandbox import lifecycle

    sdir = _sdir(directory)
    if env.output_format == "json" or env.output_format == "yaml":
        env.render(lifecycle.env_vars(sdir))
    else:
        sys.stdout.write(lifecycle.shell_exports(lifecycle.env_vars(sdir)))
    if write_profile:
        from dsqlops.config import default_config_path

        cfg = Path(env.config_path) if env.config_path else default_config_path()
        info = lifecycle.write_profile(sdir, cfg)
        sys.stderr.write(f"wrote profile 'sandbox' to {info['config_file']} and AWS profile "
                         f"'{info['aws_profile']}' to {info['aws_credentials_file']}\n")
