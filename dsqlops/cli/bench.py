"""``dsqlops bench``: workloads with OCC telemetry, invariants, cost per 1,000 transactions."""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import Any

import click

from dsqlops.cli.common import CliEnv, cluster_option, output_option, pass_env
from dsqlops.errors import OperationFailed


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
        output_option,
        pass_env,
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _run(env: CliEnv, workload: str, *, cluster: str | None, accounts: int, concurrency: int,
         duration: float | None, transactions: int | None, rate: float | None, processes: int, setup: bool,
         max_attempts: int, results_file: str | None, cost: bool, seed: int | None, log: bool | None = None) -> None:
    from dsqlops.bench import results
    from dsqlops.bench.cost import bench_cost, flush_sandbox, price_per_million, sandbox_dir_for, window_usage
    from dsqlops.bench.pools import DsqlPoolSpec
    from dsqlops.bench.runner import BenchConfig, run_bench
    from dsqlops.data.retry import RetryPolicy
    from dsqlops.output import warn

    if duration is None and transactions is None:
        duration = 10.0
    cfg = BenchConfig(workload=workload, accounts=accounts, concurrency=concurrency, duration=duration,
                      transactions=transactions, rate=rate, processes=processes, setup=setup, log=log,
                      policy=RetryPolicy(max_attempts=max_attempts), seed=seed)
    cfg.validate()
    target = env.connection_target(cluster)
    spec = DsqlPoolSpec(target, env.config_path, env.profile,
                        tuple(sorted((k, v) for k, v in env.flags.items() if v is not None)))
    sandbox_dir = sandbox_dir_for(env.settings.get("endpoint_url"), env.settings.get("sslrootcert")) if cost \
        else None
    marks: dict[str, Any] = {}

    def before_run() -> None:
        if sandbox_dir is not None:
            marks["from"] = flush_sandbox(sandbox_dir)

    tty = sys.stderr.isatty()
    t0 = [time.monotonic(), 0.0]

    def tick(s: Any) -> None:
        if not env.progress:
            return
        now = time.monotonic()
        if not tty and now - t0[1] < 2.0:
            return
        t0[1] = now
        line = results.live_line(s, now - t0[0])
        sys.stderr.write(("\r\033[K" + line) if tty else (line + "\n"))
        sys.stderr.flush()

    def on_setup(n: int) -> None:
        if env.progress and tty:
            sys.stderr.write(f"\r\033[Kloading rows: {n}")
            sys.stderr.flush()

    def start_clock() -> None:
        before_run()
        t0[0] = time.monotonic()

    def stop_clock() -> None:
        if sandbox_dir is not None:
            # the sandbox stamps datapoints to the second: publish in a later second than "from"
            start = marks.get("from")
            if start is not None:
                time.sleep(max(0.0, (start + dt.timedelta(seconds=1) - dt.datetime.now(dt.UTC)).total_seconds()))
            marks["to"] = flush_sandbox(sandbox_dir)

    result = run_bench(spec, cfg, on_tick=tick, on_setup=on_setup, before_run=start_clock, after_run=stop_clock)
    if env.progress and tty:
        sys.stderr.write("\n")
    if cost:
        try:
            region = target.region
            cw = env.aws().cloudwatch(region)
            if sandbox_dir is not None and marks.get("from") and marks.get("to"):
                start, end = marks["from"], marks["to"]
                usage = window_usage(cw, region, target.cluster_id, start + dt.timedelta(seconds=1),
                                     end + dt.timedelta(seconds=1), period=1)
                exact = True
            else:
                usage = window_usage(cw, region, target.cluster_id, result.started_at, result.ended_at, period=60)
                start, end, exact = result.started_at, result.ended_at, False
                if not usage.get("TotalDPU"):
                    warn("no DPU datapoints for the run yet (CloudWatch lags a few minutes): re-run "
                         "`dsqlops cost` for the window later")
            price, source = price_per_million(env.settings, region)
            result.cost = bench_cost(usage, result.snapshot.committed, price, source, window=(start, end),
                                     exact=exact)
        except Exception as exc:  # noqa: BLE001 - the run itself succeeded; say why there is no cost
            warn(f"no cost for this run: {exc}")
    if results_file:
        with open(results_file, "a", encoding="utf-8") as fh:
            fh.write(results.to_json_line(result) + "\n")
    env.render(results.summary(result))
    if not result.ok:
        failed = [c for c in result.checks if not c.ok]
        raise OperationFailed("invariant violated: " + "; ".join(f"{c.name} ({c.detail})" for c in failed))


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

    Counters and latency histograms add up, so p50/p99 cover every sample.

    \b
    Example:
      dsqlops bench transfer -c CLUSTER --duration 60 --results host-a.jsonl   # on each host
      dsqlops bench merge host-a.jsonl host-b.jsonl
    """
    from dsqlops.bench import results

    merged = results.merge(results.read_json_lines(files))
    env.render(results.summary(merged))
    if not merged.ok:
        raise OperationFailed("an invariant was violated in at least one run")
