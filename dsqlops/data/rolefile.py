"""The role file of ``dsqlops role apply``: parse and validate, with ``file:line:col`` errors.

Every key (also documented in ``docs/dataplane.md``)::

    version: 1                         # optional; the only format so far
    protect: [ops_breakglass]          # never pruned, besides admin / pg_* / superusers / yourself
    roles:
      - name: app                      # required; validated (NUL, control chars, 63 bytes, reserved)
        login: true                    # default false
        iam: [arn:aws:iam::123456789012:role/app]   # AWS IAM GRANT app TO '<arn>'
        member_of: [readers]           # GRANT readers TO app
        comment: free text             # ignored
        grants:
          - privileges: [SELECT, INSERT, UPDATE]    # or [ALL]
            on: table public.accounts  # or: all tables in schema public | schema public

Errors use the YAML node marks, so every message points at the line to fix; nothing is applied
until the whole file is valid.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsqlops.errors import UsageError
from dsqlops.validate import validate_iam_arn, validate_identifier, validate_role_name

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
SCHEMA_PRIVILEGES = ("USAGE", "CREATE")

TOP_KEYS = {"roles": "the list of roles", "protect": "role names --prune must never drop",
            "version": "the file format version (1)"}
ROLE_KEYS = {"name": "role name", "login": "true/false (default false)", "iam": "list of IAM role/user ARNs",
             "member_of": "roles this role is a member of", "grants": "privileges on tables/schemas",
             "comment": "free text, ignored"}
GRANT_KEYS = {"privileges": "list such as [SELECT, INSERT] or [ALL]",
              "on": "'table SCHEMA.NAME', 'all tables in schema S' or 'schema S'"}

_TABLE_RE = re.compile(r"table\s+(?P<name>.+)", re.IGNORECASE | re.DOTALL)
_ALL_TABLES_RE = re.compile(r"all\s+tables\s+in\s+schema\s+(?P<schema>.+)", re.IGNORECASE | re.DOTALL)
_SCHEMA_RE = re.compile(r"schema\s+(?P<schema>.+)", re.IGNORECASE | re.DOTALL)


# --------------------------------------------------------------------------------------------
# The file model
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GrantTarget:
    """What a grant is on. ``kind`` is ``table``, ``all_tables`` or ``schema``."""

    kind: str
    schema: str
    table: str | None = None

    def __str__(self) -> str:
        if self.kind == "table":
            return f"table {self.schema}.{self.table}"
        if self.kind == "all_tables":
            return f"all tables in schema {self.schema}"
        return f"schema {self.schema}"


@dataclass(frozen=True)
class GrantSpec:
    privileges: tuple[str, ...]
    on: GrantTarget
    line: int = 0


@dataclass
class RoleSpec:
    name: str
    login: bool = False
    iam: tuple[str, ...] = ()
    member_of: tuple[str, ...] = ()
    grants: tuple[GrantSpec, ...] = ()
    line: int = 0


@dataclass
class RoleFile:
    roles: list[RoleSpec]
    protect: frozenset[str] = frozenset()
    path: str = "<string>"

    def role(self, name: str) -> RoleSpec | None:
        return next((r for r in self.roles if r.name == name), None)


class _FileError(UsageError):
    pass


def _where(src: str, node: Any) -> str:
    mark = getattr(node, "start_mark", None)
    if mark is None:
        return src
    return f"{src}:{mark.line + 1}:{mark.column + 1}"


def _fail(src: str, node: Any, message: str, hint: str | None = None) -> None:
    raise _FileError(f"{_where(src, node)}: {message}", hint=hint)


def _line(node: Any) -> int:
    mark = getattr(node, "start_mark", None)
    return mark.line + 1 if mark is not None else 0


def _mapping(src: str, node: Any, what: str, allowed: dict[str, str]) -> dict[str, tuple[Any, Any]]:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        _fail(src, node, f"{what} must be a mapping (key: value), not {_kind(node)}")
    out: dict[str, tuple[Any, Any]] = {}
    for knode, vnode in node.value:
        if not isinstance(knode, yaml.ScalarNode):
            _fail(src, knode, f"keys of {what} must be plain words")
        key = knode.value
        if key in out:
            _fail(src, knode, f"duplicate key {key!r} in {what}")
        if key not in allowed:
            keys = ", ".join(f"{k} ({v})" for k, v in allowed.items())
            _fail(src, knode, f"unknown key {key!r} in {what}", hint=f"allowed keys: {keys}")
        out[key] = (knode, vnode)
    return out


def _kind(node: Any) -> str:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.ScalarNode):
        return f"the scalar {node.value!r}" if node.value != "" else "an empty value"
    return "nothing"


def _scalar(src: str, node: Any, what: str) -> str:
    import yaml

    if not isinstance(node, yaml.ScalarNode) or node.value == "" or node.tag == "tag:yaml.org,2002:null":
        _fail(src, node, f"{what} must be a non-empty string, not {_kind(node)}")
    return str(node.value)


def _bool(src: str, node: Any, what: str) -> bool:
    import yaml

    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
        return bool(yaml.constructor.SafeConstructor.bool_values[node.value.lower()])
    _fail(src, node, f"{what} must be true or false, not {_kind(node)}")
    raise AssertionError("unreachable")


def _strings(src: str, node: Any, what: str) -> list[tuple[str, Any]]:
    import yaml

    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return []
    if not isinstance(node, yaml.SequenceNode):
        _fail(src, node, f"{what} must be a list, not {_kind(node)}")
    return [(_scalar(src, item, f"each entry of {what}"), item) for item in node.value]


def _checked(src: str, node: Any, fn: Callable[[str], str], value: str) -> str:
    try:
        return fn(value)
    except UsageError as e:
        raise _FileError(f"{_where(src, node)}: {e.message}", hint=e.hint) from None


def split_qualified(name: str, *, default_schema: str = "public") -> tuple[str, str]:
    """``schema.table`` (each part optionally double-quoted) → (schema, table); bare → default schema."""
    parts: list[str] = []
    buf = ""
    i = 0
    quoted_part = False
    while i < len(name):
        ch = name[i]
        if ch == '"':
            end = i + 1
            while True:
                end = name.find('"', end)
                if end == -1:
                    raise UsageError(f"unbalanced double quote in {name!r}")
                if end + 1 < len(name) and name[end + 1] == '"':
                    end += 2
                    continue
                break
            buf += name[i + 1:end].replace('""', '"')
            quoted_part = True
            i = end + 1
            continue
        if ch == ".":
            parts.append(buf)
            buf, quoted_part = "", False
            i += 1
            continue
        if ch.isspace() and not quoted_part:
            raise UsageError(f"unexpected white space in {name!r} (quote names that contain spaces)")
        buf += ch
        i += 1
    parts.append(buf)
    if len(parts) == 1:
        parts = [default_schema, parts[0]]
    if len(parts) != 2 or not all(parts):
        raise UsageError(f"expected SCHEMA.NAME, got {name!r}")
    return validate_identifier(parts[0], "schema name"), validate_identifier(parts[1], "table name")


def parse_target(text: str) -> GrantTarget:
    text = text.strip()
    m = _ALL_TABLES_RE.fullmatch(text)
    if m:
        schema = m["schema"].strip().strip('"')
        return GrantTarget("all_tables", validate_identifier(schema, "schema name"))
    m = _TABLE_RE.fullmatch(text)
    if m:
        schema, table = split_qualified(m["name"].strip())
        return GrantTarget("table", schema, table)
    m = _SCHEMA_RE.fullmatch(text)
    if m:
        schema = m["schema"].strip().strip('"')
        return GrantTarget("schema", validate_identifier(schema, "schema name"))
    raise UsageError(f"cannot read grant target {text!r}",
                     hint="use 'table SCHEMA.NAME', 'all tables in schema SCHEMA' or 'schema SCHEMA'")


def _privileges(src: str, node: Any, target: GrantTarget) -> tuple[str, ...]:
    allowed = SCHEMA_PRIVILEGES if target.kind == "schema" else TABLE_PRIVILEGES
    out: list[str] = []
    for value, item in _strings(src, node, "privileges"):
        p = " ".join(value.upper().split())
        if p in ("ALL", "ALL PRIVILEGES"):
            out.extend(allowed)
            continue
        if p not in allowed:
            _fail(src, item, f"privilege {value!r} does not apply to {target}",
                  hint=f"allowed: {', '.join(allowed)} or ALL")
        out.append(p)
    if not out:
        _fail(src, node, "privileges must list at least one privilege")
    # Keep PostgreSQL's canonical order so plans and diffs are stable.
    return tuple(p for p in allowed if p in out)


def parse_role_file(text: str, *, source: str = "<string>") -> RoleFile:
    """Parse and validate a role file. Raises :class:`UsageError` with ``file:line:col`` on any problem."""
    import yaml

    from dsqlops import yamlsafe

    try:
        root = yamlsafe.compose(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise UsageError(f"{where}: invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{source}: invalid YAML: {e}") from None
    if root is None:
        raise UsageError(f"{source}: the file is empty", hint="it must contain a 'roles:' list")
    top = _mapping(source, root, "the file", TOP_KEYS)
    if "version" in top:
        v = _scalar(source, top["version"][1], "version")
        if v != "1":
            _fail(source, top["version"][1], f"unsupported version {v!r} (this dsqlops reads version 1)")
    if "roles" not in top:
        _fail(source, root, "the file has no 'roles:' list")
    protect = frozenset(
        _checked(source, n, lambda v: validate_role_name(v, allow_reserved=True), v)
        for v, n in _strings(source, top["protect"][1], "protect")
    ) if "protect" in top else frozenset()
    roles_node = top["roles"][1]
    if not isinstance(roles_node, yaml.SequenceNode):
        _fail(source, roles_node, f"'roles' must be a list, not {_kind(roles_node)}")
    roles: list[RoleSpec] = []
    seen: dict[str, int] = {}
    for rnode in roles_node.value:
        keys = _mapping(source, rnode, "a role", ROLE_KEYS)
        if "name" not in keys:
            _fail(source, rnode, "a role has no 'name'")
        name_node = keys["name"][1]
        name = _checked(source, name_node, validate_role_name, _scalar(source, name_node, "name"))
        if name in seen:
            _fail(source, name_node, f"role {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = _line(name_node)
        login = _bool(source, keys["login"][1], "login") if "login" in keys else False
        arns: list[str] = []
        for v, n in _strings(source, keys["iam"][1], "iam") if "iam" in keys else []:
            arn = _checked(source, n, validate_iam_arn, v)
            if arn in arns:
                _fail(source, n, f"ARN {arn} is listed twice for role {name!r}")
            arns.append(arn)
        member_of: list[str] = []
        for v, n in _strings(source, keys["member_of"][1], "member_of") if "member_of" in keys else []:
            group = _checked(source, n, lambda x: validate_role_name(x, allow_reserved=False), v)
            if group == name:
                _fail(source, n, f"role {name!r} cannot be a member of itself")
            if group not in member_of:
                member_of.append(group)
        grants: list[GrantSpec] = []
        if "grants" in keys:
            gnode = keys["grants"][1]
            if not isinstance(gnode, yaml.SequenceNode):
                _fail(source, gnode, f"'grants' must be a list, not {_kind(gnode)}")
            for g in gnode.value:
                gkeys = _mapping(source, g, "a grant", GRANT_KEYS)
                for required in ("privileges", "on"):
                    if required not in gkeys:
                        _fail(source, g, f"a grant has no {required!r}")
                on_node = gkeys["on"][1]
                target = _scalar(source, on_node, "on")
                try:
                    parsed = parse_target(target)
                except UsageError as e:
                    raise _FileError(f"{_where(source, on_node)}: {e.message}", hint=e.hint) from None
                grants.append(GrantSpec(_privileges(source, gkeys["privileges"][1], parsed), parsed, _line(g)))
        roles.append(RoleSpec(name, login, tuple(arns), tuple(member_of), tuple(grants), _line(rnode)))
    # memberships may name roles declared later in the file: check them once all are known
    return RoleFile(roles, protect, source)


def load_role_file(path: str | Path) -> RoleFile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"role file not found: {p}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{p}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise UsageError(f"cannot read {p}: {e.strerror}") from None
    return parse_role_file(text, source=str(p))


