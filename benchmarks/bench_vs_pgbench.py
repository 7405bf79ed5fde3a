"""`dsqlops bench transfer` vs pgbench's TPC-B-like script on the same local PostgreSQL.

Same server, same client count, same duration; median TPS of several runs each, printed with
their ratio. Both run at READ COMMITTED (pgbench's default), so this measures the client side
(Python + psycopg + pool + retry bookkeeping vs C libpq), not OCC behaviour.

    .venv/bin/python benchmarks/bench_vs_pgbench.py [--clients 4] [--seconds 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsqlops.bench.runner import BenchConfig, ConninfoPoolSpec, run_bench
from dsqlops.sandbox.postgres import PostgresServer, find_pg_bin


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--accounts", type=int, default=100_000, help="pgbench scale 1 has 100,000 accounts")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dsqlops-bench-vs-pgbench-"))
    root.chmod(0o755)
    server = PostgresServer(root / "pgdata")
    server.start()
    try:
        pgbench = str(find_pg_bin("pgbench"))
        base = ["-h", server.host, "-p", str(server.port), "-U", server.superuser]
        run = server._cmd  # run as the postgres user when we are root
        subprocess.run(run([pgbench, *base, "-i", "-q", "-s", str(max(1, a.accounts // 100_000)), "postgres"]),
                       check=True, capture_output=True)
        conninfo = f"host={server.host} port={server.port} dbname=postgres user={server.superuser}"
        spec = ConninfoPoolSpec(conninfo)
        # setup once (accounts + transactions tables, batches of 1,000 rows)
        run_bench(spec, BenchConfig(accounts=a.accounts, concurrency=1, duration=None, transactions=1, setup=True))
        pg_tps: list[float] = []
        ours: list[float] = []
        for i in range(a.runs):
            p = subprocess.run(run([pgbench, *base, "-n", "-c", str(a.clients), "-j", str(a.clients), "-T",
                                    str(int(a.seconds)), "postgres"]), check=True, capture_output=True, text=True)
            m = re.search(r"tps = ([0-9.]+)", p.stdout)
            assert m, p.stdout
            pg_tps.append(float(m.group(1)))
            r = run_bench(spec, BenchConfig(accounts=a.accounts, concurrency=a.clients, duration=a.seconds,
                                            seed=i))
            ours.append(r.tps)
            print(f"run {i + 1}: pgbench {pg_tps[-1]:9.1f} tps   dsqlops bench transfer {ours[-1]:9.1f} tps",
                  flush=True)
        mp, mo = statistics.median(pg_tps), statistics.median(ours)
        print(f"median over {a.runs} runs, {a.clients} clients, {a.seconds:.0f}s each:")
        print(f"  pgbench (TPC-B-like, C/libpq)      {mp:9.1f} tps")
        print(f"  dsqlops bench transfer (Python)    {mo:9.1f} tps")
        print(f"  ratio dsqlops/pgbench              {mo / mp:9.2f}")
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
