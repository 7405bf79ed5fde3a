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
from dataclasses import dataclass
from typing import Any

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


def drop_index(conn: Any, name: str) -> IndexInfo:
    """``DROP INDEX schema.name`` (autocommit). Also cancels a build in progress."""
    from psycopg import sql

    info = _resolve_index(conn, name)
    if info.primary:
        raise UsageError(f"{info.schema}.{info.name} is the primary key; it is not an index you can drop")
    was = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(info.schema, info.name)))
    finally:
        conn.autocommit = was
    return info


def rebuild_statement(conn: Any, info: IndexInfo) -> Any:
    """The ``CREATE INDEX ASYNC`` that recreates ``info`` from its catalog parts (keys, INCLUDE,
    uniqueness, NULLS NOT DISTINCT, predicate), whatever access method name the catalog shows."""
    from psycopg import sql

    oid_row = conn.execute("SELECT %s::regclass::oid", [sql.Identifier(info.schema, info.name).as_string(conn)]
                           ).fetchone()
    row = conn.execute(_SQL_PARTS, [oid_row[0]]).fetchone()
    nkey, _natts, unique, pred, nnd, cols = row
    keys = [c for c in cols[:nkey]]
    include = [c for c in cols[nkey:]]

    def col(c: str) -> sql.Composable:
        # pg_get_indexdef gives a column (already quoted when it needs to be) or an expression
        if _SIMPLE_COL_RE.fullmatch(c):
            return sql.SQL(c)
        return sql.SQL("({})").format(sql.SQL(c))

    parts: list[sql.Composable] = [sql.SQL("CREATE UNIQUE INDEX ASYNC" if unique else "CREATE INDEX ASYNC"),
                                   sql.Identifier(info.name),
                                   sql.SQL("ON {} ({})").format(sql.Identifier(info.schema, info.table),
                                                                sql.SQL(", ").join(col(c) for c in keys))]
    if include:
        parts.append(sql.SQL("INCLUDE ({})").format(sql.SQL(", ").join(col(c) for c in include)))
    if nnd:
        parts.append(sql.SQL("NULLS NOT DISTINCT"))
    if pred:
        parts.append(sql.SQL("WHERE {}").format(sql.SQL(pred)))
    if not conn.autocommit:
        conn.rollback()
    return sql.SQL(" ").join(parts)


@dataclass
class RepairPlanItem:
    index: IndexInfo
    rebuild_sql: str
    statement: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": f"{self.index.schema}.{self.index.name}", "table": f"{self.index.schema}.{self.index.table}",
                "drop_sql": f'DROP INDEX "{self.index.schema}"."{self.index.name}"', "rebuild_sql": self.rebuild_sql}


def repair_plan(conn: Any, *, table: str | None = None) -> list[RepairPlanItem]:
    """Invalid indexes that are not being built right now, with the statement that rebuilds each."""
    items = []
    for info in list_indexes(conn, table=table, invalid=True):
        if info.building_job:
            continue
        stmt = rebuild_statement(conn, info)
        items.append(RepairPlanItem(info, stmt.as_string(conn), stmt))
    return items


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
