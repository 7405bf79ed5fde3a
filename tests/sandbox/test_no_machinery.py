"""Nothing of the sandbox shows through: not in errors, not in EXPLAIN, not in the version a client
is told; and a malformed message is one log line, not a traceback."""

from __future__ import annotations

import decimal
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.sandbox import rawpg

pytestmark = pytest.mark.sandbox

MACHINERY = ("inline_code_block", "sys._", "dsql_row_limit", "dsql_txn", "$dsql$", "PL/pgSQL function sys.")


@pytest.fixture(scope="module")
def cluster(sandbox) -> str:  # type: ignore[no-untyped-def]
    return sandbox.create_cluster()


def _shows_machinery(err: psycopg.Error) -> list[str]:
    d = err.diag
    texts = [d.message_primary, d.message_detail, d.message_hint, d.context, d.internal_query,
             d.source_function, d.source_file]
    return [t for t in texts if t and any(m in t for m in MACHINERY)]


def test_one_server_version_everywhere(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    with sandbox.connect(cluster, autocommit=True) as conn:
        at_login = conn.info.parameter_status("server_version")
        shown = conn.execute("SHOW server_version").fetchone()[0]
        setting = conn.execute("SELECT current_setting('server_version')").fetchone()[0]
        version = conn.execute("SELECT version()").fetchone()[0]
    assert at_login == shown == setting == "16.15"
    assert version == f"PostgreSQL {shown}"


@pytest.mark.parametrize("steps", [
    # the row limit: counted by the sandbox's statement triggers
    ["CREATE TABLE {t} (id int PRIMARY KEY)", "BEGIN", "INSERT INTO {t} SELECT g FROM generate_series(1, 3001) g"],
    # checked in a DO block the dialect sends
    ["CREATE TABLE {t} (id int PRIMARY KEY, v int)", "ALTER TABLE {t} DROP COLUMN id"],
    # a backend error raised inside that DO block's EXECUTE
    ["CREATE TABLE {t} (id int PRIMARY KEY, v int)", "ALTER TABLE {t} DROP COLUMN nope"],
    # raised inside sys._create_index_async
    ["CREATE TABLE {t} (id int PRIMARY KEY, j jsonb)", "CREATE INDEX ASYNC ON {t} (j)"],
])
def test_errors_show_no_sandbox_machinery(sandbox, cluster, steps: list[str]) -> None:  # type: ignore[no-untyped-def]
    table = f"m_{uuid.uuid4().hex[:8]}"
    with sandbox.connect(cluster, autocommit=True) as conn:
        for step in steps[:-1]:
            conn.execute(step.format(t=table))
        with pytest.raises(psycopg.Error) as e:
            conn.execute(steps[-1].format(t=table))
        assert not _shows_machinery(e.value), e.value.diag.context


def test_notices_show_no_sandbox_machinery(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    notices: list[tuple[str, str]] = []  # a Diagnostic is valid only inside the handler
    with sandbox.connect(cluster, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append((d.message_primary or "", d.context or "")))
        conn.execute("DROP INDEX IF EXISTS no_such_index")  # sent as a DO block that cancels async builds
    assert notices and "does not exist, skipping" in notices[0][0]
    assert not any(m in context for _msg, context in notices for m in MACHINERY), notices


@pytest.mark.parametrize("explain", ["EXPLAIN ANALYZE", "EXPLAIN (ANALYZE, VERBOSE)", "EXPLAIN (ANALYZE, COSTS OFF)"])
def test_explain_analyze_lists_no_sandbox_triggers(sandbox, cluster, explain: str) -> None:  # type: ignore[no-untyped-def]
    table = f"x_{uuid.uuid4().hex[:8]}"
    with sandbox.connect(cluster, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v int)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 1)")
        for stmt in (f"INSERT INTO {table} VALUES (2, 2)", f"UPDATE {table} SET v = 3 WHERE id = 1",
                     f"DELETE FROM {table} WHERE id = 2"):
            cur = conn.execute(f"{explain} {stmt}")
            plan = "\n".join(r[0] for r in cur.fetchall())
            assert "Insert on" in plan or "Update on" in plan or "Delete on" in plan
            assert "Trigger" not in plan and not any(m in plan for m in MACHINERY), plan
            assert cur.statusmessage == "EXPLAIN"
        assert conn.execute(f"SELECT id, v FROM {table}").fetchall() == [(1, 3)]  # each ran once


def test_plain_numeric_is_dsqls_default(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    table = f"n_{uuid.uuid4().hex[:8]}"
    with sandbox.connect(cluster, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, a numeric, b decimal(5, 2))")
        conn.execute(f"ALTER TABLE {table} ADD COLUMN c numeric")
        conn.execute(f"INSERT INTO {table} VALUES (1, 1.23456789, 1.239, 2.5000001)")
        assert conn.execute(f"SELECT a, b, c FROM {table}").fetchone() == (
            decimal.Decimal("1.234568"), decimal.Decimal("1.24"), decimal.Decimal("2.500000"))
        assert conn.execute(
            "SELECT column_name, numeric_precision, numeric_scale FROM information_schema.columns "
            "WHERE table_name = %s AND column_name <> 'id' ORDER BY column_name", (table,)).fetchall() == [
            ("a", 18, 6), ("b", 5, 2), ("c", 18, 6)]
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):  # 12 integer digits at most
            conn.execute(f"INSERT INTO {table} (id, a) VALUES (2, 1e12)")


def test_malformed_parse_is_08p01_and_one_log_line(sandbox, cluster) -> None:  # type: ignore[no-untyped-def]
    log_file = Path(sandbox.dir) / "sandbox.log"
    before = log_file.read_text(errors="replace") if log_file.exists() else ""
    for _ in range(3):
        s, _pid = rawpg.login(sandbox.port, sandbox.endpoint(cluster), sandbox.ca_file, sandbox.token(cluster))
        with s:
            s.sendall(rawpg.msg(b"P", b"no-terminator-anywhere"))
            errs = [rawpg.error_fields(body) for kind, body in rawpg.read_until_closed(s) if kind == b"E"]
        assert errs and errs[-1]["S"] == "FATAL" and errs[-1]["C"] == "08P01"
    deadline = time.monotonic() + 10
    while True:
        new = (log_file.read_text(errors="replace") if log_file.exists() else "")[len(before):]
        if new.count("protocol violation") >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert new.count("protocol violation") == 3 and "Traceback" not in new and "XX000" not in new
