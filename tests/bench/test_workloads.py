"""The bench workloads against a real PostgreSQL in REPEATABLE READ (real 40001s under contention)."""

from __future__ import annotations

import json

import psycopg
import pytest

from dsqlops.bench import results
from dsqlops.bench.runner import BenchConfig, ConninfoPoolSpec, run_bench
from dsqlops.data.retry import RetryPolicy
from dsqlops.errors import UsageError

pytestmark = pytest.mark.postgres


def test_transfer_keeps_money_and_absorbs_conflicts(bench_db: str) -> None:
    # 8 clients over 5 accounts: transfers collide all the time, so conflicts must happen and be retried.
    cfg = BenchConfig(workload="transfer", accounts=5, concurrency=8, duration=None, transactions=300, setup=True,
                      policy=RetryPolicy(max_attempts=10, base_delay=0.001, max_delay=0.02), seed=1)
    ticks = []
    res = run_bench(ConninfoPoolSpec(bench_db), cfg, on_tick=ticks.append)
    s = res.snapshot
    assert s.committed + s.aborted + s.failed == 300
    assert s.occ_conflicts > 0, "no conflict in 300 contended transfers: the test cannot show retries"
    assert s.retries > 0 and s.occ_absorbed > 0
    assert s.attempts == 300 + s.retries
    assert s.errors == 0, s.error_samples
    assert {c.name: c.ok for c in res.checks} == {"total_money_unchanged": True, "no_negative_balance": True}
    with psycopg.connect(bench_db) as conn:
        total, n = conn.execute("SELECT sum(balance), count(*) FROM accounts").fetchone()
        logged = conn.execute("SELECT count(*) FROM transactions").fetchone()[0]
    assert (total, n) == (5000, 5)
    assert logged == s.committed  # every committed transfer logged exactly once, none from retried attempts
    assert ticks, "no live snapshot"


def test_counter_reports_escaped_conflicts_with_one_attempt(bench_db: str) -> None:
    cfg = BenchConfig(workload="counter", concurrency=6, duration=None, transactions=200, setup=True,
                      policy=RetryPolicy(max_attempts=1), seed=2)
    res = run_bench(ConninfoPoolSpec(bench_db), cfg)
    s = res.snapshot
    assert s.occ_escaped > 0 and s.retries == 0 and s.occ_absorbed == 0
    assert s.failed == s.occ_escaped and s.errors == 0
    assert s.committed + s.failed == 200
    assert res.ok  # the counter advanced exactly by the committed increments
    with psycopg.connect(bench_db) as conn:
        assert conn.execute("SELECT value FROM bench_counter").fetchone()[0] == s.committed


def test_read_workload_duration_and_processes(bench_db: str) -> None:
    cfg = BenchConfig(workload="read", accounts=50, concurrency=2, processes=2, duration=2.0, setup=True, seed=3)
    res = run_bench(ConninfoPoolSpec(bench_db), cfg)
    assert res.snapshot.committed > 0 and res.snapshot.failed == 0
    assert res.snapshot.occ_conflicts == 0


def test_setup_loads_in_batches_and_is_idempotent(bench_db: str) -> None:
    cfg = BenchConfig(workload="transfer", accounts=2500, concurrency=1, duration=None, transactions=1, setup=True)
    run_bench(ConninfoPoolSpec(bench_db), cfg)
    run_bench(ConninfoPoolSpec(bench_db), cfg)
    with psycopg.connect(bench_db) as conn:
        assert conn.execute("SELECT count(*), sum(balance) FROM accounts").fetchone() == (2500, 2500000)


def test_missing_tables_are_a_usage_error(bench_db: str) -> None:
    with pytest.raises(UsageError, match="accounts"):
        run_bench(ConninfoPoolSpec(bench_db), BenchConfig(transactions=1, duration=None))


@pytest.mark.parametrize("kw", [dict(concurrency=0), dict(duration=1.0, transactions=5), dict(duration=None),
                                dict(processes=3, concurrency=2), dict(rate=-1.0)])
def test_bad_configs(kw: dict) -> None:
    with pytest.raises(UsageError):
        BenchConfig(**kw).validate()


def test_json_lines_round_trip_and_merge(bench_db: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = BenchConfig(workload="transfer", accounts=20, concurrency=2, duration=None, transactions=40, setup=True)
    a = run_bench(ConninfoPoolSpec(bench_db), cfg)
    b = run_bench(ConninfoPoolSpec(bench_db), cfg)
    f1, f2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    f1.write_text(results.to_json_line(a) + "\n")
    f2.write_text(results.to_json_line(b) + "\n\n")
    back = results.read_json_lines([f1, f2])
    assert [r.snapshot.committed for r in back] == [a.snapshot.committed, b.snapshot.committed]
    merged = results.merge(back)
    s = results.summary(merged)
    assert s["committed"] == a.snapshot.committed + b.snapshot.committed
    assert s["transactions"] == 80 and s["hosts"] == 2 and s["concurrency"] == 4
    assert merged.snapshot.latency.total == a.snapshot.latency.total + b.snapshot.latency.total
    assert s["p50_ms"] is not None and s["p50_ms"] <= s["p99_ms"]
    json.dumps(results.to_json_line(merged))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "other"}\n')
    with pytest.raises(UsageError, match=r"bad\.jsonl:1"):
        results.read_json_lines([bad])
