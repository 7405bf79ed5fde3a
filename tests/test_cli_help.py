"""Every command and sub-command has --help with a one-line summary and an example."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from dsqlops.cli.main import COMMANDS, cli
from tests.clirun import walk_commands


def all_commands():
    ctx = click.Context(cli)
    return list(walk_commands(cli, ctx))


@pytest.mark.parametrize("path,cmd", all_commands(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_command_has_help_with_example(path, cmd):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert cmd.get_short_help_str().strip(), f"{' '.join(path)} has no one-line summary"
    name = " ".join(path) or "dsqlops"
    assert "example" in result.output.lower(), f"{name} --help has no example"


def test_registry_summaries_are_one_line():
    for name, (_m, _a, summary) in COMMANDS.items():
        assert summary and "\n" not in summary, name


def test_startup_imports_neither_boto3_nor_psycopg():
    code = ("import sys\nfrom dsqlops.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in ('boto3', 'botocore', 'psycopg', 'psycopg_pool', 'moto') if m in sys.modules]\n"
            "print('BAD=' + ','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "BAD=", f"imported at startup: {out}"


def test_resolving_a_connection_target_does_not_import_psycopg():
    """``token``, ``connect`` and ``--print-command`` resolve a target but never open a connection:
    they must not pay for loading psycopg (about 0.1 s)."""
    code = ("import sys\nfrom dsqlops.data.connection import target_for\n"
            "t = target_for({'region': 'us-east-1'}, 'abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws')\n"
            "print(t.statement_timeout, 'psycopg' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["330", "False"], out
