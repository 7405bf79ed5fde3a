"""Run ``dsqlops`` in-process through ``main()`` (the real error translation and exit codes),
with stdout and stderr kept apart. Shared by every test area's conftest."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def invoke(args: Sequence[str], *, input: str | None = None, env: dict[str, str] | None = None) -> Run:
    """``dsqlops ARGS``; ``env`` adds/overrides environment variables for this run only."""
    from click.testing import CliRunner

    from dsqlops.cli.main import main

    runner = CliRunner()
    with runner.isolation(input=input, env=env) as (out, err, _mixed):
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        sys.stdout.flush()  # a real process flushes at exit; the isolated streams need it by hand
        sys.stderr.flush()
        return Run(code, out.getvalue().decode(), err.getvalue().decode())


def sandbox_cli_env(sandbox: Any, tmp_path: Any, *, no_progress: bool = True) -> dict[str, str]:
    """The environment of a real ``dsqlops`` process pointed at the session sandbox (its exports,
    nothing inherited from the developer's PG*/DSQLOPS_*/AWS_* variables, an empty config home)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DSQLOPS_", "AWS_"))}
    env.update(sandbox.env())
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    if no_progress:
        env["DSQLOPS_NO_PROGRESS"] = "1"
    return env


def run_dsqlops(env: dict[str, str], *args: str, timeout: float = 300) -> Any:
    """``python -m dsqlops ARGS`` as a separate process: real exit codes, stdout and stderr apart."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "dsqlops", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def walk_commands(cmd: click.Command, ctx: click.Context,
                  path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command under ``cmd`` (groups included, ``cmd`` first) with its path of names."""
    import click

    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None:
                yield from walk_commands(sub, ctx, (*path, name))
