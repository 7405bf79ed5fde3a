"""PostgreSQL roles and their IAM mappings, declaratively (``dsqlops role apply``).

Three layers, each usable on its own:

1. **The file** (:func:`load_role_file` / :func:`parse_role_file`): a YAML document describing roles,
   their login flag, IAM principals, memberships and table/schema privileges. Every error names the
   file, line and column (from the YAML node marks) and nothing is touched until the whole file is
   valid. Every key is documented in ``docs/dataplane.md``::

       protect: [ops_breakglass]          # never pruned, besides admin / pg_* / superusers
       roles:
         - name: app                      # required; validated (NUL, control chars, 63 bytes, reserved)
           login: true                    # default false
           iam: [arn:aws:iam::123456789012:role/app]   # AWS IAM GRANT app TO '<arn>'
           member_of: [readers]           # GRANT readers TO app
           grants:
             - privileges: [SELECT, INSERT, UPDATE]
               on: table public.accounts  # or: all tables in schema public | schema public

2. **The catalog snapshot** (:class:`Catalog`, read by :func:`read_catalog` from ``pg_roles``,
   ``pg_auth_members``, ``sys.iam_pg_role_mappings`` and the ACLs of ``pg_class`` /
   ``pg_namespace``), a plain dataclass so the diff is testable without a database.

3. **The plan** (:func:`plan`): the exact statements, in order, that make the catalog match the file,
   each composed with ``psycopg.sql`` and rendered with ``as_string``. :func:`apply_plan` runs them
   one DDL per transaction (DSQL allows one DDL per transaction) with OCC retry; a failure raises
   :class:`ApplyError` carrying what was applied and what was not, and a re-run converges because
   the next plan starts from the catalog as it then is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dsqlops.data.rolefile import (
    SCHEMA_PRIVILEGES,
    TABLE_PRIVILEGES,
    GrantSpec,
    GrantTarget,
    RoleFile,
    RoleSpec,
    load_role_file,
    parse_role_file,
    parse_target,
    split_qualified,
)
from dsqlops.errors import ExitCode, OperationFailed, UsageError
from dsqlops.validate import validate_iam_arn, validate_identifier, validate_role_name

if TYPE_CHECKING:  # pragma: no cover
    from psycopg import sql as _sql

#: The role file (dsqlops.data.rolefile) is part of this module's API: re-exported.
__all__ = [
    "SCHEMA_PRIVILEGES", "TABLE_PRIVILEGES", "ApplyError", "ApplyResult", "Catalog", "CatalogRole", "GrantSpec",
    "GrantTarget", "RoleFile", "RoleSpec", "Step", "apply_plan", "check_against", "is_protected", "list_roles",
    "load_role_file", "parse_role_file", "parse_target", "plan", "plan_create", "plan_drop", "plan_iam",
    "plan_privileges", "read_catalog", "split_qualified",
]

#: Privileges by object kind (PostgreSQL 15/16, which DSQL speaks). ``ALL`` expands to the kind's set.

# --------------------------------------------------------------------------------------------
# The catalog snapshot
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CatalogRole:
    name: str
    login: bool = False
    superuser: bool = False
    #: Bootstrap/predefined roles (oid < 16384) and pg_* roles: never touched.
    system: bool = False


@dataclass
class Catalog:
    """What the cluster has now, as plain sets (so diffs are testable without a database)."""

    roles: dict[str, CatalogRole] = field(default_factory=dict)
    #: (member, group)
    memberships: set[tuple[str, str]] = field(default_factory=set)
    #: (role, arn)
    iam: set[tuple[str, str]] = field(default_factory=set)
    #: (role, schema, table, privilege) — explicit grants, owners' implicit rights excluded
    table_privileges: set[tuple[str, str, str, str]] = field(default_factory=set)
    #: (role, schema, privilege)
    schema_privileges: set[tuple[str, str, str]] = field(default_factory=set)
    #: schema -> tables that exist now and that we may grant on (for 'all tables in schema')
    tables: dict[str, set[str]] = field(default_factory=dict)
    schemas: set[str] = field(default_factory=set)
    #: (schema, table) that exist but belong to roles we are not a member of: we cannot GRANT on them
    foreign_tables: set[tuple[str, str]] = field(default_factory=set)
    current_user: str = "admin"
    #: False when the server has no sys.iam_pg_role_mappings (plain PostgreSQL)
    iam_supported: bool = True

    def table_exists(self, schema: str, table: str) -> bool:
        return table in self.tables.get(schema, set())


# aclexplode gives one row per (grantee, privilege); grantee 0 is PUBLIC; the owner's rights are
# listed too once an ACL exists, and are excluded (they are implicit, never ours to revoke).
_SQL_ROLES = """
SELECT r.rolname, r.rolcanlogin, r.rolsuper, (r.oid < 16384 OR r.rolname LIKE 'pg\\_%') AS system
FROM pg_catalog.pg_roles r ORDER BY r.rolname
"""
_SQL_MEMBERS = """
SELECT m.rolname AS member, g.rolname AS grp
FROM pg_catalog.pg_auth_members am
JOIN pg_catalog.pg_roles m ON m.oid = am.member
JOIN pg_catalog.pg_roles g ON g.oid = am.roleid
"""
# ACLs are read as text and parsed here (``grantee=privs/grantor``) rather than with aclexplode(),
# so the snapshot needs nothing beyond the catalogs themselves. The owner's own entry is skipped:
# its rights are implicit, never ours to grant or revoke.
_SQL_TABLE_ACLS = """
SELECT n.nspname, c.relname, pg_catalog.pg_get_userbyid(c.relowner), c.relacl::text[]
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relacl IS NOT NULL
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'sys') AND n.nspname NOT LIKE 'pg\\_%'
"""
_SQL_SCHEMA_ACLS = """
SELECT n.nspname, pg_catalog.pg_get_userbyid(n.nspowner), n.nspacl::text[]
FROM pg_catalog.pg_namespace n
WHERE n.nspacl IS NOT NULL
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'sys') AND n.nspname NOT LIKE 'pg\\_%'
"""
ACL_LETTERS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "D": "TRUNCATE", "x": "REFERENCES",
               "t": "TRIGGER", "m": "MAINTAIN", "U": "USAGE", "C": "CREATE", "c": "CONNECT", "T": "TEMPORARY",
               "X": "EXECUTE", "s": "SET", "A": "ALTER SYSTEM"}


def parse_aclitem(item: str) -> tuple[str, list[str]]:
    """``app=arw*/admin`` → ("app", [SELECT, INSERT, UPDATE]); a quoted grantee (``"we""ird"=r/x``)
    is unquoted; an empty grantee is PUBLIC. ``*`` (grant option) is ignored."""
    if item.startswith('"'):
        i, name = 1, ""
        while i < len(item):
            if item[i] == '"':
                if item[i + 1:i + 2] == '"':
                    name += '"'
                    i += 2
                    continue
                break
            name += item[i]
            i += 1
        rest = item[i + 1:]
    else:
        name, _, rest = item.partition("=")
        rest = "=" + rest
    if not rest.startswith("="):
        raise ValueError(f"not an ACL item: {item!r}")
    letters = rest[1:].split("/", 1)[0]
    return name, [ACL_LETTERS.get(ch, ch) for ch in letters if ch != "*"]


# Extension members (e.g. pg_stat_statements' views in public) are not the user's tables; ``grantable``
# says whether we may GRANT on it at all (PostgreSQL only *warns* "no privileges were granted"
# otherwise, which would make a plan that never converges).
_SQL_TABLES = """
SELECT n.nspname, c.relname, pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') AS grantable
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'sys') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
"""
_SQL_SCHEMAS = """
SELECT nspname FROM pg_catalog.pg_namespace
WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'sys') AND nspname NOT LIKE 'pg\\_%'
"""
_SQL_HAS_IAM = "SELECT to_regclass('sys.iam_pg_role_mappings') IS NOT NULL"
_SQL_IAM = "SELECT pg_role_name, arn FROM sys.iam_pg_role_mappings"


def read_catalog(conn: Any) -> Catalog:
    """Read the snapshot in one read-only transaction (rolled back: nothing is written)."""
    cat = Catalog()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            cat.current_user = cur.fetchone()[0]
            cur.execute(_SQL_ROLES)
            for name, login, superuser, system in cur.fetchall():
                cat.roles[name] = CatalogRole(name, bool(login), bool(superuser), bool(system))
            cur.execute(_SQL_MEMBERS)
            cat.memberships = {(m, g) for m, g in cur.fetchall()}
            cur.execute(_SQL_HAS_IAM)
            cat.iam_supported = bool(cur.fetchone()[0])
            if cat.iam_supported:
                cur.execute(_SQL_IAM)
                cat.iam = {(r, a) for r, a in cur.fetchall()}
            cur.execute(_SQL_TABLE_ACLS)
            for schema, table, owner, acl in cur.fetchall():
                for item in acl or ():
                    grantee, privs = parse_aclitem(item)
                    if grantee and grantee != owner:
                        cat.table_privileges |= {(grantee, schema, table, p) for p in privs}
            cur.execute(_SQL_SCHEMA_ACLS)
            for schema, owner, acl in cur.fetchall():
                for item in acl or ():
                    grantee, privs = parse_aclitem(item)
                    if grantee and grantee != owner:
                        cat.schema_privileges |= {(grantee, schema, p) for p in privs}
            cur.execute(_SQL_SCHEMAS)
            cat.schemas = {s for (s,) in cur.fetchall()}
            cur.execute(_SQL_TABLES)
            for s, t, grantable in cur.fetchall():
                if grantable:
                    cat.tables.setdefault(s, set()).add(t)
                else:
                    cat.foreign_tables.add((s, t))
    finally:
        if not getattr(conn, "autocommit", False):
            conn.rollback()
    return cat


# --------------------------------------------------------------------------------------------
# Statements (composed with psycopg.sql after validation)
# --------------------------------------------------------------------------------------------

@dataclass
class Step:
    """One statement of a plan; ``sql`` is the exact text that will run."""

    action: str          # create_role, alter_login, grant_membership, iam_grant, grant, revoke, ...
    role: str
    sql: str
    detail: str = ""
    statement: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "role": self.role, "sql": self.sql, "detail": self.detail}


def _render(stmt: _sql.Composable) -> str:
    return stmt.as_string(None)


def _step(action: str, role: str, stmt: _sql.Composable, detail: str = "") -> Step:
    return Step(action, role, _render(stmt), detail, stmt)


def stmt_create_role(name: str, *, login: bool) -> Step:
    from psycopg import sql

    validate_role_name(name)
    s = sql.SQL("CREATE ROLE {} WITH {}").format(sql.Identifier(name), sql.SQL("LOGIN" if login else "NOLOGIN"))
    return _step("create_role", name, s)


def stmt_alter_login(name: str, *, login: bool) -> Step:
    from psycopg import sql

    validate_role_name(name)
    s = sql.SQL("ALTER ROLE {} WITH {}").format(sql.Identifier(name), sql.SQL("LOGIN" if login else "NOLOGIN"))
    return _step("alter_login", name, s)


def stmt_drop_role(name: str) -> Step:
    from psycopg import sql

    validate_role_name(name)
    return _step("drop_role", name, sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def stmt_iam_grant(name: str, arn: str) -> Step:
    return _iam_step(name, arn, grant=True)


def stmt_iam_revoke(name: str, arn: str) -> Step:
    # revoking from a reserved role (admin) cleans up a mapping; granting to one is refused
    return _iam_step(name, arn, grant=False)


def _iam_step(name: str, arn: str, *, grant: bool) -> Step:
    from psycopg import sql

    validate_role_name(name, allow_reserved=not grant)
    validate_iam_arn(arn)
    verb = "AWS IAM GRANT {} TO {}" if grant else "AWS IAM REVOKE {} FROM {}"
    return _step("iam_grant" if grant else "iam_revoke", name,
                 sql.SQL(verb).format(sql.Identifier(name), sql.Literal(arn)), arn)


def stmt_grant_membership(member: str, group: str) -> Step:
    from psycopg import sql

    validate_role_name(member)
    validate_role_name(group)
    s = sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(member))
    return _step("grant_membership", member, s, group)


def stmt_revoke_membership(member: str, group: str) -> Step:
    from psycopg import sql

    validate_role_name(member)
    validate_role_name(group, allow_reserved=True)
    s = sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), sql.Identifier(member))
    return _step("revoke_membership", member, s, group)


def _target_sql(target: GrantTarget) -> _sql.Composable:
    from psycopg import sql

    validate_identifier(target.schema, "schema name")
    if target.kind == "table":
        assert target.table is not None
        validate_identifier(target.table, "table name")
        return sql.SQL("TABLE {}").format(sql.Identifier(target.schema, target.table))
    if target.kind == "all_tables":
        return sql.SQL("ALL TABLES IN SCHEMA {}").format(sql.Identifier(target.schema))
    return sql.SQL("SCHEMA {}").format(sql.Identifier(target.schema))


def _privs_sql(privileges: Sequence[str]) -> _sql.Composable:
    from psycopg import sql

    allowed = set(TABLE_PRIVILEGES) | set(SCHEMA_PRIVILEGES)
    for p in privileges:
        if p not in allowed:
            raise UsageError(f"unknown privilege {p!r}")
    return sql.SQL(", ").join(sql.SQL(p) for p in privileges)


def stmt_grant(role: str, privileges: Sequence[str], target: GrantTarget) -> Step:
    from psycopg import sql

    validate_role_name(role)
    s = sql.SQL("GRANT {} ON {} TO {}").format(_privs_sql(privileges), _target_sql(target), sql.Identifier(role))
    return _step("grant", role, s, f"{', '.join(privileges)} on {target}")


def stmt_revoke(role: str, privileges: Sequence[str], target: GrantTarget) -> Step:
    from psycopg import sql

    validate_role_name(role, allow_reserved=True)
    s = sql.SQL("REVOKE {} ON {} FROM {}").format(_privs_sql(privileges), _target_sql(target), sql.Identifier(role))
    return _step("revoke", role, s, f"{', '.join(privileges)} on {target}")


# --------------------------------------------------------------------------------------------
# The diff
# --------------------------------------------------------------------------------------------

def is_protected(role: CatalogRole, cat: Catalog, extra: Iterable[str] = ()) -> bool:
    """Roles ``--prune`` never touches: admin, pg_*/bootstrap roles, superusers, the caller, ``protect:``."""
    n = role.name
    return (role.system or role.superuser or n == cat.current_user or n == "admin"
            or n.lower().startswith("pg_") or n in set(extra))


def _desired_table_privs(spec: RoleSpec, cat: Catalog) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for g in spec.grants:
        if g.on.kind == "table":
            assert g.on.table is not None
            out.setdefault((g.on.schema, g.on.table), set()).update(g.privileges)
        elif g.on.kind == "all_tables":
            for t in cat.tables.get(g.on.schema, set()):
                out.setdefault((g.on.schema, t), set()).update(g.privileges)
    return out


def _ordered(privs: Iterable[str], order: Sequence[str]) -> list[str]:
    s = set(privs)
    return [p for p in order if p in s] + sorted(s - set(order))


def check_against(rf: RoleFile, cat: Catalog) -> None:
    """File-vs-cluster problems found before any statement runs (so nothing is half-applied)."""
    problems: list[str] = []
    declared = {r.name for r in rf.roles}
    for r in rf.roles:
        existing = cat.roles.get(r.name)
        if existing is not None and (existing.system or existing.superuser):
            problems.append(f"{rf.path}:{r.line}: role {r.name!r} is a system or superuser role and cannot be managed")
        for group in r.member_of:
            if group not in declared and group not in cat.roles:
                problems.append(f"{rf.path}:{r.line}: role {r.name!r} is member_of {group!r}, "
                                "which is neither in the file nor in the cluster")
        for g in r.grants:
            if g.on.kind == "table":
                assert g.on.table is not None
                if (g.on.schema, g.on.table) in cat.foreign_tables:
                    problems.append(f"{rf.path}:{g.line}: table {g.on.schema}.{g.on.table} belongs to a role "
                                    f"{cat.current_user} is not a member of: it cannot grant on it")
                elif not cat.table_exists(g.on.schema, g.on.table):
                    problems.append(f"{rf.path}:{g.line}: table {g.on.schema}.{g.on.table} does not exist")
            elif g.on.schema not in cat.schemas:
                problems.append(f"{rf.path}:{g.line}: schema {g.on.schema} does not exist")
        if r.iam and not cat.iam_supported:
            problems.append(f"{rf.path}:{r.line}: role {r.name!r} lists IAM principals, but this server has no "
                            "sys.iam_pg_role_mappings (is it a DSQL cluster?)")
    if problems:
        raise UsageError(f"{len(problems)} problem(s); nothing was changed:\n  " + "\n  ".join(problems))


def plan(rf: RoleFile, cat: Catalog, *, prune: bool = False) -> list[Step]:
    """The statements, in order, that make ``cat`` match ``rf``. Empty means: already converged."""
    check_against(rf, cat)
    steps: list[Step] = []
    declared = {r.name: r for r in rf.roles}
    # 1. roles and their login flag
    for r in rf.roles:
        existing = cat.roles.get(r.name)
        if existing is None:
            steps.append(stmt_create_role(r.name, login=r.login))
        elif existing.login != r.login:
            steps.append(stmt_alter_login(r.name, login=r.login))
    # 2. memberships
    for r in rf.roles:
        for group in r.member_of:
            if (r.name, group) not in cat.memberships:
                steps.append(stmt_grant_membership(r.name, group))
    # 3. IAM mappings
    for r in rf.roles:
        for arn in r.iam:
            if (r.name, arn) not in cat.iam:
                steps.append(stmt_iam_grant(r.name, arn))
    # 4. privileges (one statement per role and target, only what is missing)
    for r in rf.roles:
        merged: dict[GrantTarget, set[str]] = {}
        for g in r.grants:
            merged.setdefault(g.on, set()).update(g.privileges)
        for target, privs in merged.items():
            if target.kind == "table":
                assert target.table is not None
                have = {p for (ro, s, t, p) in cat.table_privileges
                        if ro == r.name and s == target.schema and t == target.table}
                missing = privs - have
                order: Sequence[str] = TABLE_PRIVILEGES
            elif target.kind == "all_tables":
                missing = set()
                for t in sorted(cat.tables.get(target.schema, set())):
                    have = {p for (ro, s, tt, p) in cat.table_privileges
                            if ro == r.name and s == target.schema and tt == t}
                    missing |= privs - have
                order = TABLE_PRIVILEGES
            else:
                have = {p for (ro, s, p) in cat.schema_privileges if ro == r.name and s == target.schema}
                missing = privs - have
                order = SCHEMA_PRIVILEGES
            if missing:
                steps.append(stmt_grant(r.name, _ordered(missing, order), target))
    if not prune:
        return steps
    # 5. prune: what file roles have beyond the file
    for r in rf.roles:
        for (member, group) in sorted(cat.memberships):
            if member == r.name and group not in r.member_of:
                steps.append(stmt_revoke_membership(r.name, group))
        for (role, arn) in sorted(cat.iam):
            if role == r.name and arn not in r.iam:
                steps.append(stmt_iam_revoke(r.name, arn))
        wanted = _desired_table_privs(r, cat)
        extra_tables: dict[tuple[str, str], set[str]] = {}
        for (role, s, t, p) in cat.table_privileges:
            if role == r.name and p not in wanted.get((s, t), set()):
                extra_tables.setdefault((s, t), set()).add(p)
        for (s, t), privs in sorted(extra_tables.items()):
            steps.append(stmt_revoke(r.name, _ordered(privs, TABLE_PRIVILEGES), GrantTarget("table", s, t)))
        wanted_schema: dict[str, set[str]] = {}
        for g in r.grants:
            if g.on.kind == "schema":
                wanted_schema.setdefault(g.on.schema, set()).update(g.privileges)
        extra_schema: dict[str, set[str]] = {}
        for (role, s, p) in cat.schema_privileges:
            if role == r.name and p not in wanted_schema.get(s, set()):
                extra_schema.setdefault(s, set()).add(p)
        for s, privs in sorted(extra_schema.items()):
            steps.append(stmt_revoke(r.name, _ordered(privs, SCHEMA_PRIVILEGES), GrantTarget("schema", s)))
    # 6. prune: roles not in the file (mappings and privileges first, then the role)
    for name in sorted(cat.roles):
        crole = cat.roles[name]
        if name in declared or is_protected(crole, cat, rf.protect):
            continue
        try:
            validate_role_name(name)
        except UsageError:
            continue  # a name we would not compose SQL for: leave it alone
        for (ro, arn) in sorted(cat.iam):
            if ro == name:
                steps.append(stmt_iam_revoke(name, arn))
        tables: dict[tuple[str, str], set[str]] = {}
        for (ro, s, t, p) in cat.table_privileges:
            if ro == name:
                tables.setdefault((s, t), set()).add(p)
        for (s, t), privs in sorted(tables.items()):
            steps.append(stmt_revoke(name, _ordered(privs, TABLE_PRIVILEGES), GrantTarget("table", s, t)))
        schemas: dict[str, set[str]] = {}
        for (ro, s, p) in cat.schema_privileges:
            if ro == name:
                schemas.setdefault(s, set()).add(p)
        for s, privs in sorted(schemas.items()):
            steps.append(stmt_revoke(name, _ordered(privs, SCHEMA_PRIVILEGES), GrantTarget("schema", s)))
        steps.append(stmt_drop_role(name))
    return steps


# --------------------------------------------------------------------------------------------
# Applying
# --------------------------------------------------------------------------------------------

@dataclass
class ApplyResult:
    applied: list[Step]
    transactions: int = 0
    retries: int = 0
    occ_conflicts: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.applied)

    def to_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, "applied": [s.to_dict() for s in self.applied],
                "statements": len(self.applied), "transactions": self.transactions,
                "retries": self.retries, "occ_conflicts": self.occ_conflicts}


class ApplyError(OperationFailed):
    """A statement failed part-way: ``applied`` ran and committed, ``not_applied`` did not.

    ``unknown`` is the statement whose COMMIT outcome is unknown (connection lost during COMMIT),
    if any; re-running ``role apply`` re-reads the catalog and converges either way.
    """

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, *, applied: list[Step], not_applied: list[Step],
                 failed: Step | None, cause: BaseException | None, unknown: bool = False,
                 hint: str | None = None):
        super().__init__(message, hint=hint)
        self.applied = applied
        self.not_applied = not_applied
        self.failed = failed
        self.cause = cause
        self.unknown = unknown

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.message, "failed": self.failed.to_dict() if self.failed else None,
                "outcome_unknown": self.unknown,
                "applied": [s.to_dict() for s in self.applied],
                "not_applied": [s.to_dict() for s in self.not_applied]}


def apply_plan(conn_factory: Callable[[], Any], steps: Sequence[Step], *, policy: Any = None,
               on_step: Callable[[int, Step], None] | None = None) -> ApplyResult:
    """Run each step in its own transaction with OCC retry (``data.retry.run_transaction``).

    ``conn_factory`` is what ``run_transaction`` accepts: one ``psycopg.Connection`` (reused, the
    usual case), a pool, or a callable returning a new connection. On the first failure raises
    :class:`ApplyError` with both lists.
    """
    from dsqlops.data.retry import RetryStats, run_transaction

    stats = RetryStats()
    applied: list[Step] = []
    transactions = 0
    for i, st in enumerate(steps):
        if on_step is not None:
            on_step(i, st)
        stmt = st.statement if st.statement is not None else st.sql

        def fn(conn: Any, _stmt: Any = stmt) -> None:
            conn.execute(_stmt)

        before = stats.attempts
        try:
            run_transaction(conn_factory, fn, policy=policy, stats=stats)
        except Exception as e:
            transactions += stats.attempts - before
            unknown = _outcome_unknown(e)
            reason = _reason(e)
            n_ok = len(applied)
            raise ApplyError(
                f"statement {i + 1} of {len(steps)} failed: {reason}; {n_ok} applied, "
                f"{len(steps) - n_ok} not applied"
                + (" (the failed statement's outcome is unknown)" if unknown else ""),
                applied=list(applied), not_applied=list(steps[i:]), failed=st, cause=e, unknown=unknown,
                hint="fix the cause and run 'dsqlops role apply' again: it re-reads the cluster and "
                     "only runs what is still missing",
            ) from e
        transactions += stats.attempts - before
        applied.append(st)
    return ApplyResult(applied, transactions=transactions, retries=stats.retries,
                       occ_conflicts=stats.occ_conflicts)


def _reason(e: BaseException) -> str:
    code = getattr(e, "sqlstate", None)
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{code}: {text}" if code else text


def _outcome_unknown(e: BaseException) -> bool:
    from dsqlops.data.retry import UnknownOutcomeError

    return isinstance(e, UnknownOutcomeError)


# --------------------------------------------------------------------------------------------
# Single operations and listing (``role list/create/drop/grant-iam/…``)
# --------------------------------------------------------------------------------------------

def list_roles(cat: Catalog, *, include_system: bool = False) -> list[dict[str, Any]]:
    """One row per role: login flag, memberships and IAM mappings (sorted, for stable output)."""
    rows = []
    for name in sorted(cat.roles):
        r = cat.roles[name]
        if r.system and not include_system:
            continue
        rows.append({
            "name": name, "login": r.login, "superuser": r.superuser,
            "member_of": sorted(g for (m, g) in cat.memberships if m == name),
            "iam": sorted(a for (ro, a) in cat.iam if ro == name),
            "protected": is_protected(r, cat),
        })
    return rows


def plan_create(cat: Catalog, name: str, *, login: bool) -> list[Step]:
    validate_role_name(name)
    if name in cat.roles:
        from dsqlops.errors import ConflictError

        raise ConflictError(f"role {name!r} already exists", code="42710",
                            hint="use 'dsqlops role apply' to converge roles declaratively")
    return [stmt_create_role(name, login=login)]


def plan_drop(cat: Catalog, name: str) -> list[Step]:
    """Revoke the role's IAM mappings and privileges, then DROP ROLE (refuses protected roles)."""
    validate_role_name(name)
    role = cat.roles.get(name)
    if role is None:
        from dsqlops.errors import NotFoundError

        raise NotFoundError(f"role {name!r} does not exist", code="42704")
    if is_protected(role, cat):
        raise UsageError(f"role {name!r} is protected (admin, system, superuser or your own role); not dropped")
    rf = RoleFile(roles=[], protect=frozenset(n for n in cat.roles if n != name))
    return plan(rf, cat, prune=True)


def _require_role(cat: Catalog, name: str) -> None:
    validate_role_name(name)
    if name not in cat.roles:
        from dsqlops.errors import NotFoundError

        raise NotFoundError(f"role {name!r} does not exist", code="42704",
                            hint=f"create it first: dsqlops role create {name} --login")


def plan_iam(cat: Catalog, name: str, arns: Sequence[str], *, grant: bool) -> tuple[list[Step], list[str]]:
    """Steps for ``grant-iam`` / ``revoke-iam`` and notes for ARNs that need nothing."""
    _require_role(cat, name)
    if not cat.iam_supported:
        raise UsageError("this server has no sys.iam_pg_role_mappings: AWS IAM GRANT/REVOKE need a DSQL cluster")
    steps, notes = [], []
    for arn in dict.fromkeys(arns):
        validate_iam_arn(arn)
        mapped = (name, arn) in cat.iam
        if grant and mapped:
            notes.append(f"{arn} is already mapped to {name}")
        elif not grant and not mapped:
            notes.append(f"{arn} is not mapped to {name}")
        else:
            steps.append(stmt_iam_grant(name, arn) if grant else stmt_iam_revoke(name, arn))
    return steps, notes


def plan_privileges(cat: Catalog, name: str, privileges: Sequence[str], target_text: str, *,
                    grant: bool) -> list[Step]:
    _require_role(cat, name)
    target = parse_target(target_text)
    allowed = SCHEMA_PRIVILEGES if target.kind == "schema" else TABLE_PRIVILEGES
    privs: list[str] = []
    for p in privileges:
        for part in p.split(","):
            q = " ".join(part.upper().split())
            if not q:
                continue
            if q in ("ALL", "ALL PRIVILEGES"):
                privs.extend(allowed)
            elif q in allowed:
                privs.append(q)
            else:
                raise UsageError(f"privilege {part.strip()!r} does not apply to {target}",
                                 hint=f"allowed: {', '.join(allowed)} or ALL")
    if not privs:
        raise UsageError("name at least one privilege")
    ordered = _ordered(privs, allowed)
    if target.kind == "table":
        assert target.table is not None
        if (target.schema, target.table) in cat.foreign_tables:
            raise UsageError(f"table {target.schema}.{target.table} belongs to a role {cat.current_user} is not a "
                             "member of: it cannot grant on it")
        if not cat.table_exists(target.schema, target.table):
            raise UsageError(f"table {target.schema}.{target.table} does not exist")
    elif target.schema not in cat.schemas:
        raise UsageError(f"schema {target.schema} does not exist")
    return [stmt_grant(name, ordered, target) if grant else stmt_revoke(name, ordered, target)]
