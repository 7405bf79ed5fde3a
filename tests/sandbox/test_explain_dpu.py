"""EXPLAIN ANALYZE VERBOSE rewrite: DSQL's Statement DPU Estimate block, parsed by dsqlops.data.explain."""

from __future__ import annotations

import psycopg
import pytest

from dsqlops.sandbox import explain_dpu


@pytest.mark.parametrize("sql", [
    "EXPLAIN (ANALYZE, VERBOSE) SELECT 1",
    "explain (analyze true, verbose on, costs off) select * from t where id = 'a''$1'",
    "EXPLAIN ANALYZE VERBOSE SELECT 1;",
    "EXPLAIN (VERBOSE, ANALYZE, BUFFERS, FORMAT TEXT) DELETE FROM t",
])
def test_rewrites(sql: str) -> None:
    out = explain_dpu.rewrite(sql)
    assert out is not None and out.startswith("SELECT * FROM sys.dsqlops_explain_dpu(")


@pytest.mark.parametrize("sql", [
    "EXPLAIN SELECT 1", "EXPLAIN (VERBOSE) SELECT 1",
    "EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) SELECT 1", "EXPLAIN (ANALYZE false, VERBOSE) SELECT 1",
    "EXPLAIN (ANALYZE, VERBOSE) SELECT $1", "SELECT 'EXPLAIN ANALYZE VERBOSE'", "EXPLAIN (ANALYZE, VERBOSE)",
])
def test_leaves_alone(sql: str) -> None:
    assert explain_dpu.rewrite(sql) is None


@pytest.mark.parametrize("sql", ["EXPLAIN ANALYZE SELECT 1", "EXPLAIN (ANALYZE) SELECT 1",
                                 "EXPLAIN (ANALYZE, VERBOSE false) INSERT INTO t VALUES (1)"])
def test_analyze_without_verbose_gets_the_plain_function(sql: str) -> None:
    """No DPU block, but the sandbox's own triggers are left out of the plan all the same."""
    out = explain_dpu.rewrite(sql)
    assert out is not None and out.startswith("SELECT * FROM sys.dsqlops_explain(")


@pytest.mark.postgres
def test_estimate_block_on_real_plans(bench_db: str) -> None:
    from dsqlops.data.explain import parse_dpu

    with psycopg.connect(bench_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA sys")
        assert explain_dpu.install(conn)
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, 300) g")

        def plan(sql: str) -> list[str]:
            rw = explain_dpu.rewrite(sql)
            assert rw is not None
            cur = conn.execute(rw)
            assert cur.description is not None and cur.description[0].name == "QUERY PLAN"
            return [r[0] for r in cur.fetchall()]

        ins = plan("EXPLAIN (ANALYZE, VERBOSE) INSERT INTO t VALUES (1001, 'a'), (1002, 'b'), (1003, 'c')")
        assert ins[-5] == "Statement DPU Estimate:"
        assert ins[-2] == "  Write: 0.01875 DPU (Transaction minimum: 0.05000)"   # 3 rows × 128 B, as AWS shows
        assert ins[-3].startswith("  Read: 0.00070 DPU (Transaction minimum: 0.00375)")
        assert conn.execute("SELECT count(*) FROM t WHERE id > 1000").fetchone()[0] == 3  # ran exactly once
        est = parse_dpu("\n".join(ins))
        assert est is not None and float(est.write) == pytest.approx(0.01875)

        scan = plan("EXPLAIN ANALYZE VERBOSE SELECT * FROM t WHERE name = 'n7'")
        est = parse_dpu("\n".join(scan))
        assert est is not None
        assert float(est.read) == pytest.approx(303 * 128 * 1.83105e-06, abs=1e-5)  # a full scan reads every row
        assert float(est.write) == 0 and scan[-2] == "  Write: 0.00000 DPU"
        point = plan("EXPLAIN (ANALYZE, VERBOSE) SELECT * FROM t WHERE id = 7")
        est_point = parse_dpu("\n".join(point))
        assert est_point is not None and float(est_point.read) < float(est.read)
        assert point[-3] == "  Read: 0.00023 DPU (Transaction minimum: 0.00375)"


@pytest.mark.parametrize(("sql", "rewritten"), [
    ("EXPLAIN (ANALYZE, VERBOSE) SELECT $$ $1 $$", True),      # a dollar-quoted "$1" is text
    ("EXPLAIN (ANALYZE, VERBOSE) SELECT 1 /* $1 */", True),
    ("EXPLAIN (ANALYZE, VERBOSE) SELECT a$1 FROM t", True),   # an identifier, not a parameter
    ("EXPLAIN (ANALYZE, VERBOSE) SELECT * FROM t WHERE id = $1", False),
    ("EXPLAIN (ANALYZE, VERBOSE) SELECT 'open", False),
])
def test_only_real_parameters_keep_the_statement_as_is(sql: str, rewritten: bool) -> None:
    assert (explain_dpu.rewrite(sql) is not None) == rewritten
