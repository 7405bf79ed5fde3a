"""The DPU billing formulas against AWS's published examples (docs/dsql-facts.md §5.1, EXPLAIN-DPU page).

The AWS billing page gives totals (point read ≈ 0.00675, single-row insert ≈ 0.06175, 100-row
insert ≈ 0.709 DPU) that include compute time, which the page states but we cannot observe; the
read and write parts are pure functions of bytes, so those are checked exactly and the compute
share each example implies is checked to be a plausible handful of milliseconds.
"""

from __future__ import annotations

import pytest

from dsqlops.sandbox import dpu


def test_transaction_minimums_are_the_documented_constants() -> None:
    assert round(dpu.WRITE_MIN_DPU, 5) == 0.05000
    assert round(dpu.READ_MIN_DPU, 5) == 0.00375


def test_three_row_insert_write_matches_the_explain_page_exactly() -> None:
    # AWS "Understanding DPUs in EXPLAIN ANALYZE", example 2: a 3-row INSERT shows
    # "Write: 0.01875 DPU (Transaction minimum: 0.05000)": 3 rows × 128 B minimum each.
    _read, written = dpu.insert_bytes(3, 40)
    stmt = dpu.statement_dpu(compute_seconds=0.0155, bytes_read=0, bytes_written=written)
    assert f"{stmt.write:.5f}" == "0.01875"


def test_point_read() -> None:
    txn = dpu.transaction_dpu(compute_seconds=0.0, bytes_read=dpu.point_read_bytes(), bytes_written=0)
    assert txn.write == 0
    assert round(txn.read, 5) == 0.00375          # the read minimum
    implied_compute = 0.00675 - txn.total
    assert implied_compute == pytest.approx(0.003, abs=1e-6)   # 3 ms of compute
    # and a statement-level point lookup is one 128-byte row (the page's "Read 0.00023")
    assert f"{dpu.statement_dpu(compute_seconds=0, bytes_read=128, bytes_written=0).read:.5f}" == "0.00023"


def test_single_row_insert() -> None:
    read, written = dpu.insert_bytes(1, 60)
    txn = dpu.transaction_dpu(compute_seconds=0.0, bytes_read=read, bytes_written=written)
    assert round(txn.write, 5) == 0.05000         # the write minimum
    assert round(txn.read, 5) == 0.00375          # the PK-uniqueness read, at the read minimum
    implied_compute = 0.06175 - txn.total
    assert implied_compute == pytest.approx(0.008, abs=1e-5)   # 8 ms of compute


def test_hundred_row_insert() -> None:
    read, written = dpu.insert_bytes(100, 100)
    txn = dpu.transaction_dpu(compute_seconds=0.0, bytes_read=read, bytes_written=written)
    assert round(txn.write, 4) == 0.6250          # 100 × 128 B × 0.00004883
    assert round(txn.read, 4) == 0.0234           # 100 uniqueness reads × 128 B
    implied_compute = 0.709 - txn.total
    assert 0.0 < implied_compute < 0.1            # ≈ 61 ms, 0.6 ms per row


def test_read_only_transaction_pays_no_write_minimum_and_empty_pays_nothing() -> None:
    assert dpu.transaction_dpu(compute_seconds=0.001, bytes_read=0, bytes_written=0).total == pytest.approx(0.001)
    assert dpu.transaction_dpu(compute_seconds=0, bytes_read=10, bytes_written=0).write == 0


def test_rows_are_billed_at_least_128_bytes() -> None:
    assert dpu.row_bytes([10, 200, 128]) == 128 + 200 + 128
    assert dpu.rows_bytes(0, 500) == 0
    assert dpu.rows_bytes(10, 1) == 1280


def test_format_estimate_matches_dsql_layout() -> None:
    lines = dpu.format_estimate(dpu.Dpu(compute=0.0155, read=0.00307, write=0.01875))
    assert lines == [
        "Statement DPU Estimate:",
        "  Compute: 0.01550 DPU",
        "  Read: 0.00307 DPU (Transaction minimum: 0.00375)",
        "  Write: 0.01875 DPU (Transaction minimum: 0.05000)",
        "  Total: 0.03732 DPU",
    ]
    select = dpu.format_estimate(dpu.Dpu(compute=0.01607, read=0.04312))
    assert select[2] == "  Read: 0.04312 DPU" and select[3] == "  Write: 0.00000 DPU"
    assert select[4] == "  Total: 0.05919 DPU"
