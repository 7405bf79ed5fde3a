"""The sandbox process: control plane + one PostgreSQL per cluster + the DSQL wire front.

``run(...)`` is what ``dsqlops sandbox start --foreground`` executes; :mod:`dsqlops.sandbox.lifecycle`
functions (``start_background``, ``stop``, ``status``, ``env``) drive it from the CLI.

Per cluster there is one PostgreSQL in ``DIR/clusters/<id>/pgdata`` (so roles are per cluster,
like DSQL, and the database really is ``postgres``), copied from an initdb'ed template (fast:
a copy and a ``pg_ctl start`` instead of an ``initdb`` per cluster). It is created when moto
reports a new cluster (a watcher thread polls moto's backend), started when the sandbox
starts, stopped and removed when the cluster is deleted. moto reports the cluster ``CREATING``
until its PostgreSQL is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dsqlops.errors import ConflictError, ServiceError
from dsqlops.sandbox import control
from dsqlops.sandbox.hooks import Dialect, PassThrough
from dsqlops.sandbox.postgres import PostgresServer, free_port
from dsqlops.sandbox.state import REGIONS, ClusterRecord, SandboxDir

log = logging.getLogger("dsqlops.sandbox")

#: postgresql.conf for each cluster's PostgreSQL: small, fast, loopback only.
PG_SETTINGS = {
    "shared_buffers": "16MB",
    "max_connections": "200",
    "max_wal_size": "256MB",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %u '",
}
#: Only the front (and the sandbox itself) connect, over loopback; the front has already checked
#: the IAM token, so the backend trusts loopback connections.
PG_HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
SUPERUSER = "postgres"

#: Run once in the template: DSQL's ``admin`` is not a superuser; it owns the ``postgres``
#: database (so, in PostgreSQL 15, the ``public`` schema) and may create roles.
TEMPLATE_SQL = [
    "CREATE ROLE admin WITH LOGIN CREATEROLE",
    "ALTER DATABASE postgres OWNER TO admin",
    "GRANT pg_read_all_stats, pg_signal_backend TO admin",
    "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
]

#: Used only while the sysschema module is not importable: just enough for the non-admin login check.
FALLBACK_SYS_SQL = [
    "CREATE SCHEMA IF NOT EXISTS sys",
    "CREATE TABLE IF NOT EXISTS sys.iam_pg_role_mappings (iam_oid bigint, arn text NOT NULL, "
    "pg_role_oid oid, pg_role_name text NOT NULL, grantor_pg_role_oid oid, grantor_pg_role_name text)",
    "GRANT USAGE ON SCHEMA sys TO PUBLIC",
    "GRANT SELECT ON sys.iam_pg_role_mappings TO PUBLIC",
]


def load_dialect() -> Dialect:
    """The DsqlDialect when it is installed, else PassThrough (plain PostgreSQL behind TLS + IAM).

    ``DSQLOPS_SANDBOX_DIALECT=postgres`` forces PassThrough (to measure or debug the relay alone).
    """
    if os.environ.get("DSQLOPS_SANDBOX_DIALECT", "").lower() in ("postgres", "passthrough", "none"):
        return PassThrough()
    try:
        from dsqlops.sandbox.dialect import DsqlDialect  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        log.warning("dsqlops.sandbox.dialect not available: running without the DSQL dialect")
        return PassThrough()
    return DsqlDialect()  # type: ignore[no-any-return,unused-ignore]


def install_sys_schema(conn: Any) -> None:
    try:
        from dsqlops.sandbox import sysschema  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        for stmt in FALLBACK_SYS_SQL:
            conn.execute(stmt)
        return
    sysschema.install(conn)


class ClusterDB:
    """One cluster's PostgreSQL, as the front sees it (implements front.ClusterTarget)."""

    def __init__(self, registry: Registry, rec: ClusterRecord) -> None:
        self.registry = registry
        self.record = rec
        self.identifier = rec.identifier
        self.region = rec.region
        self.endpoint = control.endpoint_for(rec.identifier, rec.region)
        d = registry.sdir.cluster_dir(rec.identifier)
        # The front reaches the backend over a Unix socket (cheaper than loopback TCP); its folder is
        # short and outside DIR, since a socket path under a deep DIR would pass the 107-byte limit.
        self.socket_dir = registry.sdir.socket_dir(rec.identifier)
        settings = {**PG_SETTINGS, "unix_socket_directories": f"'{self.socket_dir}'"}
        # TLS on the backend too (optional for its clients): only for measuring the front against a
        # direct TLS connection (benchmarks/sandbox_overhead.py); the front uses the Unix socket.
        tls = registry.tls
        self.pg = PostgresServer(d / "pgdata", port=free_port(), settings=settings, hba=PG_HBA,
                                 log_file=d / "postgres.log", superuser=SUPERUSER,
                                 ssl_cert=tls.server_cert if tls else None, ssl_key=tls.server_key if tls else None)
        self.ready = threading.Event()
        self.error: str | None = None
        self.state = "creating"
        self.started_at: float | None = None

    # provisioning (in a thread) ---------------------------------------------------------------
    def provision(self) -> None:
        t0 = time.monotonic()
        try:
            fresh = not self.pg.initialized()
            if fresh:
                self.registry.template_ready(timeout=180)
                self.pg.datadir.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(self.pg.datadir.parent, 0o755)  # noqa: S103 - the postgres user must traverse it
                shutil.copytree(self.registry.sdir.template_dir, self.pg.datadir, symlinks=True)
                for stale in ("postmaster.pid", "postmaster.opts"):
                    with contextlib.suppress(FileNotFoundError):
                        (self.pg.datadir / stale).unlink()
            elif self.pg.running():  # left behind by a sandbox that was killed
                self.pg.stop(mode="immediate")
            self.registry.sdir.ensure_traversable()
            self.pg.init()
            self._make_socket_dir()
            self.pg.start(timeout=120)
            self.superuser_setup()
            self.state = "ready"
            self.started_at = time.time()
            control.mark_ready(self.identifier)
            self.ready.set()
            log.info("cluster %s ready on port %d in %.2fs (%s)", self.identifier, self.pg.port,
                     time.monotonic() - t0, "new" if fresh else "restarted")
        except Exception as e:
            self.error = str(e)
            self.state = "failed"
            control.mark_failed(self.identifier)
            log.exception("cluster %s: database failed to start", self.identifier)
            self.ready.set()
        self.registry.write_runtime()

    def _make_socket_dir(self) -> None:
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.socket_dir, 0o700)
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.socket_dir, pw.pw_uid, pw.pw_gid)

    def superuser_setup(self) -> None:
        import psycopg

        with psycopg.connect(**self.superuser_conninfo(), autocommit=True) as conn:  # type: ignore[arg-type]
            install_sys_schema(conn)

    def superuser_conninfo(self) -> dict[str, object]:
        return {"host": self.pg.host, "port": self.pg.port, "dbname": "postgres", "user": SUPERUSER}

    # the front's view -------------------------------------------------------------------------
    async def backend_address(self) -> tuple[str, int]:
        if not self.ready.is_set():
            await asyncio.to_thread(self.ready.wait, 120)
        if self.state != "ready":
            raise OSError(f"cluster {self.identifier} database is {self.state}")
        return str(self.socket_dir), self.pg.port

    async def role_is_mapped(self, role: str, arn: str) -> bool:
        import psycopg

        await self.backend_address()
        async with await psycopg.AsyncConnection.connect(**self.superuser_conninfo(),  # type: ignore[arg-type]
                                                         autocommit=True) as conn:
            cur = await conn.execute("SELECT 1 FROM sys.iam_pg_role_mappings WHERE pg_role_name=%s AND arn=%s",
                                     (role, arn))
            return (await cur.fetchone()) is not None

    def stop(self) -> None:
        self.pg.stop(mode="fast", timeout=30)
        self.state = "stopped"
        if not self.pg.running():
            shutil.rmtree(self.socket_dir, ignore_errors=True)  # no litter in $TMPDIR

    def destroy(self) -> None:
        control.mark_ready(self.identifier, False)
        self.state = "deleted"
        self.pg.stop(mode="immediate", timeout=30)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        shutil.rmtree(self.registry.sdir.cluster_dir(self.identifier), ignore_errors=True)


class Registry:
    """All clusters' databases, kept in step with moto's DSQL backend by a watcher thread."""

    def __init__(self, sdir: SandboxDir, runtime: dict[str, Any], tls: Any = None) -> None:
        self.sdir = sdir
        self.runtime = runtime
        self.tls = tls
        self.dbs: dict[str, ClusterDB] = {}
        self.by_host: dict[str, ClusterDB] = {}
        self.lock = threading.RLock()
        self._template_done = threading.Event()
        self._template_error: str | None = None

    # template ---------------------------------------------------------------------------------
    def build_template(self) -> None:
        tdir = self.sdir.template_dir
        try:
            if not (tdir / ".dsqlops-ready").exists():
                stale = PostgresServer(tdir, port=1)
                if stale.initialized() and stale.running():  # a build interrupted by a kill
                    stale.stop(mode="immediate")
                shutil.rmtree(tdir.parent, ignore_errors=True)
                tdir.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tdir.parent, 0o755)  # noqa: S103 - the postgres user must traverse it
                pg = PostgresServer(tdir, settings=dict(PG_SETTINGS), hba=PG_HBA, superuser=SUPERUSER,
                                    log_file=tdir.parent / "postgres.log")
                self.sdir.ensure_traversable()
                pg.init()
                pg.start(timeout=120)
                try:
                    import psycopg

                    with psycopg.connect(host=pg.host, port=pg.port, dbname="postgres", user=SUPERUSER,
                                         autocommit=True) as conn:
                        for stmt in TEMPLATE_SQL:
                            conn.execute(stmt)  # type: ignore[arg-type,unused-ignore]
                finally:
                    pg.stop(mode="fast")
                (tdir / ".dsqlops-ready").write_text("ok\n")
        except Exception as e:
            self._template_error = str(e)
            log.exception("building the PostgreSQL template failed")
        self._template_done.set()

    def template_ready(self, timeout: float) -> None:
        if not self._template_done.wait(timeout):
            raise ServiceError("the PostgreSQL template was not ready in time")
        if self._template_error:
            raise ServiceError(f"the PostgreSQL template failed: {self._template_error}")

    # lookups -----------------------------------------------------------------------------------
    def resolve(self, host: str) -> ClusterDB | None:
        with self.lock:
            return self.by_host.get(host.lower())

    def conninfo_for(self, cluster_id: str) -> dict[str, object] | None:
        """Superuser connection parameters of a cluster's database (for the job runner, metering)."""
        with self.lock:
            db = self.dbs.get(cluster_id)
        if db is None or db.state != "ready":
            return None
        return db.superuser_conninfo()

    def ready_clusters(self) -> list[ClusterDB]:
        with self.lock:
            return [db for db in self.dbs.values() if db.state == "ready"]

    # sync with moto --------------------------------------------------------------------------
    def sync(self) -> None:
        with self.lock:
            changed = False
            seen: set[str] = set()
            for region, cluster in control.iter_clusters():
                status = cluster.status
                cid = cluster.identifier
                if status in ("DELETING", "DELETED"):
                    db = self.dbs.pop(cid, None)
                    if db is not None:
                        self.by_host.pop(db.endpoint, None)
                        threading.Thread(target=db.destroy, daemon=True).start()
                        changed = True
                    if status == "DELETED":
                        control.dsql_backend(region).clusters.pop(cid, None)
                    continue
                seen.add(cid)
                rec = control.record_of(region, cluster)
                db = self.dbs.get(cid)
                if db is None:
                    db = ClusterDB(self, rec)
                    self.dbs[cid] = db
                    self.by_host[db.endpoint] = db
                    threading.Thread(target=db.provision, name=f"provision-{cid}", daemon=True).start()
                    changed = True
                elif asdict(db.record) != asdict(rec):
                    db.record = rec
                    changed = True
            for cid in [c for c in self.dbs if c not in seen]:
                db = self.dbs.pop(cid)
                self.by_host.pop(db.endpoint, None)
                threading.Thread(target=db.destroy, daemon=True).start()
                changed = True
            if changed:
                self.sdir.save_clusters([db.record for db in self.dbs.values()])
                self.write_runtime()

    def stop_all(self) -> None:
        with self.lock:
            dbs = list(self.dbs.values())
        threads = [threading.Thread(target=db.stop) for db in dbs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)

    def write_runtime(self) -> None:
        with self.lock:
            self.runtime["clusters"] = {
                db.identifier: {"region": db.region, "endpoint": db.endpoint, "state": db.state,
                                "error": db.error, "pg_port": db.pg.port} for db in self.dbs.values()}
            data = dict(self.runtime)
        self.sdir.save_runtime(data)


def _start_optional(registry: Registry) -> list[Any]:
    """The job runner and the metering, when they exist. Each must have stop()."""
    started: list[Any] = []
    try:
        from dsqlops.sandbox.jobs import JobRunner  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        log.warning("dsqlops.sandbox.jobs not available: no background jobs")
    else:
        try:
            runner = JobRunner(registry.conninfo_for, clusters=lambda: [db.identifier for db in
                                                                        registry.ready_clusters()])
            runner.start()
            started.append(runner)
        except Exception:
            log.exception("job runner failed to start")
    try:
        from dsqlops.sandbox import metering
    except ImportError:
        return started
    if hasattr(metering, "start"):
        try:
            m = metering.start(registry)
            if m is not None:
                started.append(m)
        except Exception:
            log.exception("metering failed to start")
    return started


async def _exit_with(pid: int, stop: asyncio.Event) -> None:
    """Stop the sandbox when process ``pid`` is gone (DSQLOPS_SANDBOX_OWNER_PID: a test session that
    was killed before it could stop its sandbox does not leave it running)."""
    while not stop.is_set():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            log.warning("owner process %d is gone: stopping", pid)
            stop.set()
            return
        except PermissionError:
            pass
        await asyncio.sleep(1.0)


def _run_loop(main: Any) -> None:
    """uvloop when installed (the front's relay is event-loop bound), else asyncio's own loop.

    ``DSQLOPS_SANDBOX_UVLOOP=0`` forces asyncio's loop.
    """
    if os.environ.get("DSQLOPS_SANDBOX_UVLOOP", "1") != "0":
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            pass
        else:
            uvloop.run(main())
            return
    asyncio.run(main())


def run(sdir: SandboxDir, *, api_port: int, port: int, host: str = "127.0.0.1",
        on_ready: Any = None) -> None:
    """Run the sandbox in this process until SIGTERM/SIGINT."""
    from dsqlops.sandbox.tls import ensure_certificates

    t0 = time.monotonic()
    api_port = api_port or free_port()
    port = port or free_port()
    sdir.ensure()
    pid = sdir.pid()
    if pid is not None and pid != os.getpid():
        raise ConflictError(f"a sandbox is already running in {sdir.path} (pid {pid})")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ConflictError("the sandbox listens on loopback only")
    tls = ensure_certificates(sdir.tls_dir, regions=REGIONS)
    cp = control.ControlPlane(api_port, host)
    try:
        cp.start()
    except OSError as e:
        raise ServiceError(f"cannot listen on {host}:{api_port} for the control plane: {e.strerror}") from None
    creds = control.ensure_credentials(sdir.load_credentials())
    sdir.save_credentials(creds)
    for rec in sdir.load_clusters():
        control.restore_cluster(rec)
    runtime: dict[str, Any] = {
        "pid": os.getpid(), "dir": str(sdir.path), "host": host, "api_port": api_port, "port": port,
        "api_endpoint": cp.endpoint, "ca_file": str(tls.ca_cert), "region": "us-east-1",
        "started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "ready": False,
    }
    registry = Registry(sdir, runtime, tls)
    template = threading.Thread(target=registry.build_template, name="template", daemon=True)
    template.start()
    registry.sync()
    stop_watch = threading.Event()
    control.watch(registry.sync, stop_watch)
    dialect = load_dialect()
    try:
        from dsqlops.sandbox.metering import wrap_dialect  # wire counters (transactions, OCC)
    except ImportError:
        pass
    else:
        dialect = wrap_dialect(dialect)
    optional = _start_optional(registry)
    runtime["dialect"] = type(getattr(dialect, "inner", dialect)).__name__

    from dsqlops.sandbox.front import Front

    front = Front(resolve=registry.resolve, lookup=control.lookup_identity, dialect=dialect,
                  cert_file=str(tls.server_cert), key_file=str(tls.server_key))
    runtime["relay"] = front.relay_kind

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await front.start(host, port)
        except OSError as e:
            raise ServiceError(f"cannot listen on {host}:{port} for the DSQL front: {e.strerror}") from None
        Path(sdir.pid_file).write_text(f"{os.getpid()}\n")
        runtime["ready"] = True
        runtime["startup_seconds"] = round(time.monotonic() - t0, 3)
        registry.write_runtime()
        owner = int(os.environ.get("DSQLOPS_SANDBOX_OWNER_PID", "0") or 0)
        watchdog = loop.create_task(_exit_with(owner, stop)) if owner else None
        log.warning("sandbox ready in %.2fs: api %s, front %s:%d (%s relay)", time.monotonic() - t0, cp.endpoint,
                    host, port, front.relay_kind)
        if on_ready is not None:
            on_ready(runtime)
        await stop.wait()
        if watchdog is not None:
            watchdog.cancel()
        await front.close()

    profile_to = os.environ.get("DSQLOPS_SANDBOX_PROFILE")  # a cProfile of the front's loop, for perf work
    try:
        if profile_to:
            import cProfile

            cProfile.runctx("_run_loop(main)", globals(), {"main": main}, profile_to)
        else:
            _run_loop(main)
    finally:
        stop_watch.set()
        template.join(180)  # never leave a half-built template (or its server) behind
        for comp in optional:
            with contextlib.suppress(Exception):
                comp.stop()
        registry.stop_all()
        cp.stop()
        runtime["ready"] = False
        runtime["stopped_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with contextlib.suppress(Exception):
            registry.write_runtime()
        with contextlib.suppress(FileNotFoundError):
            if sdir.pid() in (None, os.getpid()):
                sdir.pid_file.unlink()
