"""`bench merge` keeps the cost (the clusters' cost over the union of the runs' windows) and warns
when the runs were not made side by side."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest

from dsqlops.bench import results
from dsqlops.bench.cost import bench_cost
from dsqlops.cli.main import main

T0 = dt.datetime(2026, 11, 27, 4, 0, tzinfo=dt.UTC)
PRICE = Decimal("8.00")


def _at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _cost(cluster: str, start: float, end: float, dpu: float, *, committed: int = 100) -> dict[str, Any]:
    return bench_cost({"TotalDPU": dpu, "WriteDPU": dpu / 2, "TotalTransactions": committed}, committed, PRICE,
                      "test prices", window=(_at(start), _at(end)), exact=True, cluster_id=cluster,
                      region="us-east-1")


def _line(host: str, start: float, end: float, cost: dict[str, Any] | None, committed: int = 100) -> dict[str, Any]:
    from dsqlops.output import to_jsonable

    return {"kind": "dsqlops.bench", "version": 1, "workload": "transfer", "target": "t", "host": host,
            "started_at": _at(start).isoformat(), "ended_at": _at(end).isoformat(), "elapsed_seconds": end - start,
            "concurrency": 4, "processes": 1, "accounts": 100, "committed": committed, "attempts": committed,
            "latency_histogram": {"300": committed}, "checks": [], "cost": to_jsonable(cost)}


def _merge(*lines: dict[str, Any], fetch: Any = None) -> results.BenchResult:
    return results.merge([results.from_json(json.loads(json.dumps(x))) for x in lines], fetch=fetch)


def test_costs_of_different_clusters_add_up() -> None:
    m = _merge(_line("a", 0, 10, _cost("c1", 0, 10, 10.0)), _line("b", 0, 10, _cost("c2", 0, 10, 30.0)))
    assert m.cost is not None
    assert m.cost["total_dpu"] == pytest.approx(40.0)
    assert Decimal(m.cost["usd"]) == Decimal("40") * PRICE / 1_000_000
    assert m.cost["usd_per_1000_transactions"] == f"{Decimal('40') * PRICE / 1_000_000 * 1000 / 200:.6f}"
    s = results.summary(m)
    assert s["cost_total_dpu"] == pytest.approx(40.0) and not m.warnings


def test_side_by_side_runs_on_one_cluster_count_its_window_once() -> None:
    # both hosts measured the same cluster over the same window: each saw all 25 DPU
    m = _merge(_line("a", 0, 10, _cost("c1", 0, 10, 25.0)), _line("b", 0, 10, _cost("c1", 0, 10, 25.0)))
    assert m.cost is not None and m.cost["total_dpu"] == pytest.approx(25.0)
    assert m.cost["dpu_per_transaction"] == pytest.approx(25.0 / 200)


def test_overlapping_windows_are_fetched_again_for_their_union() -> None:
    asked: list[tuple[Any, ...]] = []

    def fetch(region: str, cluster_id: str, start: dt.datetime, end: dt.datetime, exact: bool) -> dict[str, float]:
        asked.append((region, cluster_id, start, end, exact))
        return {"TotalDPU": 31.0, "WriteDPU": 15.0}

    a, b = _line("a", 0, 10, _cost("c1", 0, 10, 25.0)), _line("b", 5, 15, _cost("c1", 5, 15, 24.0))
    m = _merge(a, b, fetch=fetch)
    assert asked == [("us-east-1", "c1", _at(0), _at(15), True)]
    assert m.cost is not None and m.cost["total_dpu"] == pytest.approx(31.0) and m.cost["window_exact"] is True
    # without CloudWatch: the largest part, said to be a lower bound
    m = _merge(a, b)
    assert m.cost is not None and m.cost["total_dpu"] == pytest.approx(25.0) and m.cost["window_exact"] is False
    assert any("lower bound" in w for w in m.warnings)


def test_runs_that_do_not_overlap_are_summed_and_warned_about() -> None:
    m = _merge(_line("a", 0, 10, _cost("c1", 0, 10, 10.0)), _line("b", 600, 610, _cost("c1", 600, 610, 12.0)))
    assert m.cost is not None and m.cost["total_dpu"] == pytest.approx(22.0) and m.cost["windows"] == 2
    assert any("do not overlap" in w for w in m.warnings)


def test_merge_cli_prints_the_cost_and_the_warning(tmp_path, capsys, isolated_config) -> None:  # type: ignore[no-untyped-def]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps(_line("a", 0, 10, _cost("c1", 0, 10, 10.0))) + "\n")
    b.write_text(json.dumps(_line("b", 600, 610, _cost("c2", 600, 610, 12.0))) + "\n")
    with pytest.raises(SystemExit) as e:
        main(["-o", "json", "bench", "merge", str(a), str(b)])
    out, err = capsys.readouterr()
    assert e.value.code in (0, None)
    s = json.loads(out)
    assert s["cost_total_dpu"] == pytest.approx(22.0)
    assert Decimal(s["cost_usd"]) == Decimal(22) * PRICE / 1_000_000
    assert "warning:" in err and "do not overlap" in err


@pytest.mark.sandbox
@pytest.mark.slow
def test_two_hosts_side_by_side_on_the_sandbox_are_not_billed_twice(sandbox: Any, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    env = {**os.environ, **sandbox.env(), "DSQLOPS_NO_PROGRESS": "1"}
    for k in ("DSQLOPS_CONFIG", "DSQLOPS_PROFILE", "AWS_PROFILE", "DSQLOPS_SANDBOX_DIR"):
        env.pop(k, None)
    cid = sandbox.create_cluster()

    def dsqlops(*args: str) -> list[str]:
        return [sys.executable, "-m", "dsqlops", *args]

    setup = subprocess.run(dsqlops("bench", "transfer", "-c", cid, "--setup", "--accounts", "50", "--transactions",
                                   "1", "--concurrency", "1", "--no-cost"), env=env, capture_output=True, text=True,
                           timeout=120, check=False)
    assert setup.returncode == 0, setup.stderr
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    hosts = [subprocess.Popen(dsqlops("bench", "transfer", "-c", cid, "--accounts", "50", "--concurrency", "2",
                                      "--duration", "4", "--results", str(f)), env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for f in files]
    for h in hosts:
        _out, err = h.communicate(timeout=120)
        assert h.returncode == 0, err
    parts = [json.loads(f.read_text())["cost"] for f in files]
    assert all(p["cluster_id"] == cid and p["window_exact"] for p in parts)
    m = subprocess.run(dsqlops("-o", "json", "bench", "merge", *map(str, files)), env=env, capture_output=True,
                       text=True, timeout=120, check=False)
    assert m.returncode == 0, m.stderr
    assert "warning" not in m.stderr, m.stderr
    s = json.loads(m.stdout)
    biggest, both = max(p["total_dpu"] for p in parts), sum(p["total_dpu"] for p in parts)
    # each host measured the whole cluster: the union of the windows is more than either part and
    # less than their sum (which would count the time they ran together twice)
    assert biggest <= s["cost_total_dpu"] < both
    assert s["cost_cluster_transactions"] >= s["committed"]
