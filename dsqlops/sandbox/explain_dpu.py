"""``EXPLAIN (ANALYZE, VERBOSE)`` through the sandbox gains DSQL's ``Statement DPU Estimate`` block.

:func:`rewrite` turns the client's EXPLAIN into a call of ``sys.dsqlops_explain_dpu(query,
options)`` — a PL/pgSQL function (installed by :func:`install`, as superuser, in every cluster
database) that runs the EXPLAIN once, returns its lines unchanged in the ``QUERY PLAN`` column,
and appends the block computed with the same model as the metering (``dpu.py``)::

    Statement DPU Estimate:
      Compute: 0.01550 DPU
      Read: 0.00307 DPU (Transaction minimum: 0.00375)
      Write: 0.01875 DPU (Transaction minimum: 0.05000)
      Total: 0.03732 DPU

* Compute = (Planning Time + Execution Time) / 1000;
* Read = rows produced by every scan node (× loops) at their width (≥128 B), plus rows removed by
  filters (128 B each), plus a 128-B primary-key uniqueness read per inserted row;
* Write = rows fed into every Insert/Update/Delete node at their width (≥128 B).

Statement level, so no transaction minimums in the numbers; a component below its minimum
carries the ``(Transaction minimum: …)`` note, as DSQL prints it. :func:`install` also sets DSQL-like
planner defaults on the database (no bitmap scans, SSD-like random page cost). Only ANALYZE + VERBOSE in the
text format are rewritten (DSQL prints the block for nothing else); a statement with ``$n``
parameters is left alone (the function cannot bind them).
"""

from __future__ import annotations

import re
from typing import Any

from dsqlops import sqllex
from dsqlops.sandbox import dpu

FUNCTION = "sys.dsqlops_explain_dpu"
PLAIN_FUNCTION = "sys.dsqlops_explain"
#: EXPLAIN ANALYZE lines of the sandbox's own triggers (sql/sys.sql), which DSQL does not have.
SANDBOX_TRIGGER_LINE = "^Trigger (for constraint )?dsql_"

_PAREN = re.compile(r"^\s*EXPLAIN\s*\((?P<opts>[^()]*)\)\s*(?P<stmt>.*?)\s*;?\s*$", re.I | re.S)
_LEGACY = re.compile(r"^\s*EXPLAIN\s+(?P<words>(?:(?:ANALYZE|ANALYSE|VERBOSE)\s+)+)(?P<stmt>.*?)\s*;?\s*$",
                     re.I | re.S)
_OPTION = re.compile(r"^\s*(?P<name>[A-Za-z_]+)(?:\s+(?P<value>[A-Za-z0-9_']+))?\s*$")
_TRUE = {"", "true", "on", "1", "yes"}


def _parse_options(text: str) -> dict[str, str] | None:
    opts: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            return None
        m = _OPTION.match(part)
        if not m:
            return None
        name = m.group("name").lower()
        opts["analyze" if name == "analyse" else name] = (m.group("value") or "").strip("'").lower()
    return opts


def _has_parameters(sql: str) -> bool:
    """``$1``-style parameters in ``sql`` (not inside literals, comments or identifiers like ``a$1``);
    unlexable text counts as having them, so it is left for the server to refuse."""
    try:
        return any(t.kind == sqllex.PARAM for t in sqllex.tokenize(sql))
    except sqllex.SqlSyntaxError:
        return True


def rewrite(sql: str) -> str | None:
    """The text to send instead of an ``EXPLAIN (ANALYZE, VERBOSE …)``, or None to leave it alone."""
    m = _PAREN.match(sql)
    if m:
        opts = _parse_options(m.group("opts"))
        if opts is None:
            return None
    else:
        m = _LEGACY.match(sql)
        if not m:
            return None
        opts = {w.lower().replace("analyse", "analyze"): "" for w in m.group("words").split()}
    stmt = m.group("stmt")
    if opts.get("analyze") not in _TRUE or "analyze" not in opts:
        return None
    if opts.get("format", "text") != "text":
        return None
    if not stmt or _has_parameters(stmt) or "\x00" in stmt:
        return None
    options = ", ".join(f"{k.upper()} {v.upper()}".strip() for k, v in opts.items())
    verbose = "verbose" in opts and opts["verbose"] in _TRUE
    # without VERBOSE DSQL prints no DPU block; the plan still goes through a function, which
    # leaves out the sandbox's own triggers (EXPLAIN ANALYZE lists every trigger that fired)
    return f"SELECT * FROM {FUNCTION if verbose else PLAIN_FUNCTION}({_literal(stmt)}, {_literal(options)})"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def function_sql() -> str:
    """The PL/pgSQL function (constants from dpu.py, so EXPLAIN and metering agree)."""
    rmin = f"{dpu.READ_MIN_DPU:.5f}"
    wmin = f"{dpu.WRITE_MIN_DPU:.5f}"
    return f"""
CREATE OR REPLACE FUNCTION {FUNCTION}(q text, opts text)
RETURNS TABLE("QUERY PLAN" text) LANGUAGE plpgsql AS $fn$
DECLARE
  plan_lines text[] := '{{}}';
  l text;
  m text[];
  read_b float8 := 0;
  write_b float8 := 0;
  compute_ms float8 := 0;
  pending text := NULL;
  n float8;
  w float8;
  c float8;
  r float8;
  wr float8;
BEGIN
  FOR l IN EXECUTE 'EXPLAIN (' || opts || ') ' || q LOOP
    IF l !~ '{SANDBOX_TRIGGER_LINE}' THEN
      plan_lines := plan_lines || l;
    END IF;
  END LOOP;
  FOREACH l IN ARRAY plan_lines LOOP
    "QUERY PLAN" := l;
    RETURN NEXT;
    m := regexp_match(l, '^\\s*(?:->\\s+)?(Insert|Update|Delete|Merge) on ');
    IF m IS NOT NULL THEN
      pending := m[1];
      CONTINUE;
    END IF;
    m := regexp_match(l, 'width=(\\d+)\\) \\(actual (?:time=\\S+ )?rows=(\\d+) loops=(\\d+)\\)');
    IF m IS NOT NULL THEN
      w := greatest(m[1]::float8, {dpu.ROW_MIN_BYTES});
      n := m[2]::float8 * m[3]::float8;
      IF pending IS NOT NULL THEN
        write_b := write_b + n * w;
        IF pending = 'Insert' THEN
          read_b := read_b + n * {dpu.ROW_MIN_BYTES};
        END IF;
        pending := NULL;
      END IF;
      IF l ~ '(Seq Scan|Index Scan|Index Only Scan|Bitmap Heap Scan|Tid Scan|Tid Range Scan) ' THEN
        read_b := read_b + n * w;
      END IF;
      CONTINUE;
    END IF;
    m := regexp_match(l, 'Rows Removed by (?:Filter|Index Recheck): (\\d+)');
    IF m IS NOT NULL THEN
      read_b := read_b + m[1]::float8 * {dpu.ROW_MIN_BYTES};
      CONTINUE;
    END IF;
    m := regexp_match(l, '^(?:Planning|Execution) Time: ([0-9.]+) ms');
    IF m IS NOT NULL THEN
      compute_ms := compute_ms + m[1]::float8;
    END IF;
  END LOOP;
  c := compute_ms / 1000.0;
  r := read_b * {dpu.READ_DPU_PER_BYTE!r};
  wr := write_b * {dpu.WRITE_DPU_PER_BYTE!r};
  "QUERY PLAN" := 'Statement DPU Estimate:';
  RETURN NEXT;
  "QUERY PLAN" := '  Compute: ' || to_char(c, 'FM9999999990.00000') || ' DPU';
  RETURN NEXT;
  "QUERY PLAN" := '  Read: ' || to_char(r, 'FM9999999990.00000') || ' DPU'
    || CASE WHEN r > 0 AND r < {rmin} THEN ' (Transaction minimum: {rmin})' ELSE '' END;
  RETURN NEXT;
  "QUERY PLAN" := '  Write: ' || to_char(wr, 'FM9999999990.00000') || ' DPU'
    || CASE WHEN wr > 0 AND wr < {wmin} THEN ' (Transaction minimum: {wmin})' ELSE '' END;
  RETURN NEXT;
  "QUERY PLAN" := '  Total: ' || to_char(c + r + wr, 'FM9999999990.00000') || ' DPU';
  RETURN NEXT;
END
$fn$;
GRANT EXECUTE ON FUNCTION {FUNCTION}(text, text) TO PUBLIC;

CREATE OR REPLACE FUNCTION {PLAIN_FUNCTION}(q text, opts text)
RETURNS TABLE("QUERY PLAN" text) LANGUAGE plpgsql AS $fn$
BEGIN
  FOR "QUERY PLAN" IN EXECUTE 'EXPLAIN (' || opts || ') ' || q LOOP
    IF "QUERY PLAN" !~ '{SANDBOX_TRIGGER_LINE}' THEN
      RETURN NEXT;
    END IF;
  END LOOP;
END
$fn$;
GRANT EXECUTE ON FUNCTION {PLAIN_FUNCTION}(text, text) TO PUBLIC;
"""


#: Planner settings that make PostgreSQL's plans look like DSQL's: DSQL has no bitmap heap scans
#: (its plans show Index Scan / Index Only Scan / Full Scan), and its storage is not seek-bound.
#: Set per cluster database (new sessions), so EXPLAIN shows the plan queries really run with.
DSQL_PLANNER_SETTINGS = {"enable_bitmapscan": "off", "random_page_cost": "1.1"}


def install(conn: Any) -> bool:
    """Create/replace the function and set DSQL-like planner defaults (superuser).

    False when the ``sys`` schema is not there yet (the caller retries later).
    """
    from psycopg import sql

    row = conn.execute("SELECT to_regnamespace('sys') IS NOT NULL, current_database()").fetchone()
    if not row or not row[0]:
        return False
    conn.execute(function_sql())
    for name, value in DSQL_PLANNER_SETTINGS.items():
        conn.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
            sql.Identifier(row[1]), sql.Identifier(name), sql.Literal(value)))
    if not conn.autocommit:
        conn.commit()
    return True
