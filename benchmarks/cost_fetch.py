"""Batched GetMetricData vs one GetMetricStatistics per metric per cluster, against the moto server.

    .venv/bin/python benchmarks/cost_fetch.py [--clusters 1000] [--regions 3] [--days 30] [--period 86400]
                                              [--baseline-clusters 200]

Seeds ``AWS/AuroraDSQL`` (TotalDPU Sum and ClusterStorageSize Average per cluster, one datapoint per
series so that moto's own cost stays small) in a ``ThreadedMotoServer`` on a free loopback port,
the clusters spread round-robin over ``--regions`` regions, then fetches the window both ways:

* dsqlops: ``metrics.fetch_regions`` (the regions concurrently; ≤ 500 queries and ≤ 100,800
  datapoints per GetMetricData call). A call goes to one region, so the lower bound is per region,
  max(ceil(Q/500), ceil(Q x points / 100,800)), summed; the script prints both per region;
* baseline: what existing scripts do, ``get_metric_statistics`` once per metric per cluster. It is
  run on ``--baseline-clusters`` clusters and extrapolated linearly to all of them (the script says
  when it does).

Printed: GetMetricData calls made vs the minimum possible, and the call and wall-time ratios.
Wall time against moto measures moto's implementation as much as ours (its get_metric_data scans
every datapoint for every query and period), so the call ratio is the number that carries over to AWS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REGIONS = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1", "ap-northeast-1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--regions", type=int, default=3, choices=range(1, len(REGIONS) + 1), metavar="N",
                    help=f"spread the clusters over this many regions (1..{len(REGIONS)})")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--period", type=int, default=86400, help="seconds per point (86400 like the AWS gist; "
                    "`dsqlops cost` uses 3600)")
    ap.add_argument("--baseline-clusters", type=int, default=200,
                    help="run the per-cluster baseline on this many clusters and extrapolate")
    args = ap.parse_args()

    import logging
    import os

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    from moto.server import ThreadedMotoServer

    from dsqlops.aws import AwsContext
    from dsqlops.cost import metrics as M
    from dsqlops.cost.timewin import Window
    from dsqlops.sandbox.postgres import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        aws = AwsContext(region="us-east-1", endpoint_url=f"http://127.0.0.1:{port}")
        regions = REGIONS[:args.regions]
        clients = {r: aws.cloudwatch(r) for r in regions}
        end = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        start = end - dt.timedelta(days=args.days)
        ids = [f"{i:026d}" for i in range(args.clusters)]
        home = {cid: regions[n % len(regions)] for n, cid in enumerate(ids)}
        metrics = (("TotalDPU", "Sum"), ("ClusterStorageSize", "Average"))
        t0 = time.perf_counter()
        batches: dict[str, list[dict]] = {r: [] for r in regions}
        for n, cid in enumerate(ids):
            batch = batches[home[cid]]
            for name, _stat in metrics:
                batch.append({"MetricName": name, "Dimensions": [{"Name": "ClusterId", "Value": cid}],
                              "Timestamp": start + dt.timedelta(days=n % args.days, hours=1), "Value": float(n)})
            if len(batch) >= 998:
                clients[home[cid]].put_metric_data(Namespace=M.NAMESPACE, MetricData=batch)
                batch.clear()
        for r, batch in batches.items():
            if batch:
                clients[r].put_metric_data(Namespace=M.NAMESPACE, MetricData=batch)
        print(f"seeded {len(ids) * len(metrics)} datapoints for {len(ids)} clusters over {len(regions)} regions "
              f"in {time.perf_counter() - t0:.1f}s (moto server on 127.0.0.1:{port})")

        window = Window(start, end, args.period, start, end)
        keys = {r: [M.SeriesKey(r, cid, name, stat) for cid in ids if home[cid] == r for name, stat in metrics]
                for r in regions}
        per_region = {r: M.FetchStats() for r in regions}
        stats = M.FetchStats()
        t0 = time.perf_counter()
        got = M.fetch_regions(clients, keys, window, stats=stats)
        ours = time.perf_counter() - t0
        found = sum(len(s.points) for s in got.values())
        minimum = stats.minimum_calls(window.points)
        for r in regions:  # the same fetch once more per region, only to show the calls per region
            M.fetch(clients[r], keys[r], window, stats=per_region[r])

        cw = clients[regions[0]]
        sub = [cid for cid in ids if home[cid] == regions[0]][: max(1, min(args.baseline_clusters, len(ids)))]
        t0 = time.perf_counter()
        calls = 0
        base_found = 0
        for cid in sub:
            for name, stat in metrics:
                r = cw.get_metric_statistics(Namespace=M.NAMESPACE, MetricName=name, StartTime=start, EndTime=end,
                                             Period=args.period, Statistics=[stat],
                                             Dimensions=[{"Name": "ClusterId", "Value": cid}])
                calls += 1
                base_found += len(r["Datapoints"])
        base = time.perf_counter() - t0
        scale = len(ids) / len(sub)
        base_calls, base_time = calls * scale, base * scale
        extrapolated = f" (extrapolated from {len(sub)} clusters)" if len(sub) < len(ids) else ""

        print(f"window {start:%Y-%m-%d}..{end:%Y-%m-%d}, period {args.period}s, {window.points} points/series, "
              f"{stats.queries} series ({len(ids)} clusters x {len(metrics)} metrics over {len(regions)} regions)")
        for r in regions:
            q = len(keys[r])
            print(f"  {r}: {q} queries, {per_region[r].calls} GetMetricData calls, lower bound "
                  f"{M.lower_bound_calls(q, window.points)} (max(ceil({q}/500), ceil({q}x{window.points}/100800)))")
        print(f"dsqlops GetMetricData: {stats.calls} calls (lower bound {minimum}, summed per region; "
              f"ratio {stats.calls / minimum:.2f}), {ours:.2f}s, {found} datapoints")
        print(f"baseline GetMetricStatistics: {base_calls:.0f} calls, {base_time:.2f}s{extrapolated}, "
              f"{base_found} datapoints on the subset")
        print(f"calls ratio baseline/dsqlops: {base_calls / stats.calls:.1f}x")
        print(f"wall-time ratio baseline/dsqlops: {base_time / ours:.2f}x (moto server, loopback)")
        print("note: GetMetricData is billed per metric queried, GetMetricStatistics per request; the call "
              "ratio is what matters for the 50 TPS quota and for latency against AWS.")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
