"""Parsing recorded DSQL EXPLAIN text (fixtures/explain), pricing it, and pointing at costly shapes."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from dsqlops.data.explain import (
    Price,
    is_write,
    parse_dpu,
    parse_explain,
    price_for,
    render_text,
    strip_sql,
)
from dsqlops.errors import UsageError
from dsqlops.output import to_jsonable

FIX = Path(__file__).parent / "fixtures" / "explain"


def load(name: str) -> str:
    return (FIX / name).read_text()


def test_select_dpu_block_from_the_aws_docs():
    rep = parse_explain(load("select_index_only.txt"))
    d = rep.dpu
    assert d is not None
    assert (d.compute, d.read, d.write, d.total) == (Decimal("0.01607"), Decimal("0.04312"), Decimal("0"),
                                                     Decimal("0.05919"))
    assert d.read_txn_min is None and d.write_txn_min is None
    assert rep.query_identifier == "qymgw1m77maoe"
    assert rep.planning_ms == pytest.approx(11.415) and rep.execution_ms == pytest.approx(4.528)
    assert [n.name for n in rep.nodes] == ["Index Only Scan", "Storage Scan", "B-Tree Scan"]
    assert rep.nodes[0].index == "test_table_pkey" and rep.nodes[0].relation == "public.test_table"
    assert [n.depth for n in rep.nodes] == [0, 1, 2]
    assert rep.nodes[1].attr("Projections") == "id, context"
    assert rep.findings == []  # an index-only scan: nothing to point out


def test_insert_transaction_minimums():
    d = parse_dpu(load("insert_values.txt"))
    assert d is not None
    assert d.read_txn_min == Decimal("0.00375") and d.write_txn_min == Decimal("0.05000")
    assert d.total == Decimal("0.03732")
    # as its own transaction: 0.01550 + max(0.00307, 0.00375) + max(0.01875, 0.05)
    assert d.billed_alone() == Decimal("0.06925")


def test_full_scan_with_storage_and_query_processor_filters():
    rep = parse_explain(load("full_scan_filters.txt"))
    kinds = [(f.kind, f.severity) for f in rep.findings]
    assert kinds == [("full_scan", "warning"), ("qp_filter", "warning")]
    full, qp = rep.findings
    assert full.node == "Full Scan (btree-table)" and full.relation == "public.transaction" and full.line == 1
    assert "description ~~" in qp.message and "65254 rows were shipped" in qp.message
    # the storage-level "Filters:" is pushed down and is not a finding
    storage = rep.nodes[1]
    assert storage.name == "Storage Scan" and storage.attr("Filters", ) is not None


def test_index_scan_with_storage_lookup_and_sort():
    rep = parse_explain(load("index_scan_lookup_sort.txt"))
    assert [f.kind for f in rep.findings] == ["sort", "storage_lookup"]
    assert "o.created_at DESC" in rep.findings[0].message
    assert rep.nodes[1].name == "Index Scan" and rep.nodes[1].index == "orders_customer_idx"
    assert rep.nodes[1].alias == "o"
    lookup = next(n for n in rep.nodes if n.name == "Storage Lookup")
    assert rep.nodes[lookup.parent].name == "Index Scan"


def test_small_full_scans_are_notes_not_warnings():
    text = ("Full Scan (btree-table) on public.tiny  (cost=100.00..101.00 rows=3 width=8) "
            "(actual time=0.1..0.2 rows=3 loops=1)\n  -> Storage Scan on tiny (cost=1.00..1.00 rows=3 width=8)\n")
    rep = parse_explain(text)
    assert [(f.kind, f.severity) for f in rep.findings] == [("full_scan", "info")]
    assert parse_explain(text, large_rows=2).findings[0].severity == "warning"


def test_postgres_seq_scan_and_spilled_sort():
    text = """Sort  (cost=10.0..11.0 rows=50000 width=8) (actual time=1..2 rows=50000 loops=1)
  Sort Key: t.a
  Sort Method: external merge  Disk: 1200kB
  ->  Seq Scan on public.t  (cost=0.00..5.00 rows=50000 width=8) (actual time=0.01..1.00 rows=50000 loops=1)
        Filter: (t.b > 3)
        Rows Removed by Filter: 10
Planning Time: 0.05 ms
Execution Time: 2.00 ms
"""
    rep = parse_explain(text)
    assert [f.kind for f in rep.findings] == ["sort_spill", "full_scan", "qp_filter"]
    assert rep.dpu is None and rep.analyzed


def test_plain_explain_without_costs_or_dpu():
    rep = parse_explain("Seq Scan on t\n  Filter: (a = 1)\n")
    assert [f.kind for f in rep.findings] == ["full_scan", "qp_filter"]
    assert rep.dpu is None and not rep.analyzed
    assert "use --analyze" in render_text(rep)


def test_other_dpu_components_are_kept_and_total_derived_when_missing():
    d = parse_dpu("Statement DPU Estimate:\n  Compute: 0.1 DPU\n  Write: 0.2 DPU (Transaction minimum: 0.05)\n"
                  "  MultiRegionWrite: 0.2 DPU\n")
    assert d is not None and d.other == {"MultiRegionWrite": Decimal("0.2")}
    assert d.total == Decimal("0.5")
    assert "multi_region_write" in d.to_dict()


def test_header_without_lines_is_an_error():
    with pytest.raises(UsageError):
        parse_dpu("Statement DPU Estimate:\nsomething else\n")
    with pytest.raises(UsageError):
        parse_explain("   \n")


def test_pricing_per_execution_and_per_million():
    rep = parse_explain(load("full_scan_filters.txt"))
    rep.price = Price(Decimal("8.00"), "us-east-1", "test")
    assert rep.cost_per_million_executions == Decimal("23.32848")
    assert rep.cost_per_execution == Decimal("0.00002332848")
    data = json.loads(json.dumps(to_jsonable(rep.to_dict())))
    assert data["cost_per_execution"] == "0.00002332848"
    assert data["dpu"]["total"] == "2.91606"
    assert data["findings"][0]["kind"] == "full_scan"
    text = render_text(rep)
    assert "per million executions:   23.32848 USD" in text and "[warning]" in text


def test_price_comes_from_the_shipped_price_table():
    p = price_for("us-east-1")
    assert p is not None and p.per_million_dpu == Decimal("8.00") and p.currency == "USD"
    assert "dsql.yaml" in p.source
    assert price_for("eu-north-9") is None


def test_price_comes_from_the_one_price_table_reader(tmp_path):
    """--pricing-file is read by the same reader as the cost commands: same format, same errors."""
    from dsqlops.cost.pricing import shipped_path
    from dsqlops.errors import ConfigError

    f = tmp_path / "dsql.yaml"
    f.write_text(shipped_path().read_text(encoding="utf-8").replace("8.00", "9.50", 1), encoding="utf-8")
    p = price_for("us-east-1", pricing_file=f)
    assert p is not None and p.per_million_dpu == Decimal("9.50") and p.source.startswith("dsql.yaml as of ")
    f.write_text("as_of: 2026-11-01\nregions:\n  us-east-1: {dpu: 0.00001}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="price table"):
        price_for("us-east-1", pricing_file=f)


@pytest.mark.parametrize("text,expected", [
    ("select 1;", "select 1"),
    ("  WITH x AS (select 1) select * from x ;; ", "WITH x AS (select 1) select * from x"),
    ("select ';' as semi", "select ';' as semi"),
    # the shared lexer: comments around the statement, dollar quotes, a comment after the ';'
    ("/* why */ select 1 -- done", "select 1"),
    ("select $$;$$, $t$ ' $t$ as x", "select $$;$$, $t$ ' $t$ as x"),
    ("select 1; -- that is all", "select 1"),
])
def test_strip_sql(text, expected):
    assert strip_sql(text) == expected


@pytest.mark.parametrize("text", ["", "select 1; select 2", "explain select 1", "drop table t", "vacuum",
                                  "-- only a comment", "select 'open", "select 1 /* open", "(drop table t)"])
def test_strip_sql_refuses(text):
    with pytest.raises(UsageError):
        strip_sql(text)


def test_is_write():
    assert is_write("INSERT INTO t VALUES (1)")
    assert is_write("with d as (delete from t returning *) select * from d")
    assert not is_write("select 'insert' from t")
    assert not is_write('select "update", $$delete$$ from t -- insert')
