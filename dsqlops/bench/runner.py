"""The bench runner: C client threads (× P processes) running a workload for a duration or a
number of transactions, at an optional rate, with a live snapshot every second.

Connections come from a *pool spec*: a picklable object whose ``open(max_size)`` returns a
psycopg_pool ``ConnectionPool`` (so worker processes can build their own pools, each minting its
own IAM tokens), and whose ``connect()`` returns one plain connection for setup and checks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from dsqlops.bench.histogram import Recorder, Snapshot
from dsqlops.bench.txn import run_one
from dsqlops.bench.workloads import Check, Workload, make_workload
from dsqlops.data.retry import RetryPolicy
from dsqlops.errors import Terminated, UsageError, first_line

#: Past the end of the run (its duration, or a stop), clients get this long to finish the
#: transactions in flight; then the run is cut short and what is still running is abandoned.
GRACE_SECONDS = 3.0
#: No transaction got through for this long and every failure meanwhile was a lost connection
#: (or a pool that could not connect): the cluster is gone, the run stops.
LOST_AFTER_SECONDS = 5.0
#: The longest a client waits for a pooled connection when the run has no deadline.
CHECKOUT_CAP_SECONDS = 15.0


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
                              timeout=60, kwargs={"connect_timeout": 10})
        pool.open(wait=True, timeout=60)
        return pool

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.conninfo, connect_timeout=10)

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
    #: False when the run was cut short (interrupted, the cluster went away): its numbers are what
    #: was counted until then, ``incomplete_reason`` says why.
    complete: bool = True
    incomplete_reason: str | None = None
    #: The cluster stopped answering during the run (the run ended early because of it).
    lost: bool = False
    #: The SIGINT/SIGTERM that cut the run short, re-raised by the CLI once results are written.
    interrupted: BaseException | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def tps(self) -> float:
        return self.snapshot.committed / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """No invariant check failed (a check that could not run is not a failure: see ``checked``)."""
        return all(c.ok is not False for c in self.checks)

    @property
    def checked(self) -> bool:
        return all(c.ok is not None for c in self.checks)

    @property
    def gave_up(self) -> int:
        """Transactions whose every attempt hit an OCC conflict."""
        return self.snapshot.occ_escaped


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


class _Health:
    """Tells a cluster that went away from ordinary failures: no transaction got through for
    ``lost_after`` seconds, and the latest failure was a lost connection (a server that still
    answers, even with an error or an OCC conflict, is not gone)."""

    def __init__(self, lost_after: float) -> None:
        self.lost_after = lost_after
        self._lock = threading.Lock()
        self._last_ok = time.monotonic()
        self._last_failure_lost = False
        self.first_lost: str | None = None

    def record(self, *, ok: bool, lost: bool, error: str | None) -> None:
        with self._lock:
            if ok:
                self._last_ok = time.monotonic()
                self._last_failure_lost = False
                self.first_lost = None
            else:
                self._last_failure_lost = lost
                if lost and self.first_lost is None:
                    self.first_lost = error

    def gone(self) -> bool:
        with self._lock:
            return self._last_failure_lost and time.monotonic() - self._last_ok >= self.lost_after


class _Checkout:
    """The pool as ``run_transaction`` sees it: a checkout waits no longer than the run has left
    (plus the grace), so a cluster that went away cannot hold clients past the deadline."""

    def __init__(self, pool: Any, deadline: float | None) -> None:
        self.pool = pool
        self.deadline = deadline

    def getconn(self, timeout: float | None = None) -> Any:
        return self.pool.getconn(timeout=timeout)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        timeout = CHECKOUT_CAP_SECONDS
        if self.deadline is not None:
            timeout = max(0.5, min(timeout, self.deadline + GRACE_SECONDS - time.monotonic()))
        with self.pool.connection(timeout=timeout) as conn:
            yield conn


def _worker(pool: Any, workload: Workload, policy: RetryPolicy, pacer: _Pacer, rec: Recorder,
            stop: threading.Event, seed: int, health: _Health) -> None:
    rng = random.Random(seed)

    def fn(conn: Any) -> str:
        return workload.transaction(conn, rng)

    while pacer.next(stop):
        rec.started()
        out = run_one(pool, fn, policy)
        rec.finished(outcome=out.result, seconds=out.seconds, attempts=out.attempts, conflicts=out.conflicts,
                     error=out.error)
        health.record(ok=out.result in ("committed", "aborted"), lost=out.lost, error=out.error)


@dataclass
class _Ran:
    """What one process's clients did: counters, seconds, and why they stopped early (if they did)."""

    snapshot: Snapshot
    elapsed: float
    reason: str | None = None
    lost: bool = False
    interrupted: BaseException | None = None


@contextlib.contextmanager
def _quiet_pool_log() -> Iterator[None]:
    """psycopg_pool logs every failed reconnect; the run counts and reports them itself."""
    logger = logging.getLogger("psycopg.pool")
    before = logger.level
    if not logging.getLogger("dsqlops").isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


def _interrupt_reason(exc: BaseException) -> str:
    name = getattr(exc, "signal_name", None) or "SIGINT"
    return f"interrupted by {name}"


def _run_threads(spec: PoolSpec, workload: Workload, cfg: BenchConfig, clients: int, share: float,
                 on_tick: Callable[[Snapshot], None] | None, stop: threading.Event,
                 seed: int, *, lost_after: float = LOST_AFTER_SECONDS) -> _Ran:
    """Run ``clients`` threads in this process; ``share`` of the global rate/budget is ours.

    The clock (and ``--duration``) starts once the pool is open, so a slow connect does not eat
    into the measured run. The run ends when the clients are done, or is cut short
    ``GRACE_SECONDS`` after the deadline, a stop (``stop`` set, or SIGINT/SIGTERM here) or the
    cluster going away; the counters are then those of the transactions that finished.
    """
    rate = cfg.rate * share if cfg.rate else None
    budget = None
    if cfg.transactions is not None:
        budget = max(round(cfg.transactions * share), 0)
    rec = Recorder()
    health = _Health(lost_after)
    reason: str | None = None
    lost = False
    interrupted: BaseException | None = None
    with _quiet_pool_log():
        pool = spec.open(clients)
        try:
            t0 = time.perf_counter()
            deadline = time.monotonic() + cfg.duration if cfg.duration is not None else None
            pacer = _Pacer(rate, budget, deadline)
            checkout = _Checkout(pool, deadline)
            threads = [threading.Thread(target=_worker, name=f"bench-{i}", daemon=True,
                                        args=(checkout, workload, cfg.policy, pacer, rec, stop, seed * 1000 + i,
                                              health))
                       for i in range(clients)]
            for t in threads:
                t.start()
            cut_at: float | None = None
            next_tick = time.monotonic() + 1.0
            while True:
                alive = [t for t in threads if t.is_alive()]
                if not alive:
                    break
                try:
                    alive[0].join(timeout=0.25)
                    if on_tick is not None and time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + 1.0
                        on_tick(rec.snapshot())
                except (KeyboardInterrupt, Terminated) as exc:   # SIGINT; SIGTERM as raised by the CLI
                    if interrupted is not None:
                        raise
                    interrupted, reason = exc, _interrupt_reason(exc)
                    stop.set()
                now = time.monotonic()
                if not lost and health.gone():
                    lost = True
                    reason = reason or (f"the cluster stopped answering ({health.first_lost})"
                                        if health.first_lost else "the cluster stopped answering")
                    stop.set()
                if cut_at is None and (stop.is_set() or (deadline is not None and now >= deadline)):
                    cut_at = (deadline if deadline is not None and not stop.is_set() else now) + GRACE_SECONDS
                if cut_at is not None and now >= cut_at:
                    still = sum(t.is_alive() for t in threads)
                    if still:
                        reason = reason or "the cluster did not answer in time"
                        reason += f"; {still} transaction(s) still in flight were abandoned"
                    break
            ran = time.perf_counter() - t0
            if on_tick is not None:
                on_tick(rec.snapshot())   # the final state, also for runs shorter than a tick
        finally:
            stop.set()
            pool.close(timeout=GRACE_SECONDS)
    snap = rec.snapshot()
    return _Ran(snap, ran, reason, lost, interrupted)


def _child(index: int, spec: PoolSpec, workload: Workload, cfg: BenchConfig, clients: int, share: float,
           seed: int, out: Any, stop_evt: Any) -> None:  # pragma: no cover - runs in a spawned process
    import signal

    # The parent decides when to stop (it gets Ctrl-C/SIGTERM and sets stop_evt): a signal sent
    # to the whole process group must not kill a child before it reports its counters.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stop = threading.Event()

    def tick(s: Snapshot) -> None:
        if stop_evt.is_set():
            stop.set()
        out.put((index, "tick", s.to_dict()))

    try:
        ran = _run_threads(spec, workload, cfg, clients, share, tick, stop, seed)
        out.put((index, "done", {**ran.snapshot.to_dict(), "_elapsed": ran.elapsed, "_reason": ran.reason,
                                 "_lost": ran.lost}))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        out.put((index, "error", f"{type(exc).__name__}: {exc}"))


def _run_processes(spec: PoolSpec, workload: Workload, cfg: BenchConfig,
                   on_tick: Callable[[Snapshot], None] | None, seed: int) -> _Ran:
    """Run the clients in ``cfg.processes`` spawned processes. Returns the merged counters and the
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
    reasons: list[str] = []
    errors: list[str] = []
    elapsed = 0.0
    lost = False
    interrupted: BaseException | None = None
    give_up_at: float | None = None
    try:
        while len(finals) + len(errors) < len(procs):
            if give_up_at is not None and time.monotonic() >= give_up_at:
                break
            try:
                index, kind, payload = out.get(timeout=0.5)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    break
                continue
            except (KeyboardInterrupt, Terminated) as exc:
                if interrupted is not None:
                    raise
                interrupted = exc
                stop_evt.set()      # children finish what is in flight and report
                give_up_at = time.monotonic() + 2 * GRACE_SECONDS + 5.0
                continue
            if kind == "error":
                errors.append(str(payload))
                continue
            snap = Snapshot.from_dict(payload)
            if kind == "done":
                finals[index] = snap
                elapsed = max(elapsed, float(payload.get("_elapsed", 0.0)))
                if payload.get("_reason"):
                    reasons.append(str(payload["_reason"]))
                lost = lost or bool(payload.get("_lost"))
                if payload.get("_lost"):
                    stop_evt.set()  # one process lost the cluster: the others stop too
            latest[index] = snap
            if on_tick is not None:
                agg = Snapshot()
                for s in latest.values():
                    agg.merge(s)
                on_tick(agg)
    finally:
        stop_evt.set()
        for p in procs:
            p.join(timeout=GRACE_SECONDS + 5.0)
            if p.is_alive():
                p.terminate()
    if errors and not interrupted:
        raise UsageError(f"a bench process failed: {errors[0]}")
    total = Snapshot()
    for i, s in latest.items():   # a process that never reported "done": its last tick counts
        total.merge(finals.get(i, s))
    missing = len(procs) - len(finals)
    reason = _interrupt_reason(interrupted) if interrupted is not None else (reasons[0] if reasons else None)
    if missing:
        reason = (reason + "; " if reason else "") + f"{missing} process(es) did not report their final counters"
    return _Ran(total, elapsed, reason, lost, interrupted)


def run_bench(spec: PoolSpec, cfg: BenchConfig, *, on_tick: Callable[[Snapshot], None] | None = None,
              on_setup: Callable[[int], None] | None = None, stop: threading.Event | None = None,
              before_run: Callable[[], None] | None = None,
              after_run: Callable[[], None] | None = None,
              lost_after: float = LOST_AFTER_SECONDS) -> BenchResult:
    """Set up (optionally), run, and check a workload. Returns the host's result.

    A run cut short (SIGINT/SIGTERM, the cluster going away) still returns: ``complete`` is False,
    the counters are those of the transactions that finished, the invariants are checked if the
    cluster still answers (else each check says it could not run), and ``interrupted`` holds the
    signal's exception for the caller to re-raise once the results are written.
    """
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
        ran = _run_threads(spec, workload, cfg, cfg.concurrency, 1.0, on_tick, stop or threading.Event(), seed,
                           lost_after=lost_after)
    else:
        ran = _run_processes(spec, workload, cfg, on_tick, seed)
        ran.elapsed = ran.elapsed or (time.perf_counter() - t0)
    ended = dt.datetime.now(dt.UTC)
    snap = ran.snapshot
    snap.in_flight = 0   # abandoned transactions (if any) are not counted; the reason says how many
    warnings: list[str] = []
    checks: list[Check] | None = None
    try:
        if after_run is not None:
            try:
                after_run()   # before the checks, so their reads stay out of a metered window
            except Exception as exc:  # noqa: BLE001 - the run's counters matter more than its cost window
                warnings.append(f"could not close the cost window: {exc}")
        try:
            with spec.connect() as conn:
                checks = workload.check(conn, baseline, snap.committed)
        except Exception as exc:  # noqa: BLE001 - the run is reported whatever the checks meet
            first = first_line(exc)[:200]
            checks = [Check(name, None, f"not checked: {first}") for name in workload.check_names]
    except (KeyboardInterrupt, Terminated) as exc:   # a signal after the clients stopped: still report
        if ran.interrupted is not None:
            raise
        ran.interrupted, ran.reason = exc, ran.reason or _interrupt_reason(exc)
    if checks is None:
        checks = [Check(name, None, f"not checked: {ran.reason}") for name in workload.check_names]
    return BenchResult(workload=cfg.workload, target=spec.describe(), host=socket.gethostname(),
                       started_at=started, ended_at=ended, elapsed_seconds=ran.elapsed, concurrency=cfg.concurrency,
                       processes=cfg.processes, accounts=cfg.accounts, snapshot=snap, checks=checks,
                       complete=ran.reason is None, incomplete_reason=ran.reason, lost=ran.lost,
                       interrupted=ran.interrupted, warnings=warnings)
