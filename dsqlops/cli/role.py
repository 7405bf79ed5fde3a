"""``dsqlops role …``: PostgreSQL roles and their IAM mappings, one by one or declaratively."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click

from dsqlops.cli.common import CliEnv, cluster_option, dry_run_option, output_option, pass_env, yes_option

PLAN_COLUMNS = ["step", "action", "role", "sql"]


@contextlib.contextmanager
def _conn(env: CliEnv, cluster: str | None, *, user: str | None = None) -> Iterator[Any]:
    conn = env.connect(cluster, user=user)
    try:
        yield conn
    finally:
        conn.close()


def _info(msg: str) -> None:
    from dsqlops.output import info

    info(msg)


def _plan_rows(steps: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"step": i + 1, **s.to_dict()} for i, s in enumerate(steps)]


def _run_steps(env: CliEnv, conn: Any, steps: Sequence[Any], *, dry_run: bool, what: str,
               notes: Sequence[str] = (), noop: str | None = None) -> None:
    """Print the plan, then (unless --dry-run) apply it one DDL per transaction with OCC retry."""
    from dsqlops.data.roles import ApplyError, apply_plan
    from dsqlops.output import Progress

    for n in notes:
        _info(n)
    fmt = env.output_format
    if not steps:
        _info(noop or f"nothing to do: {what} already matches")
        if fmt == "json" or fmt == "yaml":
            env.render({"changed": False, "dry_run": dry_run, "plan": [], "applied": []})
        return
    if fmt in ("table", "csv"):
        env.render(_plan_rows(steps), columns=PLAN_COLUMNS)
    if dry_run:
        _info(f"dry run: {len(steps)} statement(s) planned, nothing changed")
        if fmt in ("json", "yaml"):
            env.render({"changed": False, "dry_run": True, "plan": _plan_rows(steps), "applied": []})
        return
    progress = Progress(f"applying {len(steps)} statement(s)", enabled=env.progress)
    try:
        result = apply_plan(conn, steps, on_step=lambda i, s: progress.update(f"{i + 1}/{len(steps)} {s.action}"))
    except ApplyError as e:
        progress.done()
        for s in e.applied:
            _info(f"applied:     {s.sql}")
        if e.failed is not None:
            _info(f"FAILED:      {e.failed.sql}" + ("   (outcome unknown)" if e.unknown else ""))
        for s in e.not_applied[1:] if e.failed is not None else e.not_applied:
            _info(f"not applied: {s.sql}")
        if fmt in ("json", "yaml"):
            env.render({"changed": bool(e.applied), "dry_run": False, "plan": _plan_rows(steps), **e.to_dict()})
        raise
    progress.done()
    _info(f"applied {len(result.applied)} statement(s) in {result.transactions} transaction(s)"
          + (f" ({result.occ_conflicts} OCC conflict(s) retried)" if result.occ_conflicts else ""))
    if fmt in ("json", "yaml"):
        env.render({"dry_run": False, "plan": _plan_rows(steps), **result.to_dict()})


def _with_catalog(env: CliEnv, cluster: str | None, build: Callable[[Any], tuple[list[Any], list[str]]], *,
                  dry_run: bool, what: str, noop: str | None = None) -> None:
    from dsqlops.data.roles import read_catalog

    with _conn(env, cluster) as conn:
        cat = read_catalog(conn)
        steps, notes = build(cat)
        _run_steps(env, conn, steps, dry_run=dry_run, what=what, notes=notes, noop=noop)


@click.group("role")
def role() -> None:
    """PostgreSQL roles and their IAM mappings, declaratively.

    \b
    Example:
      dsqlops role list -c CLUSTER
      dsqlops role apply roles.yaml --dry-run
    """


@role.command("list")
@cluster_option
@click.option("--all", "include_system", is_flag=True, help="Also list pg_* and bootstrap roles.")
@output_option
@pass_env
def list_cmd(env: CliEnv, cluster: str | None, include_system: bool) -> None:
    """List roles with their login flag, memberships and IAM mappings.

    \b
    Example:
      dsqlops role list -c abcdefghijklmnopqrstuvwxyz
      dsqlops -o json role list
    """
    from dsqlops.data.roles import list_roles, read_catalog

    with _conn(env, cluster) as conn:
        cat = read_catalog(conn)
    env.render(list_roles(cat, include_system=include_system), empty_message="no roles")


@role.command("create")
@click.argument("name")
@click.option("--login/--no-login", default=False, show_default=True, help="May the role log in?")
@cluster_option
@dry_run_option
@output_option
@pass_env
def create_cmd(env: CliEnv, name: str, login: bool, cluster: str | None, dry_run: bool) -> None:
    """Create a role (CREATE ROLE NAME WITH LOGIN|NOLOGIN).

    \b
    Example:
      dsqlops role create app --login
    """
    from dsqlops.data.roles import plan_create
    from dsqlops.validate import validate_role_name

    validate_role_name(name)
    _with_catalog(env, cluster, lambda cat: (plan_create(cat, name, login=login), []), dry_run=dry_run,
                  what=f"role {name}")


@role.command("drop")
@click.argument("name")
@cluster_option
@dry_run_option
@yes_option
@output_option
@pass_env
def drop_cmd(env: CliEnv, name: str, cluster: str | None, dry_run: bool, yes: bool) -> None:
    """Drop a role: revoke its IAM mappings and privileges, then DROP ROLE.

    \b
    Example:
      dsqlops role drop old_app --yes
    """
    from dsqlops.data.roles import plan_drop, read_catalog
    from dsqlops.validate import validate_role_name

    validate_role_name(name)
    with _conn(env, cluster) as conn:
        cat = read_catalog(conn)
        steps = plan_drop(cat, name)
        if not dry_run:
            env.confirm(f"drop role {name} ({len(steps)} statement(s))?", yes=yes)
        _run_steps(env, conn, steps, dry_run=dry_run, what=f"role {name}")


def _iam_mapping_command(cmd_name: str, *, grant: bool, doc: str) -> click.Command:
    """``grant-iam`` and ``revoke-iam``: the same arguments, opposite statements."""

    @role.command(cmd_name, help=doc)
    @click.argument("name")
    @click.argument("arns", nargs=-1, required=True, metavar="ARN...")
    @cluster_option
    @dry_run_option
    @output_option
    @pass_env
    def command(env: CliEnv, name: str, arns: tuple[str, ...], cluster: str | None, dry_run: bool) -> None:
        _iam_mapping(env, name, arns, cluster, dry_run, grant=grant)

    return command


grant_iam_cmd = _iam_mapping_command("grant-iam", grant=True, doc="""
    Map IAM roles/users to a PostgreSQL role (AWS IAM GRANT NAME TO 'ARN').

    \b
    Example:
      dsqlops role grant-iam app arn:aws:iam::123456789012:role/app
    """)
revoke_iam_cmd = _iam_mapping_command("revoke-iam", grant=False, doc="""
    Remove IAM mappings from a role (AWS IAM REVOKE NAME FROM 'ARN').

    \b
    Example:
      dsqlops role revoke-iam app arn:aws:iam::123456789012:role/app
    """)


def _iam_mapping(env: CliEnv, name: str, arns: tuple[str, ...], cluster: str | None, dry_run: bool, *,
                 grant: bool) -> None:
    """Validate, then plan AWS IAM GRANT/REVOKE against the catalog and run it (or print it)."""
    from dsqlops.data.roles import plan_iam
    from dsqlops.validate import validate_iam_arn, validate_role_name

    validate_role_name(name)
    for a in arns:
        validate_iam_arn(a)
    noop = (f"nothing to do: every ARN is already mapped to {name}" if grant
            else f"nothing to do: none of these ARNs is mapped to {name}")
    _with_catalog(env, cluster, lambda cat: plan_iam(cat, name, arns, grant=grant), dry_run=dry_run,
                  what=f"role {name}", noop=noop)


def _privilege_command(grant: bool) -> Callable[..., None]:
    verb = "grant" if grant else "revoke"

    @click.argument("name")
    @click.argument("privileges", nargs=-1, required=True, metavar="PRIVILEGE...")
    @click.option("--on", "target", required=True, metavar="TARGET",
                  help="'table SCHEMA.NAME', 'all tables in schema S' or 'schema S'.")
    @cluster_option
    @dry_run_option
    @output_option
    @pass_env
    def cmd(env: CliEnv, name: str, privileges: tuple[str, ...], target: str, cluster: str | None,
            dry_run: bool) -> None:
        from dsqlops.data.roles import plan_privileges
        from dsqlops.validate import validate_role_name

        validate_role_name(name)
        _with_catalog(env, cluster,
                      lambda cat: (plan_privileges(cat, name, privileges, target, grant=grant), []),
                      dry_run=dry_run, what=f"role {name}")

    cmd.__doc__ = (f"{verb.capitalize()} table or schema privileges {'to' if grant else 'from'} a role.\n\n"
                   f"    \b\n    Example:\n      dsqlops role {verb} app SELECT INSERT --on 'table public.accounts'\n"
                   f"      dsqlops role {verb} readers SELECT --on 'all tables in schema public'\n")
    return cmd


role.command("grant")(_privilege_command(True))
role.command("revoke")(_privilege_command(False))


@role.command("apply")
@click.argument("file", type=click.Path(dir_okay=False))
@cluster_option
@dry_run_option
@click.option("--prune", is_flag=True,
              help="Also remove mappings, memberships, privileges and roles that the file does not list "
              "(never admin, pg_*/system roles, superusers, your own role or 'protect:' roles).")
@yes_option
@output_option
@pass_env
def apply_cmd(env: CliEnv, file: str, cluster: str | None, dry_run: bool, prune: bool, yes: bool) -> None:
    """Make the cluster's roles match a YAML file: print the plan, then apply it.

    Each statement runs in its own transaction with OCC retry. A second run is a no-op. If a
    statement fails, what was applied and what was not are listed; running again converges.

    \b
    Example:
      dsqlops role apply roles.yaml --dry-run
      dsqlops role apply roles.yaml --prune --yes
    """
    from dsqlops.data.roles import load_role_file, plan, read_catalog

    rf = load_role_file(file)  # every file error before connecting: nothing changes
    with _conn(env, cluster) as conn:
        cat = read_catalog(conn)
        steps = plan(rf, cat, prune=prune)
        destructive = [s for s in steps if s.action in ("drop_role", "iam_revoke", "revoke", "revoke_membership")]
        if destructive and not dry_run:
            if env.output_format in ("table", "csv"):
                pass  # the plan table is printed by _run_steps before anything runs
            _print_destructive(destructive)
            env.confirm(f"apply {len(steps)} statement(s), {len(destructive)} of them removals?", yes=yes)
        _run_steps(env, conn, steps, dry_run=dry_run, what=file,
                   noop=f"nothing to do: the cluster already matches {file}")


def _print_destructive(steps: Sequence[Any]) -> None:
    for s in steps:
        sys.stderr.write(f"will remove: {s.sql}\n")
    sys.stderr.flush()


@role.command("check")
@cluster_option
@click.option("--role", "role_name", default=None, metavar="NAME", help="The role to log in as.")
@click.option("--arn", default=None, metavar="ARN",
              help="Check another IAM principal instead (no login): its mappings, roles and IAM policy.")
@output_option
@pass_env
def check_cmd(env: CliEnv, cluster: str | None, role_name: str | None, arn: str | None) -> int:
    """Try a real login as a role with your IAM identity, and explain a failure.

    Checks the caller identity (STS), the clock against AWS, mints a token for the right action
    (DbConnectAdmin for admin, DbConnect otherwise), logs in, and on failure looks up the role and
    its IAM mappings as admin to say why (no mapping, NOLOGIN, wrong action, expired token, skew).

    With --arn, for a principal whose credentials you do not have: the roles it is mapped to (as
    admin), whether each exists with LOGIN, and whether its IAM policy allows dsql:DbConnect /
    DbConnectAdmin on the cluster (iam:SimulatePrincipalPolicy; when that is denied or unavailable
    it says so and still reports the database side). --role narrows it to one role.

    \b
    Example:
      dsqlops role check -c CLUSTER --role app
      dsqlops role check -c CLUSTER --arn arn:aws:iam::123456789012:role/app
    """
    from dsqlops.data.rolecheck import check_login
    from dsqlops.errors import ExitCode, UsageError
    from dsqlops.validate import validate_role_name

    if role_name is not None:
        validate_role_name(role_name, allow_reserved=True)
    if arn is not None:
        return _check_arn(env, cluster, arn, role_name)
    if role_name is None:
        raise UsageError("name the role to log in as (--role NAME), or a principal to look up (--arn ARN)")
    target = env.connection_target(cluster, user=role_name)
    try:
        sts = env.aws().sts(target.region or None)
    except Exception:  # noqa: BLE001 - the report says the identity check was skipped
        sts = None
    report = check_login(target, env.token_source(), sts_client=sts,
                         admin_connect=lambda: env.connect(cluster, user="admin"))
    if env.output_format in ("json", "yaml"):
        env.render(report.to_dict())
    else:
        env.render(report.rows(), columns=["check", "status", "detail"])
    if report.ok:
        _info(f"login as {role_name} works")
        return int(ExitCode.OK)
    _info(f"login as {role_name} FAILED: {report.summary}")
    return int(ExitCode.FAILED)


def _check_arn(env: CliEnv, cluster: str | None, arn: str, role_name: str | None) -> int:
    from dsqlops.data.principalcheck import check_principal, cluster_arn_for
    from dsqlops.data.rolecheck import principal_of
    from dsqlops.errors import DsqlopsError, ExitCode
    from dsqlops.validate import validate_iam_arn

    validate_iam_arn(principal_of(arn.strip()))
    target = env.connection_target(cluster)
    aws = env.aws()

    def client(service: str) -> Any:
        try:
            return aws.client(service, target.region or None)
        except DsqlopsError:
            return None

    dsql, sts, iam = client("dsql"), client("sts"), client("iam")
    cluster_arn, arn_note = (cluster_arn_for(dsql, target.cluster_id, region=target.region, sts=sts,
                                             partition_of=arn) if dsql is not None else (None, "no dsql client"))
    conn = None
    admin_error = None
    try:
        conn = env.connect(cluster, user="admin")
    except DsqlopsError as e:
        admin_error = e.message
    try:
        report = check_principal(arn.strip(), admin_conn=conn, iam=iam, cluster_arn=cluster_arn, role=role_name,
                                 admin_error=admin_error, cluster_arn_note=arn_note)
    finally:
        if conn is not None:
            conn.close()
    if env.output_format in ("json", "yaml"):
        env.render(report.to_dict())
    else:
        env.render(report.rows(), columns=["check", "status", "detail"])
    _info(report.summary)
    return int(ExitCode.OK if report.ok else ExitCode.FAILED)
