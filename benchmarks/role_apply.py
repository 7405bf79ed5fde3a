"""Benchmark: ``dsqlops role apply`` of 1,000 IAM mappings vs one-by-one ``AWS IAM GRANT`` through psql.

Runs everything on a throwaway local sandbox (DSQL wire front, IAM tokens, the DSQL dialect):

1. ``role apply FILE`` with N roles × M ARNs (default 100 × 10 = 1,000 mappings; the roles exist
   beforehand so both sides issue exactly the 1,000 ``AWS IAM GRANT`` statements): statements,
   transactions, OCC retries, wall time;
2. the same ``role apply`` again: a no-op (one catalog read, no statement), wall time;
3. the baseline: one ``psql -c "AWS IAM GRANT …"`` per mapping, each with a freshly minted token
   (what a shell loop does). ``--psql-sample K`` runs only K of them and extrapolates (say so).

Prints figures and the ratios measured side by side on this machine. Usage::

    .venv/bin/python benchmarks/role_apply.py [--roles 100] [--arns 10] [--psql-sample 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--roles", type=int, default=100)
    ap.add_argument("--arns", type=int, default=10, help="ARNs per role")
    ap.add_argument("--psql-sample", type=int, default=None,
                    help="run only this many psql grants and extrapolate (default: all)")
    args = ap.parse_args()
    total = args.roles * args.arns
    psql = shutil.which("psql")
    if psql is None:
        print("psql is not installed; cannot measure the baseline", file=sys.stderr)
        return 2

    import boto3
    import psycopg
    from psycopg import sql

    from dsqlops.data.connection import ConnectionTarget, connect
    from dsqlops.data.roles import apply_plan, load_role_file, plan, read_catalog
    from dsqlops.sandbox import lifecycle
    from dsqlops.sandbox.postgres import free_port
    from dsqlops.sandbox.state import SandboxDir

    root = Path(tempfile.mkdtemp(prefix="dsqlops-bench-roles-"))
    os.chmod(root, 0o755)
    sdir = SandboxDir(root / "sandbox")
    started = lifecycle.start_background(sdir, api_port=free_port(), port=free_port(), timeout=120)
    try:
        creds = sdir.load_credentials()
        assert creds is not None
        session = boto3.Session(aws_access_key_id=creds.access_key_id, aws_secret_access_key=creds.secret_access_key,
                                region_name=started.region)
        dsql = session.client("dsql", endpoint_url=started.api_endpoint)
        cid = dsql.create_cluster(deletionProtectionEnabled=False)["identifier"]
        deadline = time.monotonic() + 180
        while dsql.get_cluster(identifier=cid)["status"] != "ACTIVE":
            if time.monotonic() > deadline:
                raise SystemExit("cluster did not become ACTIVE")
            time.sleep(0.1)
        host = f"{cid}.dsql.{started.region}.on.aws"
        target = ConnectionTarget(host=host, region=started.region, hostaddr="127.0.0.1", port=started.port,
                                  sslrootcert=started.ca_file, connect_timeout=30)

        def token(t: ConnectionTarget) -> str:
            return str(dsql.generate_db_connect_admin_auth_token(t.host, t.region, 900))

        # the roles, created up front (untimed) for both sides
        with connect(target, token, autocommit=True) as c:
            for prefix in ("dq", "ps"):
                for r in range(args.roles):
                    c.execute(sql.SQL("CREATE ROLE {} WITH LOGIN").format(sql.Identifier(f"{prefix}{r:04d}")))
        f = root / "roles.yaml"
        lines = ["roles:"]
        for r in range(args.roles):
            lines.append(f"  - name: dq{r:04d}\n    login: true\n    iam:")
            lines += [f"      - arn:aws:iam::123456789012:role/bench-dq{r:04d}-{a}" for a in range(args.arns)]
        f.write_text("\n".join(lines) + "\n")

        # 1. dsqlops role apply
        t0 = time.perf_counter()
        rf = load_role_file(f)
        conn = connect(target, token)
        steps = plan(rf, read_catalog(conn))
        res = apply_plan(conn, steps)
        conn.close()
        t_apply = time.perf_counter() - t0
        assert len(res.applied) == total, (len(res.applied), total)

        # 2. the second, no-op run
        t0 = time.perf_counter()
        conn = connect(target, token)
        again = plan(load_role_file(f), read_catalog(conn))
        conn.close()
        t_noop = time.perf_counter() - t0
        assert again == [], f"second run planned {len(again)} statements"

        # 3. one psql per grant
        n_psql = min(total, args.psql_sample or total)
        penv = {**os.environ, "PGHOSTADDR": "127.0.0.1", "PGPORT": str(started.port), "PGSSLMODE": "verify-full",
                "PGSSLROOTCERT": started.ca_file, "PGUSER": "admin", "PGDATABASE": "postgres", "PGHOST": host,
                "PGCONNECT_TIMEOUT": "30"}
        t0 = time.perf_counter()
        for i in range(n_psql):
            r, a = divmod(i, args.arns)
            stmt = f"AWS IAM GRANT ps{r:04d} TO 'arn:aws:iam::123456789012:role/bench-ps{r:04d}-{a}'"
            penv["PGPASSWORD"] = token(target)
            subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", stmt], env=penv, check=True,
                           stdout=subprocess.DEVNULL)
        t_psql_run = time.perf_counter() - t0
        t_psql = t_psql_run * total / n_psql
        with connect(target, token) as c:
            got = c.execute("SELECT count(*) FROM sys.iam_pg_role_mappings WHERE pg_role_name LIKE 'ps%%'"
                            ).fetchone()
            assert got is not None and got[0] == n_psql, got
    except psycopg.Error as e:
        print(f"database error: {e}", file=sys.stderr)
        return 1
    finally:
        lifecycle.stop(sdir, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
    print(f"role apply: {total} IAM mappings ({args.roles} roles x {args.arns} ARNs) on the local sandbox")
    print(f"  dsqlops role apply     statements={len(res.applied)} transactions={res.transactions} "
          f"occ_retries={res.retries} wall={t_apply:.2f}s ({t_apply / total * 1000:.1f} ms/mapping)")
    print(f"  second run (no-op)     statements=0 transactions=0 wall={t_noop:.3f}s")
    sample = "" if n_psql == total else f" (measured {n_psql}, extrapolated to {total})"
    print(f"  psql one-by-one        statements={total} connections={total} wall={t_psql:.2f}s"
          f" ({t_psql / total * 1000:.1f} ms/mapping){sample}")
    print(f"  ratio psql / apply     {t_psql / t_apply:.1f}x")
    print(f"  ratio apply / no-op    {t_apply / t_noop:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
