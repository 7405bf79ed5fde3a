"""``dsqlops config …``: write the user config file and show the effective settings."""

from __future__ import annotations

from pathlib import Path

import click

from dsqlops.cli.common import CliEnv, output_option, pass_env


@click.group("config")
def config() -> None:
    """Initialise and show dsqlops settings.

    Precedence: defaults < config file < DSQLOPS_* environment < command-line flags.

    \b
    Example:
      dsqlops config init
      dsqlops --profile sandbox config show
    """


@config.command("init")
@click.option("--path", "path", default=None, type=click.Path(dir_okay=False),
              help="Write here instead of $XDG_CONFIG_HOME/dsqlops/config.yaml.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@pass_env
def init(env: CliEnv, path: str | None, force: bool) -> None:
    """Write the commented example config (mode 0600); refuses to overwrite without --force.

    Prints the path written on stdout.

    \b
    Example:
      dsqlops config init
      dsqlops config init --path ./dsqlops.yaml --force
    """
    from dsqlops.config import default_config_path, example_text, write_user_config
    from dsqlops.errors import UsageError

    target = Path(path).expanduser() if path else default_config_path()
    try:
        if target.exists() and target.is_dir():
            raise UsageError(f"{target} is a directory")
        written = write_user_config(target, example_text(), force=force)
    except OSError as e:  # a name too long, a parent that is a file, a read-only folder
        raise UsageError(f"cannot write {target}: {e.strerror or e}") from None
    click.echo(str(written))
    click.echo(f"wrote {written} (mode 0600); edit it, then check with `dsqlops config show`", err=True)


@config.command("show")
@output_option
@pass_env
def show(env: CliEnv) -> None:
    """Print every effective setting and where it came from (default, file, env or flag).

    \b
    Example:
      dsqlops config show
      DSQLOPS_REGION=us-east-2 dsqlops -o json config show
    """
    s = env.settings
    rows = s.effective()
    for section in sorted(k for k in s.raw if k not in ("profiles", "default_profile")):
        rows.append({"key": section, "value": s.raw[section], "source": f"file {s.config_path}"})
    env.render(rows)
