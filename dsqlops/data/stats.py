"""Planner statistics: a deterministic dump, a diff of two dumps, exact-count drift, ANALYZE.

A dump is plain data (dicts of strings/numbers) with sorted keys and rows and **no volatile
fields** (no dump time, no OIDs), so two dumps of an unchanged cluster are byte-identical and
``stats diff`` shows only what the planner would see differently.

Per table: ``reltuples``, ``relpages``, size, last ANALYZE (the newest completed ``ANALYZE`` job in
``sys.jobs`` on DSQL — rows there vanish ~30 min after completion, docs/dsql-facts.md §3.2 — else
``pg_stat_user_tables`` on plain PostgreSQL), per column the ``pg_stats`` fields, indexes
(definition, validity) and extended statistics (``pg_statistic_ext``). Note docs/dsql-facts.md §3.4: DSQL runs
Auto Analyze itself; ``COUNT(*)`` on big tables can time out, which is why ``--exact`` bounds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dsqlops.errors import UsageError
from dsqlops.validate import validate_identifier

#: |count - reltuples| / count above this marks a table's statistics stale.
DEFAULT_DRIFT = 0.20
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "sys", "pg_toast")

_SQL_TABLES = """
SELECT n.nspname, c.relname, c.reltuples::float8, c.relpages::bigint,
       c.relkind::text
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm')
  AND n.nspname <> ALL(%(system)s) AND n.nspname NOT LIKE 'pg\\_%%'
  AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
ORDER BY n.nspname, c.relname
"""
_SQL_SIZE = "SELECT pg_catalog.pg_total_relation_size(%s::regclass)::bigint"
_SQL_COLUMNS = """
SELECT attname, null_frac::float8, avg_width, n_distinct::float8, most_common_vals::text,
       most_common_freqs::text, histogram_bounds::text, correlation::float8
FROM pg_catalog.pg_stats
WHERE schemaname = %s AND tablename = %s AND NOT inherited
ORDER BY attname
"""
_SQL_INDEXES = """
SELECT i.relname, pg_catalog.pg_get_indexdef(x.indexrelid), x.indisvalid, x.indisunique, x.indisprimary
FROM pg_catalog.pg_index x
JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = %s AND t.relname = %s
ORDER BY i.relname
"""
_SQL_EXT = """
SELECT s.stxname, pg_catalog.pg_get_statisticsobjdef(s.oid), pg_catalog.array_to_string(s.stxkind, ',')
FROM pg_catalog.pg_statistic_ext s
JOIN pg_catalog.pg_class t ON t.oid = s.stxrelid
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = %s AND t.relname = %s
ORDER BY s.stxname
"""
_EXT_KINDS = {"d": "ndistinct", "f": "dependencies", "m": "mcv", "e": "expressions"}
_SQL_HAS_JOBS = "SELECT to_regclass('sys.jobs') IS NOT NULL"
_SQL_LAST_ANALYZE_JOBS = """
SELECT object_name, max(update_time)
FROM sys.jobs WHERE job_type = 'ANALYZE' AND lower(status) = 'completed'
GROUP BY object_name
"""
_SQL_LAST_ANALYZE_PG = """
SELECT schemaname, relname, GREATEST(last_analyze, last_autoanalyze)
FROM pg_catalog.pg_stat_user_tables
"""


@dataclass(frozen=True)
class TableRef:
    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


def parse_table_ref(text: str) -> TableRef:
    from dsqlops.data.roles import split_qualified

    schema, name = split_qualified(text.strip())
    return TableRef(schema, name)


def _num(v: Any) -> Any:
    """Floats rounded to 6 significant digits so float4→float8 noise never shows up in a diff."""
    if isinstance(v, float):
        if v != v:  # NaN
            return None
        return float(f"{v:.6g}")
    return v


def dump(conn: Any, *, schemas: Sequence[str] | None = None, tables: Sequence[TableRef] | None = None,
         with_size: bool = True) -> dict[str, Any]:
    """The statistics of the selected tables, as deterministic plain data. Read-only (rolled back)."""
    for s in schemas or ():
        validate_identifier(s, "schema name")
    wanted = {(t.schema, t.name) for t in tables or ()}
    out: dict[str, Any] = {"format": 1, "tables": []}
    with_size = with_size and size_supported(conn)
    try:
        with conn.cursor() as cur:
            cur.execute(_SQL_HAS_JOBS)
            has_jobs = bool(cur.fetchone()[0])
            last: dict[tuple[str, str], Any] = {}
            # the newest of: a completed ANALYZE job (DSQL), pg_stat_user_tables (PostgreSQL, and
            # whatever DSQL fills in there)
            if has_jobs:
                cur.execute(_SQL_LAST_ANALYZE_JOBS)
                for obj, when in cur.fetchall():
                    if obj and "." in obj:
                        s, _, t = str(obj).partition(".")
                        last[(s, t)] = when
            cur.execute(_SQL_LAST_ANALYZE_PG)
            for s, t, when in cur.fetchall():
                if when is not None and (last.get((s, t)) is None or when > last[(s, t)]):
                    last[(s, t)] = when
            sch = sorted({*(schemas or ()), *(t.schema for t in tables or ())}) or None
            cur.execute(_SQL_TABLES, {"system": list(SYSTEM_SCHEMAS), "schemas": sch})
            rows = cur.fetchall()
            found = set()
            for schema, name, reltuples, relpages, kind in rows:
                if wanted and (schema, name) not in wanted:
                    continue
                found.add((schema, name))
                table: dict[str, Any] = {
                    "schema": schema, "name": name, "kind": {"r": "table", "p": "partitioned", "m": "matview"}
                    .get(kind, kind), "reltuples": _num(float(reltuples)), "relpages": int(relpages),
                    "last_analyze": last.get((schema, name)),
                }
                if with_size:
                    table["size_bytes"] = _size(conn, cur, schema, name)
                cur.execute(_SQL_COLUMNS, (schema, name))
                table["columns"] = [
                    {"name": a, "null_frac": _num(nf), "avg_width": aw, "n_distinct": _num(nd),
                     "most_common_vals": mcv, "most_common_freqs": mcf, "histogram_bounds": hb,
                     "correlation": _num(corr)}
                    for a, nf, aw, nd, mcv, mcf, hb, corr in cur.fetchall()
                ]
                cur.execute(_SQL_INDEXES, (schema, name))
                table["indexes"] = [{"name": n, "definition": d, "valid": bool(v), "unique": bool(u),
                                     "primary": bool(p)} for n, d, v, u, p in cur.fetchall()]
                cur.execute(_SQL_EXT, (schema, name))
                table["extended_statistics"] = [
                    {"name": n, "definition": d,
                     "kinds": sorted(_EXT_KINDS.get(x, x) for x in (k or "").split(",") if x)}
                    for n, d, k in cur.fetchall()]
                out["tables"].append(table)
            missing = sorted(wanted - found)
            if missing:
                raise UsageError("no such table: " + ", ".join(f"{s}.{t}" for s, t in missing))
    finally:
        if not getattr(conn, "autocommit", False):
            conn.rollback()
    return normalise(out)


def size_supported(conn: Any) -> bool:
    """Whether the server answers ``pg_total_relation_size`` (DSQL may refuse it). Probed in its
    own statement; on refusal the transaction is rolled back (DSQL has no savepoints)."""
    import psycopg

    try:
        conn.execute("SELECT pg_catalog.pg_total_relation_size('pg_catalog.pg_class'::regclass)").fetchone()
        return True
    except psycopg.Error:
        if not conn.autocommit:
            conn.rollback()
        return False


def _size(conn: Any, cur: Any, schema: str, name: str) -> int | None:
    from psycopg import sql

    cur.execute(_SQL_SIZE, (sql.Identifier(schema, name).as_string(conn),))
    row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else None


def normalise(data: Any) -> Any:
    """Round-trip through JSON with sorted keys, so dumps compare equal iff their text does."""
    from dsqlops.output import to_jsonable

    return json.loads(json.dumps(to_jsonable(data), sort_keys=True))


def to_json(data: Any) -> str:
    return json.dumps(normalise(data), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def load_dump(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} is not a stats dump (JSON): {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tables"), list):
        raise UsageError(f"{path} is not a stats dump (no 'tables' list)", hint="make one with 'dsqlops stats dump'")
    return data


# --------------------------------------------------------------------------------------------
# Diff
# --------------------------------------------------------------------------------------------

def _keyed(items: Iterable[dict[str, Any]], *key: str) -> dict[str, dict[str, Any]]:
    return {".".join(str(i.get(k)) for k in key): i for i in items}


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Changes from dump ``a`` to dump ``b``: ``{"path", "change", "before", "after"}`` rows, sorted."""
    out: list[dict[str, Any]] = []
    ta, tb = _keyed(a.get("tables", []), "schema", "name"), _keyed(b.get("tables", []), "schema", "name")
    for t in sorted(set(ta) | set(tb)):
        if t not in tb:
            out.append({"path": t, "change": "removed", "before": "table", "after": None})
            continue
        if t not in ta:
            out.append({"path": t, "change": "added", "before": None, "after": "table"})
            continue
        x, y = ta[t], tb[t]
        for k in sorted((set(x) | set(y)) - {"columns", "indexes", "extended_statistics", "schema", "name"}):
            if x.get(k) != y.get(k):
                out.append({"path": f"{t}.{k}", "change": "changed", "before": x.get(k), "after": y.get(k)})
        for section in ("columns", "indexes", "extended_statistics"):
            xa, yb = _keyed(x.get(section, []), "name"), _keyed(y.get(section, []), "name")
            for n in sorted(set(xa) | set(yb)):
                base = f"{t}.{section}.{n}"
                if n not in yb:
                    out.append({"path": base, "change": "removed", "before": section[:-1], "after": None})
                elif n not in xa:
                    out.append({"path": base, "change": "added", "before": None, "after": section[:-1]})
                else:
                    for k in sorted((set(xa[n]) | set(yb[n])) - {"name"}):
                        if xa[n].get(k) != yb[n].get(k):
                            out.append({"path": f"{base}.{k}", "change": "changed", "before": xa[n].get(k),
                                        "after": yb[n].get(k)})
    return out


# --------------------------------------------------------------------------------------------
# Exact counts and ANALYZE
# --------------------------------------------------------------------------------------------

def exact_counts(conn: Any, tables: Sequence[dict[str, Any]], *, timeout_s: float = 30.0,
                 drift: float = DEFAULT_DRIFT) -> list[dict[str, Any]]:
    """``count(*)`` per table, each bounded by ``SET LOCAL statement_timeout``, vs ``reltuples``.

    A table whose estimate is off by more than ``drift`` (or that was never analysed:
    ``reltuples = -1``) is ``stale``; a count that hit the timeout is reported as such.
    """
    import psycopg
    from psycopg import sql

    out: list[dict[str, Any]] = []
    for t in tables:
        schema, name = validate_identifier(t["schema"], "schema name"), validate_identifier(t["name"], "table name")
        est = float(t.get("reltuples") or 0)
        row: dict[str, Any] = {"table": f"{schema}.{name}", "reltuples": _num(est), "count": None,
                               "drift": None, "stale": None, "note": None}
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(
                    sql.Literal(f"{int(timeout_s * 1000)}ms")))
                count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier(schema, name))).fetchone()[0]
        except psycopg.errors.QueryCanceled:
            row["note"] = f"count(*) did not finish within {timeout_s:g}s; estimate only"
            out.append(row)
            continue
        row["count"] = int(count)
        if est < 0:
            row["stale"], row["note"] = True, "never analysed"
        else:
            d = abs(count - est) / max(count, 1)
            row["drift"] = round(d, 4)
            row["stale"] = d > drift
            if row["stale"]:
                row["note"] = f"estimate off by {d:.0%} (> {drift:.0%}): run 'dsqlops stats analyze {schema}.{name}'"
        out.append(row)
    return out


def analyze(conn: Any, tables: Sequence[TableRef]) -> list[dict[str, Any]]:
    """``ANALYZE`` each table (autocommit: DSQL treats it as its own statement)."""
    from psycopg import sql

    out = []
    was = conn.autocommit
    conn.autocommit = True
    try:
        for t in tables:
            validate_identifier(t.schema, "schema name")
            validate_identifier(t.name, "table name")
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(t.schema, t.name)))
            out.append({"table": str(t), "analyzed": True})
    finally:
        conn.autocommit = was
    return out
