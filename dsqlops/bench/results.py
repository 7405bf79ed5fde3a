"""Bench results: the summary users see, JSON lines that several hosts can merge, the live line.

A JSON line is one object per run::

    {"kind": "dsqlops.bench", "version": 1, "workload": "transfer", "host": "…", "started_at": "…Z",
     "ended_at": "…Z", "elapsed_seconds": 10.0, "concurrency": 8, "processes": 1, "accounts": 1000,
     "target": "…", "committed": 1234, …, "latency_histogram": {"412": 3, …}, "checks": [...],
     "cost": {...} | null}

``merge`` adds counters and histogram buckets (so merged p50/p99 are exact up to bucket width),
spans the earliest start to the latest end, and sums per-host throughput (hosts run side by side:
it warns when they did not). A run cut short carries ``"complete": false`` and its
``incomplete_reason``; a check that could not run has ``"ok": null``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from dsqlops.bench.cost import Fetch, merged_cost
from dsqlops.bench.histogram import Snapshot
from dsqlops.bench.runner import BenchResult
from dsqlops.bench.workloads import Check
from dsqlops.errors import UsageError

KIND = "dsqlops.bench"
VERSION = 1


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def summary(result: BenchResult) -> dict[str, Any]:
    """The flat summary rendered by ``bench`` in any output format."""
    s = result.snapshot
    lat = s.latency
    finished = s.committed + s.aborted + s.failed
    out: dict[str, Any] = {
        "workload": result.workload,
        "hosts": result.runs,
        "started_at": result.started_at,
        "ended_at": result.ended_at,
        "elapsed_seconds": round(result.elapsed_seconds, 3),
        "concurrency": result.concurrency,
        "processes": result.processes,
        "transactions": finished,
        "committed": s.committed,
        "aborted": s.aborted,
        "failed": s.failed,
        "tps": round(result.tps, 2),
        "p50_ms": _ms(lat.percentile(50)),
        "p95_ms": _ms(lat.percentile(95)),
        "p99_ms": _ms(lat.percentile(99)),
        "attempts": s.attempts,
        "retries": s.retries,
        "occ_conflicts": s.occ_conflicts,
        "occ_absorbed": s.occ_absorbed,
        "occ_escaped": s.occ_escaped,
        "errors": s.errors,
        "conflict_rate": round(s.occ_conflicts / s.attempts, 4) if s.attempts else 0.0,
        "gave_up": result.gave_up,
        "invariants_ok": result.ok if result.checked else None,
        "checks": {c.name: _check_text(c) for c in result.checks},
        "complete": result.complete,
    }
    if not result.complete:
        out["incomplete_reason"] = result.incomplete_reason
    if s.error_samples:
        out["error_samples"] = dict(s.error_samples)
    if result.cost is not None:
        out.update({f"cost_{k}" if not k.startswith("cost") else k: v for k, v in result.cost.items()})
    return out


def _check_text(c: Check) -> str:
    if c.ok is None:
        return c.detail if c.detail.startswith("not checked") else f"not checked: {c.detail}"
    return ("ok: " if c.ok else "FAILED: ") + c.detail


def live_line(s: Snapshot, elapsed: float) -> str:
    """The one-line live status (stderr)."""
    p50, p99 = s.latency.percentile(50), s.latency.percentile(99)
    tps = s.committed / elapsed if elapsed > 0 else 0.0
    fmt = lambda v: "-" if v is None else f"{v * 1000:.1f}ms"  # noqa: E731
    return (f"{elapsed:6.1f}s  tps {tps:8.1f}  p50 {fmt(p50)}  p99 {fmt(p99)}  committed {s.committed}  "
            f"retries {s.retries}  occ absorbed {s.occ_absorbed} escaped {s.occ_escaped}  "
            f"errors {s.errors}  in-flight {s.in_flight}")


class Progress:
    """The live status line on stderr: rewritten in place every second on a terminal, a new line
    every ``every`` seconds otherwise; nothing when disabled (``--no-progress``)."""

    def __init__(self, stream: TextIO, *, enabled: bool, every: float = 2.0) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.every = every
        self._t0 = time.monotonic()
        self._last = 0.0
        self._open = False

    def start(self) -> None:
        """The run's clock starts now (after the setup and the cost window's first mark)."""
        self._t0 = time.monotonic()

    def setup(self, rows: int) -> None:
        if self.enabled and self.tty:
            self._write(f"\r\033[Kloading rows: {rows}")

    def tick(self, s: Snapshot) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not self.tty and now - self._last < self.every:
            return
        self._last = now
        line = live_line(s, now - self._t0)
        self._write(("\r\033[K" + line) if self.tty else (line + "\n"))

    def finish(self) -> None:
        if self._open:
            self._write("\n")
            self._open = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
        self._open = self.tty and not text.endswith("\n")


def to_json_line(result: BenchResult) -> str:
    d: dict[str, Any] = {
        "kind": KIND, "version": VERSION, "workload": result.workload, "target": result.target,
        "host": result.host, "started_at": _iso(result.started_at), "ended_at": _iso(result.ended_at),
        "elapsed_seconds": result.elapsed_seconds, "concurrency": result.concurrency,
        "processes": result.processes, "accounts": result.accounts, "runs": result.runs,
    }
    d.update(result.snapshot.to_dict())
    d["in_flight"] = 0
    d["checks"] = [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in result.checks]
    d["complete"] = result.complete
    d["incomplete_reason"] = result.incomplete_reason
    from dsqlops.output import to_jsonable

    d["cost"] = to_jsonable(result.cost)   # ISO-8601 Z times, Decimals as strings
    return json.dumps(d, sort_keys=False, default=str)


def check_writable(path: str | Path) -> None:
    """Refuse a results file that could not be appended to (its folder missing, a folder, not writable)."""
    from dsqlops.fsutil import check_output_file

    p = check_output_file(path, "--results")
    folder = p.parent if str(p.parent) else Path(".")
    if not os.access(p if p.exists() else folder, os.W_OK):
        raise UsageError(f"--results {p}: not writable")


def append_json_line(path: str | Path, result: BenchResult) -> None:
    """Append the result as one line, in one write (a reader never sees half a line of it)."""
    line = (to_json_line(result) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"cannot write the results to {path}: {exc.strerror or exc}") from None
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def from_json(d: dict[str, Any]) -> BenchResult:
    if d.get("kind") != KIND:
        raise UsageError("not a dsqlops bench result (missing \"kind\": \"dsqlops.bench\")")
    try:
        return BenchResult(
            workload=str(d["workload"]), target=str(d.get("target", "")), host=str(d.get("host", "")),
            started_at=_parse_time(d["started_at"]), ended_at=_parse_time(d["ended_at"]),
            elapsed_seconds=float(d["elapsed_seconds"]), concurrency=int(d["concurrency"]),
            processes=int(d.get("processes", 1)), accounts=int(d.get("accounts", 0)),
            snapshot=Snapshot.from_dict(d), runs=int(d.get("runs", 1)),
            checks=[Check(str(c["name"]), None if c.get("ok") is None else bool(c["ok"]), str(c.get("detail", "")))
                    for c in d.get("checks", [])],
            cost=d.get("cost"), complete=bool(d.get("complete", True)),
            incomplete_reason=None if d.get("incomplete_reason") is None else str(d["incomplete_reason"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"malformed bench result: {exc}") from None


def read_json_lines(paths: Iterable[str | Path]) -> list[BenchResult]:
    results: list[BenchResult] = []
    for path in paths:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {p}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise UsageError(f"cannot read {p}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{p}:{n}: not JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise UsageError(f"{p}:{n}: not a JSON object")
            try:
                results.append(from_json(obj))
            except UsageError as exc:
                raise UsageError(f"{p}:{n}: {exc.message}") from None
    if not results:
        raise UsageError("no bench results in the given files")
    return results


def merge(results: list[BenchResult], *, fetch: Fetch | None = None) -> BenchResult:
    """Merge runs of the same workload made side by side (several hosts).

    The cost is the clusters' cost over the union of the runs' windows (see
    :func:`dsqlops.bench.cost.merged_cost`; ``fetch`` reads CloudWatch for windows that overlap
    without being the same). Warnings (runs that do not overlap, costs missing or approximate) go
    to ``result.warnings``.
    """
    if not results:
        raise UsageError("nothing to merge")
    workloads = {r.workload for r in results}
    if len(workloads) > 1:
        raise UsageError(f"cannot merge different workloads: {', '.join(sorted(workloads))}")
    snap = Snapshot()
    for r in results:
        snap.merge(r.snapshot)
    snap.in_flight = 0
    start = min(r.started_at for r in results)
    end = max(r.ended_at for r in results)
    checks = [c for r in results for c in r.checks]
    cost, warnings = merged_cost([(r.cost, r.snapshot.committed, r.target) for r in results], fetch=fetch)
    periods = _periods(results)
    if len(periods) > 1:
        spans = ", ".join(f"{_iso(a)}–{_iso(b)}" for a, b in periods)
        warnings.insert(0, f"the runs do not overlap in time ({len(periods)} separate periods: {spans}); merge "
                           "is meant for runs made side by side: the merged tps spans the gaps")
    incomplete = [r for r in results if not r.complete]
    merged = BenchResult(
        workload=results[0].workload, target=",".join(sorted({r.target for r in results})),
        host=",".join(sorted({r.host for r in results})), started_at=start, ended_at=end,
        elapsed_seconds=max((end - start).total_seconds(), max(r.elapsed_seconds for r in results)),
        concurrency=sum(r.concurrency for r in results), processes=sum(r.processes for r in results),
        accounts=max(r.accounts for r in results), snapshot=snap, checks=checks,
        cost=cost, runs=sum(r.runs for r in results), complete=not incomplete,
        incomplete_reason="; ".join(f"{r.host}: {r.incomplete_reason}" for r in incomplete) or None,
        warnings=warnings)
    return merged


def _periods(results: list[BenchResult]) -> list[tuple[dt.datetime, dt.datetime]]:
    """The runs' [start, end] intervals joined where they overlap, in time order."""
    out: list[tuple[dt.datetime, dt.datetime]] = []
    for r in sorted(results, key=lambda r: r.started_at):
        if out and r.started_at <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], r.ended_at))
        else:
            out.append((r.started_at, r.ended_at))
    return out
