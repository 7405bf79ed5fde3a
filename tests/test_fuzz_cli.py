"""Random strings into every option and argument of every command: the exit code is never 255
("internal error" is for bugs; a user's input ends as 252/253, or 254 when the service refuses).

In-process (tests/clirun.py) with an environment in which every command fails fast and nothing
leaves the machine: AWS and the cluster point at a closed loopback port, one attempt each. The
commands that start processes or replace this one (``sandbox start``, ``demo``, ``connect``) are
left out. ``DSQLOPS_FUZZ_EXAMPLES`` raises the number of examples per command (default 8).
"""

from __future__ import annotations

import os
from typing import Any

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsqlops.cli.main import cli
from tests.clirun import invoke

SKIP = {("sandbox", "start"), ("demo",), ("connect",)}
EXAMPLES = int(os.environ.get("DSQLOPS_FUZZ_EXAMPLES", "8"))


def _commands() -> list[tuple[tuple[str, ...], click.Command]]:
    out: list[tuple[tuple[str, ...], click.Command]] = []
    ctx = click.Context(cli)

    def walk(cmd: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None:
                    walk(sub, (*path, name))
        elif path not in SKIP:
            out.append((path, cmd))

    walk(cli, ())
    return out


COMMANDS = _commands()

# Text a shell can pass in argv: no NUL; surrogates only as Python's escapes of undecodable bytes.
_argv_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40) | \
    st.sampled_from(["", " ", "-", "--", "0", "-1", "1e309", "99999999999999999999", "9" * 5000, "nan",
                     "2026-13", "0000-01", "9999-12", "99999999d", "\udcff", "%s", "%(a)s", "{", "[",
                     "a: &a [*a]", "*", "arn:aws:iam::1:role/x", "ALL", "auto", "now"])


def _safe(value: str) -> bool:
    # Never a path outside the scratch folder: some options write files.
    return not value.startswith(("/", "~")) and ".." not in value


def _params(cmd: click.Command) -> list[click.Parameter]:
    return [p for p in (*cli.params, *cmd.params)
            if not getattr(p, "is_flag", False) and not getattr(p, "count", False)
            and p.name not in ("help", "version", "debug")]


@pytest.fixture()
def fail_fast_env(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for k in list(os.environ):
        if k.startswith(("DSQLOPS_", "PG")) or (k.startswith("AWS_") and k not in ("AWS_ACCESS_KEY_ID",
                                                                                 "AWS_SECRET_ACCESS_KEY")):
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFUZZ")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.setenv("DSQLOPS_HOSTADDR", "127.0.0.1")
    monkeypatch.setenv("DSQLOPS_PORT", "1")
    monkeypatch.setenv("DSQLOPS_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("DSQLOPS_CLUSTER", "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws")
    monkeypatch.setenv("DSQLOPS_NO_PROGRESS", "1")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("DSQLOPS_SANDBOX_DIR", str(tmp_path / "sandbox"))
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("path, cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_random_strings_into_every_option_never_exit_255(path, cmd, fail_fast_env) -> None:  # type: ignore[no-untyped-def]
    params = _params(cmd)

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.data())
    def run(data: Any) -> None:
        chosen = data.draw(st.lists(st.sampled_from(params), min_size=1, max_size=3, unique_by=lambda p: p.name)
                           if params else st.just([]))
        root: list[str] = []
        opts: list[str] = []
        args: list[str] = []
        for p in chosen:
            value = data.draw(_argv_text.filter(_safe), label=p.name or "")
            if isinstance(p, click.Option):
                (root if p in cli.params else opts).append(f"{p.opts[-1]}={value}" if p.opts[-1].startswith("--")
                                                          else p.opts[-1])
                if not p.opts[-1].startswith("--"):
                    (root if p in cli.params else opts).append(value)
            else:
                args.append(value)
        argv = [*root, *path, *opts, *(["--", *args] if args else [])]
        r = invoke(argv)
        assert r.exit_code != 255, (argv, r.stderr[-2000:])
        assert "Traceback" not in r.stderr, (argv, r.stderr[-2000:])

    run()


@pytest.mark.parametrize("command", [["config", "show"], ["token"], ["sql", "select 1"], ["cluster", "list"]],
                         ids=" ".join)
def test_random_environment_values_never_exit_255(command, fail_fast_env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from dsqlops.config import ENV_KEYS

    names = sorted(ENV_KEYS)

    @settings(max_examples=EXAMPLES * 4, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.data())
    def run(data: Any) -> None:
        chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        env = {name: data.draw(_argv_text.filter(_safe), label=name) for name in chosen}
        r = invoke(command, env=env)
        assert r.exit_code != 255, (env, r.stderr[-2000:])
        assert "Traceback" not in r.stderr, (env, r.stderr[-2000:])

    run()
