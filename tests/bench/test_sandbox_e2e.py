"""The talk on the sandbox: bench → metering → CloudWatch → cost; EXPLAIN through the front; the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.sandbox


def _env(sandbox: Any, **extra: str) -> dict[str, str]:
    # exactly what `eval "$(dsqlops sandbox env --dir …)"` sets: bench finds the sandbox from its CA path
    env = {**os.environ, **sandbox.env(), "DSQLOPS_NO_PROGRESS": "1"}
    for k in ("DSQLOPS_CONFIG", "DSQLOPS_PROFILE", "AWS_PROFILE", "DSQLOPS_SANDBOX_DIR"):
        env.pop(k, None)
    env.update(extra)
    return env


def _dsqlops(sandbox: Any, *args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dsqlops", *args], env=_env(sandbox, **extra), text=True,
                          capture_output=True, timeout=timeout, check=False)


def test_bench_cost_comes_from_published_metrics(sandbox: Any, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cid = sandbox.create_cluster()
    results = tmp_path / "r.jsonl"
    p = _dsqlops(sandbox, "-o", "json", "bench", "transfer", "-c", cid, "--setup", "--accounts", "30",
                 "--concurrency", "4", "--processes", "2", "--transactions", "120", "--results", str(results))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["committed"] + out["aborted"] == 120 and out["invariants_ok"] is True
    assert out["cost_window_exact"] is True
    # every transfer wrote < 1 KiB, so each paid the 0.05 write minimum (plus reads and compute)
    assert out["cost_write_dpu"] >= 0.05 * out["committed"] * 0.95
    assert out["cost_dpu_per_transaction"] > 0.05
    assert float(out["cost_usd_per_1000_transactions"]) > 0
    assert out["cost_cluster_occ_conflicts"] == out["occ_conflicts"]
    # the cost command reads the same CloudWatch data back (the month so far ⊇ the bench window)
    c = _dsqlops(sandbox, "-o", "json", "cost", "--cluster-id", cid)
    assert c.returncode == 0, c.stderr
    assert cid in c.stdout and "total" in c.stdout.lower()
    mt = _dsqlops(sandbox, "-o", "json", "metrics", cid, "--since", "1h", "--metric", "WriteDPU",
                  "--metric", "OccConflicts")
    assert mt.returncode == 0, mt.stderr
    totals = {x["metric"]: float(x["total"]) for x in json.loads(mt.stdout)["series"]}
    assert totals["WriteDPU"] >= out["cost_write_dpu"] - 1e-6   # the hour ⊇ the run (setup included)
    assert totals["OccConflicts"] >= out["occ_conflicts"]
    m = _dsqlops(sandbox, "-o", "json", "sandbox", "flush-metrics", "--dir", str(sandbox.dir))
    assert m.returncode == 0, m.stderr
    assert any(r["cluster_id"] == cid for r in json.loads(m.stdout))
    merged = _dsqlops(sandbox, "-o", "json", "bench", "merge", str(results), str(results))
    assert merged.returncode == 0 and json.loads(merged.stdout)["committed"] == 2 * out["committed"]


def test_explain_analyze_verbose_through_the_front(sandbox: Any) -> None:
    from dsqlops.data.explain import parse_dpu

    cid = sandbox.create_cluster()
    with sandbox.connect(cid) as conn:
        conn.autocommit = True
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 50) g")
        deadline = time.monotonic() + 60
        while True:   # the meter installs the function within a tick of seeing the cluster ready
            try:
                text = "\n".join(r[0] for r in conn.execute(
                    "EXPLAIN (ANALYZE, VERBOSE) SELECT * FROM t WHERE v = 'y'"))
            except psycopg.errors.UndefinedFunction:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            break
        est = parse_dpu(text)
        assert est is not None, text
        assert float(est.read) == pytest.approx(50 * 128 * 1.83105e-06, abs=1e-5)
        plain = "\n".join(r[0] for r in conn.execute("EXPLAIN ANALYZE SELECT 1"))
        assert "Statement DPU Estimate" not in plain


@pytest.mark.slow
def test_demo_end_to_end_small(sandbox: Any) -> None:
    p = _dsqlops(sandbox, "demo", "--dir", str(sandbox.dir), "--accounts", "60", "--concurrency", "3",
                 "--duration", "2", "--role", "demo_teller", timeout=600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "refused, as expected" in p.stdout
    assert "per 1,000 transfers" in p.stdout
    assert "Statement DPU Estimate:" in p.stdout


def test_concurrent_flush_metrics_commands_are_all_served(sandbox: Any) -> None:
    """Several `sandbox flush-metrics` at once (cron, benches on several terminals): each one is
    answered (a single shared request file served one and timed the others out with exit 4)."""
    sandbox.create_cluster()
    procs = [subprocess.Popen([sys.executable, "-m", "dsqlops", "-o", "json", "sandbox", "flush-metrics", "--dir",
                               str(sandbox.dir), "--timeout", "20"], env=_env(sandbox), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(6)]
    outcomes = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert [code for code, _out, _err in outcomes] == [0] * 6, [err for _c, _o, err in outcomes]
    assert all(json.loads(out) for _code, out, _err in outcomes)
