"""Bench telemetry: a mergeable latency histogram and the counters of a run.

Everything here merges: threads of one process, processes of one host, and JSON-lines results
of several hosts (``bench merge``) add up counters and histogram buckets, so p50/p99 of a merged
run are computed from all samples, not averaged from per-host percentiles.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Buckets grow by 2 % per step from 10 µs: ≤1 % relative error on reported percentiles.
_BASE_US = 10.0
_GROWTH = 1.02
_LOG_GROWTH = math.log(_GROWTH)


def bucket_of(seconds: float) -> int:
    us = max(seconds * 1e6, _BASE_US)
    return int(math.log(us / _BASE_US) / _LOG_GROWTH)


def bucket_value(bucket: int) -> float:
    """The representative latency (seconds) of a bucket: its geometric middle."""
    return _BASE_US * (_GROWTH ** (bucket + 0.5)) / 1e6


@dataclass
class Histogram:
    counts: dict[int, int] = field(default_factory=dict)

    def add(self, seconds: float) -> None:
        b = bucket_of(seconds)
        self.counts[b] = self.counts.get(b, 0) + 1

    def merge(self, other: Histogram) -> None:
        for b, n in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + n

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentile(self, p: float) -> float | None:
        """The p-th percentile (0–100) in seconds, or None without samples."""
        total = self.total
        if total == 0:
            return None
        rank = max(1, math.ceil(total * p / 100.0))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return bucket_value(b)
        return bucket_value(max(self.counts))  # pragma: no cover - unreachable

    def to_dict(self) -> dict[str, int]:
        return {str(b): n for b, n in sorted(self.counts.items())}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        return cls({int(b): int(n) for b, n in data.items()})


#: Counter names, in the order the live line and the summary show them.
COUNTERS = ("committed", "failed", "aborted", "retries", "occ_conflicts", "occ_absorbed", "occ_escaped",
            "errors", "attempts")


@dataclass
class Snapshot:
    """Counters and latencies of a run (or of one process of it) at one moment."""

    committed: int = 0        # transactions that committed
    failed: int = 0           # transactions that gave up (escaped OCC conflicts + errors)
    aborted: int = 0          # transactions the workload rolled back on purpose (insufficient funds)
    retries: int = 0          # extra attempts made after a 40001
    occ_conflicts: int = 0    # 40001s seen (every attempt that hit one)
    occ_absorbed: int = 0     # transactions that hit ≥1 conflict and then committed
    occ_escaped: int = 0      # transactions that were still conflicting after the last attempt
    errors: int = 0           # transactions that failed with anything but 40001
    attempts: int = 0
    in_flight: int = 0
    latency: Histogram = field(default_factory=Histogram)
    error_samples: dict[str, int] = field(default_factory=dict)   # "SQLSTATE message" -> count (≤ 20 kept)

    def merge(self, other: Snapshot) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.in_flight += other.in_flight
        self.latency.merge(other.latency)
        for k, n in other.error_samples.items():
            if k in self.error_samples or len(self.error_samples) < 20:
                self.error_samples[k] = self.error_samples.get(k, 0) + n

    def copy(self) -> Snapshot:
        s = Snapshot()
        s.merge(self)
        return s

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {name: getattr(self, name) for name in COUNTERS}
        d["in_flight"] = self.in_flight
        d["latency_histogram"] = self.latency.to_dict()
        d["error_samples"] = dict(self.error_samples)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        s = cls()
        for name in COUNTERS:
            setattr(s, name, int(data.get(name, 0)))
        s.in_flight = int(data.get("in_flight", 0))
        s.latency = Histogram.from_dict(data.get("latency_histogram") or {})
        s.error_samples = {str(k): int(v) for k, v in (data.get("error_samples") or {}).items()}
        return s


class Recorder:
    """Thread-safe accumulation of one process's counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snap = Snapshot()

    def started(self) -> None:
        with self._lock:
            self._snap.in_flight += 1

    def finished(self, *, outcome: str, seconds: float, attempts: int, conflicts: int,
                 error: str | None = None) -> None:
        """Record one transaction. ``outcome``: committed | aborted | occ_escaped | error."""
        with self._lock:
            s = self._snap
            s.in_flight -= 1
            s.attempts += attempts
            s.retries += max(attempts - 1, 0)
            s.occ_conflicts += conflicts
            if outcome in ("committed", "aborted"):
                if outcome == "committed":
                    s.committed += 1
                else:
                    s.aborted += 1
                s.latency.add(seconds)
                if conflicts:
                    s.occ_absorbed += 1
            else:
                s.failed += 1
                if outcome == "occ_escaped":
                    s.occ_escaped += 1
                else:
                    s.errors += 1
                if error and (error in s.error_samples or len(s.error_samples) < 20):
                    s.error_samples[error] = s.error_samples.get(error, 0) + 1

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snap.copy()
