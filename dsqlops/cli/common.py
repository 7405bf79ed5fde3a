"""Shared CLI plumbing: the per-invocation environment, common options, cluster resolution."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from dsqlops.errors import UsageError
from dsqlops.output import FORMATS

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliEnv:
    """What every command gets (``@pass_env``): settings, output format, AWS context, renderer."""

    config_path: str | None = None
    profile: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    output: str | None = None
    debug: bool = False
    progress: bool = True
    _settings: Any = None
    _aws: Any = None
    _tokens: Any = None

    @property
    def settings(self) -> Any:
        if self._settings is None:
            from dsqlops.config import resolve

            settings = resolve(config_path=self.config_path, profile=self.profile, flags=self.flags)
            if settings.get("region") is None:
                # An AWS profile that does not exist is why there is no region: say that, not "no region".
                from dsqlops.aws import check_profile

                check_profile(settings.get("aws_profile"))
            settings.debug = self.debug
            settings.progress = self.progress
            self._settings = settings
        return self._settings

    @property
    def output_format(self) -> str:
        return self.output or os.environ.get("DSQLOPS_OUTPUT") or "table"

    def aws(self) -> Any:
        if self._aws is None:
            from dsqlops.aws import AwsContext

            self._aws = AwsContext.from_settings(self.settings)
        return self._aws

    def render(self, data: Any, **kw: Any) -> None:
        from dsqlops.output import render

        render(data, self.output_format, **kw)

    def progress_line(self, label: str) -> Any:
        from dsqlops.output import Progress

        return Progress(label, enabled=self.progress)

    def cluster(self, value: str | None, *, required: bool = True) -> Any:
        """Resolve ``-c/--cluster``: the flag, then DSQLOPS_CLUSTER, then the profile's default.

        Returns a :class:`dsqlops.validate.ClusterRef` with the region filled in from the settings
        when the cluster was named by id only.
        """
        from dsqlops.validate import parse_cluster

        raw = value or self.settings.get("cluster")
        if not raw:
            if not required:
                return None
            raise UsageError("no cluster given",
                             hint="pass -c/--cluster, set DSQLOPS_CLUSTER, or set 'cluster' in your profile")
        ref = parse_cluster(raw)
        return ref.with_region(self.settings.get("region"))

    def connection_target(self, cluster_value: str | None, *, user: str | None = None) -> Any:
        """The :class:`dsqlops.data.connection.ConnectionTarget` for ``-c/--cluster`` (+ ``--role``)."""
        from dsqlops.data.connection import target_for

        return target_for(self.settings, self.cluster(cluster_value), user=user)

    def resume_wait(self, cluster_value: str | None, job_id: str) -> str:
        """``dsqlops job wait ID -c HOST``: a resume hint that reaches the same cluster from any shell
        (whatever its DSQLOPS_CLUSTER or profile)."""
        return f"dsqlops job wait {job_id} -c {self.connection_target(cluster_value).host}"

    def token_source(self) -> Any:
        """A :class:`dsqlops.data.tokens.TokenSource` on this invocation's AWS context (one per env)."""
        if getattr(self, "_tokens", None) is None:
            from dsqlops.data.tokens import TokenSource

            self._tokens = TokenSource(self.aws())
        return self._tokens

    def connect(self, cluster_value: str | None, *, user: str | None = None, autocommit: bool = False) -> Any:
        """A psycopg connection to the cluster (verify-full TLS, a fresh IAM token)."""
        from dsqlops.data.connection import connect

        return connect(self.connection_target(cluster_value, user=user), self.token_source(),
                       autocommit=autocommit)

    def confirm(self, question: str, *, yes: bool) -> None:
        """Ask on a TTY; without one, refuse unless ``--yes`` (cron-safe: never hang on a prompt)."""
        if yes:
            return
        if not sys.stdin.isatty():
            raise UsageError(f"{question} — refusing without --yes (no terminal to ask on)")
        if not click.confirm(question, default=False, err=True):
            raise UsageError("aborted by the user")


pass_env = click.make_pass_decorator(CliEnv, ensure=True)


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        ctx.ensure_object(CliEnv).output = value
    return value


def output_option(f: F) -> F:
    """``-o/--output`` on a leaf command, overriding the global one."""
    return click.option("-o", "--output", type=click.Choice(FORMATS), default=None, expose_value=False,
                        callback=_set_output, is_eager=True, help="Output format (overrides the global -o).")(f)


def cluster_option(f: F) -> F:
    """``-c/--cluster`` for commands that work *inside* a cluster."""
    return click.option("-c", "--cluster", "cluster", default=None, metavar="CLUSTER",
                        help="Cluster id, endpoint host or ARN (default: DSQLOPS_CLUSTER, then the "
                        "profile's cluster).")(f)


def timeout_option(default: float = 600.0) -> Callable[[F], F]:
    def deco(f: F) -> F:
        return click.option("--timeout", type=click.FloatRange(min=0.1), default=default, show_default=True,
                            metavar="SECONDS", help="Give up waiting after this many seconds.")(f)
    return deco


def yes_option(f: F) -> F:
    return click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")(f)


def dry_run_option(f: F) -> F:
    return click.option("--dry-run", is_flag=True,
                        help="Print the plan (API calls or SQL statements) and change nothing.")(f)
