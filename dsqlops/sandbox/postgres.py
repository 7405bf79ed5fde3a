"""Start and stop a real PostgreSQL from the installed server binaries, data in a folder.

Used by the sandbox (its backend) and by the test suite (a throwaway server per session).
When running as root, ``initdb``/``postgres`` run as the ``postgres`` user through ``runuser``
(PostgreSQL refuses to run as root), and the data folder is handed to that user.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dsqlops.errors import ConfigError, ServiceError

SEARCH_DIRS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/usr/pgsql-*/bin", "/opt/homebrew/bin",
               "/usr/local/bin", "/usr/bin")


def find_pg_bin(name: str = "postgres") -> Path:
    """Locate a server binary: $DSQLOPS_PG_BIN, then the newest /usr/lib/postgresql/N/bin, then PATH."""
    env_dir = os.environ.get("DSQLOPS_PG_BIN")
    candidates: list[str] = []
    if env_dir:
        candidates.append(env_dir)
    for pattern in SEARCH_DIRS:
        candidates.extend(sorted(glob.glob(pattern), key=_version_key, reverse=True))
    for d in candidates:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return p
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ConfigError(f"PostgreSQL server binary {name!r} not found",
                      hint="install the PostgreSQL server (e.g. apt-get install postgresql) or set DSQLOPS_PG_BIN")


def _version_key(path: str) -> tuple[int, ...]:
    nums = [int(p) for p in path.replace("-", "/").split("/") if p.isdigit()]
    return tuple(nums) or (0,)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    """The user to run the server as: 'postgres' when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ConfigError("running as root but there is no 'postgres' user to run PostgreSQL as") from None
    return "postgres"


def postmaster_pid(datadir: Path) -> int | None:
    """The postmaster's pid from ``datadir/postmaster.pid``; None without one (or with a malformed one)."""
    try:
        return int((datadir / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _chown_tree(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for n in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in ``datadir`` listening on ``host:port``.

    ``ssl_cert``/``ssl_key``: enable TLS with these files (copied into the data folder).
    ``settings``: extra ``postgresql.conf`` lines. ``hba``: the ``pg_hba.conf`` body
    (default: trust on loopback and the local socket, for a throwaway server).
    ``tcp=False``: no TCP listener at all (``listen_addresses=''``): only the Unix socket in
    ``unix_dir`` (a 0700 folder), so only its owner (and root) can connect. ``port`` then only
    names the socket file (``.s.PGSQL.<port>``).
    """

    datadir: Path
    port: int = 0
    host: str = "127.0.0.1"
    superuser: str = "postgres"
    ssl_cert: Path | None = None
    ssl_key: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)
    hba: str | None = None
    log_file: Path | None = None
    tcp: bool = True
    unix_dir: Path | None = None
    _user: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.datadir = Path(self.datadir)
        if not self.port:
            self.port = free_port(self.host)
        self._user = _run_as()
        if self.log_file is None:
            self.log_file = self.datadir.parent / f"{self.datadir.name}.log"

    # -- plumbing ---------------------------------------------------------------------------
    def _cmd(self, argv: list[str]) -> list[str]:
        if self._user:
            return ["runuser", "-u", self._user, "--", *argv]
        return argv

    def _run(self, argv: list[str], what: str, timeout: float = 120) -> str:
        try:
            p = subprocess.run(self._cmd(argv), capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ServiceError(f"{what} timed out after {timeout:.0f}s") from None
        if p.returncode != 0:
            raise ServiceError(f"{what} failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()[-2000:]}")
        return p.stdout

    @property
    def socket_dir(self) -> Path:
        """Beside the data folder, or, when that path is too long for a Unix socket (sun_path holds
        ~107 bytes, and the socket file adds ``/.s.PGSQL.<port>``), a short folder in $TMPDIR
        named after the data folder. ``unix_dir`` when given."""
        if self.unix_dir is not None:
            return Path(self.unix_dir)
        beside = self.datadir.parent / f"{self.datadir.name}.sock"
        if len(str(beside)) + len("/.s.PGSQL.65535") < 100:
            return beside
        digest = hashlib.sha1(str(self.datadir.resolve()).encode()).hexdigest()[:12]  # noqa: S324 - a name
        return Path(tempfile.gettempdir()) / f"dsqlops-pg-{digest}"

    @property
    def connect_host(self) -> str:
        """What a client passes as ``host``: the TCP address, or the socket folder when there is no TCP."""
        return self.host if self.tcp else str(self.socket_dir)

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"host={self.connect_host} port={self.port} dbname={dbname} user={user or self.superuser}"

    def conninfo(self, dbname: str = "postgres", user: str | None = None) -> dict[str, object]:
        info: dict[str, object] = {"host": self.connect_host, "port": self.port, "dbname": dbname,
                                   "user": user or self.superuser}
        if not self.tcp:
            info["hostaddr"] = ""  # a PGHOSTADDR in the environment would send libpq to TCP instead
        return info

    # -- life cycle -------------------------------------------------------------------------
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb (once) and write our configuration (every time, so ports/TLS can change)."""
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        if not self.initialized():
            self.datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self._user:
                _chown_tree(self.datadir, self._user)
                # runuser needs to traverse the parents (mkdtemp makes them 0700).
                for parent in self.datadir.parents:
                    if str(parent) in ("/", "/tmp"):  # noqa: S108 - not creating anything here
                        break
                    with contextlib.suppress(OSError):
                        st = parent.stat()
                        os.chmod(parent, st.st_mode | 0o011)  # noqa: S103 - traverse only, no read
            self._run([str(find_pg_bin("initdb")), "-D", str(self.datadir), "-U", self.superuser,
                       "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions"], "initdb")
        self.socket_dir.mkdir(exist_ok=True, mode=0o700)
        if not self.tcp:
            os.chmod(self.socket_dir, 0o700)  # the socket is the only way in: its folder admits only the owner
        conf = {
            "listen_addresses": f"'{self.host}'" if self.tcp else "''",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "300",
            "shared_buffers": "128MB",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "shared_preload_libraries": "'pg_stat_statements'",
            "pg_stat_statements.track": "all",
        }
        if self.ssl_cert and self.ssl_key:
            shutil.copy(self.ssl_cert, self.datadir / "server.crt")
            shutil.copy(self.ssl_key, self.datadir / "server.key")
            os.chmod(self.datadir / "server.key", 0o600)
            conf.update({"ssl": "on", "ssl_cert_file": "'server.crt'", "ssl_key_file": "'server.key'"})
        else:
            conf["ssl"] = "off"
        conf.update(self.settings)
        (self.datadir / "postgresql.auto.conf").write_text(
            "# written by dsqlops; changes are overwritten\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
        hba = self.hba if self.hba is not None else (
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n")
        (self.datadir / "pg_hba.conf").write_text(hba)
        if self._user:
            _chown_tree(self.datadir, self._user)
            _chown_tree(self.socket_dir, self._user)

    def start(self, timeout: float = 60) -> None:
        if not self.initialized():
            self.init()
        assert self.log_file is not None
        self.log_file.touch(exist_ok=True)
        if self._user:
            pw = pwd.getpwnam(self._user)
            os.chown(self.log_file, pw.pw_uid, pw.pw_gid)
        self._run([str(find_pg_bin("pg_ctl")), "-D", str(self.datadir), "-l", str(self.log_file),
                   "-w", "-t", str(int(timeout)), "-o", "-c config_file=" + str(self.datadir / "postgresql.conf"),
                   "start"], "pg_ctl start", timeout=timeout + 10)
        self.wait_ready(timeout)
        self._batch_scheduling()

    def _batch_scheduling(self) -> None:
        """Run the server under ``SCHED_BATCH``: set on the postmaster, it is inherited by every
        backend (and worker) it forks from then on. A woken backend then no longer preempts the
        process that woke it, the sandbox front or a client, in the middle of its work: on a
        machine with few cores, where the front, its clients and the backends share them, that
        preemption (and the cache refills after it) cost the front's path more than the round
        trips did. Fair share is unchanged. Best effort: where the policy is not available the
        server runs as it started."""
        policy = getattr(os, "SCHED_BATCH", None)
        if policy is None:
            return
        with contextlib.suppress(OSError):
            pid = postmaster_pid(self.datadir)
            if pid is not None:
                os.sched_setscheduler(pid, policy, os.sched_param(0))

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.tcp:
                    with socket.create_connection((self.host, self.port), timeout=1):
                        return
                else:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                        s.settimeout(1)
                        s.connect(str(self.socket_dir / f".s.PGSQL.{self.port}"))
                        return
            except OSError:
                time.sleep(0.1)
        raise ServiceError(f"PostgreSQL did not accept connections on {self.connect_host}:{self.port} within "
                           f"{timeout:.0f}s; see {self.log_file}")

    def running(self) -> bool:
        pid = postmaster_pid(self.datadir)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        if not self.running():
            return
        with contextlib.suppress(ServiceError):
            self._run([str(find_pg_bin("pg_ctl")), "-D", str(self.datadir), "-m", mode, "-w",
                       "-t", str(int(timeout)), "stop"], "pg_ctl stop", timeout=timeout + 10)
        if self.socket_dir.parent != self.datadir.parent:  # our folder in $TMPDIR: leave nothing behind
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(mode="immediate")
