"""Cost history: what each ``cost`` and ``report`` run measured, in one local SQLite file.

* One file under the XDG data dir (``$XDG_DATA_HOME/dsqlops/history.sqlite3``, default
  ``~/.local/share/dsqlops/``), or ``--history PATH`` / the ``history_file`` config key.
* WAL mode and a busy timeout: concurrent cron runs wait for each other instead of failing; each
  run is written in one ``BEGIN IMMEDIATE`` transaction.
* The schema is versioned with ``PRAGMA user_version`` and upgraded by :data:`MIGRATIONS` in order; a
  file from a newer dsqlops is refused rather than guessed at.
* Re-running the same day replaces, never duplicates: every table has a natural primary key (cluster
  and day, cluster and month, cluster and month and forecast day) and rows are upserted. A partial
  day never overwrites a complete one, and a month-to-date figure never overwrites a closed month.
* Amounts are stored as decimal strings (exact), as everywhere in dsqlops.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import statistics
from collections import defaultdict
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from dsqlops.cost.model import COMPONENTS, CostEstimate, money, plain
from dsqlops.cost.timewin import month_start, next_month
from dsqlops.errors import ConfigError

FILE_NAME = "history.sqlite3"
BUSY_TIMEOUT_MS = 30_000
_COMP_COLS = [f"{k}_dpu" for k in COMPONENTS]

#: Schema migrations; entry i brings the file from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, command TEXT NOT NULL,
        window_start TEXT NOT NULL, window_end TEXT NOT NULL, price_table TEXT NOT NULL);
    CREATE TABLE daily (
        account TEXT NOT NULL, region TEXT NOT NULL, cluster_id TEXT NOT NULL, day TEXT NOT NULL,
        {", ".join(f"{c} TEXT NOT NULL" for c in _COMP_COLS)},
        billed_dpu TEXT NOT NULL, storage_gb_month TEXT NOT NULL,
        dpu_usd_per_million TEXT, storage_usd_per_gb_month TEXT, price_as_of TEXT,
        complete INTEGER NOT NULL, run_id INTEGER NOT NULL REFERENCES runs(id),
        PRIMARY KEY (account, region, cluster_id, day));
    CREATE TABLE monthly (
        account TEXT NOT NULL, region TEXT NOT NULL, cluster_id TEXT NOT NULL, month TEXT NOT NULL,
        billed_dpu TEXT NOT NULL, storage_gb_month TEXT NOT NULL, gross_usd TEXT, free_tier_usd TEXT,
        total_usd TEXT, closed INTEGER NOT NULL, price_as_of TEXT, run_id INTEGER NOT NULL REFERENCES runs(id),
        PRIMARY KEY (account, region, cluster_id, month));
    CREATE TABLE forecasts (
        account TEXT NOT NULL, region TEXT NOT NULL, cluster_id TEXT NOT NULL, month TEXT NOT NULL,
        made_on TEXT NOT NULL, forecast_usd TEXT, forecast_dpu TEXT NOT NULL, method TEXT NOT NULL,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        PRIMARY KEY (account, region, cluster_id, month, made_on));
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def default_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "dsqlops" / FILE_NAME


def resolve_path(flag: str | None, settings: Any = None) -> Path:
    """--history > config ``history_file`` > the XDG data dir."""
    if flag:
        return Path(flag).expanduser()
    configured = settings.section("history_file") if settings is not None else None
    if configured:
        if not isinstance(configured, str):
            raise ConfigError("config key history_file must be a file path")
        return Path(configured).expanduser()
    return default_path()


@contextlib.contextmanager
def connect(path: Path, *, create: bool = True) -> Iterator[sqlite3.Connection]:
    """An open, migrated history database (WAL, busy timeout); closed on exit."""
    if not create and not path.exists():
        raise ConfigError(f"no cost history at {path}",
                          hint="run 'dsqlops cost' or 'dsqlops report' first (they record it), or pass --history")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    except (OSError, sqlite3.Error) as e:
        raise ConfigError(f"cannot open the cost history {path}: {e}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn, path)
        yield conn
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"cost history {path}: {e}") from None
    finally:
        conn.close()


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(f"cost history {path} has schema {version}; this dsqlops knows up to {SCHEMA_VERSION}",
                              hint="use a newer dsqlops or another --history file")
        for i in range(version, SCHEMA_VERSION):
            for stmt in (x.strip() for x in MIGRATIONS[i].split(";")):
                if stmt:
                    conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {i + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _s(v: Decimal | None) -> str | None:
    return None if v is None else str(plain(v))


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record(path: Path, est: CostEstimate, *, command: str) -> int:
    """Write what ``est`` measured: per cluster and day, the month (when the window covers it from the
    1st, to now or to its end) and the forecasts. Returns the run id."""
    start, end, now = est.start, est.end, est.generated_at
    whole_month = (start == month_start(start)
                   and (end >= next_month(start) or end >= now - dt.timedelta(hours=1))
                   and end <= next_month(start))
    closed = whole_month and end >= next_month(start)
    days: list[dt.date] = []
    d = start.date()
    while dt.datetime.combine(d, dt.time(), dt.UTC) < end:
        days.append(d)
        d += dt.timedelta(days=1)
    with connect(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            run_id = conn.execute("INSERT INTO runs (recorded_at, command, window_start, window_end, price_table) "
                                  "VALUES (?, ?, ?, ?, ?)",
                                  (_iso(now), command, _iso(start), _iso(end), est.price_table)).lastrowid
            for c in est.clusters:
                key = (c.account, c.region, c.cluster_id)
                price = ((_s(c.price.dpu_usd_per_million), _s(c.price.storage_usd_per_gb_month), str(c.price.as_of))
                         if c.priced else (None, None, None))
                for day in days:
                    day_start = dt.datetime.combine(day, dt.time(), dt.UTC)
                    complete = int(start <= day_start and day_start + dt.timedelta(days=1) <= end)
                    comps = c.daily_components.get(day, {})
                    conn.execute(
                        f"INSERT INTO daily (account, region, cluster_id, day, {', '.join(_COMP_COLS)}, billed_dpu, "
                        "storage_gb_month, dpu_usd_per_million, storage_usd_per_gb_month, price_as_of, complete, "
                        f"run_id) VALUES ({', '.join('?' * (len(_COMP_COLS) + 11))}) "
                        "ON CONFLICT (account, region, cluster_id, day) DO UPDATE SET "
                        + ", ".join(f"{col} = excluded.{col}" for col in (
                            *_COMP_COLS, "billed_dpu", "storage_gb_month", "dpu_usd_per_million",
                            "storage_usd_per_gb_month", "price_as_of", "complete", "run_id"))
                        + " WHERE excluded.complete >= daily.complete",
                        (*key, day.isoformat(), *(_s(comps.get(k, Decimal(0))) for k in COMPONENTS),
                         _s(c.daily_dpu.get(day, Decimal(0))), _s(c.daily_storage_gb_month.get(day, Decimal(0))),
                         *price, complete, run_id))
                if whole_month:
                    usd = (lambda v: str(money(v))) if c.priced else (lambda v: None)
                    conn.execute(
                        "INSERT INTO monthly (account, region, cluster_id, month, billed_dpu, storage_gb_month, "
                        "gross_usd, free_tier_usd, total_usd, closed, price_as_of, run_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (account, region, cluster_id, month) DO UPDATE SET "
                        "billed_dpu = excluded.billed_dpu, storage_gb_month = excluded.storage_gb_month, "
                        "gross_usd = excluded.gross_usd, free_tier_usd = excluded.free_tier_usd, "
                        "total_usd = excluded.total_usd, closed = excluded.closed, price_as_of = excluded.price_as_of, "
                        "run_id = excluded.run_id WHERE excluded.closed >= monthly.closed",
                        (*key, f"{start:%Y-%m}", _s(c.billed_dpu), _s(c.storage_gb_month), usd(c.gross_usd),
                         usd(c.free_tier_usd), usd(c.total_usd), int(closed), price[2], run_id))
                if c.forecast is not None:
                    f = c.forecast
                    conn.execute(
                        "INSERT INTO forecasts (account, region, cluster_id, month, made_on, forecast_usd, "
                        "forecast_dpu, method, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (account, region, cluster_id, month, made_on) DO UPDATE SET "
                        "forecast_usd = excluded.forecast_usd, forecast_dpu = excluded.forecast_dpu, "
                        "method = excluded.method, run_id = excluded.run_id",
                        (*key, f"{month_start(now):%Y-%m}", now.date().isoformat(),
                         str(money(f.total_usd)) if c.priced else None, _s(f.dpu), f.method, run_id))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return int(run_id or 0)


def _where(cluster_ids: Sequence[str]) -> tuple[str, list[str]]:
    if not cluster_ids:
        return "", []
    return f" WHERE cluster_id IN ({', '.join('?' * len(cluster_ids))})", list(cluster_ids)


def _dec(v: str | None) -> Decimal | None:
    return None if v is None else Decimal(v)


def month_over_month(conn: sqlite3.Connection, *, cluster_ids: Sequence[str] = (), months: int = 6,
                     today: dt.date | None = None) -> list[dict[str, Any]]:
    """One row per cluster and month (the last ``months`` months up to ``today``'s), with the change
    against the cluster's previous month in % and the trend so far as a sparkline."""
    from dsqlops.cost.views import sparkline

    where, args = _where(cluster_ids)
    rows = conn.execute("SELECT account, region, cluster_id, month, billed_dpu, storage_gb_month, total_usd, closed "
                        f"FROM monthly{where} ORDER BY account, region, cluster_id, month", args).fetchall()
    today = today or dt.datetime.now(dt.UTC).date()
    first = today.replace(day=1)
    for _ in range(months - 1):
        first = (first - dt.timedelta(days=1)).replace(day=1)
    lo = f"{first:%Y-%m}"
    by: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for r in rows:
        by[(r[0], r[1], r[2])].append(r)
    out: list[dict[str, Any]] = []
    for (account, region, cid), items in by.items():
        totals: list[Decimal | None] = []
        prev: Decimal | None = None
        for r in items:
            total = _dec(r[6])
            totals.append(total)
            change = (((total - prev) / prev * 100).quantize(Decimal("0.1"))
                      if total is not None and prev else None)
            prev = total
            if r[3] < lo:
                continue
            out.append({"account": account, "region": region, "cluster_id": cid, "month": r[3],
                        "billed_dpu": _dec(r[4]), "storage_gb_month": _dec(r[5]), "total_usd": total,
                        "change_pct": change, "closed": bool(r[7]),
                        "trend": sparkline([t for t in totals if t is not None][-months:], width=months)})
    return out


def forecast_error(conn: sqlite3.Connection, *, cluster_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
    """How good the forecasts were: every forecast made during a month that has since closed, against
    the closing figure, grouped by the day of the month it was made on."""
    where, args = _where(cluster_ids)
    cond = where.replace(" WHERE cluster_id", " AND f.cluster_id") if where else ""
    rows = conn.execute(
        "SELECT f.made_on, f.forecast_usd, m.total_usd FROM forecasts f JOIN monthly m "
        "ON m.account = f.account AND m.region = f.region AND m.cluster_id = f.cluster_id AND m.month = f.month "
        f"WHERE m.closed = 1 AND f.forecast_usd IS NOT NULL AND m.total_usd IS NOT NULL{cond}", args).fetchall()
    by_day: dict[int, list[tuple[Decimal, Decimal]]] = defaultdict(list)
    for made_on, fc, actual in rows:
        by_day[dt.date.fromisoformat(made_on).day].append((Decimal(fc), Decimal(actual)))
    out = []
    for day in sorted(by_day):
        pairs = by_day[day]
        errors = [f - a for f, a in pairs]
        pct = [abs(f - a) / a * 100 for f, a in pairs if a]
        out.append({"day_of_month": day, "forecasts": len(pairs),
                    "mean_error_usd": money(sum(errors, Decimal(0)) / len(errors)),
                    "mean_abs_error_pct": (sum(pct, Decimal(0)) / len(pct)).quantize(Decimal("0.1")) if pct else None})
    return out


def anomalies(conn: sqlite3.Connection, *, threshold: Decimal, days: int = 7, trailing: int = 7,
              cluster_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Days (among each cluster's last ``days`` complete recorded days) whose billed DPU is above
    ``threshold`` × the median of the ``trailing`` days before it, naming the component that moved most
    above its own trailing median. A day needs at least 3 earlier days and a median above 0."""
    where, args = _where(cluster_ids)
    cond = (where + " AND complete = 1") if where else " WHERE complete = 1"
    rows = conn.execute(f"SELECT account, region, cluster_id, day, billed_dpu, {', '.join(_COMP_COLS)} FROM daily"
                        f"{cond} ORDER BY account, region, cluster_id, day", args).fetchall()
    by: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for r in rows:
        by[(r[0], r[1], r[2])].append(r)
    out: list[dict[str, Any]] = []
    for (account, region, cid), items in by.items():
        for i in range(max(0, len(items) - days), len(items)):
            before = items[max(0, i - trailing):i]
            if len(before) < 3:
                continue
            value = Decimal(items[i][4])
            median = Decimal(statistics.median([Decimal(r[4]) for r in before]))
            if median <= 0 or value <= threshold * median:
                continue
            moved = []
            for j, k in enumerate(COMPONENTS):
                cv = Decimal(items[i][5 + j])
                cm = Decimal(statistics.median([Decimal(r[5 + j]) for r in before]))
                moved.append((cv - cm, k, cv, cm))
            delta, comp, cv, cm = max(moved)
            out.append({"account": account, "region": region, "cluster_id": cid, "day": items[i][3],
                        "billed_dpu": plain(value), "trailing_median_dpu": plain(median),
                        "ratio": (value / median).quantize(Decimal("0.01")),
                        "component": comp if delta > 0 else None, "component_dpu": plain(cv),
                        "component_median_dpu": plain(cm)})
    return out
