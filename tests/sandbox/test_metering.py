"""Metering: PostgreSQL statistics → DPUs → CloudWatch (moto), read back with the cost package's fetch."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import psycopg
import pytest

from dsqlops.sandbox import dpu, metering
from dsqlops.sandbox.hooks import PassThrough, Session, SqlError


def _stats(ins: int = 0, upd: int = 0, seq: int = 0, idx: int = 0, width: float = 40, xacts: int = 0,
           active: float = 0.0) -> metering.DbStats:
    return metering.DbStats(xacts, active, {"1": metering.TableStats(ins, upd, 0, seq, idx, 0, width, 8192)})


def test_single_row_insert_interval_bills_like_the_formula() -> None:
    wire = metering.WireCounts(transactions=1, write_transactions=1)
    m = metering.compute_metrics(None, _stats(ins=1, active=8.0), wire)
    assert m["WriteDPU"] == pytest.approx(dpu.WRITE_MIN_DPU)      # 128 B < 1 KiB: the minimum
    assert m["ReadDPU"] == pytest.approx(dpu.READ_MIN_DPU)        # the uniqueness read, minimum
    assert m["ComputeDPU"] == pytest.approx(0.008)
    assert m["TotalDPU"] == pytest.approx(0.06175, abs=1e-5)     # AWS's single-row insert example
    assert m["BytesWritten"] == 128 and m["BytesRead"] == 128


def test_deltas_minimums_and_resets() -> None:
    prev = _stats(ins=100, seq=1000, active=50.0, xacts=10).to_state()
    # 10 write transactions of one 128-B row each → 10 write minimums, not 1,280 B worth
    wire = metering.WireCounts(transactions=12, write_transactions=10, read_only=2, occ_conflicts=3,
                               commit_ms=[1.0, 2.0, 9.0])
    m = metering.compute_metrics(prev, _stats(ins=110, seq=1000, active=60.0, xacts=22), wire)
    assert m["WriteDPU"] == pytest.approx(10 * dpu.WRITE_MIN_DPU)
    assert m["ReadDPU"] == pytest.approx(12 * dpu.READ_MIN_DPU)
    assert m["ComputeTime"] == pytest.approx(10.0)
    assert (m["TotalTransactions"], m["ReadOnlyTransactions"], m["OccConflicts"]) == (12, 2, 3)
    assert m["CommitLatency"] == 2.0
    # a full scan of 10,000 rows of 200 B: above the minimum, billed by bytes
    big = metering.compute_metrics(prev, _stats(ins=100, seq=11000, width=200, active=50.0),
                                   metering.WireCounts(transactions=1, read_only=1))
    assert big["BytesRead"] == 10000 * 200 and big["WriteDPU"] == 0
    assert big["ReadDPU"] == pytest.approx(2_000_000 * dpu.READ_DPU_PER_BYTE)
    # statistics reset (counters went backwards): count from zero, never negative
    reset = metering.compute_metrics(prev, _stats(ins=5, active=1.0), metering.WireCounts())
    assert reset["BytesWritten"] == 5 * 128 and reset["ComputeTime"] == 1.0


def test_metered_dialect_counts_transactions_and_conflicts() -> None:
    tap = metering.Tap()
    d = metering.MeteredDialect(PassThrough(), tap)
    s = Session(cluster_id="c1", region="us-east-1", database="postgres", user="admin", iam_arn=None)
    # autocommit read
    d.statement(s, "SELECT 1", extended=False)
    d.completed(s, "SELECT 1")
    d.ready(s, "I")
    # explicit write transaction
    for sql, tag, status in (("BEGIN", "BEGIN", "T"), ("UPDATE t SET x=1", "UPDATE 1", "T"),
                             ("COMMIT", "COMMIT", "I")):
        d.statement(s, sql, extended=False)
        d.completed(s, tag)
        d.ready(s, status)
    # a conflict
    d.statement(s, "UPDATE t SET x=2", extended=False)
    d.backend_error(s, SqlError("40001", "could not serialize"))
    d.backend_error(s, SqlError("40001", "the same transaction again (25P02 rewritten)"))
    d.ready(s, "I")
    d.ready(s, "I")  # an idle ReadyForQuery after nothing ran is not a transaction
    w = tap.drain("c1")
    assert (w.transactions, w.read_only, w.write_transactions, w.occ_conflicts) == (2, 1, 1, 1)
    assert len(w.commit_ms) == 1
    assert tap.drain("c1").transactions == 0


def test_metered_dialect_counts_a_conflict_the_front_found() -> None:
    """The front dooms a transaction without an error from the backend (sandbox/occ.py)."""
    from dsqlops.sandbox.dialect import DsqlDialect

    tap = metering.Tap()
    d = metering.MeteredDialect(DsqlDialect(), tap)
    s = Session(cluster_id="c1", region="us-east-1", database="postgres", user="admin", iam_arn=None)
    for sql, tag, status in (("BEGIN", "BEGIN", "T"), ("UPDATE t SET x=1", "UPDATE 1", "T")):
        d.statement(s, sql, extended=False)
        d.completed(s, tag)
        d.ready(s, status)
    d.doom(s, schema=False)
    assert d.statement(s, "COMMIT", extended=False).error.sqlstate == "40001"  # type: ignore[union-attr]
    d.completed(s, "ROLLBACK")
    d.ready(s, "I")
    assert tap.drain("c1").occ_conflicts == 1


@pytest.mark.postgres
def test_meter_publishes_to_cloudwatch_and_cost_fetch_reads_it(bench_db: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from moto import mock_aws

    from dsqlops.cost.metrics import SeriesKey, fetch
    from dsqlops.cost.timewin import Window

    conninfo: dict[str, Any] = dict(p.split("=", 1) for p in bench_db.split())
    with psycopg.connect(bench_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id bigint PRIMARY KEY, balance numeric(18,2))")
        conn.execute("INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 500) g")
        conn.execute("ANALYZE accounts")
    with mock_aws():
        import boto3

        meter = metering.Meter(tmp_path, lambda: [("cluster1", "us-east-1", conninfo)], interval=3600)
        start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
        first = meter.flush()["cluster1"]
        assert first["BytesWritten"] >= 500 * 128 and first["WriteDPU"] > 0.5 * 500 * 128 * dpu.WRITE_DPU_PER_BYTE
        with psycopg.connect(bench_db, autocommit=True) as conn:
            conn.execute("SELECT count(*) FROM accounts").fetchone()   # a full scan: 500 rows read
        second = meter.flush()["cluster1"]
        assert second["BytesWritten"] == 0 and second["BytesRead"] >= 500 * 128
        assert second["ClusterStorageSize"] > 0
        end = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
        # a restarted meter keeps the last counters: nothing new, nothing billed again
        third = metering.Meter(tmp_path, lambda: [("cluster1", "us-east-1", conninfo)]).flush()["cluster1"]
        assert third["BytesRead"] == 0 and third["BytesWritten"] == 0

        cw = boto3.client("cloudwatch", region_name="us-east-1")
        names = {m["MetricName"] for m in cw.list_metrics(Namespace="AWS/AuroraDSQL")["Metrics"]}
        assert set(metering.UNITS) - {"CommitLatency"} <= names
        key = SeriesKey("us-east-1", "cluster1", "TotalDPU", "Sum")
        series = fetch(cw, [key], Window(start, end, 1, start, end))[key]
        total = float(sum(series.points.values()))
        assert total == pytest.approx(first["TotalDPU"] + second["TotalDPU"] + third["TotalDPU"], rel=1e-6)


def test_request_flush_without_a_sandbox_fails_loudly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dsqlops.errors import ServiceError

    with pytest.raises(ServiceError, match="no sandbox"):
        metering.request_flush(tmp_path, timeout=0.5)


def test_concurrent_flush_requests_are_all_served(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Several `sandbox flush-metrics` at once: every caller's request gets a flush that follows it."""
    import os
    import threading

    (tmp_path / "sandbox.pid").write_text(str(os.getpid()))
    published: list[str] = []
    meter = metering.Meter(tmp_path, lambda: [], lambda region, data: published.append(region), interval=3600)
    outcomes: dict[int, Any] = {}

    def ask(i: int) -> None:
        try:
            outcomes[i] = metering.request_flush(tmp_path, timeout=5)
        except Exception as exc:
            outcomes[i] = exc

    callers = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in callers:
        t.start()
    time.sleep(0.5)          # every request is on disk before the meter looks (the racy case)
    meter.start()
    try:
        for t in callers:
            t.join(timeout=20)
    finally:
        meter.stop()
    failed = {i: o for i, o in outcomes.items() if isinstance(o, BaseException)}
    assert len(outcomes) == 6 and not failed, failed
    assert all("last_flush" in o for o in outcomes.values())
    # served requests leave nothing behind in the sandbox folder
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".req", ".done")]
