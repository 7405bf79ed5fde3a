"""The cost history in real SQLite: schema and migrations, upserts, month over month, forecast error,
anomalies, and concurrent writers."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import sqlite3
from decimal import Decimal as D
from pathlib import Path

import pytest
from click.testing import CliRunner

from dsqlops.cli.main import cli, main
from dsqlops.cost import history
from dsqlops.cost.model import ClusterUsage, estimate
from dsqlops.errors import ConfigError
from tests.cost.test_model import PRICES, t

H = dt.timedelta(hours=1)
A = "a" * 26
OCT, NOV, DEC = t(2026, 10, 1), t(2026, 11, 1), t(2026, 12, 1)


def _usage(per_day: dict[dt.date, tuple[int, int]], cid: str = A) -> ClusterUsage:
    """(read, write) DPU per day, at noon; TotalDPU is their sum."""
    noon = {d: dt.datetime.combine(d, dt.time(12), dt.UTC) for d in per_day}
    return ClusterUsage(cid, "us-east-1", dpu={
        "TotalDPU": {noon[d]: D(r + w) for d, (r, w) in per_day.items()},
        "ReadDPU": {noon[d]: D(r) for d, (r, w) in per_day.items()},
        "WriteDPU": {noon[d]: D(w) for d, (r, w) in per_day.items()}}, account="111111111111")


def _days(start: dt.datetime, n: int, read: int = 800, write: int = 200) -> dict[dt.date, tuple[int, int]]:
    return {(start + dt.timedelta(days=i)).date(): (read, write) for i in range(n)}


def test_a_new_file_is_wal_and_at_the_current_schema_version(tmp_path):
    p = tmp_path / "h" / "history.sqlite3"
    with history.connect(p) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == history.SCHEMA_VERSION == 1
    with history.connect(p) as conn:  # re-opening migrates nothing twice
        assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} >= {
            "runs", "daily", "monthly", "forecasts"}


def test_a_file_from_a_newer_dsqlops_is_refused(tmp_path):
    p = tmp_path / "history.sqlite3"
    sqlite3.connect(p).execute("PRAGMA user_version = 99").connection.close()
    with pytest.raises(ConfigError, match="schema 99"):
        with history.connect(p):
            pass


def test_the_default_path_is_under_the_xdg_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert history.default_path() == tmp_path / "dsqlops" / "history.sqlite3"
    assert history.resolve_path("~/x.db").name == "x.db"


def test_rerunning_the_same_day_replaces_never_duplicates(tmp_path):
    p = tmp_path / "h.sqlite3"
    now = t(2026, 11, 5, 13)
    u = _usage(_days(NOV, 5))
    history.record(p, estimate([u], PRICES, start=NOV, end=now, now=now, forecast=True), command="cost")
    bigger = _usage({**_days(NOV, 4), t(2026, 11, 5).date(): (5000, 0)})
    history.record(p, estimate([bigger], PRICES, start=NOV, end=now, now=now, forecast=True), command="cost")
    with history.connect(p) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM daily").fetchone()[0] == 5
        assert conn.execute("SELECT count(*) FROM monthly").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM forecasts").fetchone()[0] == 1
        day5 = conn.execute("SELECT billed_dpu, read_dpu, complete FROM daily WHERE day = '2026-11-05'").fetchone()
        assert day5 == ("5000", "5000", 0)  # today is not complete yet
        assert conn.execute("SELECT billed_dpu, closed FROM monthly").fetchone() == ("9000", 0)


def test_a_partial_day_or_month_never_overwrites_a_complete_one(tmp_path):
    p = tmp_path / "h.sqlite3"
    full = _usage(_days(OCT, 31))
    history.record(p, estimate([full], PRICES, start=OCT, end=NOV, now=t(2026, 11, 2)), command="report")
    # A later run over part of Oct 31 (from noon) sees only part of that day and is not a whole month.
    late = _usage({t(2026, 10, 31).date(): (1, 0)})
    history.record(p, estimate([late], PRICES, start=t(2026, 10, 31, 12), end=NOV, now=t(2026, 11, 2)),
                   command="cost")
    with history.connect(p) as conn:
        assert conn.execute("SELECT billed_dpu, complete FROM daily WHERE day = '2026-10-31'").fetchone() == (
            "1000", 1)
        assert conn.execute("SELECT billed_dpu, closed FROM monthly WHERE month = '2026-10'").fetchone() == (
            "31000", 1)


def test_month_over_month_with_change_and_trend(tmp_path):
    p = tmp_path / "h.sqlite3"
    # October 31 days × 200,000 DPU = 6.2M ($49.60 − $0.80 = $48.80); November 30 × 100,000 = 3M ($23.20).
    octo = _usage(_days(OCT, 31, 150_000, 50_000))
    history.record(p, estimate([octo], PRICES, start=OCT, end=NOV, now=t(2026, 11, 1, 1)), command="report")
    nov = _usage(_days(NOV, 30, 100_000, 0))
    history.record(p, estimate([nov], PRICES, start=NOV, end=DEC, now=t(2026, 12, 1, 1)), command="report")
    with history.connect(p) as conn:
        rows = history.month_over_month(conn, months=6, today=dt.date(2026, 12, 3))
    assert [(r["month"], r["total_usd"], r["change_pct"], r["closed"]) for r in rows] == [
        ("2026-10", D("48.80"), None, True), ("2026-11", D("23.20"), D("-52.5"), True)]
    assert len(rows[1]["trend"]) == 2 and rows[1]["trend"][0] > rows[1]["trend"][1]
    with history.connect(p) as conn:
        assert [r["month"] for r in history.month_over_month(conn, months=1, today=dt.date(2026, 11, 3))] == [
            "2026-11"]


def test_forecast_error_by_day_of_month(tmp_path):
    p = tmp_path / "h.sqlite3"
    # November: 100,000 DPU a day for the first 10 days, then 200,000. Forecasts made on Nov 6 and Nov 16.
    days = {**_days(NOV, 10, 100_000, 0), **_days(t(2026, 11, 11), 20, 200_000, 0)}
    for made in (t(2026, 11, 6), t(2026, 11, 16)):
        part = _usage({d: v for d, v in days.items() if d < made.date()})
        history.record(p, estimate([part], PRICES, start=NOV, end=made, now=made, forecast=True), command="cost")
    history.record(p, estimate([_usage(days)], PRICES, start=NOV, end=DEC, now=t(2026, 12, 1, 0, 10)),
                   command="report")
    # Closing: 1M + 4M = 5M DPU = $40 − $0.80 = $39.20.
    # Nov 6: rate 100,000/day × 30 = 3M → $23.20 (−$16.00, 40.8 %).
    # Nov 16: 10 × 100k + 5 × 200k = 2M so far; rate over Nov 9..16 (7 days: 2 × 100k + 5 × 200k = 1.2M)
    # = 171,428.57/day × 15 days left → 2M + 2,571,428.57 = 4,571,428.57 DPU → $36.571… − $0.80 = $35.77.
    with history.connect(p) as conn:
        rows = history.forecast_error(conn)
    assert [(r["day_of_month"], r["forecasts"], r["mean_error_usd"], r["mean_abs_error_pct"]) for r in rows] == [
        (6, 1, D("-16.00"), D("40.8")), (16, 1, D("-3.43"), D("8.8"))]


def test_anomalies_flag_the_day_and_name_the_component(tmp_path):
    p = tmp_path / "h.sqlite3"
    # 10 quiet days (800 read + 200 write), then Nov 11 with writes up to 4,200: 5,000 > 3 × 1,000.
    days = {**_days(NOV, 10), t(2026, 11, 11).date(): (800, 4_200), t(2026, 11, 12).date(): (900, 200)}
    now = t(2026, 11, 13)
    history.record(p, estimate([_usage(days)], PRICES, start=NOV, end=now, now=now), command="cost")
    with history.connect(p) as conn:
        found = history.anomalies(conn, threshold=D(3))
        assert history.anomalies(conn, threshold=D(6)) == []
    assert [(a["day"], a["billed_dpu"], a["trailing_median_dpu"], a["ratio"], a["component"]) for a in found] == [
        ("2026-11-11", D(5000), D(1000), D("5.00"), "write")]


def _writer(path: str, n: int, seed: int) -> None:
    for i in range(n):
        now = t(2026, 11, 5 + (seed + i) % 20, 10)
        u = _usage(_days(NOV, now.day), cid=("a", "b")[seed % 2] * 26)
        history.record(Path(path), estimate([u], PRICES, start=NOV, end=now, now=now, forecast=True), command="cost")


def test_concurrent_writers_are_all_recorded(tmp_path):
    p = tmp_path / "h.sqlite3"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(p), 15, s)) for s in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    with history.connect(p) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 60
        # No duplicates: one row per cluster and day.
        assert conn.execute("SELECT count(*) FROM (SELECT cluster_id, day, count(*) c FROM daily "
                            "GROUP BY cluster_id, day HAVING c > 1)").fetchone()[0] == 0


def test_cli_history_and_anomalies(tmp_path, isolated_config, capsys):
    p = tmp_path / "h.sqlite3"
    days = {**_days(NOV, 10), t(2026, 11, 11).date(): (800, 4_200)}
    now = t(2026, 11, 12)
    history.record(p, estimate([_usage(days)], PRICES, start=NOV, end=now, now=now), command="cost")
    r = CliRunner().invoke(cli, ["-o", "json", "cost", "history", "--history", str(p)])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert rows[0]["month"] == "2026-11" and rows[0]["billed_dpu"] == "15000" and "trend" not in rows[0]
    with pytest.raises(SystemExit) as e:
        main(["-o", "json", "cost", "anomalies", "--history", str(p), "--threshold", "3"])
    assert e.value.code == 3
    out = capsys.readouterr()
    assert json.loads(out.out)[0]["component"] == "write" and "trailing median" in out.err
    with pytest.raises(SystemExit) as e:
        main(["cost", "history", "--history", str(tmp_path / "none.sqlite3")])
    assert e.value.code == 253 and "no cost history" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["cost", "anomalies", "--history", str(p), "--threshold", "0.5"])
    assert e.value.code == 252
