"""Install DSQL's ``sys`` schema into one sandbox cluster database.

``install(conn)`` runs ``sql/sys.sql`` (idempotent) as a superuser on the cluster's database:
schema ``sys`` with ``sys.jobs`` (a view over ``sys._jobs``), ``sys.iam_pg_role_mappings``,
``CALL sys.wait_for_job(text)``, the base32 job-id helpers, the functions the dialect rewrites
into (``sys._create_index_async``, ``sys._validate_constraint_async``, ``sys._iam_grant`` …), event
triggers that record DROP jobs and enforce the 3,000-row transaction limit, and the
database-wide defaults DSQL fixes (REPEATABLE READ, UTC, a 50 ms lock wait).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

#: Bumped when sys.sql changes; recorded in sys._meta so a sandbox can tell an old install.
VERSION = 1


def script() -> str:
    return resources.files("dsqlops.sandbox").joinpath("sql/sys.sql").read_text(encoding="utf-8")


def install(conn: Any) -> None:
    """Create or update the ``sys`` schema on ``conn``'s database (a psycopg connection, superuser).

    Runs in one transaction (committed here); safe to call on every start and on every new cluster.
    """
    sql = script()
    was_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.transaction():
            # Our own objects must not inherit the sandbox's short lock wait.
            conn.execute("SET LOCAL lock_timeout = 0")
            conn.execute(sql)  # no parameters: psycopg sends the whole script as one simple Query
            conn.execute("CREATE TABLE IF NOT EXISTS sys._meta (key text PRIMARY KEY, value text)")
            conn.execute("REVOKE ALL ON sys._meta FROM PUBLIC")
            conn.execute("INSERT INTO sys._meta VALUES ('version', %s) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(VERSION),))
        # The EXPLAIN DPU function (and DSQL-like planner defaults) belong with the schema: installed
        # later by the meter alone, a client's first EXPLAIN ANALYZE right after the cluster became
        # ready could fail with "function does not exist". The meter still (re)installs it.
        from dsqlops.sandbox import explain_dpu

        explain_dpu.install(conn)
    finally:
        conn.autocommit = was_autocommit
