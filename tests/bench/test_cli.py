"""`dsqlops bench` / `demo` / `sandbox flush-metrics` command lines: exit codes and outputs."""

from __future__ import annotations

import json

import pytest

from dsqlops.cli.main import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


@pytest.mark.parametrize("args, message", [
    (["--duration", "5", "--transactions", "10"], "not both"),
    (["--processes", "4", "--concurrency", "2"], "cannot exceed"),
])
def test_bench_bad_options_are_usage_errors(args: list[str], message: str, capsys, isolated_config) -> None:  # type: ignore[no-untyped-def]
    code, out, err = _run(["--region", "us-east-1", "bench", "transfer", "-c", "abcdefghijklmnopqrstuvwxyz",
                           *args], capsys)
    assert code == 252 and message in err and out == ""


def test_bench_merge_cli(tmp_path, capsys, isolated_config) -> None:  # type: ignore[no-untyped-def]
    line = {"kind": "dsqlops.bench", "version": 1, "workload": "transfer", "target": "t", "host": "h1",
            "started_at": "2026-11-27T04:00:00Z", "ended_at": "2026-11-27T04:00:10Z", "elapsed_seconds": 10.0,
            "concurrency": 4, "processes": 1, "accounts": 100, "committed": 100, "attempts": 110, "retries": 10,
            "occ_conflicts": 10, "occ_absorbed": 9, "failed": 1, "occ_escaped": 1,
            "latency_histogram": {"300": 60, "400": 40},
            "checks": [{"name": "total_money_unchanged", "ok": True, "detail": "x"}], "cost": None}
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps(line) + "\n")
    b.write_text(json.dumps({**line, "host": "h2", "started_at": "2026-11-27T04:00:02Z",
                             "ended_at": "2026-11-27T04:00:12Z"}) + "\n")
    code, out, _err = _run(["-o", "json", "bench", "merge", str(a), str(b)], capsys)
    s = json.loads(out)
    assert code == 0
    assert (s["committed"], s["retries"], s["occ_escaped"], s["hosts"], s["concurrency"]) == (200, 20, 2, 2, 8)
    assert s["elapsed_seconds"] == 12.0 and s["tps"] == pytest.approx(200 / 12, abs=0.01)
    assert s["p50_ms"] < s["p99_ms"]
    bad = {**line, "checks": [{"name": "total_money_unchanged", "ok": False, "detail": "lost 1.00"}]}
    b.write_text(json.dumps(bad) + "\n")
    code, out, err = _run(["bench", "merge", str(a), str(b)], capsys)
    assert code == 1 and "invariant" in err and "FAILED" in out
    code, _out, err = _run(["bench", "merge", str(tmp_path / "missing.jsonl")], capsys)
    assert code == 252 and "cannot read" in err


def test_flush_metrics_without_sandbox(tmp_path, capsys, isolated_config) -> None:  # type: ignore[no-untyped-def]
    code, out, err = _run(["sandbox", "flush-metrics", "--dir", str(tmp_path), "--timeout", "0.5"], capsys)
    assert code == 254 and "no sandbox" in err and out == ""


def test_bench_refuses_an_unwritable_results_file_before_running(tmp_path, capsys, isolated_config) -> None:  # type: ignore[no-untyped-def]
    code, out, err = _run(["--region", "us-east-1", "bench", "transfer", "-c", "abcdefghijklmnopqrstuvwxyz",
                           "--results", str(tmp_path / "missing" / "r.jsonl")], capsys)
    assert code == 252 and "does not exist" in err and out == ""
    code, out, err = _run(["--region", "us-east-1", "bench", "transfer", "-c", "abcdefghijklmnopqrstuvwxyz",
                           "--results", str(tmp_path)], capsys)
    assert code == 252 and "is a directory" in err   # click.Path(dir_okay=False)
