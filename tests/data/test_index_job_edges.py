"""Index builds and job waits at their edges, on the local DSQL sandbox: what a failed UNIQUE build
leaves behind, checks before submitting, IF NOT EXISTS, a drop that meets a conflict, waits whose
connection is killed, and repair over duplicate keys."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.data.conftest import invoke, uniq

pytestmark = pytest.mark.sandbox


def _until(cond: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- a failed UNIQUE build --------------------------------------------------------------------------

def test_failed_unique_build_leaves_an_invalid_index_that_still_rejects_duplicates(sb, admin):
    tbl = uniq("fu")
    name = f"{tbl}_code_uq"
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, code int, note text)")
    admin.execute(f"INSERT INTO {tbl} SELECT g, g % 10, 'x' FROM generate_series(1, 50) g")
    r = invoke(["index", "build", tbl, "code", "--unique", "--name", name, "--wait", "--timeout", "120"])
    assert r.exit_code == 1, r.stderr
    # the hint says what DSQL does with the failed index, and the sandbox does the same
    assert f"the invalid index public.{name} is left behind" in r.stderr
    assert "still rejects writes that would duplicate a key" in r.stderr
    assert admin.execute("SELECT indisvalid, indisunique FROM pg_index WHERE indexrelid = %s::regclass",
                         [f"public.{name}"]).fetchone() == (False, True)
    with pytest.raises(psycopg.errors.UniqueViolation):
        admin.execute(f"INSERT INTO {tbl} VALUES (1000, 3, 'dup of an existing key')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        admin.execute(f"UPDATE {tbl} SET code = 4 WHERE id = 1")
    admin.execute(f"INSERT INTO {tbl} VALUES (1001, 77, 'a new key')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        admin.execute(f"INSERT INTO {tbl} VALUES (1002, 77, 'and its duplicate')")
    admin.execute(f"UPDATE {tbl} SET note = 'y' WHERE id = 1")  # rows are still writable
    # queries never use it
    plan = "\n".join(r[0] for r in admin.execute(f"EXPLAIN SELECT * FROM {tbl} WHERE code = 3").fetchall())
    assert name not in plan
    assert invoke(["index", "drop", name, "--yes"]).exit_code == 0
    admin.execute(f"INSERT INTO {tbl} VALUES (1003, 3, 'fine once dropped')")


# -- checks before submitting ----------------------------------------------------------------------

def test_build_on_a_missing_column_is_refused_before_any_job(sb, admin):
    tbl = uniq("mc")
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, email text)")
    before = admin.execute("SELECT count(*) FROM sys.jobs WHERE job_type = 'INDEX_BUILD'").fetchone()[0]
    r = invoke(["index", "build", tbl, "emial", "--name", f"{tbl}_x", "--wait", "--timeout", "60"])
    assert r.exit_code == 252, r.stderr
    assert f"table public.{tbl} has no column emial" in r.stderr and "email" in r.stderr
    inc = invoke(["index", "build", tbl, "email", "--include", "nope"])
    assert inc.exit_code == 252 and "has no column nope" in inc.stderr
    nt = invoke(["index", "build", f"{tbl}_missing", "email"])
    assert nt.exit_code != 0 and f"table public.{tbl}_missing does not exist" in nt.stderr
    assert "internal error" not in r.stderr + inc.stderr + nt.stderr
    after = admin.execute("SELECT count(*) FROM sys.jobs WHERE job_type = 'INDEX_BUILD'").fetchone()[0]
    assert after == before


def test_failed_build_hint_names_only_an_index_that_exists(sb, admin, monkeypatch):
    """A build can still fail without leaving an index (its column dropped between the check and
    the run): the hint must not name one."""
    import dsqlops.data.indexes as indexes

    tbl = uniq("gone")
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, v int)")
    monkeypatch.setattr(indexes, "preflight", lambda *a, **k: False, raising=False)  # the check saw it
    r = invoke(["index", "build", tbl, "nosuch", "--name", f"{tbl}_x", "--wait", "--timeout", "60"])
    assert r.exit_code == 1, r.stderr
    assert "does not exist" in r.stderr
    assert f"public.{tbl}_x is left behind" not in r.stderr
    assert "no index was left behind" in r.stderr


# -- IF NOT EXISTS -----------------------------------------------------------------------------------

def _index_jobs(admin: Any, qualified: str) -> int:
    return int(admin.execute("SELECT count(*) FROM sys.jobs WHERE job_type = 'INDEX_BUILD' AND object_name = %s",
                             [qualified]).fetchone()[0])


def test_if_not_exists_on_an_existing_index_starts_no_job(sb, admin):
    tbl = uniq("ine")
    name = f"{tbl}_v_idx"
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, v int)")
    first = invoke(["-o", "json", "index", "build", tbl, "v", "--name", name, "--wait", "--timeout", "60"])
    assert first.exit_code == 0, first.stderr
    assert _index_jobs(admin, f"public.{name}") == 1
    again = invoke(["-o", "json", "index", "build", tbl, "v", "--name", name, "--if-not-exists", "--wait"])
    assert again.exit_code == 0, again.stderr
    out = again.json()
    assert out["status"] == "exists" and out["job_id"] is None and out["index"] == f"public.{name}"
    assert "already exists" in again.stderr
    assert _index_jobs(admin, f"public.{name}") == 1


def test_sandbox_create_index_async_if_not_exists_returns_no_job(sb, admin):
    tbl = uniq("ines")
    name = f"{tbl}_v_idx"
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, v int)")
    job = admin.execute(f"CREATE INDEX ASYNC {name} ON {tbl} (v)").fetchone()[0]
    # while it is still being built, and once it is there, IF NOT EXISTS records nothing
    assert admin.execute(f"CREATE INDEX ASYNC IF NOT EXISTS {name} ON {tbl} (v)").fetchone() == (None,)
    admin.execute("CALL sys.wait_for_job(%s)", [job])
    assert admin.execute(f"CREATE INDEX ASYNC IF NOT EXISTS {name} ON {tbl} (v)").fetchone() == (None,)
    assert _index_jobs(admin, f"public.{name}") == 1
    with pytest.raises(psycopg.errors.DuplicateTable):
        admin.execute(f"CREATE INDEX ASYNC {name} ON {tbl} (v)")


# -- dropping a build while a transaction holds the table ---------------------------------------------

def test_index_drop_during_a_build_retries_the_conflict_and_reports_the_job_cancelled(sb, cluster, admin):
    tbl = uniq("dx")
    name = f"{tbl}_v_idx"
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, v int)")
    admin.execute(f"INSERT INTO {tbl} SELECT g, g FROM generate_series(1, 200) g")
    holder = sb.superuser_connect(cluster, sslmode="disable")
    # an open transaction that has written the table: the build cannot take its lock in one go, so it
    # runs concurrently and waits for this writer
    holder.execute(f"UPDATE public.{tbl} SET v = v WHERE id = 1")
    result: list[Any] = []
    try:
        started = invoke(["-o", "json", "index", "build", tbl, "v", "--name", name])
        assert started.exit_code == 0, started.stderr
        job_id = started.json()["job_id"]
        # the build runs (it waits for the writer), so the drop cancels a running build
        _until(lambda: admin.execute("SELECT status FROM sys.jobs WHERE job_id = %s", [job_id]).fetchone()[0]
               == "processing", "the build to start")
        t = threading.Thread(target=lambda: result.append(invoke(["-o", "json", "index", "drop", name, "--yes"])))
        t.start()
        # the first DROP cancelled the build and then conflicted with the writer (OC001)
        _until(lambda: admin.execute("SELECT status FROM sys.jobs WHERE job_id = %s", [job_id]).fetchone()[0]
               != "processing" or not t.is_alive(), "the build to be cancelled")
    finally:
        holder.rollback()
        holder.close()
    t.join(60)
    (r,) = result
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["dropped"] is True and out["build_job"] == job_id and out["build_job_status"] == "cancelled"
    assert f"build job {job_id} cancelled" in r.stderr
    assert admin.execute("SELECT to_regclass(%s)", [f"public.{name}"]).fetchone() == (None,)
    assert admin.execute("SELECT status FROM sys.jobs WHERE job_id = %s", [job_id]).fetchone() == ("cancelled",)


# -- repair over duplicate keys ------------------------------------------------------------------------

def test_repair_lists_the_duplicate_keys_and_does_not_rebuild_into_the_same_failure(sb, cluster, admin):
    tbl = uniq("rp")
    bad, good = f"{tbl}_code_uq", f"{tbl}_n_idx"
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, code int, n int)")
    admin.execute(f"INSERT INTO {tbl} SELECT g, CASE WHEN g <= 5 THEN 7 WHEN g <= 8 THEN 9 ELSE g END, g "
                  "FROM generate_series(1, 40) g")
    admin.execute(f"INSERT INTO {tbl} VALUES (100, NULL, 0), (101, NULL, 0)")  # NULLs do not collide
    assert invoke(["index", "build", tbl, "code", "--unique", "--name", bad, "--wait"]).exit_code == 1
    # an invalid index that can be rebuilt as it is (say, a plain build interrupted)
    job = admin.execute(f"CREATE INDEX ASYNC {good} ON {tbl} (n)").fetchone()[0]
    admin.execute("CALL sys.wait_for_job(%s)", [job])
    su = sb.superuser_connect(cluster, sslmode="disable")
    try:
        su.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", [f"public.{good}"])
        su.commit()
    finally:
        su.close()
    dry = invoke(["-o", "json", "index", "repair", "--table", tbl, "--dry-run"])
    assert dry.exit_code == 0, dry.stderr
    plan = {p["index"]: p for p in dry.json()}
    assert plan[f"public.{bad}"]["action"] == "fix duplicates first"
    assert plan[f"public.{bad}"]["duplicate_keys"] == 2
    assert plan[f"public.{bad}"]["duplicates"] == [{"key": {"code": 7}, "rows": 5}, {"key": {"code": 9}, "rows": 4}]
    assert plan[f"public.{good}"]["action"] == "rebuild"
    assert "(code)=(7): 5 rows" in dry.stderr
    r = invoke(["index", "repair", "--table", tbl, "--yes", "--wait", "--timeout", "120", "--max-duplicates", "1"])
    assert r.exit_code == 1, r.stderr
    assert "(code)=(7): 5 rows" in r.stderr and "(code)=(9)" not in r.stderr and "most repeated shown" in r.stderr
    assert f"not rebuilt: public.{bad}" in r.stderr
    # the plain index was rebuilt; the UNIQUE one was left alone (not dropped, not failed again)
    valid = dict(admin.execute("SELECT c.relname, x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = "
                               "x.indexrelid WHERE x.indrelid = %s::regclass", [f"public.{tbl}"]).fetchall())
    assert valid[good] is True and valid[bad] is False
    assert _index_jobs(admin, f"public.{bad}") == 1
    admin.execute(f"DELETE FROM {tbl} WHERE code IN (7, 9) AND id NOT IN (1, 6)")
    fixed = invoke(["index", "repair", "--table", tbl, "--yes", "--wait", "--timeout", "120"])
    assert fixed.exit_code == 0, fixed.stderr
    assert invoke(["-o", "json", "index", "list", "--invalid", "--table", tbl]).json() == []



# -- F11: a wait whose connection is killed ------------------------------------------------------------

_WAITING_SQL = {"call": "CALL sys.wait_for_job%", "poll": "SELECT job_id, status, details, job_type%"}


@contextlib.contextmanager
def _wait_on_a_held_build(sb: Any, cluster: str, admin: Any, prefix: str,
                          method: str) -> Iterator[tuple[Any, threading.Thread, list[Any]]]:
    """An index build held back by a table lock, and ``job wait`` on it in a thread. Yields a
    superuser connection (to find and kill sessions), the thread and its result; on leaving,
    releases the lock and checks that the wait saw the job complete."""
    tbl = uniq(prefix)
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, v int)")
    lock = sb.superuser_connect(cluster, sslmode="disable")
    lock.execute(f"LOCK TABLE public.{tbl} IN EXCLUSIVE MODE")  # the build waits until released
    killer = sb.superuser_connect(cluster, sslmode="disable", autocommit=True)
    result: list[Any] = []
    try:
        job_id = admin.execute(f"CREATE INDEX ASYNC {tbl}_v_idx ON {tbl} (v)").fetchone()[0]
        t = threading.Thread(target=lambda: result.append(
            invoke(["-o", "json", "job", "wait", job_id, "--timeout", "120", "--method", method])))
        t.start()
        yield killer, t, result
    finally:
        lock.rollback()
        lock.close()
        killer.close()
    t.join(120)
    (r,) = result
    assert r.exit_code == 0, r.stderr
    (row,) = r.json()
    assert row["job_id"] == job_id and row["status"] == "completed" and row["method"] == method


@pytest.mark.parametrize("method", ["call", "poll"])
def test_f11_job_wait_reconnects_after_pg_terminate_backend(sb, cluster, admin, method):
    with _wait_on_a_held_build(sb, cluster, admin, "f11", method) as (killer, t, result):

        def waiters() -> list[int]:
            return [p for (p,) in killer.execute(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                [_WAITING_SQL[method]]).fetchall()]

        first = _until(waiters, "the wait's session")
        killer.execute("SELECT pg_terminate_backend(p) FROM unnest(%s::int[]) p", [first])
        # a new session (a fresh token) takes the wait over
        _until(lambda: [p for p in waiters() if p not in first] or not t.is_alive(), "the wait to reconnect")
        assert t.is_alive(), result and result[0].stderr


class _ResettingProxy:
    """A TCP relay in front of the sandbox whose connections can be reset (RST) on demand."""

    def __init__(self, port: int) -> None:
        import socket

        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.pairs: list[tuple[Any, Any]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.pairs.append((client, upstream))
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def reset_all(self) -> int:
        import socket
        import struct

        with self.lock:
            pairs, self.pairs = self.pairs, []
        for client, upstream in pairs:
            # linger 0: the close that follows sends RST. A blocked recv() keeps a socket open, so
            # wake the pumps first (shutdown); the pump that closes the client socket resets it.
            for sock, how, linger in ((client, socket.SHUT_RD, True), (upstream, socket.SHUT_RDWR, False)):
                try:
                    if linger:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(how)
                except OSError:
                    pass
        return len(pairs)

    def close(self) -> None:
        self.listener.close()
        self.reset_all()


@pytest.mark.parametrize("method", ["call", "poll"])
def test_f11_job_wait_reconnects_after_a_connection_reset(sb, cluster, admin, method, monkeypatch):
    import os

    proxy = _ResettingProxy(int(os.environ["DSQLOPS_PORT"]))
    monkeypatch.setenv("DSQLOPS_PORT", str(proxy.port))
    try:
        with _wait_on_a_held_build(sb, cluster, admin, "f11r", method) as (killer, t, result):
            _until(lambda: killer.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s",
                                          [_WAITING_SQL[method]]).fetchone()[0], "the wait's session")
            assert proxy.reset_all() >= 1
            _until(lambda: proxy.accepted >= 2 or not t.is_alive(), "the wait to reconnect")
            time.sleep(0.3)
            assert t.is_alive(), result and result[0].stderr
    finally:
        proxy.close()


class _DeadConn:
    """A connection whose session was killed: every statement fails as psycopg reports it."""

    autocommit = True
    closed = False
    broken = True

    def execute(self, *_a: Any, **_k: Any) -> Any:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def rollback(self) -> None:
        pass


@pytest.mark.parametrize("method", ["call", "poll"])
def test_f11_job_wait_reconnects_until_the_timeout_and_keeps_the_job_id(method):
    from dsqlops.data.jobs import wait_for_job

    job_id = "a" * 26
    calls: list[str] = []

    def connect() -> Any:
        calls.append("connect")
        if len(calls) == 1:
            return _DeadConn()
        raise psycopg.OperationalError("connection refused")

    res = wait_for_job(connect, job_id, timeout=0.6, method=method, poll_interval=0.05)
    assert res.job_id == job_id and res.timed_out is True and res.succeeded is False
    assert "connection lost" in (res.details or "") and "connection refused" in (res.details or "")
    assert len(calls) >= 3  # it kept trying to reconnect until the timeout


def test_repair_duplicates_follow_expression_keys_predicate_and_nulls_not_distinct(sb, admin):
    tbl = uniq("rpx")
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, email text, active boolean, team int)")
    admin.execute(f"INSERT INTO {tbl} VALUES (1, 'A@x', true, NULL), (2, 'a@x', true, NULL), "
                  "(3, 'b@x', true, 1), (4, 'B@x', false, 1)")
    expr = invoke(["index", "build", tbl, "(lower(email))", "--unique", "--where", "active", "--name",
                   f"{tbl}_email_uq", "--wait"])
    assert expr.exit_code == 1, expr.stderr
    nnd = invoke(["index", "build", tbl, "team", "--unique", "--nulls-not-distinct", "--name", f"{tbl}_team_uq",
                  "--wait"])
    assert nnd.exit_code == 1, nnd.stderr
    dry = invoke(["-o", "json", "index", "repair", "--table", tbl, "--dry-run"])
    assert dry.exit_code == 0, dry.stderr
    plan = {p["index"]: p["duplicates"] for p in dry.json()}
    # b@x/B@x is not a duplicate: one of the rows is outside the predicate
    assert plan[f"public.{tbl}_email_uq"] == [{"key": {"lower(email)": "a@x"}, "rows": 2}]
    # under NULLS NOT DISTINCT the two NULL teams collide too
    assert plan[f"public.{tbl}_team_uq"] == [{"key": {"team": 1}, "rows": 2}, {"key": {"team": None}, "rows": 2}]
