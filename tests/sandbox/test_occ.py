"""DSQL's optimistic concurrency through the real front, on each client path.

First committer wins, writers never wait, the conflict comes at COMMIT (never at the statement)
and readers never block DDL, whether the client sends simple queries (psycopg's ClientCursor),
unnamed extended-protocol statements (prepare=False) or named prepared statements (prepare=True,
as pgx and JDBC do). Two real psycopg sessions per test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dsqlops.sandbox.dialect import OC000, OC001

pytestmark = [pytest.mark.sandbox]

PATHS = ["simple", "unnamed", "named"]


@pytest.fixture(scope="module")
def cluster(sandbox: Any) -> str:
    return str(sandbox.create_cluster())


class Client:
    """One psycopg session that sends every statement over one client path."""

    def __init__(self, conn: Any, path: str) -> None:
        import psycopg

        self.conn = conn
        self.path = path
        if path == "simple":
            conn.cursor_factory = psycopg.ClientCursor

    def run(self, sql: str, params: Any = None) -> Any:
        cur = self.conn.cursor()
        if self.path == "simple":
            cur.execute(sql, params)
        else:
            cur.execute(sql, params, prepare=self.path == "named")
        return cur

    def rows(self, sql: str, params: Any = None) -> list[Any]:
        return list(self.run(sql, params).fetchall())


@pytest.fixture()
def pair(sandbox: Any, cluster: str, request: pytest.FixtureRequest) -> Iterator[tuple[Client, Client, Any]]:
    path = request.param
    a = sandbox.connect(cluster)
    b = sandbox.connect(cluster)
    admin = sandbox.connect(cluster, autocommit=True)
    try:
        yield Client(a, path), Client(b, path), admin
    finally:
        for c in (a, b, admin):
            c.close()


def _table(admin: Any, rows: int = 2) -> str:
    name = f"occ_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
    admin.execute(f"INSERT INTO {name} SELECT g, 'v' || g FROM generate_series(1, {rows}) g")
    return name


def _conflict(exc: pytest.ExceptionInfo[Any], message: str = OC000) -> None:
    assert exc.value.sqlstate == "40001", exc.value
    assert exc.value.diag.message_primary == message


paths = pytest.mark.parametrize("pair", PATHS, indirect=True)


@paths
def test_first_committer_wins_not_first_toucher(pair: tuple[Client, Client, Any]) -> None:
    import psycopg

    a, b, admin = pair
    t = _table(admin)
    assert a.run(f"UPDATE {t} SET v = 'a' WHERE id = %s", (1,)).rowcount == 1
    assert b.run(f"UPDATE {t} SET v = 'b' WHERE id = %s", (1,)).rowcount == 1  # does not wait for A
    b.conn.commit()  # B commits first: B wins
    assert a.rows(f"SELECT v FROM {t} WHERE id = %s", (2,)) == [("v2",)]  # A goes on until its COMMIT
    with pytest.raises(psycopg.errors.SerializationFailure) as exc:
        a.conn.commit()
    _conflict(exc)
    assert admin.execute(f"SELECT v FROM {t} WHERE id = 1").fetchone() == ("b",)
    # both sessions are usable again, and disjoint rows never conflict
    a.run(f"UPDATE {t} SET v = 'a2' WHERE id = 1")
    b.run(f"UPDATE {t} SET v = 'b2' WHERE id = 2")
    a.conn.commit()
    b.conn.commit()
    assert admin.execute(f"SELECT v FROM {t} ORDER BY id").fetchall() == [("a2",), ("b2",)]


@paths
def test_first_toucher_may_still_commit_first(pair: tuple[Client, Client, Any]) -> None:
    import psycopg

    a, b, admin = pair
    t = _table(admin)
    a.run(f"UPDATE {t} SET v = 'a' WHERE id = 1")
    b.run(f"UPDATE {t} SET v = 'b' WHERE id = 1")
    a.run(f"UPDATE {t} SET v = 'a+' WHERE id = 2")  # A's row 1 write is still its own
    assert a.rows(f"SELECT v FROM {t} ORDER BY id") == [("a",), ("a+",)]
    a.conn.commit()
    with pytest.raises(psycopg.errors.SerializationFailure) as exc:
        b.conn.commit()
    _conflict(exc)
    assert admin.execute(f"SELECT v FROM {t} ORDER BY id").fetchall() == [("a",), ("a+",)]


@paths
def test_select_for_update_loses_to_a_writer_that_commits_first(pair: tuple[Client, Client, Any]) -> None:
    import psycopg

    a, b, admin = pair
    t = _table(admin)
    assert a.rows(f"SELECT v FROM {t} WHERE id = 1 FOR UPDATE") == [("v1",)]
    b.run(f"UPDATE {t} SET v = 'b' WHERE id = 1")
    b.conn.commit()
    with pytest.raises(psycopg.errors.SerializationFailure) as exc:
        a.conn.commit()
    _conflict(exc)
    # and the other way round: the writer commits second and loses
    b.run(f"UPDATE {t} SET v = 'b2' WHERE id = 1")
    assert a.rows(f"SELECT v FROM {t} WHERE id = 1 FOR UPDATE") == [("b",)]
    a.conn.commit()
    with pytest.raises(psycopg.errors.SerializationFailure) as exc:
        b.conn.commit()
    _conflict(exc)


@paths
def test_write_to_a_row_committed_since_the_snapshot_fails_at_commit(pair: tuple[Client, Client, Any]) -> None:
    import psycopg

    a, b, admin = pair
    t = _table(admin)
    assert a.rows(f"SELECT count(*) FROM {t}") == [(2,)]  # A's snapshot
    b.run(f"UPDATE {t} SET v = 'b' WHERE id = 1")
    b.conn.commit()
    assert a.run(f"UPDATE {t} SET v = 'a' WHERE id = %s", (1,)).rowcount == 1  # not at the UPDATE
    a.run(f"UPDATE {t} SET v = 'a' WHERE id = %s", (2,))
    assert a.rows(f"SELECT v FROM {t} WHERE id = 2") == [("a",)]  # later statements still run
    with pytest.raises(psycopg.errors.SerializationFailure) as exc:
        a.conn.commit()
    _conflict(exc)
    assert admin.execute(f"SELECT v FROM {t} ORDER BY id").fetchall() == [("b",), ("v2",)]


def test_auto_prepared_statement_conflicts_at_commit(sandbox: Any, cluster: str) -> None:
    """psycopg prepares a statement from its 6th execution: the conflict still comes at COMMIT."""
    import psycopg

    with sandbox.connect(cluster) as a, sandbox.connect(cluster) as b, \
            sandbox.connect(cluster, autocommit=True) as admin:
        t = _table(admin)
        sql = f"UPDATE {t} SET v = %s WHERE id = %s"
        for i in range(8):
            a.execute("SELECT 1")  # A's snapshot
            b.execute(sql, (f"b{i}", 1))
            b.commit()
            cur = a.execute(sql, (f"a{i}", 1))
            assert cur.rowcount == 1
            with pytest.raises(psycopg.errors.SerializationFailure) as exc:
                a.commit()
            _conflict(exc)
        assert a.prepared_max is not None and len(a._prepared._names) >= 1  # it was prepared
        assert admin.execute(f"SELECT v FROM {t} WHERE id = 1").fetchone() == ("b7",)


def test_pipelined_conflict_comes_at_commit(sandbox: Any, cluster: str) -> None:
    import psycopg

    with sandbox.connect(cluster) as a, sandbox.connect(cluster) as b, \
            sandbox.connect(cluster, autocommit=True) as admin:
        t = _table(admin)
        a.execute("SELECT 1")
        b.execute(f"UPDATE {t} SET v = 'b' WHERE id = 1")
        b.commit()
        with a.pipeline():
            c1 = a.execute(f"UPDATE {t} SET v = 'a' WHERE id = %s", (1,))
            c2 = a.execute(f"UPDATE {t} SET v = 'a' WHERE id = %s", (2,))
            c3 = a.execute(f"SELECT v FROM {t} WHERE id = %s", (2,))
        assert (c1.rowcount, c2.rowcount, c3.fetchall()) == (1, 1, [("a",)])
        with pytest.raises(psycopg.errors.SerializationFailure) as exc:
            a.commit()
        _conflict(exc)


@paths
def test_aborted_transaction_answers_25p02_before_any_dialect_error(pair: tuple[Client, Client, Any]) -> None:
    import psycopg

    a, _b, admin = pair
    t = _table(admin)
    with pytest.raises(psycopg.errors.DivisionByZero):
        a.run("SELECT 1 / 0")
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        a.run(f"TRUNCATE {t}")
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        a.run("SAVEPOINT s")
    a.conn.rollback()


@paths
def test_transaction_rules_apply_at_each_execution(pair: tuple[Client, Client, Any]) -> None:
    """A statement prepared in one transaction is checked against the transaction it runs in."""
    import psycopg

    a, _b, admin = pair
    t = _table(admin)
    insert = f"INSERT INTO {t} VALUES (%s, 'x')"
    a.run(insert, (10,))
    a.conn.commit()
    a.run(f"CREATE TABLE {t}_2 (id int PRIMARY KEY)")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="ddl and dml are not supported"):
        a.run(insert, (11,))
    a.conn.rollback()
    assert admin.execute(f"SELECT count(*) FROM {t}").fetchone() == (3,)


@pytest.mark.parametrize("pair", PATHS, indirect=True)
@pytest.mark.parametrize("ddl", ["ALTER TABLE {t} ADD COLUMN extra int", "DROP INDEX {t}_v"])
def test_ddl_does_not_wait_for_an_idle_reader(pair: tuple[Client, Client, Any], ddl: str) -> None:
    import psycopg

    a, b, admin = pair
    t = _table(admin)
    if "INDEX" in ddl:
        job = admin.execute(f"CREATE INDEX ASYNC {t}_v ON {t} (v)").fetchone()[0]
        admin.execute("CALL sys.wait_for_job(%s)", (job,))
    # two readers idle in their transactions
    assert a.rows(f"SELECT v FROM {t} WHERE v = %s", ("v1",)) == [("v1",)]
    assert b.rows(f"SELECT v FROM {t} WHERE id = %s", (2,)) == [("v2",)]
    admin.execute(ddl.format(t=t))  # does not wait, does not fail
    assert a.rows(f"SELECT count(*) FROM {t}") == [(2,)]  # reads still run
    with pytest.raises(psycopg.errors.SerializationFailure) as exc:
        a.run(f"UPDATE {t} SET v = 'a' WHERE id = 1")
    _conflict(exc, OC001)
    a.conn.rollback()
    with pytest.raises(psycopg.errors.SerializationFailure) as exc:
        b.conn.commit()
    _conflict(exc, OC001)
    b.run(f"UPDATE {t} SET v = 'b' WHERE id = 1")  # a new transaction is fine
    b.conn.commit()


def test_index_build_is_not_stalled_by_an_idle_reader(sandbox: Any, cluster: str) -> None:
    with sandbox.connect(cluster) as reader, sandbox.connect(cluster, autocommit=True) as admin:
        t = _table(admin, rows=50)
        assert reader.execute(f"SELECT count(*) FROM {t}").fetchone() == (50,)
        job = admin.execute(f"CREATE INDEX ASYNC {t}_v ON {t} (v)").fetchone()[0]
        admin.execute("CALL sys.wait_for_job(%s)", (job,))
        assert admin.execute("SELECT status FROM sys.jobs WHERE job_id = %s", (job,)).fetchone() == ("completed",)
        reader.commit()
