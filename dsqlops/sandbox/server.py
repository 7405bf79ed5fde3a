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
import gc
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
from dsqlops.sandbox import metering, motoserver, sysschema
from dsqlops.sandbox.dialect import DsqlDialect
from dsqlops.sandbox.hooks import Dialect, PassThrough
from dsqlops.sandbox.jobrunner import JobRunner
from dsqlops.sandbox.limits import Limits
from dsqlops.sandbox.postgres import PostgresServer, free_port
from dsqlops.sandbox.state import REGIONS, ClusterRecord, SandboxDir

log = logging.getLogger("dsqlops.sandbox")

#: postgresql.conf for each cluster's PostgreSQL: small, fast, on its Unix socket only.
PG_SETTINGS = {
    "shared_buffers": "16MB",
    # above DSQL's 1,000-connection burst, so a connection storm meets DSQL's limits at the front
    # (53400/53300), not PostgreSQL's "remaining connection slots are reserved"
    "max_connections": "1100",
    "max_wal_size": "256MB",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %u '",
}
#: Only the front (and the sandbox itself) connect, over the Unix socket in a 0700 folder that only
#: the sandbox's user (and root) can enter; the front has already checked the IAM token, so the
#: backend trusts the socket. There is no TCP listener (listen_addresses=''): a trusted loopback
#: port would let anyone on the machine in as a superuser, around the IAM check.
PG_HBA = "local all all trust\n"
SUPERUSER = "postgres"
#: Client sessions the front lets into one cluster's PostgreSQL; the rest of max_connections is
#: for the sandbox's own connections (job runner, meter, login check, superuser slots).
CLIENT_SLOTS = 1024
#: The least-privileged role the front checks IAM role mappings as (created by sql/sys.sql).
LOGIN_CHECK_ROLE = "dsqlops_login_check"
#: Roles no client may log in as through the front, whatever the mappings say.
RESERVED_ROLES = frozenset({SUPERUSER, LOGIN_CHECK_ROLE})

#: Run once in the template: DSQL's ``admin`` is not a superuser; it owns the ``postgres``
#: database (so, in PostgreSQL 15, the ``public`` schema) and may create roles.
TEMPLATE_SQL = [
    "CREATE ROLE admin WITH LOGIN CREATEROLE",
    "ALTER DATABASE postgres OWNER TO admin",
    "GRANT pg_read_all_stats, pg_signal_backend TO admin",
    "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
]

def load_dialect(limits: Limits | None = None) -> Dialect:
    """DSQL's dialect, wrapped by the wire counters of :mod:`dsqlops.sandbox.metering`.

    ``DSQLOPS_SANDBOX_DIALECT=postgres`` gives plain PostgreSQL behind TLS + IAM (to measure or
    debug the relay alone).
    """
    inner: Dialect
    if os.environ.get("DSQLOPS_SANDBOX_DIALECT", "").lower() in ("postgres", "passthrough", "none"):
        inner = PassThrough()
    else:
        inner = DsqlDialect(txn_age_limit=(limits or Limits()).txn_age_seconds)
    return metering.wrap_dialect(inner)


class ClusterDB:
    """One cluster's PostgreSQL, as the front sees it (implements front.ClusterTarget)."""

    def __init__(self, registry: Registry, rec: ClusterRecord) -> None:
        self.registry = registry
        self.record = rec
        self.identifier = rec.identifier
        self.region = rec.region
        self.endpoint = motoserver.endpoint_for(rec.identifier, rec.region)
        d = registry.sdir.cluster_dir(rec.identifier)
        # The front reaches the backend over a Unix socket (cheaper than loopback TCP); its folder is
        # short and outside DIR, since a socket path under a deep DIR would pass the 107-byte limit.
        self.socket_dir = registry.sdir.socket_dir(rec.identifier)
        # The port only names the socket file (.s.PGSQL.<port>): there is no TCP listener.
        self.pg = PostgresServer(d / "pgdata", port=free_port(), settings=dict(PG_SETTINGS), hba=PG_HBA,
                                 log_file=d / "postgres.log", superuser=SUPERUSER, tcp=False,
                                 unix_dir=self.socket_dir)
        self._check_conn: Any = None
        self._check_lock: asyncio.Lock | None = None
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
            self.pg.start(timeout=120)
            self.superuser_setup()
            self.state = "ready"
            self.started_at = time.time()
            motoserver.mark_ready(self.identifier)
            self.ready.set()
            log.info("cluster %s ready on port %d in %.2fs (%s)", self.identifier, self.pg.port,
                     time.monotonic() - t0, "new" if fresh else "restarted")
        except Exception as e:
            self.error = str(e)
            self.state = "failed"
            motoserver.mark_failed(self.identifier)
            log.exception("cluster %s: database failed to start", self.identifier)
            self.ready.set()
        self.registry.write_runtime()

    def superuser_setup(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(**self.superuser_conninfo(), autocommit=True) as conn:  # type: ignore[arg-type]
            sysschema.install(conn)
            for name, value in self.registry.limits.database_settings().items():  # read by sys.sql's checks
                conn.execute(sql.SQL("ALTER DATABASE postgres SET {} = {}").format(sql.Identifier(name),
                                                                                  sql.Literal(value)))

    def superuser_conninfo(self) -> dict[str, object]:
        return self.pg.conninfo()

    # the front's view -------------------------------------------------------------------------
    async def backend_address(self) -> tuple[str, int]:
        if not self.ready.is_set():
            await asyncio.to_thread(self.ready.wait, 120)
        if self.state != "ready":
            raise OSError(f"cluster {self.identifier} database is {self.state}")
        return str(self.socket_dir), self.pg.port

    async def role_is_mapped(self, role: str, arn: str) -> bool:
        """Whether ``role`` is mapped to ``arn``: asked over one connection per cluster, kept open and
        reused by every login, as a role that can read the mappings and nothing else."""
        import psycopg

        if role in RESERVED_ROLES:
            return False
        host, port = await self.backend_address()
        if self._check_lock is None:
            self._check_lock = asyncio.Lock()
        async with self._check_lock:
            for attempt in (1, 2):
                if self._check_conn is None or self._check_conn.closed:
                    self._check_conn = await psycopg.AsyncConnection.connect(
                        host=host, hostaddr="", port=port, dbname="postgres", user=LOGIN_CHECK_ROLE, autocommit=True,
                        application_name="dsqlops login check")
                try:
                    cur = await self._check_conn.execute(
                        "SELECT 1 FROM sys.iam_pg_role_mappings WHERE pg_role_name = %s AND arn = %s", (role, arn))
                    return (await cur.fetchone()) is not None
                except psycopg.OperationalError:
                    # the backend restarted under the kept connection: reconnect once
                    with contextlib.suppress(Exception):
                        await self._check_conn.close()
                    self._check_conn = None
                    if attempt == 2:
                        raise
        return False

    def stop(self) -> None:
        self.pg.stop(mode="fast", timeout=30)
        self.state = "stopped"
        if not self.pg.running():
            shutil.rmtree(self.socket_dir, ignore_errors=True)  # no litter in $TMPDIR

    def destroy(self) -> None:
        motoserver.mark_ready(self.identifier, False)
        self.state = "deleted"
        self.pg.stop(mode="immediate", timeout=30)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        shutil.rmtree(self.registry.sdir.cluster_dir(self.identifier), ignore_errors=True)


class Registry:
    """All clusters' databases, kept in step with moto's DSQL backend by a watcher thread."""

    def __init__(self, sdir: SandboxDir, runtime: dict[str, Any], tls: Any = None,
                 limits: Limits | None = None) -> None:
        self.sdir = sdir
        self.limits = limits or Limits()
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
                                    log_file=tdir.parent / "postgres.log", tcp=False)
                self.sdir.ensure_traversable()
                pg.init()
                pg.start(timeout=120)
                try:
                    import psycopg

                    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:  # type: ignore[arg-type]
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
            for region, cluster in motoserver.iter_clusters():
                status = cluster.status
                cid = cluster.identifier
                if status in ("DELETING", "DELETED"):
                    db = self.dbs.pop(cid, None)
                    if db is not None:
                        self.by_host.pop(db.endpoint, None)
                        threading.Thread(target=db.destroy, daemon=True).start()
                        changed = True
                    if status == "DELETED":
                        motoserver.dsql_backend(region).clusters.pop(cid, None)
                    continue
                seen.add(cid)
                rec = motoserver.record_of(region, cluster)
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
                                "error": db.error, "pg_port": db.pg.port,
                                "pg_socket_dir": str(db.socket_dir)} for db in self.dbs.values()}
            data = dict(self.runtime)
        self.sdir.save_runtime(data)


def _start_components(registry: Registry) -> list[Any]:
    """The job runner (CREATE INDEX ASYNC & co.) and the meter. Each has stop()."""
    runner = JobRunner(registry.conninfo_for, clusters=lambda: [db.identifier for db in registry.ready_clusters()])
    runner.start()
    return [runner, metering.start(registry)]


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
    from dsqlops.sandbox.certs import ensure_certificates

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
    cp = motoserver.ControlPlane(api_port, host)
    try:
        cp.start()
    except OSError as e:
        raise ServiceError(f"cannot listen on {host}:{api_port} for the control plane: {e.strerror}") from None
    creds = motoserver.ensure_credentials(sdir.load_credentials())
    sdir.save_credentials(creds)
    for rec in sdir.load_clusters():
        motoserver.restore_cluster(rec)
    runtime: dict[str, Any] = {
        "pid": os.getpid(), "dir": str(sdir.path), "host": host, "api_port": api_port, "port": port,
        "api_endpoint": cp.endpoint, "ca_file": str(tls.ca_cert), "region": "us-east-1",
        "started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "ready": False,
    }
    limits = Limits.from_env()
    registry = Registry(sdir, runtime, tls, limits)
    template = threading.Thread(target=registry.build_template, name="template", daemon=True)
    template.start()
    registry.sync()
    stop_watch = threading.Event()
    motoserver.watch(registry.sync, stop_watch)
    dialect = load_dialect(limits)
    optional = _start_components(registry)
    runtime["dialect"] = type(getattr(dialect, "inner", dialect)).__name__

    from dsqlops.sandbox.front import Front

    front = Front(resolve=registry.resolve, lookup=motoserver.lookup_identity, dialect=dialect,
                  cert_file=str(tls.server_cert), key_file=str(tls.server_key), limits=limits,
                  max_connections=CLIENT_SLOTS)

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
        log.warning("sandbox ready in %.2fs: api %s, front %s:%d", time.monotonic() - t0, cp.endpoint,
                    host, port)
        if on_ready is not None:
            on_ready(runtime)
        # What start-up built (botocore's and moto's models, the certificates…) lives as long as
        # the process: keep it out of the collector's full passes, which otherwise walk all of it
        # in the middle of the front's work.
        gc.freeze()
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
