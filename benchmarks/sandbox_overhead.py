"""What the sandbox's DSQL front costs: pgbench through the front vs straight to PostgreSQL.

Starts a sandbox in a temp folder (measuring ``sandbox start`` to ready, cold and warm), creates
a cluster (measuring create → ACTIVE) and loads pgbench's tables into it. A cluster's PostgreSQL
listens on its private Unix socket only, so the direct paths go to a second PostgreSQL set up
like a cluster's (same settings, ``sys`` schema and ``admin`` role, same tables) that also listens
on loopback TCP with TLS. Then, alternating, ``--runs`` times each:

* select-only (``pgbench -S``),
* a simple update workload (one autocommit ``UPDATE pgbench_accounts … WHERE aid = :aid``),

with ``-c 16 -j 2`` (``--clients``, ``--threads``) for ``--seconds`` seconds, over three paths:

* ``front``: what any DSQL client uses: TLS with ``sslmode=verify-full`` against the sandbox CA,
  ``host=<cluster endpoint>`` + ``hostaddr=127.0.0.1``, an IAM token as the password, the DSQL
  dialect on every statement;
* ``direct``: plaintext TCP to PostgreSQL;
* ``direct+TLS``: TCP with PostgreSQL doing the TLS itself (what encryption alone costs).

Prints median TPS, the ratios, the sandbox process's CPU share, the CPU time per select-only
transaction of pgbench (the client), of the PostgreSQL server (postmaster and backends) and of
the sandbox process on each path, and LAST the ratio front/(direct+TLS) on select-only against
the target of 0.5.

    .venv/bin/python benchmarks/sandbox_overhead.py [--seconds 5] [--runs 3] [--clients 16] [--protocol simple]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsqlops.sandbox import lifecycle, server, sysschema
from dsqlops.sandbox.certs import ensure_certificates
from dsqlops.sandbox.postgres import PostgresServer, free_port, postmaster_pid
from dsqlops.sandbox.state import REGIONS, SandboxDir
from tests.sandbox.handle import SandboxHandle

UPDATE_SCRIPT = ("\\set aid random(1, 100000 * :scale)\n"
                 "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[list[str]]:
    """The /proc stat fields of each process whose parent is ``pid``."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                f = _stat(int(p.name))
            except (OSError, ValueError):
                continue
            if f[1] == str(pid):
                out.append(f)
    return out


def _server_cpu_seconds(postmaster: int) -> float:
    """CPU of a PostgreSQL server: the postmaster, the backends that ended (its children's times)
    and the processes still running under it."""
    ticks = sum(int(f) for f in _stat(postmaster)[11:15])
    ticks += sum(int(f[11]) + int(f[12]) for f in _children(postmaster))
    return ticks / os.sysconf("SC_CLK_TCK")


def _settle(postmaster: int, children: int, timeout: float = 10.0) -> None:
    """Wait until the backends of a finished run have exited (their CPU then shows in the
    postmaster's children's times, not in the next run's)."""
    deadline = time.monotonic() + timeout
    while len(_children(postmaster)) > children and time.monotonic() < deadline:
        time.sleep(0.05)


def _postmaster(datadir: Path) -> int:
    pid = postmaster_pid(datadir)
    if pid is None:
        raise SystemExit(f"no postmaster.pid in {datadir}")
    return pid


#: CPU share of the sandbox process while pgbench ran through its front, per run (one core = 1.0).
FRONT_CPU: list[float] = []
#: select-only, per path: CPU seconds of (pgbench, PostgreSQL, the front) and transactions, summed over runs
CPU_PER_TXN: dict[str, list[float]] = {}
#: pgbench and psql get their connection settings from the PG* variables given to each run only.
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def pgbench(args: list[str], env: dict[str, str], pid: int | None = None, cpu: list[float] | None = None,
            postmaster: int | None = None, account: list[float] | None = None) -> float:
    t0, c0 = time.monotonic(), (_cpu_seconds(pid) if pid else 0.0)
    measure = account is not None and postmaster is not None
    base = len(_children(postmaster)) if measure and postmaster else 0
    s0 = _server_cpu_seconds(postmaster) if measure and postmaster else 0.0
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(["pgbench", *args], env=env, capture_output=True, text=True, timeout=600, check=False)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    front_cpu = _cpu_seconds(pid) - c0 if pid else 0.0
    if pid and cpu is not None:
        cpu.append(front_cpu / (time.monotonic() - t0))
    if p.returncode != 0:
        raise SystemExit(f"pgbench failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    m = re.search(r"tps = ([0-9.]+) \((?:without initial connection time|excluding connections establishing)\)",
                  p.stdout)
    if not m:
        raise SystemExit(f"no tps in pgbench output:\n{p.stdout}")
    done = re.search(r"number of transactions actually processed: ([0-9]+)", p.stdout)
    if account is not None and done and postmaster:
        client = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
        _settle(postmaster, base)
        server_cpu = _server_cpu_seconds(postmaster) - s0
        for i, v in enumerate((client, server_cpu, front_cpu, float(done.group(1)))):
            account[i] += v
    return float(m.group(1))


def load_pgbench(env: dict[str, str], scale: int) -> None:
    """pgbench's tables, owned by admin. ``pgbench -i`` (TRUNCATE, COPY, VACUUM) is not DSQL SQL: it
    runs as the superuser; replica mode skips the sandbox's row-limit triggers for the load."""
    loader = {**env, "PGOPTIONS": "-c session_replication_role=replica"}
    p = subprocess.run(["pgbench", "-i", "-q", "-s", str(scale)], env=loader, capture_output=True,
                       text=True, timeout=600, check=False)
    if p.returncode != 0:
        raise SystemExit(f"pgbench -i failed:\n{p.stderr}")
    for t in ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"):
        subprocess.run(["psql", "-X", "-q", "-c", f"ALTER TABLE {t} OWNER TO admin"], env=loader, check=True,
                       capture_output=True, timeout=60)


def start_direct(root: Path, tls: Any, scale: int) -> tuple[PostgresServer, dict[str, str]]:
    """A PostgreSQL configured like a cluster's, but on loopback TCP with TLS; pgbench's tables loaded."""
    import psycopg

    pg = PostgresServer(root / "direct" / "pgdata", settings=dict(server.PG_SETTINGS),
                        hba="local all all trust\nhost all all 127.0.0.1/32 trust\n", superuser=server.SUPERUSER,
                        ssl_cert=tls.server_cert, ssl_key=tls.server_key, log_file=root / "direct" / "postgres.log")
    pg.start(timeout=120)
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:  # type: ignore[arg-type]
        for stmt in server.TEMPLATE_SQL:
            conn.execute(stmt)  # type: ignore[arg-type,unused-ignore]
        sysschema.install(conn)
    load_pgbench({**BASE_ENV, "PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": server.SUPERUSER,
                  "PGDATABASE": "postgres", "PGSSLMODE": "disable"}, scale)
    return pg, {**BASE_ENV, "PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": "admin",
                "PGDATABASE": "postgres", "PGSSLMODE": "disable"}


def prepare(h: SandboxHandle, res: lifecycle.StartResult, scale: int) -> tuple[str, dict[str, str]]:
    """Create a cluster, load pgbench's tables into it; return (id, front env)."""
    cid = h.create_cluster(timeout=180)
    c = h.runtime()["clusters"][cid]
    load_pgbench({**BASE_ENV, "PGHOST": c["pg_socket_dir"], "PGPORT": str(c["pg_port"]),
                  "PGUSER": server.SUPERUSER, "PGDATABASE": "postgres"}, scale)
    front = {**BASE_ENV, "PGHOST": h.endpoint(cid), "PGHOSTADDR": "127.0.0.1", "PGPORT": str(res.port),
             "PGUSER": "admin", "PGDATABASE": "postgres", "PGSSLMODE": "verify-full",
             "PGSSLROOTCERT": res.ca_file, "PGPASSWORD": h.token(cid, expires_in=3600)}
    return cid, front


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--protocol", choices=["simple", "extended", "prepared"], default="simple")
    ap.add_argument("--keep", action="store_true", help="leave the sandbox folder behind")
    opts = ap.parse_args()
    if shutil.which("pgbench") is None:
        raise SystemExit("pgbench not found (apt-get install postgresql-client / postgresql-contrib)")

    root = Path(tempfile.mkdtemp(prefix="dsqlops-bench-"))
    os.chmod(root, 0o755)
    sdir = SandboxDir(root / "sb")
    direct_pg: PostgresServer | None = None
    try:
        t0 = time.monotonic()
        res = lifecycle.start_background(sdir, api_port=free_port(), port=free_port(), timeout=120)
        cold = time.monotonic() - t0
        lifecycle.stop(sdir)
        t0 = time.monotonic()
        res = lifecycle.start_background(sdir, timeout=120)
        warm = time.monotonic() - t0

        h = SandboxHandle(sdir.path).attach()
        t0 = time.monotonic()
        _cid, front = prepare(h, res, opts.scale)
        create = time.monotonic() - t0
        print(f"sandbox start → ready: cold {cold:.2f}s (first start: certificates, IAM key), "
              f"warm {warm:.2f}s (restart); cluster create → ACTIVE + pgbench -i: {create:.2f}s")
        direct_pg, direct = start_direct(root, ensure_certificates(sdir.tls_dir, regions=REGIONS), opts.scale)
        paths: dict[str, dict[str, str]] = {"front": front, "direct": direct,
                                            "direct+TLS": {**direct, "PGSSLMODE": "require"}}
        cluster_pm = _postmaster(sdir.path / "clusters" / _cid / "pgdata")
        postmasters = {"front": cluster_pm, "direct": _postmaster(direct_pg.datadir),
                       "direct+TLS": _postmaster(direct_pg.datadir)}
        script = root / "update.sql"
        script.write_text(UPDATE_SCRIPT)
        common = ["-c", str(opts.clients), "-j", str(opts.threads), "-T", str(opts.seconds), "-n",
                  "-M", opts.protocol]
        workloads = {"select-only (-S)": ["-S"], "update (1 row, autocommit)": ["-f", str(script),
                                                                               "--max-tries", "10"]}
        print(f"pgbench {' '.join(common)}; {opts.runs} runs each, alternating; median tps")
        results: dict[str, dict[str, float]] = {}
        rotations: dict[str, list[float]] = {}  # front / (direct+TLS) in each rotation
        for name, extra in workloads.items():
            tps: dict[str, list[float]] = {k: [] for k in paths}
            for _ in range(opts.runs):
                for k, env in paths.items():
                    pid = res.pid if k == "front" else None
                    account = CPU_PER_TXN.setdefault(k, [0.0] * 4) if "-S" in extra else None
                    tps[k].append(pgbench([*common, *extra], env, pid=pid, cpu=FRONT_CPU if pid else None,
                                          postmaster=postmasters[k], account=account))
            results[name] = {k: statistics.median(v) for k, v in tps.items()}
            rotations[name] = [f / t for f, t in zip(tps["front"], tps["direct+TLS"], strict=True)]
        print(f"{'workload':28} " + " ".join(f"{k:>12}" for k in paths))
        for name, med in results.items():
            print(f"{name + ' tps':28} " + " ".join(f"{med[k]:12.0f}" for k in paths))
            print(f"{'  ÷ direct':28} " + " ".join(f"{med[k] / med['direct']:12.2f}" for k in paths))
            print(f"{'  ÷ direct+TLS':28} " + " ".join(f"{med[k] / med['direct+TLS']:12.2f}" for k in paths))
        if FRONT_CPU:
            print(f"front: sandbox process CPU while serving pgbench: median {statistics.median(FRONT_CPU):.0%} of "
                  "one core (one event loop: near 100% would mean it is the bottleneck)")
        print("select-only, CPU per transaction (µs; pgbench = the client, PostgreSQL = its backends and "
              "postmaster, front = the whole sandbox process):")
        print(f"  {'path':12} {'pgbench':>9} {'PostgreSQL':>11} {'front':>9} {'total':>9}")
        totals: dict[str, float] = {}
        for k, (cl, sv, fr, n) in CPU_PER_TXN.items():
            if n:
                totals[k] = (cl + sv + fr) / n * 1e6
                print(f"  {k:12} {cl / n * 1e6:9.1f} {sv / n * 1e6:11.1f} {fr / n * 1e6:9.1f} {totals[k]:9.1f}")
        if totals.get("front") and totals.get("direct+TLS"):
            print(f"  CPU-bound ceiling of front / (direct+TLS) on this machine: "
                  f"{totals['direct+TLS'] / totals['front']:.2f} (when the cores, not the round trips, are the limit)")
        for name, rs in rotations.items():
            print(f"{name}: front / (direct+TLS) per rotation: " + ", ".join(f"{r:.2f}" for r in rs))
        sel = results["select-only (-S)"]
        ratio = sel["front"] / sel["direct+TLS"]
        print(f"select-only at {opts.clients} clients: front / (direct+TLS) = {ratio:.2f} (target ≥ 0.50): "
              f"{'OK' if ratio >= 0.5 else 'BELOW'}")
    finally:
        if direct_pg is not None:
            direct_pg.stop(mode="immediate")
        try:
            lifecycle.stop(sdir)
        except Exception as e:
            print(f"stop: {e}", file=sys.stderr)
        if not opts.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
