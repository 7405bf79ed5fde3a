"""``dsqlops bench``: workloads with OCC telemetry, invariants, cost per 1,000 transactions."""

from __future__ import annotations

import sys
from typing import Any

import click

from dsqlops.cli.common import CliEnv, cluster_option, output_option, pass_env
from dsqlops.errors import OperationFailed, ServiceError, Terminated, UsageError


@click.group()
def bench() -> None:
    """Run workloads (the talk's banking transfer, a hot counter, point reads) with OCC telemetry.

    \b
    Example:
      dsqlops bench transfer -c CLUSTER --setup --accounts 1000 --concurrency 8 --duration 30
      dsqlops bench merge host1.jsonl host2.jsonl
    """


def _common(f: Any) -> Any:
    opts: list[Any] = [
        cluster_option,
        click.option("--accounts", type=click.IntRange(min=2), default=1000, show_default=True,
                     help="Accounts 1..N (transfer, read)."),
        click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
                     help="Client connections (threads) in total."),
        click.option("--duration", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
                     help="Run this long [default: 10 s unless --transactions]."),
        click.option("--transactions", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Run exactly N transactions instead of a duration."),
        click.option("--rate", type=click.FloatRange(min=0.001), default=None, metavar="TPS",
                     help="Start at most TPS transactions per second (all clients together)."),
        click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Spread the clients over P processes (each with its own pool)."),
        click.option("--setup", is_flag=True, help="Create the tables and load the rows first (batches ≤ 1,000)."),
        click.option("--max-attempts", type=click.IntRange(min=1), default=5, show_default=True,
                     help="Attempts per transaction on OCC conflicts (40001)."),
        click.option("--results", "results_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="Append the result as one JSON line (for `bench merge`)."),
        click.option("--cost/--no-cost", default=True, show_default=True,
                     help="Read the cluster's DPU metrics for the run and price them."),
        click.option("--seed", type=int, default=None, help="Random seed (repeatable runs)."),
        click.option("--allow-give-ups", is_flag=True,
                     help="Exit 0 even if transactions gave up after --max-attempts OCC conflicts."),
        output_option,
        pass_env,
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _run(env: CliEnv, workload: str, *, cluster: str | None, accounts: int, concurrency: int,
         duration: float | None, transactions: int | None, rate: float | None, processes: int, setup: bool,
         max_attempts: int, results_file: str | None, cost: bool, seed: int | None, allow_give_ups: bool,
         log: bool | None = None) -> None:
    from dsqlops.bench import results
    from dsqlops.bench.cost import RunCost
    from dsqlops.bench.pools import DsqlPoolSpec
    from dsqlops.bench.runner import BenchConfig, run_bench
    from dsqlops.data.retry import RetryPolicy
    from dsqlops.output import warn
    from dsqlops.sandbox.client import serving

    if duration is None and transactions is None:
        duration = 10.0
    cfg = BenchConfig(workload=workload, accounts=accounts, concurrency=concurrency, duration=duration,
                      transactions=transactions, rate=rate, processes=processes, setup=setup, log=log,
                      policy=RetryPolicy(max_attempts=max_attempts), seed=seed)
    cfg.validate()
    if results_file:
        results.check_writable(results_file)   # before the run, not after minutes of it
    target = env.connection_target(cluster)
    spec = DsqlPoolSpec(target, env.config_path, env.profile,
                        tuple(sorted((k, v) for k, v in env.flags.items() if v is not None)))
    meter = RunCost(serving(env.settings.get("endpoint_url"), env.settings.get("sslrootcert")) if cost else None)
    progress = results.Progress(sys.stderr, enabled=env.progress)

    def start() -> None:
        meter.before_run()
        progress.start()

    try:
        result = run_bench(spec, cfg, on_tick=progress.tick, on_setup=progress.setup, before_run=start,
                           after_run=meter.after_run)
    finally:
        progress.finish()
    for w in result.warnings:
        warn(w)
    if cost and not result.lost:   # a cluster that went away may not have published its last work
        try:
            result.cost, notes = meter.price(env.aws().cloudwatch(target.region), env.settings, target.region,
                                             target.cluster_id, committed=result.snapshot.committed,
                                             started_at=result.started_at, ended_at=result.ended_at)
            for w in notes:
                warn(w)
        except Exception as exc:  # noqa: BLE001 - the run itself is reported; say why there is no cost
            warn(f"no cost for this run: {exc}")
        except (KeyboardInterrupt, Terminated) as exc:   # stopped while pricing: write the run anyway
            if result.interrupted is not None:
                raise
            result.interrupted = exc
    unwritten: UsageError | None = None
    if results_file:
        try:
            results.append_json_line(results_file, result)
        except UsageError as exc:   # the summary is still printed below
            unwritten = exc
    env.render(results.summary(result))
    if unwritten is not None:
        raise unwritten
    _verdict(result, allow_give_ups=allow_give_ups, results_file=results_file)


def _verdict(result: Any, *, allow_give_ups: bool, results_file: str | None) -> None:
    """The one error a finished run ends with, if any (its results are rendered and written first)."""
    if result.interrupted is not None:
        raise result.interrupted
    written = f"; the results were written to {results_file}" if results_file else ""
    if result.lost:
        raise ServiceError(f"bench stopped early: {result.incomplete_reason}",
                           hint=f"{result.snapshot.committed} transaction(s) committed before; the summary is marked "
                                f"incomplete{written}")
    if not result.ok:
        failed = [c for c in result.checks if c.ok is False]
        raise OperationFailed("invariant violated: " + "; ".join(f"{c.name} ({c.detail})" for c in failed))
    if not result.checked:
        unchecked = next(c for c in result.checks if c.ok is None)
        raise ServiceError(f"the invariants could not be checked after the run: {unchecked.detail}",
                           hint=f"check them by hand before trusting the numbers{written}")
    if not result.complete:
        raise OperationFailed(f"bench stopped early: {result.incomplete_reason}")
    if result.gave_up and not allow_give_ups:
        raise OperationFailed(f"{result.gave_up} transaction(s) gave up: every attempt hit an OCC conflict",
                              hint="raise --max-attempts, spread the load over more rows, or accept them with "
                                   "--allow-give-ups")


@bench.command()
@_common
@click.option("--log/--no-log", "log", default=None,
              help="Log each transfer in the transactions table [default: if the table exists].")
def transfer(env: CliEnv, cluster: str | None, log: bool | None, **kw: Any) -> None:
    """The talk's banking transfer: read two balances, check funds, move money, log it.

    Each transaction runs on a pooled connection and is retried whole on OCC conflicts (40001)
    with exponential backoff and jitter. At the end: total money unchanged, no negative balance.

    \b
    Example:
      dsqlops bench transfer -c CLUSTER --setup --accounts 1000 --concurrency 8 --duration 30
      dsqlops -o json bench transfer -c CLUSTER --transactions 5000 --rate 200 --results run.jsonl
    """
    _run(env, "transfer", cluster=cluster, log=log, **kw)


@bench.command()
@_common
def counter(env: CliEnv, cluster: str | None, **kw: Any) -> None:
    """One hot counter row incremented by every client: shows OCC conflicts and retries.

    \b
    Example:
      dsqlops bench counter -c CLUSTER --setup --concurrency 8 --duration 10
    """
    _run(env, "counter", cluster=cluster, **kw)


@bench.command("read")
@_common
def read_cmd(env: CliEnv, cluster: str | None, **kw: Any) -> None:
    """Primary-key point reads of random accounts (read-only transactions).

    \b
    Example:
      dsqlops bench read -c CLUSTER --setup --accounts 1000 --duration 10
    """
    _run(env, "read", cluster=cluster, **kw)


@bench.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@output_option
@pass_env
def merge(env: CliEnv, files: tuple[str, ...]) -> None:
    """Merge JSON-lines results of runs made side by side (several hosts) into one summary.

    Counters and latency histograms add up, so p50/p99 cover every sample. The cost is the
    cluster's over the union of the runs' windows (disjoint windows add up, the same window counts
    once, overlapping windows are fetched again from CloudWatch). Warns when the runs do not
    overlap in time.

    \b
    Example:
      dsqlops bench transfer -c CLUSTER --duration 60 --results host-a.jsonl   # on each host
      dsqlops bench merge host-a.jsonl host-b.jsonl
    """
    from dsqlops.bench import results
    from dsqlops.bench.cost import window_usage
    from dsqlops.output import warn

    def fetch(region: str, cluster_id: str, start: Any, end: Any, exact: bool) -> dict[str, float]:
        return window_usage(env.aws().cloudwatch(region), region, cluster_id, start, end, exact=exact)

    merged = results.merge(results.read_json_lines(files), fetch=fetch)
    for w in merged.warnings:
        warn(w)
    env.render(results.summary(merged))
    if not merged.ok:
        raise OperationFailed("an invariant was violated in at least one run")
