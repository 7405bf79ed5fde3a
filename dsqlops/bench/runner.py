"""The bench runner: C client threads (× P processes) running a workload for a duration or a
number of transactions, at an optional rate, with a live snapshot every second.

Connections come from a *pool spec*: a picklable object whose ``open(max_size)`` returns a
psycopg_pool ``ConnectionPool`` (so worker processes can build their own pools, each minting its
own IAM tokens), and whose ``connect()`` returns one plain connection for setup and checks.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import queue
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dsqlops.bench.stats import Recorder, Snapshot
from dsqlops.bench.txn import run_one
from dsqlops.bench.workloads import Check, Workload, make_workload
from dsqlops.data.retry import RetryPolicy
from dsqlops.errors import UsageError


class PoolSpec(Protocol):
    def open(self, max_size: int) -> Any: ...

    def connect(self) -> Any: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class ConninfoPoolSpec:
    """A plain libpq conninfo (a local PostgreSQL, the tests' ``pg`` fixture, pgbench comparisons)."""

    conninfo: str

    def open(self, max_size: int) -> Any:
        from psycopg_pool import ConnectionPool

        pool = ConnectionPool(self.conninfo, min_size=min(max_size, 4), max_size=max_size, open=False,
                              timeout=60)
        pool.open(wait=True, timeout=60)
        return pool

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.conninfo)

    def describe(self) -> str:
        return "postgresql"


@dataclass(frozen=True)
class BenchConfig:
    workload: str = "transfer"
    accounts: int = 1000
    concurrency: int = 8
    duration: float | None = 10.0
    transactions: int | None = None
    rate: float | None = None
    processes: int = 1
    setup: bool = False
    log: bool | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    seed: int | None = None

    def validate(self) -> None:
        if self.concurrency < 1:
            raise UsageError("--concurrency must be ≥ 1")
        if self.processes < 1:
            raise UsageError("--processes must be ≥ 1")
        if self.processes > self.concurrency:
            raise UsageError("--processes cannot exceed --concurrency (each process runs ≥ 1 client)")
        if self.duration is not None and self.transactions is not None:
            raise UsageError("give --duration or --transactions, not both")
        if self.duration is None and self.transactions is None:
            raise UsageError("give --duration or --transactions")
        if self.duration is not None and self.duration <= 0:
            raise UsageError("--duration must be > 0")
        if self.transactions is not None and self.transactions < 1:
            raise UsageError("--transactions must be ≥ 1")
        if self.rate is not None and self.rate <= 0:
            raise UsageError("--rate must be > 0")


@dataclass
class BenchResult:
    """One run of one host: what JSON lines carry and ``bench merge`` adds up."""

    workload: str
    target: str
    host: str
    started_at: dt.datetime
    ended_at: dt.datetime
    elapsed_seconds: float
    concurrency: int
    processes: int
    accounts: int
    snapshot: Snapshot
    checks: list[Check] = field(default_factory=list)
    cost: dict[str, Any] | None = None
    runs: int = 1

    @property
    def tps(self) -> float:
        return self.snapshot.committed / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


class _Pacer:
    """Shared limits: a global rate (evenly spaced start slots) and a transaction budget."""

    def __init__(self, rate: float | None, budget: int | None, deadline: float | None) -> None:
        self.rate = rate
        self.budget = budget
        self.deadline = deadline
        self._lock = threading.Lock()
        self._issued = 0
        self._start = time.monotonic()

    def next(self, stop: threading.Event) -> bool:
        with self._lock:
            if self.budget is not None and self._issued >= self.budget:
                return False
            n = self._issued
            self._issued += 1
        if self.rate is not None:
            wait = self._start + n / self.rate - time.monotonic()
            if wait > 0 and stop.wait(wait):
                return False
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return False
        return not stop.is_set()


def _worker(pool: Any, workload: Workload, policy: RetryPolicy, pacer: _Pacer, rec: Recorder,
            stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)

    def fn(conn: Any) -> str:
        return workload.transaction(conn, rng)

    while pacer.next(stop):
        rec.started()
        out = run_one(pool, fn, policy)
        rec.finished(outcome=out.result, seconds=out.seconds, attempts=out.attempts, conflicts=out.conflicts,
                     error=out.error)


def _run_threads(spec: PoolSpec, workload: Workload, cfg: BenchConfig, clients: int, share: float,
                 on_tick: Callable[[Snapshot], None] | None, stop: threading.Event,
                 seed: int) -> tuple[Snapshot, float]:
    """Run ``clients`` threads in this process; ``share`` of the global rate/budget is ours.

    Returns the snapshot and the seconds the clients ran: the clock (and ``--duration``) starts
    once the pool is open, so a slow connect does not eat into the measured run.
    """
    rate = cfg.rate * share if cfg.rate else None
    budget = None
    if cfg.transactions is not None:
        budget = max(round(cfg.transactions * share), 0)
    rec = Recorder()
    pool = spec.open(clients)
    try:
        t0 = time.perf_counter()
        deadline = time.monotonic() + cfg.duration if cfg.duration is not None else None
        pacer = _Pacer(rate, budget, deadline)
        threads = [threading.Thread(target=_worker, name=f"bench-{i}", daemon=True,
                                    args=(pool, workload, cfg.policy, pacer, rec, stop, seed * 1000 + i))
                   for i in range(clients)]
        for t in threads:
            t.start()
        while True:
            alive = [t for t in threads if t.is_alive()]
            if not alive:
                break
            alive[0].join(timeout=1.0)
            if on_tick is not None:
                on_tick(rec.snapshot())
        ran = time.perf_counter() - t0
    finally:
        stop.set()
        pool.close()
    return rec.snapshot(), ran


def _child(index: int, spec: PoolSpec, workload: Workload, cfg: BenchConfig, clients: int, share: float,
           seed: int, out: Any, stop_evt: Any) -> None:  # pragma: no cover - runs in a spawned process
    stop = threading.Event()

    def tick(s: Snapshot) -> None:
        if stop_evt.is_set():
            stop.set()
        out.put((index, "tick", s.to_dict()))

    try:
        final, ran = _run_threads(spec, workload, cfg, clients, share, tick, stop, seed)
        out.put((index, "done", {**final.to_dict(), "_elapsed": ran}))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        out.put((index, "error", f"{type(exc).__name__}: {exc}"))


def _run_processes(spec: PoolSpec, workload: Workload, cfg: BenchConfig,
                   on_tick: Callable[[Snapshot], None] | None, seed: int) -> tuple[Snapshot, float]:
    """Run the clients in ``cfg.processes`` spawned processes. Returns the merged snapshot and the
    longest time a process spent running its clients (process start-up is not counted)."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    stop_evt = ctx.Event()
    per = [cfg.concurrency // cfg.processes + (1 if i < cfg.concurrency % cfg.processes else 0)
           for i in range(cfg.processes)]
    procs = [ctx.Process(target=_child, args=(i, spec, workload, cfg, n, n / cfg.concurrency, seed + 7919 * i, out,
                                                stop_evt), daemon=True)
             for i, n in enumerate(per)]
    for p in procs:
        p.start()
    latest: dict[int, Snapshot] = {}
    finals: dict[int, Snapshot] = {}
    errors: list[str] = []
    elapsed = 0.0
    try:
        while len(finals) + len(errors) < len(procs):
            try:
                index, kind, payload = out.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    break
                continue
            if kind == "error":
                errors.append(str(payload))
                continue
            snap = Snapshot.from_dict(payload)
            if kind == "done":
                finals[index] = snap
                elapsed = max(elapsed, float(payload.get("_elapsed", 0.0)))
            latest[index] = snap
            if on_tick is not None:
                agg = Snapshot()
                for s in latest.values():
                    agg.merge(s)
                on_tick(agg)
    except KeyboardInterrupt:
        stop_evt.set()
        raise
    finally:
        for p in procs:
            p.join(timeout=30)
    if errors:
        raise UsageError(f"a bench process failed: {errors[0]}")
    total = Snapshot()
    for s in finals.values():
        total.merge(s)
    return total, elapsed


def run_bench(spec: PoolSpec, cfg: BenchConfig, *, on_tick: Callable[[Snapshot], None] | None = None,
              on_setup: Callable[[int], None] | None = None, stop: threading.Event | None = None,
              before_run: Callable[[], None] | None = None,
              after_run: Callable[[], None] | None = None) -> BenchResult:
    """Set up (optionally), run, and check a workload. Returns the host's result."""
    cfg.validate()
    workload = make_workload(cfg.workload, cfg.accounts, log=cfg.log)
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(1 << 30)
    with spec.connect() as conn:
        if cfg.setup:
            conn.autocommit = False
            workload.setup(conn, progress=on_setup)
        workload.prepare(conn)
        baseline = workload.baseline(conn)
    if before_run is not None:
        before_run()
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    if cfg.processes == 1:
        snap, elapsed = _run_threads(spec, workload, cfg, cfg.concurrency, 1.0, on_tick, stop or threading.Event(),
                                     seed)
    else:
        snap, elapsed = _run_processes(spec, workload, cfg, on_tick, seed)
        elapsed = elapsed or (time.perf_counter() - t0)
    ended = dt.datetime.now(dt.UTC)
    snap.in_flight = 0
    if after_run is not None:
        after_run()   # before the checks, so their reads stay out of a metered window
    with spec.connect() as conn:
        checks = workload.check(conn, baseline, snap.committed)
    return BenchResult(workload=cfg.workload, target=spec.describe(), host=socket.gethostname(),
                       started_at=started, ended_at=ended, elapsed_seconds=elapsed, concurrency=cfg.concurrency,
                       processes=cfg.processes, accounts=cfg.accounts, snapshot=snap, checks=checks)
