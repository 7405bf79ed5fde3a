"""What the sandbox's DSQL front costs: pgbench through the front vs straight to the same PostgreSQL.

Starts a sandbox in a temp folder (measuring ``sandbox start`` to ready, cold and warm), creates
a cluster (measuring create → ACTIVE), loads pgbench's tables directly into the cluster's
PostgreSQL, then runs, alternating front / direct, ``--runs`` times each:

* select-only (``pgbench -S``),
* a simple update workload (one autocommit ``UPDATE pgbench_accounts … WHERE aid = :aid``),

with ``-c 4 -j 2`` for ``--seconds`` seconds. Through the front pgbench uses what any DSQL client
uses: TLS with ``sslmode=verify-full`` against the sandbox CA, ``host=<cluster endpoint>`` +
``hostaddr=127.0.0.1``, and an IAM token as the password. Prints median TPS and the ratio
front/direct (target: ≥ 0.70 on select-only).

Side by side, in the same rotation: ``direct+TLS`` (PostgreSQL doing the TLS itself: what
encryption alone costs) and, when the machine has a C compiler and OpenSSL headers,
``benchmarks/reference_relay.c`` with and without TLS in front of the same Unix socket as the
front: a relay that does nothing but terminate TLS and copy bytes. No front can beat it, so its
ratio is this machine's ceiling for the target. When the front's C data path is built, a second
sandbox whose front runs the pure-Python relay (``DSQLOPS_SANDBOX_RELAY=python``) joins the
rotation as ``front (py relay)``, so the two relays are compared side by side as well.

    .venv/bin/python benchmarks/sandbox_overhead.py [--seconds 5] [--runs 3] [--clients 4] [--protocol simple]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsqlops.sandbox import lifecycle
from dsqlops.sandbox.postgres import free_port
from dsqlops.sandbox.state import SandboxDir
from tests.sandbox.handle import SandboxHandle

UPDATE_SCRIPT = ("\\set aid random(1, 100000 * :scale)\n"
                 "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: CPU share of each sandbox process while pgbench ran through its front (one core = 1.0).
FRONT_CPU: dict[str, list[float]] = {}
#: pgbench and psql get their connection settings from the PG* variables given to each run only.
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def pgbench(args: list[str], env: dict[str, str], pid: int | None = None, cpu: list[float] | None = None) -> float:
    t0, c0 = time.monotonic(), (_cpu_seconds(pid) if pid else 0.0)
    p = subprocess.run(["pgbench", *args], env=env, capture_output=True, text=True, timeout=600, check=False)
    if pid and cpu is not None:
        cpu.append((_cpu_seconds(pid) - c0) / (time.monotonic() - t0))
    if p.returncode != 0:
        raise SystemExit(f"pgbench failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    m = re.search(r"tps = ([0-9.]+) \((?:without initial connection time|excluding connections establishing)\)",
                  p.stdout)
    if not m:
        raise SystemExit(f"no tps in pgbench output:\n{p.stdout}")
    return float(m.group(1))


def start_reference_relays(root: Path, sdir: SandboxDir, cid: str,
                           pg_port: int) -> dict[str, tuple[subprocess.Popen[str], int]]:
    """Build and start benchmarks/reference_relay.c twice (TLS, plaintext) in front of the cluster's
    PostgreSQL Unix socket, as the front reaches it. Skipped (empty) without a C compiler or OpenSSL."""
    cc = shutil.which("cc") or shutil.which("gcc")
    exe = root / "reference_relay"
    src = Path(__file__).with_name("reference_relay.c")
    if cc is None:
        print("reference relay skipped: no C compiler (cc)")
        return {}
    p = subprocess.run([cc, "-O2", "-o", str(exe), str(src), "-lssl", "-lcrypto"], capture_output=True,
                       text=True, timeout=120, check=False)
    if p.returncode != 0:
        print(f"reference relay skipped: it did not compile (OpenSSL headers missing?)\n{p.stderr.strip()}")
        return {}
    sock = str(sdir.socket_dir(cid) / f".s.PGSQL.{pg_port}")
    tls = sdir.tls_dir
    out: dict[str, tuple[subprocess.Popen[str], int]] = {}
    for name, extra in (("ref TLS relay", [str(tls / "server.pem"), str(tls / "server.key")]), ("ref relay", [])):
        port = free_port()
        proc = subprocess.Popen([str(exe), str(port), sock, *extra], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise SystemExit(f"reference relay did not start (exit {proc.wait()})")
        out[name] = (proc, port)
    return out


def res_relay(h: SandboxHandle) -> str:
    return str(h.runtime().get("relay") or "python")


def prepare(h: SandboxHandle, res: lifecycle.StartResult, scale: int) -> tuple[str, int, dict[str, str]]:
    """Create a cluster, load pgbench's tables into it; return (id, PostgreSQL port, front env)."""
    cid = h.create_cluster(timeout=180)
    pg_port = int(h.runtime()["clusters"][cid]["pg_port"])
    # pgbench -i (TRUNCATE, COPY of 100,000 rows, VACUUM) is not DSQL SQL: load as the superuser,
    # straight into the cluster's PostgreSQL, then hand the tables to admin. Replica mode skips the
    # sandbox's row-limit triggers for the load.
    loader = {**BASE_ENV, "PGHOST": "127.0.0.1", "PGPORT": str(pg_port), "PGUSER": "postgres",
              "PGDATABASE": "postgres", "PGSSLMODE": "disable", "PGOPTIONS": "-c session_replication_role=replica"}
    p = subprocess.run(["pgbench", "-i", "-q", "-s", str(scale)], env=loader, capture_output=True,
                       text=True, timeout=600, check=False)
    if p.returncode != 0:
        raise SystemExit(f"pgbench -i failed:\n{p.stderr}")
    for t in ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"):
        subprocess.run(["psql", "-X", "-q", "-c", f"ALTER TABLE {t} OWNER TO admin"], env=loader, check=True,
                       capture_output=True, timeout=60)
    front = {**BASE_ENV, "PGHOST": h.endpoint(cid), "PGHOSTADDR": "127.0.0.1", "PGPORT": str(res.port),
             "PGUSER": "admin", "PGDATABASE": "postgres", "PGSSLMODE": "verify-full",
             "PGSSLROOTCERT": res.ca_file, "PGPASSWORD": h.token(cid, expires_in=3600)}
    return cid, pg_port, front


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--protocol", choices=["simple", "extended", "prepared"], default="simple")
    ap.add_argument("--keep", action="store_true", help="leave the sandbox folder behind")
    ap.add_argument("--no-python-relay", action="store_true",
                    help="do not also measure a second sandbox on the pure-Python relay")
    opts = ap.parse_args()
    if shutil.which("pgbench") is None:
        raise SystemExit("pgbench not found (apt-get install postgresql-client / postgresql-contrib)")

    root = Path(tempfile.mkdtemp(prefix="dsqlops-bench-"))
    os.chmod(root, 0o755)
    sdir = SandboxDir(root / "sb")
    procs: list[subprocess.Popen[str]] = []
    stops: list[SandboxDir] = [sdir]
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
        cid, pg_port, front = prepare(h, res, opts.scale)
        create = time.monotonic() - t0
        print(f"sandbox start → ready: cold {cold:.2f}s (first start: certificates, IAM key), "
              f"warm {warm:.2f}s (restart); cluster create → ACTIVE + pgbench -i: {create:.2f}s; "
              f"front relay: {res_relay(h)}")
        direct = {**BASE_ENV, "PGHOST": "127.0.0.1", "PGPORT": str(pg_port), "PGUSER": "admin",
                  "PGDATABASE": "postgres", "PGSSLMODE": "disable"}
        direct_tls = {**direct, "PGSSLMODE": "require"}
        paths: dict[str, dict[str, str]] = {"front": front, "direct": direct, "direct+TLS": direct_tls}
        py_pid = None
        if res_relay(h) == "native" and not opts.no_python_relay:
            # the same front on the pure-Python relay, in a second sandbox (its own PostgreSQL, same
            # settings), so that what the C data path buys is measured side by side too
            sdir_py = SandboxDir(root / "sb-python")
            os.environ["DSQLOPS_SANDBOX_RELAY"] = "python"
            try:
                res_py = lifecycle.start_background(sdir_py, api_port=free_port(), port=free_port(), timeout=120)
            finally:
                os.environ.pop("DSQLOPS_SANDBOX_RELAY", None)
            stops.append(sdir_py)
            h_py = SandboxHandle(sdir_py.path).attach()
            assert res_relay(h_py) == "python"
            paths["front (py relay)"] = prepare(h_py, res_py, opts.scale)[2]
            py_pid = res_py.pid
        refs = start_reference_relays(root, sdir, cid, pg_port)
        procs.extend(p for p, _port in refs.values())
        if "ref TLS relay" in refs:
            paths["ref TLS relay"] = {**front, "PGPORT": str(refs["ref TLS relay"][1])}
            paths["ref relay"] = {**direct, "PGPORT": str(refs["ref relay"][1])}
        script = root / "update.sql"
        script.write_text(UPDATE_SCRIPT)
        common = ["-c", str(opts.clients), "-j", str(opts.threads), "-T", str(opts.seconds), "-n",
                  "-M", opts.protocol]
        workloads = {"select-only (-S)": ["-S"], "update (1 row, autocommit)": ["-f", str(script),
                                                                               "--max-tries", "10"]}
        print(f"pgbench {' '.join(common)}; {opts.runs} runs each, alternating; median tps")
        results: dict[str, dict[str, float]] = {}
        for name, extra in workloads.items():
            tps: dict[str, list[float]] = {k: [] for k in paths}
            for _ in range(opts.runs):
                for k, env in paths.items():
                    pid = {"front": res.pid, "front (py relay)": py_pid}.get(k)
                    tps[k].append(pgbench([*common, *extra], env, pid=pid, cpu=FRONT_CPU.setdefault(k, [])))
            results[name] = {k: statistics.median(v) for k, v in tps.items()}
        print(f"{'workload':28} " + " ".join(f"{k:>14}" for k in paths))
        for name, med in results.items():
            print(f"{name + ' tps':28} " + " ".join(f"{med[k]:14.0f}" for k in paths))
            print(f"{'  ÷ direct':28} " + " ".join(f"{med[k] / med['direct']:14.2f}" for k in paths))
        for k, v in FRONT_CPU.items():
            if v:
                print(f"{k}: sandbox process CPU while serving pgbench: median {statistics.median(v):.0%} of one core "
                      "(one event loop: near 100% would mean it is the bottleneck)")
        sel = results["select-only (-S)"]
        ratio = sel["front"] / sel["direct"]
        print(f"select-only keeps {ratio:.0%} of direct throughput (target ≥ 70%): {'OK' if ratio >= 0.7 else 'BELOW'}")
        if "ref TLS relay" in sel:
            d, ref = sel["direct"], sel["ref TLS relay"]
            print(f"ceiling on this machine: a C relay that only terminates TLS and copies bytes keeps {ref / d:.0%} "
                  f"of direct (plaintext C relay: {sel['ref relay'] / d:.0%}; TLS alone, direct+TLS: "
                  f"{sel['direct+TLS'] / d:.0%}); the front reaches {sel['front'] / ref:.0%} of that ceiling")
        if "front (py relay)" in sel:
            upd = results["update (1 row, autocommit)"]
            py = "front (py relay)"
            print(f"the C data path vs the pure-Python relay, same front: select-only "
                  f"{sel['front'] / sel[py]:.2f}x, update {upd['front'] / upd[py]:.2f}x")
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        for d in stops:
            try:
                lifecycle.stop(d)
            except Exception as e:
                print(f"stop: {e}", file=sys.stderr)
        if not opts.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
