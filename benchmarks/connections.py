"""What a pooled connection saves: fresh connect (token + TLS + auth) vs a pool checkout, per query.

    .venv/bin/python benchmarks/connections.py [--queries 200] [--repeat 5]

Starts a throwaway TLS PostgreSQL (initdb + pg_ctl in a temp folder, verify-full through the
host/hostaddr split, exactly as dsqlops connects to the sandbox), then runs ``SELECT 1``
``--queries`` times three ways, median of ``--repeat`` runs each:

* fresh: ``dsqlops.data.connection.connect`` per query (a new token, a TLS handshake, a backend);
* pooled: one ``create_pool`` (max_size 1) and ``pool.connection()`` per query (checkout check included);
* token only: ``TokenSource.mint`` per query (offline SigV4 signing).

Printed: the ratios fresh/pooled and token/pooled. Against real DSQL the network round trips make
the fresh path costlier still (and new connections are limited to 100/s per cluster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "AKIDBENCHMARK")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark-secret")
    from dsqlops.aws import AwsContext
    from dsqlops.data.connection import ConnectionTarget, connect, create_pool
    from dsqlops.data.tokens import TokenSource
    from dsqlops.sandbox.certs import ensure_certificates
    from dsqlops.sandbox.postgres import PostgresServer

    root = Path(tempfile.mkdtemp(prefix="dsqlops-bench-conn-"))
    os.chmod(root, 0o755)
    tls = ensure_certificates(root / "tls")
    server = PostgresServer(root / "pg", ssl_cert=tls.server_cert, ssl_key=tls.server_key,
                            hba="local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
    server.start()
    try:
        target = ConnectionTarget(host="abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws", region="us-east-1",
                                  user="postgres", hostaddr="127.0.0.1", port=server.port,
                                  sslrootcert=str(tls.ca_cert))
        tokens = TokenSource(AwsContext(region="us-east-1"))
        tokens(target)  # warm the client

        def fresh() -> None:
            for _ in range(args.queries):
                with connect(target, tokens) as c:
                    c.execute("select 1").fetchone()

        pool = create_pool(target, tokens, min_size=1, max_size=1)

        def pooled() -> None:
            for _ in range(args.queries):
                with pool.connection() as c:
                    c.execute("select 1").fetchone()

        def token_only() -> None:
            for _ in range(args.queries):
                tokens.mint(target.host, user="postgres")

        times: dict[str, list[float]] = {"fresh": [], "pooled": [], "token": []}
        for _ in range(args.repeat):  # interleaved, so load changes hit all three alike
            for name, fn in (("fresh", fresh), ("pooled", pooled), ("token", token_only)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        pool.close()
    finally:
        server.stop(mode="immediate")
    med = {k: statistics.median(v) / args.queries for k, v in times.items()}
    print(f"queries per run: {args.queries}, runs: {args.repeat} (median)")
    for k in ("fresh", "pooled", "token"):
        print(f"  {k:7s} {med[k] * 1000:8.3f} ms per query")
    print(f"ratio fresh/pooled: {med['fresh'] / med['pooled']:.1f}x")
    print(f"ratio token/pooled: {med['token'] / med['pooled']:.2f}x")


if __name__ == "__main__":
    main()
