"""stats and explain commands against a real PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from tests.data.conftest import invoke

pytestmark = pytest.mark.postgres


@pytest.fixture()
def schema(dp_sql):
    s = f"s_{uuid.uuid4().hex[:8]}"
    dp_sql(f"CREATE SCHEMA {s}")
    dp_sql(f"CREATE TABLE {s}.orders (id int PRIMARY KEY, customer int NOT NULL, note text)")
    dp_sql(f"INSERT INTO {s}.orders SELECT g, g % 50, 'n' || g FROM generate_series(1, 2000) g")
    dp_sql(f"CREATE INDEX orders_customer_idx ON {s}.orders (customer)")
    dp_sql(f"CREATE STATISTICS orders_st (ndistinct) ON customer, note FROM {s}.orders")
    dp_sql(f"ANALYZE {s}.orders")
    yield s
    dp_sql(f"DROP SCHEMA {s} CASCADE")


def test_dump_is_stable_and_complete(dp_cli, schema, tmp_path):
    a = invoke(["-o", "json", "stats", "dump", "--schema", schema])
    b = invoke(["-o", "json", "stats", "dump", "--schema", schema])
    assert a.exit_code == 0, a.stderr
    assert a.stdout == b.stdout  # byte-identical: no volatile fields, sorted keys and rows
    data = a.json()
    (t,) = data["tables"]
    assert (t["schema"], t["name"], t["reltuples"]) == (schema, "orders", 2000)
    assert t["relpages"] > 0 and t["size_bytes"] > 0 and t["last_analyze"].endswith("Z")
    cols = {c["name"]: c for c in t["columns"]}
    assert list(cols) == ["customer", "id", "note"]
    assert cols["customer"]["n_distinct"] == 50 and cols["customer"]["most_common_vals"].startswith("{")
    assert cols["id"]["correlation"] == 1
    assert [(i["name"], i["valid"], i["primary"]) for i in t["indexes"]] == [
        ("orders_customer_idx", True, False), ("orders_pkey", True, True)]
    assert t["extended_statistics"][0]["name"] == "orders_st" and "ndistinct" in t["extended_statistics"][0]["kinds"]


def test_diff_shows_what_changed(dp_cli, dp_sql, schema, tmp_path):
    before = tmp_path / "a.json"
    after = tmp_path / "b.json"
    before.write_text(invoke(["-o", "json", "stats", "dump", "--table", f"{schema}.orders"]).stdout)
    same = invoke(["stats", "diff", str(before), str(before)])
    assert same.exit_code == 0 and same.stdout == "" and "no differences" in same.stderr
    dp_sql(f"INSERT INTO {schema}.orders SELECT g, 7, 'x' FROM generate_series(2001, 3000) g")
    assert invoke(["stats", "analyze", f"{schema}.orders"]).exit_code == 0
    after.write_text(invoke(["-o", "json", "stats", "dump", "--table", f"{schema}.orders"]).stdout)
    d = invoke(["-o", "json", "stats", "diff", str(before), str(after)])
    assert d.exit_code == 0, d.stderr
    changes = {c["path"]: c for c in d.json()}
    assert changes[f"{schema}.orders.reltuples"]["before"] == 2000
    assert changes[f"{schema}.orders.reltuples"]["after"] == 3000
    assert f"{schema}.orders.columns.customer.most_common_freqs" in changes
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    r = invoke(["stats", "diff", str(before), str(bad)])
    assert r.exit_code == 252 and "not a stats dump" in r.stderr


def test_exact_flags_stale_estimates(dp_cli, dp_sql, schema):
    fresh = invoke(["-o", "json", "stats", "dump", "--table", f"{schema}.orders", "--exact"])
    assert fresh.exit_code == 0, fresh.stderr
    assert fresh.json()["exact"] == [{"table": f"{schema}.orders", "reltuples": 2000, "count": 2000, "drift": 0.0,
                                      "stale": False, "note": None}]
    dp_sql(f"INSERT INTO {schema}.orders SELECT g, 1, 'y' FROM generate_series(2001, 4000) g")  # no ANALYZE
    stale = invoke(["stats", "dump", "--table", f"{schema}.orders", "--exact"])
    assert stale.exit_code == 1
    assert "estimate off by 50% (> 20%)" in stale.stderr
    assert invoke(["stats", "analyze", f"{schema}.orders"]).exit_code == 0
    assert invoke(["stats", "dump", "--table", f"{schema}.orders", "--exact"]).exit_code == 0


def test_dump_refuses_unknown_tables_and_bad_names(dp_cli, schema):
    r = invoke(["stats", "dump", "--table", f"{schema}.nope"])
    assert r.exit_code == 252 and "no such table" in r.stderr
    r = invoke(["stats", "analyze", "a.b.c"])
    assert r.exit_code == 252


def test_explain_points_at_the_full_scan_and_filter(dp_cli, dp_sql, schema):
    r = invoke(["-o", "json", "explain", f"SELECT * FROM {schema}.orders WHERE note LIKE %s", "--params", "%9%",
                "--analyze"])
    assert r.exit_code == 0, r.stderr
    data = r.json()
    kinds = [f["kind"] for f in data["findings"]]
    assert kinds == ["full_scan", "qp_filter"]
    assert data["findings"][0]["severity"] == "warning"  # 2,000 rows >= --large-rows 1000
    assert data["analyzed"] is True and data["rolled_back"] is False
    assert data["dpu"] is None  # plain PostgreSQL prints no DPU estimate
    assert data["price"]["per_million_dpu"] == "8.00"


def test_explain_analyze_of_a_write_is_rolled_back(dp_cli, dp_sql, schema, tmp_path):
    q = tmp_path / "q.sql"
    q.write_text(f"DELETE FROM {schema}.orders WHERE customer = 3;\n")
    r = invoke(["explain", "-f", str(q), "--analyze"])
    assert r.exit_code == 0, r.stderr
    assert "rolled back" in r.stderr and "nothing is changed" in r.stderr
    assert "Delete on" in r.stdout and "Findings:" in r.stdout
    assert dp_sql(f"SELECT count(*) FROM {schema}.orders WHERE customer = 3") == [(40,)]


def test_explain_keeps_braces_and_percent_signs_without_params(dp_cli, schema):
    r = invoke(["-o", "json", "explain", f"SELECT '{{\"a\": 1}}'::jsonb, note FROM {schema}.orders "
                "WHERE note LIKE 'n1%'"])
    assert r.exit_code == 0, r.stderr
    plan = "\n".join(r.json()["plan"])
    assert "'n1%'" in plan and """'{"a": 1}'::jsonb""" in plan and "{{" not in plan


def test_explain_input_errors(dp_cli):
    assert invoke(["explain"]).exit_code == 252
    assert invoke(["explain", "select 1; select 2"]).exit_code == 252
    r = invoke(["explain", "DROP TABLE x"])
    assert r.exit_code == 252 and "can be explained" in r.stderr


def test_explain_of_a_saved_dsql_plan_needs_no_connection(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("DSQLOPS_REGION", "us-east-1")
    monkeypatch.delenv("DSQLOPS_CLUSTER", raising=False)
    plan = Path(__file__).parent / "fixtures" / "explain" / "insert_values.txt"
    r = invoke(["-o", "json", "explain", "--plan-file", str(plan)])
    assert r.exit_code == 0, r.stderr
    d = r.json()
    assert d["dpu"]["write_transaction_minimum"] == "0.05000"
    assert d["cost_per_million_executions"] == "0.29856"
    assert d["cost_as_own_transaction"] == "0.000000554"
