"""Asynchronous indexes: ``CREATE INDEX ASYNC``, listing, dropping, and repairing invalid ones.

DSQL builds every index asynchronously (docs/dsql-facts.md §3.1)::

    CREATE [ UNIQUE ] INDEX ASYNC [ IF NOT EXISTS ] name ON table_name
        ( column [, ...] ) [ INCLUDE ( column [, ...] ) ] [ NULLS [ NOT ] DISTINCT ] [ WHERE predicate ]

It returns one row (``job_id``) at once; the build runs as an ``INDEX_BUILD`` job. A failed build
(e.g. duplicates under UNIQUE) leaves the index behind with ``indisvalid = false``: it counts
toward the 24-index limit and a failed UNIQUE index still enforces uniqueness on writes until it is
dropped. The index name cannot be schema-qualified (it lives in the table's schema). Cancelling a
build is ``DROP INDEX``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dsqlops.data.retry import RetryPolicy
from dsqlops.errors import NotFoundError, UsageError
from dsqlops.validate import validate_identifier

_SIMPLE_COL_RE = re.compile(r'[a-z_][a-z0-9_$]*|"(?:[^"]|"")+"')
_SQL_LIST = """
SELECT n.nspname, t.relname, i.relname, pg_catalog.pg_get_indexdef(x.indexrelid), x.indisvalid,
       x.indisunique, x.indisprimary,
       i.relpages::bigint * pg_catalog.current_setting('block_size')::bigint
FROM pg_catalog.pg_index x
JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'sys') AND n.nspname NOT LIKE 'pg\\_%%'
  AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s)
  AND (%(table)s::text IS NULL OR t.relname = %(table)s)
  AND (NOT %(invalid)s OR NOT x.indisvalid)
ORDER BY n.nspname, t.relname, i.relname
"""
_SQL_BUILDING = """
SELECT j.object_name, j.job_id, j.status, t.relname
FROM sys.jobs j LEFT JOIN pg_catalog.pg_class t ON t.oid = j.object_id AND t.relkind IN ('r', 'p')
WHERE j.job_type = 'INDEX_BUILD' AND lower(j.status) IN ('submitted', 'processing')
ORDER BY j.object_name
"""
_SQL_PARTS = """
SELECT x.indnkeyatts, x.indnatts, x.indisunique, pg_catalog.pg_get_expr(x.indpred, x.indrelid),
       COALESCE((to_jsonb(x) ->> 'indnullsnotdistinct')::boolean, false),
       ARRAY(SELECT pg_catalog.pg_get_indexdef(x.indexrelid, k, true) FROM generate_series(1, x.indnatts) k)
FROM pg_catalog.pg_index x WHERE x.indexrelid = %s
"""


def _table_ref(text: str) -> tuple[str, str]:
    from dsqlops.data.roles import split_qualified

    return split_qualified(text.strip())


def _check_predicate(where: str) -> str:
    """A WHERE predicate is SQL the caller writes (like ``dsqlops sql``); refuse statement breaks."""
    from dsqlops.data.explain import _without_literals

    w = where.strip()
    if not w:
        raise UsageError("--where is empty")
    if ";" in _without_literals(w) or "\x00" in w:
        raise UsageError("--where must be one predicate (no ';')")
    return w


def build_statement(table: str, columns: Sequence[str], *, name: str | None = None, unique: bool = False,
                    include: Sequence[str] = (), where: str | None = None, nulls_not_distinct: bool = False,
                    if_not_exists: bool = False) -> Any:
    """The ``CREATE INDEX ASYNC`` statement (``psycopg.sql.Composed``), every name validated and quoted.

    A column written in parentheses, ``(lower(email))``, is an expression key and kept as SQL.
    """
    from psycopg import sql

    schema, tbl = _table_ref(table)
    if not columns:
        raise UsageError("name at least one column to index")
    if len(columns) > 8:
        raise UsageError(f"DSQL indexes take at most 8 key columns, not {len(columns)}")
    keys: list[sql.Composable] = []
    for c in columns:
        c = c.strip()
        if c.startswith("(") and c.endswith(")"):
            keys.append(sql.SQL(_check_predicate(c)))
        else:
            keys.append(sql.Identifier(validate_identifier(c, "column name")))
    if name is not None:
        if "." in name and not name.startswith('"'):
            raise UsageError("the index name cannot be schema-qualified: DSQL puts it in the table's schema")
        validate_identifier(name, "index name")
    if if_not_exists and name is None:
        raise UsageError("--if-not-exists needs --name (there is no name to check otherwise)")
    parts: list[sql.Composable] = [sql.SQL("CREATE UNIQUE INDEX ASYNC" if unique else "CREATE INDEX ASYNC")]
    if if_not_exists:
        parts.append(sql.SQL("IF NOT EXISTS"))
    if name is not None:
        parts.append(sql.Identifier(name))
    parts.append(sql.SQL("ON {} ({})").format(sql.Identifier(schema, tbl), sql.SQL(", ").join(keys)))
    if include:
        parts.append(sql.SQL("INCLUDE ({})").format(
            sql.SQL(", ").join(sql.Identifier(validate_identifier(c, "column name")) for c in include)))
    if nulls_not_distinct:
        parts.append(sql.SQL("NULLS NOT DISTINCT"))
    if where:
        parts.append(sql.SQL("WHERE {}").format(sql.SQL(_check_predicate(where))))
    return sql.SQL(" ").join(parts)


_SQL_COLUMNS = """
SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s
"""
_SQL_RELATION = """
SELECT c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""


def preflight(conn: Any, table: str, columns: Sequence[str], *, include: Sequence[str] = (),
              name: str | None = None, if_not_exists: bool = False) -> bool:
    """Check the build before submitting it: the table and every plain column (key or INCLUDE) must
    exist (``information_schema.columns``), else a job would be accepted only to fail later. Returns
    True when ``if_not_exists`` and a relation called ``name`` is already in the table's schema
    (nothing to submit). Expression keys are left to the engine."""
    schema, tbl = _table_ref(table)
    try:
        have = {r[0] for r in conn.execute(_SQL_COLUMNS, [schema, tbl]).fetchall()}
        if not have:
            raise NotFoundError(f"table {schema}.{tbl} does not exist (or you may not see its columns)",
                                code="42P01")
        wanted = [c.strip() for c in (*columns, *include) if not c.strip().startswith("(")]
        missing = [c for c in dict.fromkeys(wanted) if c not in have]
        if missing:
            raise UsageError(f"table {schema}.{tbl} has no column {', '.join(missing)}",
                             hint=f"its columns: {', '.join(sorted(have))}")
        if if_not_exists and name is not None:
            return conn.execute(_SQL_RELATION, [schema, name]).fetchone() is not None
        return False
    finally:
        if not conn.autocommit:
            conn.rollback()


def existing_index(conn: Any, qualified: str | None) -> bool:
    """Whether the index ``schema.name`` is in the catalog (a failed build may or may not leave one)."""
    if not qualified:
        return False
    schema, _, name = qualified.partition(".")
    try:
        row = conn.execute(_SQL_RELATION, [schema, name]).fetchone()
    finally:
        if not conn.autocommit:
            conn.rollback()
    return row is not None and row[0] in ("i", "I")


@dataclass
class BuildStarted:
    job_id: str | None
    index: str | None
    table: str
    sql: str

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "index": self.index, "table": self.table, "sql": self.sql}


def start_build(conn: Any, table: str, statement: Any, *, name: str | None) -> BuildStarted:
    """Run the statement (autocommit) and return the job id (None: IF NOT EXISTS found the index)."""
    text = statement.as_string(conn)
    schema, tbl = _table_ref(table)
    was = conn.autocommit
    conn.autocommit = True
    try:
        cur = conn.execute(statement)
        row = cur.fetchone() if cur.description else None
    finally:
        conn.autocommit = was
    job_id = str(row[0]) if row and row[0] else None
    index = f"{schema}.{name}" if name else None
    if job_id and index is None:
        from dsqlops.data.jobs import get_job

        job = get_job(conn, job_id)
        index = job.object_name if job else None
    return BuildStarted(job_id, index, f"{schema}.{tbl}", text)


@dataclass
class IndexInfo:
    schema: str
    table: str
    name: str
    definition: str
    valid: bool
    unique: bool
    primary: bool
    size_bytes: int | None = None
    building_job: str | None = None

    @property
    def state(self) -> str:
        if self.building_job:
            return "building"
        return "valid" if self.valid else "INVALID"

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "table": self.table, "name": self.name, "state": self.state,
                "valid": self.valid, "unique": self.unique, "primary": self.primary,
                "size_bytes": self.size_bytes, "building_job": self.building_job, "definition": self.definition}


def list_indexes(conn: Any, *, table: str | None = None, invalid: bool = False) -> list[IndexInfo]:
    schema = tbl = None
    if table:
        schema, tbl = _table_ref(table)
    out: list[IndexInfo] = []
    try:
        rows = conn.execute(_SQL_LIST, {"schema": schema, "table": tbl, "invalid": invalid}).fetchall()
        building: dict[str, tuple[str, str | None]] = {}
        if conn.execute("SELECT to_regclass('sys.jobs') IS NOT NULL").fetchone()[0]:
            building = {o: (j, t) for o, j, _s, t in conn.execute(_SQL_BUILDING).fetchall() if o}
        seen = set()
        for s, t, i, d, v, u, p, size in rows:
            key = f"{s}.{i}"
            seen.add(key)
            out.append(IndexInfo(s, t, i, d, bool(v), bool(u), bool(p), size,
                                 building[key][0] if key in building else None))
        # builds that have not reached the catalog yet exist only as their job
        for key, (job_id, t) in sorted(building.items()):
            bs, _, bi = key.partition(".")
            if key in seen or invalid or (schema and bs != schema) or (tbl and t != tbl):
                continue
            out.append(IndexInfo(bs, t or "?", bi, f"(not built yet: job {job_id})", False, False, False, None,
                                 job_id))
    finally:
        if not conn.autocommit:
            conn.rollback()
    return out


def _resolve_index(conn: Any, name: str) -> IndexInfo:
    from dsqlops.data.roles import split_qualified

    if "." in name:
        schema, idx = split_qualified(name)
        found = [i for i in list_indexes(conn) if i.schema == schema and i.name == idx]
    else:
        validate_identifier(name, "index name")
        found = [i for i in list_indexes(conn) if i.name == name]
    if not found:
        raise NotFoundError(f"index {name} does not exist", code="42704")
    if len(found) > 1:
        names = ", ".join(f"{i.schema}.{i.name}" for i in found)
        raise UsageError(f"index name {name} is in several schemas: qualify it ({names})")
    return found[0]


#: ``DROP INDEX`` meets OC001 while another transaction still uses the table (or when the build it
#: cancels updates the catalog); a few seconds of backoff outlast an ordinary transaction.
DROP_RETRY = RetryPolicy(max_attempts=8, base_delay=0.1, max_delay=2.0)


def drop_index(conn: Any, name: str, *, policy: RetryPolicy | None = None) -> IndexInfo:
    """``DROP INDEX schema.name`` in its own transaction, re-run on an OCC conflict (40001, e.g.
    OC001) like any transaction (:func:`dsqlops.data.retry.run_transaction`). Also cancels a build
    in progress: the first attempt may cancel it and then conflict, leaving the cancelled build's
    INVALID index, which the next attempt drops."""
    from psycopg import sql

    from dsqlops.data.retry import run_transaction

    info = _resolve_index(conn, name)
    if info.primary:
        raise UsageError(f"{info.schema}.{info.name} is the primary key; it is not an index you can drop")
    stmt = sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(info.schema, info.name))
    run_transaction(conn, lambda c: c.execute(stmt), policy=policy or DROP_RETRY)
    return info


@dataclass
class IndexParts:
    """An index's definition as the catalog gives it: key and INCLUDE items (a column, quoted when it
    needs to be, or an expression), uniqueness, NULLS NOT DISTINCT and the partial-index predicate."""
    keys: list[str]
    include: list[str]
    unique: bool
    nulls_not_distinct: bool
    predicate: str | None


def index_parts(conn: Any, info: IndexInfo) -> IndexParts:
    from psycopg import sql

    try:
        oid_row = conn.execute("SELECT %s::regclass::oid",
                               [sql.Identifier(info.schema, info.name).as_string(conn)]).fetchone()
        nkey, _natts, unique, pred, nnd, cols = conn.execute(_SQL_PARTS, [oid_row[0]]).fetchone()
    finally:
        if not conn.autocommit:
            conn.rollback()
    return IndexParts(list(cols[:nkey]), list(cols[nkey:]), bool(unique), bool(nnd), pred)


def _item(c: str) -> Any:
    from psycopg import sql

    # pg_get_indexdef gives a column (already quoted when it needs to be) or an expression
    if _SIMPLE_COL_RE.fullmatch(c):
        return sql.SQL(c)
    return sql.SQL("({})").format(sql.SQL(c))


def rebuild_statement(info: IndexInfo, p: IndexParts) -> Any:
    """The ``CREATE INDEX ASYNC`` that recreates ``info`` from its catalog parts ``p`` (keys,
    INCLUDE, uniqueness, NULLS NOT DISTINCT, predicate; :func:`index_parts`), whatever access method
    name the catalog shows."""
    from psycopg import sql

    out: list[sql.Composable] = [sql.SQL("CREATE UNIQUE INDEX ASYNC" if p.unique else "CREATE INDEX ASYNC"),
                                 sql.Identifier(info.name),
                                 sql.SQL("ON {} ({})").format(sql.Identifier(info.schema, info.table),
                                                              sql.SQL(", ").join(_item(c) for c in p.keys))]
    if p.include:
        out.append(sql.SQL("INCLUDE ({})").format(sql.SQL(", ").join(_item(c) for c in p.include)))
    if p.nulls_not_distinct:
        out.append(sql.SQL("NULLS NOT DISTINCT"))
    if p.predicate:
        out.append(sql.SQL("WHERE {}").format(sql.SQL(p.predicate)))
    return sql.SQL(" ").join(out)


#: How many duplicated keys ``index repair`` shows per index (the most duplicated first).
DUPLICATES_SHOWN = 20


def duplicate_keys(conn: Any, info: IndexInfo, parts: IndexParts, *, limit: int = DUPLICATES_SHOWN
                   ) -> tuple[list[dict[str, Any]], int]:
    """The keys that stop a UNIQUE index from building: ``GROUP BY`` the key items ``HAVING
    count(*) > 1`` over the rows the index covers (its predicate; rows with a NULL key part do not
    collide unless NULLS NOT DISTINCT). Returns (up to ``limit`` keys, most rows first, each
    ``{"key": {item: value}, "rows": n}``; how many keys are duplicated in all)."""
    from psycopg import sql

    if not parts.unique:
        return [], 0
    items = [_item(k) for k in parts.keys]
    where: list[sql.Composable] = []
    if parts.predicate:
        where.append(sql.SQL("({})").format(sql.SQL(parts.predicate)))
    if not parts.nulls_not_distinct:
        where.extend(sql.SQL("{} IS NOT NULL").format(i) for i in items)
    n = len(items)
    q = sql.SQL("SELECT {items}, count(*), count(*) OVER () FROM {table}{where} GROUP BY {pos} "
                "HAVING count(*) > 1 ORDER BY {cnt} DESC, {pos} LIMIT {limit}").format(
        items=sql.SQL(", ").join(items), table=sql.Identifier(info.schema, info.table),
        where=sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
        pos=sql.SQL(", ").join(sql.SQL(str(k)) for k in range(1, n + 1)), cnt=sql.SQL(str(n + 1)),
        limit=sql.Literal(max(1, int(limit))))
    try:
        rows = conn.execute(q).fetchall()
    finally:
        if not conn.autocommit:
            conn.rollback()
    out = []
    for r in rows:
        key = {k: (v if v is None or isinstance(v, bool | int | float | str) else str(v))
               for k, v in zip(parts.keys, r[:n], strict=True)}
        out.append({"key": key, "rows": int(r[n])})
    return out, int(rows[0][n + 1]) if rows else 0


@dataclass
class RepairPlanItem:
    index: IndexInfo
    rebuild_sql: str
    statement: Any = None
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    duplicate_keys: int = 0

    @property
    def blocked(self) -> bool:
        """A UNIQUE index whose table still holds duplicate keys: rebuilding it would fail again."""
        return self.duplicate_keys > 0

    def to_dict(self) -> dict[str, Any]:
        return {"index": f"{self.index.schema}.{self.index.name}", "table": f"{self.index.schema}.{self.index.table}",
                "action": "fix duplicates first" if self.blocked else "rebuild",
                "drop_sql": f'DROP INDEX "{self.index.schema}"."{self.index.name}"', "rebuild_sql": self.rebuild_sql,
                "duplicate_keys": self.duplicate_keys, "duplicates": self.duplicates}


def repair_plan(conn: Any, *, table: str | None = None, duplicates_shown: int = DUPLICATES_SHOWN
                ) -> list[RepairPlanItem]:
    """Invalid indexes that are not being built right now, with the statement that rebuilds each
    and, for a UNIQUE one, the duplicate keys that would make the rebuild fail again."""
    items = []
    for info in list_indexes(conn, table=table, invalid=True):
        if info.building_job:
            continue
        parts = index_parts(conn, info)
        stmt = rebuild_statement(info, parts)
        dups, ndup = duplicate_keys(conn, info, parts, limit=duplicates_shown)
        items.append(RepairPlanItem(info, stmt.as_string(conn), stmt, dups, ndup))
    return items


def describe_duplicates(item: RepairPlanItem) -> list[str]:
    """Lines for the operator: which keys are duplicated, and how often."""
    name = f"{item.index.schema}.{item.index.name}"
    shown = len(item.duplicates)
    more = f" (the {shown} most repeated shown)" if item.duplicate_keys > shown else ""
    lines = [f"{name}: {item.duplicate_keys} key(s) of {item.index.schema}.{item.index.table} occur more than "
             f"once{more}; the UNIQUE rebuild would fail again"]
    for d in item.duplicates:
        cols = ", ".join(d["key"])
        vals = ", ".join("NULL" if v is None else str(v) for v in d["key"].values())
        lines.append(f"  ({cols})=({vals}): {d['rows']} rows")
    return lines


def repair(conn: Any, items: Sequence[RepairPlanItem]) -> list[dict[str, Any]]:
    """Drop each invalid index and start its asynchronous rebuild; returns one row per index with
    the new job id. Stops at the first failure, saying which indexes were already handled."""
    from dsqlops.errors import OperationFailed

    out: list[dict[str, Any]] = []
    for n, it in enumerate(items):
        name = f"{it.index.schema}.{it.index.name}"
        try:
            drop_index(conn, name)
            started = start_build(conn, f"{it.index.schema}.{it.index.table}", it.statement, name=it.index.name)
        except Exception as e:
            done = ", ".join(r["index"] for r in out) or "none"
            rest = ", ".join(f"{i.index.schema}.{i.index.name}" for i in items[n + 1:]) or "none"
            raise OperationFailed(f"repairing {name} failed ({str(e).strip().splitlines()[0]}); already "
                                  f"rebuilding: {done}; not touched: {rest}",
                                  hint="run 'dsqlops index repair' again once the cause is fixed") from e
        out.append({"index": name, "job_id": started.job_id, "sql": started.sql})
    return out
