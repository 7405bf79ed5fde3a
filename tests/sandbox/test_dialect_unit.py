"""The DSQL dialect without a server: tokenizer, classification, rewrites, refusals, OCC state."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsqlops.sandbox import sqlclass
from dsqlops.sandbox.dialect import OC000, OC001, DsqlDialect
from dsqlops.sandbox.hooks import Fail, Forward, Session, SqlError


def session() -> Session:
    return Session(cluster_id="c", region="us-east-1", database="postgres", user="admin", iam_arn=None)


def run(sql: str, s: Session | None = None, *, extended: bool = True) -> Forward | Fail:
    return DsqlDialect().statement(s or session(), sql, extended=extended)


def failure(sql: str, **kw: object) -> SqlError:
    action = run(sql, **kw)  # type: ignore[arg-type]
    assert isinstance(action, Fail), (sql, action)
    return action.error


# -- tokenizer -----------------------------------------------------------------------------------
def test_tokenizer_keeps_quotes_comments_and_dollar_bodies_whole() -> None:
    sql = ("SELECT 'a;b''c', E'x\\'y', \"we;ird\"\"id\", $$ ; $$, $tag$ $$ ; $tag$ -- c;\n"
           "/* outer /* inner ; */ */ $1 FROM t; TRUNCATE t")
    stmts = sqlclass.split_statements(sql)
    assert [s.kw(0) for s in stmts] == ["SELECT", "TRUNCATE"]
    kinds = [t.kind for t in stmts[0].tokens]
    assert kinds.count(sqlclass.STRING) == 4 and sqlclass.QIDENT in kinds and sqlclass.PARAM in kinds
    assert stmts[0].tokens[5].ident == 'we;ird"id'


def test_tokenizer_reports_unterminated_input() -> None:
    for bad in ("SELECT 'abc", 'SELECT "x', "SELECT $$ body", "SELECT /* never"):
        with pytest.raises(sqlclass.SqlSyntaxError):
            sqlclass.tokenize(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="SELCTUPDAIN ;'\"$-/*()\n.,=1xE\\", max_size=60))
def test_any_text_is_either_tokenized_faithfully_or_refused(text: str) -> None:
    try:
        toks = sqlclass.tokenize(text)
    except sqlclass.SqlSyntaxError:
        return
    for t in toks:
        assert text[t.start:t.end] == t.text
    # and the dialect never raises on it
    action = DsqlDialect().statement(session(), text, extended=False)
    assert isinstance(action, Forward | Fail)


def test_classification() -> None:
    def kind(sql: str) -> str:
        return sqlclass.classify(sqlclass.split_statements(sql)[0])

    assert kind("create table t (id int)") == sqlclass.DDL
    assert kind("AWS IAM GRANT r TO 'arn'") == sqlclass.DDL
    assert kind("insert into t values (1)") == sqlclass.DML
    assert kind("WITH x AS (DELETE FROM t RETURNING 1) SELECT * FROM x") == sqlclass.DML
    assert kind("select 'insert'") == sqlclass.READ
    assert kind("WITH x AS (SELECT * FROM t FOR NO KEY UPDATE) SELECT * FROM x") == sqlclass.READ
    assert kind("COPY t TO STDOUT") == sqlclass.READ
    assert kind("begin") == sqlclass.TXN
    assert kind("SELECT 1 INTO newt FROM t") == sqlclass.DDL


# -- refusals (DSQL's recorded wording) ------------------------------------------------------------
@pytest.mark.parametrize(("sql", "code", "message"), [
    ("CREATE INDEX i ON t (v)", "0A000", "unsupported mode. please use CREATE INDEX ASYNC."),
    ("create unique index concurrently i on t (v)", "0A000", "unsupported mode. please use CREATE INDEX ASYNC."),
    ("CREATE INDEX ASYNC public.i ON t (v)", "42601", 'syntax error at or near "."'),
    ("TRUNCATE TABLE t", "0A000", "unsupported statement: Truncate"),
    ("CREATE TEMP TABLE t (id int)", "0A000", "TEMPORARY or TEMP table not supported for CREATE TABLE"),
    ("CREATE TABLE t (id serial PRIMARY KEY)", "42704", 'type "serial" does not exist'),
    ("CREATE TABLE t (v money)", "0A000", "datatype money not supported"),
    ("CREATE TABLE t (v int[])", "0A000", "datatype integer[] not supported"),
    ("CREATE TABLE t AS SELECT 1", "0A000", "unsupported statement: CreateTableAs"),
    ("CREATE TYPE p AS (a int)", "0A000", "unsupported statement: CompositeType"),
    ("CREATE TYPE m AS ENUM ('a')", "0A000", "CREATE TYPE not supported"),
    ("CREATE SEQUENCE s", "0A000", "CREATE SEQUENCE is not supported without an explicit cache size. please "
                                   "define CACHE greater than or equal to 65536 or equal to 1"),
    ("CREATE SEQUENCE s CACHE 100", "0A000", "CREATE SEQUENCE is not supported without an explicit cache size. "
                                             "please define CACHE greater than or equal to 65536 or equal to 1"),
    ("CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY (CACHE 1))", "0A000",
     "datatype integer not supported, identity column type must be bigint"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$", "0A000",
     "CREATE FUNCTION with language plpgsql not supported"),
    ("SELECT * FROM t FOR SHARE", "0A000", "locking clauses other than FOR UPDATE/FOR KEY SHARE are not supported"),
    ("SAVEPOINT a", "0A000", "unsupported transaction statement: SAVEPOINT"),
    ("ROLLBACK TO SAVEPOINT a", "0A000", "unsupported transaction statement: ROLLBACK TO"),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE", "0A000", "Unsupported isolation level: SERIALIZABLE"),
    ("SET TRANSACTION READ ONLY", "0A000", 'setting configuration parameter "TRANSACTION" not supported'),
    ("SET default_transaction_isolation = 'read committed'", "0A000", "Unsupported isolation level: READ COMMITTED"),
    ("ALTER TABLE t ADD COLUMN c int DEFAULT 7", "0A000", "ALTER TABLE ADD COLUMN with constraint not supported"),
    ("ALTER TABLE t ADD CONSTRAINT u UNIQUE (v)", "0A000", "unsupported ALTER TABLE ADD CONSTRAINT statement"),
    ("ALTER TABLE t ADD CONSTRAINT c CHECK (v > 0)", "0A000", "unsupported ALTER TABLE ADD CONSTRAINT statement"),
    ("ALTER TABLE t ALTER COLUMN a TYPE text", "0A000",
     "unsupported ALTER TABLE ALTER COLUMN ... SET DATA TYPE statement"),
    ("ALTER TABLE t VALIDATE CONSTRAINT c", "0A000", "unsupported ALTER TABLE VALIDATE CONSTRAINT statement"),
    ("VACUUM t", "0A000", "unsupported VACUUM statement"),
    ("SHOW lc_collate", "42704", 'unrecognized configuration parameter "lc_collate"'),
    ("GRANT USAGE ON SCHEMA public TO r", "0A000", "feature not supported on system entity"),
    ("AWS IAM GRANT r TO 'arn:aws:iam::12:role/x'", "22023", "invalid IAM ARN: arn:aws:iam::12:role/x"),
    ("SET transaction_isolation TO 'repeatable read'", "0A000",
     'setting configuration parameter "default_transaction_isolation" not supported'),
    ("SELECT to_tsvector('english', 'a b')", "42704", 'text search configuration "english" does not exist'),
    ("SELECT circle(point(0, 0), 1)", "0A000", "datatype circle not supported"),
    ("SELECT * FROM t TABLESAMPLE SYSTEM (10)", "0A000", "TABLESAMPLE clause not supported"),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", "0A000", "unsupported statement type: MERGE"),
])
def test_refusals_use_dsql_sqlstate_and_wording(sql: str, code: str, message: str) -> None:
    err = failure(sql)
    assert (err.sqlstate, err.message) == (code, message)


@pytest.mark.parametrize("sql", [
    "SELECT 'TRUNCATE t'", "SELECT 1 -- TRUNCATE t", "/* CREATE INDEX i ON t (v) */ SELECT 1",
    "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY (CACHE 65536) PRIMARY KEY, v text)",
    "CREATE SEQUENCE s CACHE 1", "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (p) REFERENCES q(id) NOT VALID",
    "SELECT * FROM t FOR UPDATE", "SELECT * FROM t FOR KEY SHARE", "BEGIN ISOLATION LEVEL REPEATABLE READ",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$", "CREATE DOMAIN d AS int",
])
def test_supported_statements_pass_unchanged(sql: str) -> None:
    action = run(sql)
    assert isinstance(action, Forward) and action.sql == sql and action.tags is None


# -- rewrites --------------------------------------------------------------------------------------
def test_create_index_async_becomes_a_job_with_the_dsql_tag() -> None:
    action = run("CREATE UNIQUE INDEX ASYNC IF NOT EXISTS ix ON public.t (lower(v)) INCLUDE (id) "
                 "NULLS NOT DISTINCT WHERE v <> ''")
    assert isinstance(action, Forward) and action.tags == ["CREATE INDEX"]
    assert action.sql.startswith("SELECT sys._create_index_async('public.t'::regclass, 'ix', ")
    assert "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS @@INDEX_NAME@@ ON @@TABLE@@ (lower(v)) INCLUDE (id) " \
           "NULLS NOT DISTINCT WHERE v <> ''" in action.sql
    assert action.sql.endswith(", true, false, ARRAY[]::text[]) AS job_id")


def test_unnamed_async_index_gets_postgres_style_name() -> None:
    action = run("CREATE INDEX ASYNC ON baseline_idx (value, (lower(x)))")
    assert isinstance(action, Forward)
    assert "'baseline_idx_value_expr_idx'" in action.sql
    assert action.sql.endswith(", false, true, ARRAY['value']::text[]) AS job_id")


def test_async_index_refuses_sort_order_and_operator_classes() -> None:
    assert failure("CREATE INDEX ASYNC i ON t (v DESC)").sqlstate == "0A000"
    assert failure("CREATE INDEX ASYNC i ON t (v text_pattern_ops)").sqlstate == "0A000"
    ok = run('CREATE INDEX ASYNC i ON t (v NULLS FIRST, "W" COLLATE "C")')
    assert isinstance(ok, Forward) and ok.sql.endswith("ARRAY['v', 'W']::text[]) AS job_id")


def test_alter_table_async_validate_constraint() -> None:
    action = run("ALTER TABLE ASYNC IF EXISTS s.t VALIDATE CONSTRAINT fk")
    assert isinstance(action, Forward) and action.tags == ["ALTER TABLE"]
    assert action.sql == "SELECT sys._validate_constraint_async(to_regclass('s.t'), 'fk') AS job_id"


def test_aws_iam_grant_and_revoke() -> None:
    arn = "arn:aws:iam::123456789012:role/app"
    g = run(f"AWS IAM GRANT App_Role TO '{arn}'")
    r = run(f'aws iam revoke "App_Role" from \'{arn}\'')
    assert isinstance(g, Forward) and g.sql == f"CALL sys._iam_grant('app_role', '{arn}')"
    assert g.tags == ["AWS IAM GRANT"]
    assert isinstance(r, Forward) and r.sql == f"CALL sys._iam_revoke('App_Role', '{arn}')"


def test_aws_iam_grant_refuses_an_arn_of_another_partition() -> None:
    cn = "arn:aws-cn:iam::123456789012:role/app"
    err = failure(f"AWS IAM GRANT app TO '{cn}'")  # the session's cluster is in us-east-1 (aws)
    assert (err.sqlstate, err.message) == ("22023", f"invalid IAM ARN: {cn}")
    china = Session(cluster_id="c", region="cn-north-1", database="postgres", user="admin", iam_arn=None)
    assert isinstance(run(f"AWS IAM GRANT app TO '{cn}'", china), Forward)


def test_server_version_and_settings_report_dsql_values() -> None:
    show = run("SHOW server_version")
    assert isinstance(show, Forward) and show.tags == ["SHOW"] and "'16.15'" in show.sql
    fn = run("SELECT current_setting('server_version'), version(), current_database(), x.version()")
    assert isinstance(fn, Forward)
    assert fn.sql == ("SELECT sys.current_setting('server_version'), sys.version(), sys.current_database(), "
                      "x.version()")


def test_add_column_storage_is_rewritten_for_postgres_15() -> None:
    action = run("ALTER TABLE t ADD COLUMN d text STORAGE PLAIN")
    assert isinstance(action, Forward)
    assert action.sql == "ALTER TABLE t ADD COLUMN d text, ALTER COLUMN d SET STORAGE PLAIN"


def test_drop_primary_key_column_is_checked_in_the_backend() -> None:
    action = run("ALTER TABLE t DROP COLUMN id")
    assert isinstance(action, Forward) and action.tags == ["ALTER TABLE"]
    assert "cannot drop primary key column id" in action.sql and action.sql.startswith("DO ")


def test_unique_using_index_of_a_pending_build_is_not_valid() -> None:
    action = run("ALTER TABLE t ADD CONSTRAINT u UNIQUE USING INDEX t_uq")
    assert isinstance(action, Forward) and action.tags == ["ALTER TABLE"]
    assert "sys.jobs" in action.sql and 'index "t_uq" is not valid' in action.sql


def test_drop_index_also_cancels_async_builds() -> None:
    action = run('DROP INDEX CONCURRENTLY IF EXISTS a, s."B" CASCADE')
    assert isinstance(action, Forward) and action.tags == ["DROP INDEX"]
    assert "sys._cancel_index_builds(ARRAY['a', 's.\"B\"']::text[], current_schemas(false))" in action.sql
    assert "'DROP INDEX IF EXISTS ' || keep || ' CASCADE'" in action.sql


def test_explain_analyze_verbose_goes_through_the_dpu_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    from dsqlops.sandbox import explain_dpu

    monkeypatch.setattr(explain_dpu, "rewrite", lambda sql: "SELECT 'rewritten'")
    action = run("EXPLAIN (ANALYZE, VERBOSE) SELECT 1")
    assert isinstance(action, Forward) and action.sql == "SELECT 'rewritten'"
    plain = run("EXPLAIN SELECT 1")
    assert isinstance(plain, Forward) and plain.sql == "EXPLAIN SELECT 1"


# -- transactions ----------------------------------------------------------------------------------
def test_one_ddl_per_transaction_and_no_ddl_dml_mix() -> None:
    d, s = DsqlDialect(), session()
    assert isinstance(d.statement(s, "BEGIN", extended=True), Forward)
    assert isinstance(d.statement(s, "CREATE TABLE a (id int)", extended=True), Forward)
    err = d.statement(s, "CREATE TABLE b (id int)", extended=True)
    assert isinstance(err, Fail) and err.error.message == "multiple ddl statements not supported in a transaction"
    err = d.statement(s, "INSERT INTO a VALUES (1)", extended=True)
    assert isinstance(err, Fail) and err.error.message == "ddl and dml are not supported in the same transaction"
    d.ready(s, "I")  # ROLLBACK/COMMIT ended it: a new transaction starts clean
    assert isinstance(d.statement(s, "CREATE TABLE b (id int)", extended=True), Forward)


def test_multi_statement_query_is_one_implicit_transaction() -> None:
    # The statements before the offending one still run (the implicit transaction then rolls back).
    err = run("CREATE TABLE a (id int); CREATE INDEX ASYNC ai ON a (id)", extended=False)
    assert isinstance(err, Forward) and err.sql.startswith("CREATE TABLE a (id int); DO $q$")
    assert "MESSAGE = 'multiple ddl statements not supported in a transaction'" in err.sql
    first = run("TRUNCATE t; SELECT 1", extended=False)
    assert isinstance(first, Fail) and first.error.message == "unsupported statement: Truncate"
    ok = run("BEGIN; CREATE INDEX ASYNC mi ON m (a); COMMIT", extended=False)
    assert isinstance(ok, Forward) and ok.tags == [None, "CREATE INDEX", None]
    both = run("SELECT 1 AS a; SELECT 2 AS b", extended=False)
    assert isinstance(both, Forward) and both.sql == "SELECT 1 AS a; SELECT 2 AS b"
    late = run("BEGIN; INSERT INTO t VALUES (1); CREATE TABLE x (id int)", extended=False)
    assert isinstance(late, Forward) and late.sql.startswith("BEGIN; INSERT INTO t VALUES (1); DO $q$")


def test_wait_for_job_refused_inside_a_transaction() -> None:
    d, s = DsqlDialect(), session()
    d.statement(s, "BEGIN", extended=True)
    err = d.statement(s, "CALL sys.wait_for_job('abc')", extended=True)
    assert isinstance(err, Fail) and err.error.sqlstate == "0A000"


def test_conflict_is_concealed_and_fails_at_commit() -> None:
    d, s = DsqlDialect(), session()
    d.statement(s, "BEGIN", extended=True)
    d.ready(s, "T")
    d.statement(s, "UPDATE t SET v = 1 WHERE id = 2", extended=True)
    out = d.backend_error(s, SqlError("55P03", "canceling statement due to lock timeout"))
    assert (out.sqlstate, out.message, out.conceal_tag) == ("40001", OC000, "UPDATE 1")
    d.ready(s, "E")
    later = d.statement(s, "SELECT 1", extended=True)
    assert isinstance(later, Forward)
    assert d.backend_error(s, SqlError("25P02", "current transaction is aborted")).sqlstate == "40001"
    commit = d.statement(s, "COMMIT", extended=True)
    assert isinstance(commit, Fail) and commit.backend_sql == "ROLLBACK"
    assert (commit.error.sqlstate, commit.error.message) == ("40001", OC000)
    d.ready(s, "I")
    assert isinstance(d.statement(s, "COMMIT", extended=True), Forward)


def test_conflict_outside_a_transaction_is_reported_at_the_statement() -> None:
    d, s = DsqlDialect(), session()
    d.statement(s, "INSERT INTO t VALUES (1), (2)", extended=True)
    out = d.backend_error(s, SqlError("40001", "could not serialize access due to concurrent update"))
    assert (out.sqlstate, out.message, out.conceal_tag) == ("40001", OC000, None)
    d.statement(s, "ALTER TABLE t ADD COLUMN c int", extended=True)
    assert d.backend_error(s, SqlError("55P03", "lock timeout")).message.endswith("(OC001)")
    unrelated = SqlError("23505", "duplicate key")
    assert d.backend_error(s, unrelated) is unrelated


def test_a_transaction_doomed_by_ddl_still_reads_but_fails_writes_and_commit_with_oc001() -> None:
    d, s = DsqlDialect(), session()
    d.statement(s, "BEGIN", extended=True)
    d.ready(s, "T")
    d.statement(s, "SELECT v FROM t", extended=True)
    d.doom(s, schema=True)
    assert isinstance(d.statement(s, "SELECT v FROM t WHERE id = 1", extended=True), Forward)
    for write in ("UPDATE t SET v = 1", "SELECT v FROM t FOR UPDATE"):
        out = d.statement(s, write, extended=True)
        assert isinstance(out, Fail) and (out.error.sqlstate, out.error.message) == ("40001", OC001), write
    commit = d.statement(s, "COMMIT", extended=True)
    assert isinstance(commit, Fail) and commit.backend_sql == "ROLLBACK"
    assert (commit.error.sqlstate, commit.error.message) == ("40001", OC001)
    d.ready(s, "I")
    assert isinstance(d.statement(s, "UPDATE t SET v = 1", extended=True), Forward)  # a new transaction


def test_a_doomed_transaction_still_gets_dsql_refusals_while_its_backend_is_usable() -> None:
    d, s = DsqlDialect(), session()
    d.statement(s, "BEGIN", extended=True)
    d.ready(s, "T")
    d.doom(s, schema=False)
    assert isinstance(d.statement(s, "TRUNCATE t", extended=True), Fail)
    assert isinstance(d.statement(s, "UPDATE t SET v = 1", extended=True), Forward)
    commit = d.statement(s, "COMMIT", extended=True)
    assert isinstance(commit, Fail) and commit.error.message == OC000


def test_conceal_tag_follows_the_statement_that_ran_not_the_last_parse() -> None:
    d, s = DsqlDialect(), session()
    d.statement(s, "BEGIN", extended=True)
    d.ready(s, "T")
    d.statement(s, "SELECT 1", extended=True)  # last Parse; a prepared DELETE is what ran
    s.current_sql = "DELETE FROM t WHERE id = $1"
    assert d.backend_error(s, SqlError("40001", "could not serialize access")).conceal_tag == "DELETE 1"


def test_insert_conceal_tag_counts_values_rows() -> None:
    d, s = DsqlDialect(), session()
    d.statement(s, "BEGIN", extended=True)
    d.statement(s, "INSERT INTO t (a) VALUES (1), ((2)), (3) ON CONFLICT DO NOTHING", extended=True)
    assert d.backend_error(s, SqlError("55P03", "lock timeout")).conceal_tag == "INSERT 0 3"


def test_commit_after_five_minutes_fails_with_the_age_limit() -> None:
    now = [1000.0]
    d, s = DsqlDialect(clock=lambda: now[0]), session()
    d.statement(s, "BEGIN", extended=True)
    now[0] += 301
    commit = d.statement(s, "COMMIT", extended=True)
    assert isinstance(commit, Fail) and commit.error.sqlstate == "54000"
    assert commit.error.message == "transaction age limit of 300s exceeded" and commit.backend_sql == "ROLLBACK"


def test_fast_path_agrees_with_the_full_path() -> None:
    script = [
        "BEGIN", "SELECT a FROM t WHERE id = 1", "UPDATE t SET a = 2 WHERE id = 1;", "INSERT INTO t VALUES (1), (2)",
        "COMMIT", "begin work", "CREATE TABLE x (id int)", "INSERT INTO x VALUES (1)", "ROLLBACK",
        "SELECT * FROM t FOR SHARE", "SELECT 1 INTO y", "select version()", "DELETE FROM t WHERE id = 3 ;",
        "SELECT to_tsvector('a')", "END", "SELECT line('{1,2,3}')", "TABLE t", "VALUES (1)",
        "UPDATE t SET a = current_setting('server_version')", "ABORT",
    ]
    fast, slow = DsqlDialect(), DsqlDialect()
    slow._fast = lambda *_a: None  # type: ignore[method-assign]
    sf, ss = session(), session()
    for sql in script:
        a, b = fast.statement(sf, sql, extended=True), slow.statement(ss, sql, extended=True)
        assert type(a) is type(b), sql
        if isinstance(a, Forward) and isinstance(b, Forward):
            assert (a.sql, a.tags) == (b.sql, b.tags), sql
        else:
            assert isinstance(a, Fail) and isinstance(b, Fail)
            assert (a.error.sqlstate, a.error.message, a.backend_sql) == (
                b.error.sqlstate, b.error.message, b.backend_sql), sql
        fst, sst = sf.state["dsql"], ss.state["dsql"]
        assert (fst.in_block, fst.ddl, fst.dml, fst.doomed, fst.last_kind) == (
            sst.in_block, sst.ddl, sst.dml, sst.doomed, sst.last_kind), sql
        for d, s in ((fast, sf), (slow, ss)):
            if isinstance(a, Fail) and not fst.in_block:
                d.ready(s, "I")


def test_remembered_classification_still_checks_each_sessions_state() -> None:
    """The hot path remembers what a statement's text is; whether it may run is decided per
    session, every time (the same texts meet a doomed transaction, a DDL transaction, a fresh one)."""
    d = DsqlDialect()
    ddl, doomed, fresh = session(), session(), session()
    for s in (ddl, doomed, fresh):
        assert isinstance(d.statement(s, "BEGIN", extended=True), Forward)
    assert isinstance(d.statement(ddl, "CREATE TABLE a (id int)", extended=True), Forward)
    d.doom(doomed, schema=False)
    for _ in range(2):  # the second round finds every text already classified
        assert isinstance(d.statement(fresh, "INSERT INTO a VALUES (1)", extended=True), Forward)
        err = d.statement(ddl, "INSERT INTO a VALUES (1)", extended=True)
        assert isinstance(err, Fail) and err.error.message == "ddl and dml are not supported in the same transaction"
    commit = d.statement(doomed, "COMMIT", extended=True)
    assert isinstance(commit, Fail) and commit.error.sqlstate == "40001" and commit.error.message == OC000
    assert isinstance(d.statement(fresh, "COMMIT", extended=True), Forward)
    for _ in range(2):  # texts the hot path hands to the full path keep going there
        assert isinstance(d.statement(fresh, "SELECT * FROM t FOR SHARE", extended=True), Fail)
        version = d.statement(fresh, "select version()", extended=True)
        assert isinstance(version, Forward) and version.sql == "select sys.version()"


def test_the_classification_cache_keeps_no_long_texts() -> None:
    """A bulk INSERT of megabytes goes the hot path like any INSERT, but is not kept in memory."""
    from dsqlops.sandbox import dialect

    d, s = DsqlDialect(), session()
    bulk = "INSERT INTO t VALUES " + ", ".join(f"({i}, 'row {i}')" for i in range(20_000))
    assert len(bulk) > dialect.FAST_CACHE_MAX_TEXT
    before = dialect._fast_class_remembered.cache_info()
    assert isinstance(d.statement(s, bulk, extended=False), Forward)
    assert s.state["dsql"].last_kind == sqlclass.DML
    after = dialect._fast_class_remembered.cache_info()
    assert (after.hits, after.misses, after.currsize) == (before.hits, before.misses, before.currsize)
    d.statement(s, "SELECT 1 FROM t", extended=False)
    assert dialect._fast_class_remembered.cache_info().currsize <= dialect.FAST_CACHE_SIZE
